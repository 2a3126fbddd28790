/**
 * Whether a JSON value conforms to an OpenAPI 3.0 schema of the subset the contracts produce
 * (object / array / string / integer / number / boolean, properties, required,
 * additionalProperties as a boolean, enum, items, nullable). Tests hold real answers to the
 * document's schemas with it. Why not a full validator (ajv): the document's schemas use only
 * this subset, and the first problem's path is all a failing test needs to say.
 */
import type { JsonSchema } from "../../lib/openapi";

/** The first place where `value` breaks `schema` (a path and why), or null. */
export function schemaProblem(schema: JsonSchema, value: unknown, path = "$"): string | null {
  if (value === null) return schema.nullable ? null : `${path}: null`;
  if (schema.enum && !schema.enum.includes(value)) return `${path}: ${JSON.stringify(value)} not one of ${schema.enum.join(", ")}`;
  switch (schema.type) {
    case "string":
      return typeof value === "string" ? null : `${path}: not a string`;
    case "boolean":
      return typeof value === "boolean" ? null : `${path}: not a boolean`;
    case "number":
      return typeof value === "number" ? null : `${path}: not a number`;
    case "integer":
      return Number.isInteger(value) ? null : `${path}: not an integer`;
    case "array": {
      if (!Array.isArray(value)) return `${path}: not an array`;
      for (let i = 0; i < value.length; i++) {
        const p = schema.items ? schemaProblem(schema.items as JsonSchema, value[i], `${path}[${i}]`) : null;
        if (p) return p;
      }
      return null;
    }
    case "object": {
      if (typeof value !== "object" || Array.isArray(value)) return `${path}: not an object`;
      const obj = value as Record<string, unknown>;
      const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
      for (const k of schema.required ?? []) if (obj[k] === undefined) return `${path}.${k}: missing`;
      for (const [k, v] of Object.entries(obj)) {
        const s = props[k];
        if (!s) {
          if (schema.additionalProperties === false) return `${path}.${k}: not in the schema`;
          continue;
        }
        const p = schemaProblem(s, v, `${path}.${k}`);
        if (p) return p;
      }
      return null;
    }
    default:
      return null;
  }
}
