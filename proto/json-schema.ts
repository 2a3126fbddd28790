/**
 * A contract message as the JSON Schema (OpenAPI 3.0 dialect) of the JSON that carries it:
 * camelCase keys, every non-`optional` field required, wrapper messages as the value they
 * stand for (a list → an array; a nullable value → `nullable: true`), 64-bit integers as
 * `integer/int64`, the `//` comments as descriptions, additional properties only for an
 * `open` message. The gateway's OpenAPI document takes its response schemas and its error
 * body from here, so they are the contracts, not a copy of them.
 */
import type protobuf from "protobufjs";
import { INT32_TYPES, INT64_TYPES, isWrapper } from "./registry";

export interface JsonSchemaObject {
  [key: string]: unknown;
}

function scalarSchema(type: string): JsonSchemaObject {
  if (type === "string") return { type: "string" };
  if (type === "bool") return { type: "boolean" };
  if (type === "double" || type === "float") return { type: "number" };
  if (INT32_TYPES.has(type))
    return { type: "integer", format: "int32", ...(type.startsWith("u") || type === "fixed32" ? { minimum: 0 } : {}) };
  if (INT64_TYPES.has(type)) return { type: "integer", format: "int64" };
  if (type === "bytes") return { type: "string", format: "byte" };
  throw new Error(`json-schema: type ${type} has no JSON form here`);
}

const describe = (schema: JsonSchemaObject, comment: string | null | undefined): JsonSchemaObject =>
  comment ? { ...schema, description: comment.replace(/\s+/g, " ").trim() } : schema;

function fieldValueSchema(field: protobuf.Field): JsonSchemaObject {
  field.resolve();
  const t = field.resolvedType;
  if (t && "fieldsArray" in t) return messageJsonSchema(t);
  if (t) throw new Error(`json-schema: enums are not used in contracts (${field.fullName})`);
  return scalarSchema(field.type);
}

/** The JSON Schema of `type`'s JSON form. */
export function messageJsonSchema(type: protobuf.Type): JsonSchemaObject {
  if (isWrapper(type)) {
    const inner = type.fieldsArray[0];
    const value = fieldValueSchema(inner);
    return describe(inner.repeated ? { type: "array", items: value } : { ...value, nullable: true }, type.comment);
  }
  const properties: Record<string, JsonSchemaObject> = {};
  const required: string[] = [];
  for (const f of type.fieldsArray) {
    const value = fieldValueSchema(f);
    properties[f.name] = describe(f.repeated ? { type: "array", items: value } : value, f.comment);
    if (f.options?.proto3_optional !== true) required.push(f.name);
  }
  // An open message's JSON may carry other keys too ((meridian.options.v1.open)).
  const open = type.options?.["(meridian.options.v1.open)"] === true;
  const schema: JsonSchemaObject = { type: "object", properties, additionalProperties: open };
  if (required.length) schema.required = required;
  return describe(schema, type.comment);
}
