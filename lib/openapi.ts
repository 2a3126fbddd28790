/**
 * OpenAPI 3.0.3 generation for the gateway.
 *
 * Pure on purpose: no runtime import of Moleculer or moleculer-web, so the document can be
 * built (and unit-tested) from plain data: the gateway's alias table plus the action
 * definitions it finds in the registry (`params`, `auth`, `openapi`).
 *
 * Two halves:
 *  - `fastestValidatorToJsonSchema`: fastest-validator rules -> OpenAPI 3.0 Schema Objects.
 *    Never throws: params come from every service in the cluster and a docs endpoint must
 *    not fail because one action uses an exotic rule.
 *  - `buildOpenApiDocument`: one operation per alias, shared error responses, bearer auth.
 */

// ---------------------------------------------------------------------------------------
// Minimal OpenAPI 3.0 types (the `openapi-types` package is not installed; these cover
// exactly what we emit, so the document is type-checked where it is built).
// ---------------------------------------------------------------------------------------

export type JsonSchemaType = "string" | "number" | "integer" | "boolean" | "array" | "object";

import { messageJsonSchema } from "../proto/json-schema";
import { ERROR_STATUS, type ErrorCode } from "./error-catalog";
import { root } from "./serializer/contracts-runtime";

/** OpenAPI 3.0 Schema Object (a JSON Schema draft-04/05 dialect with `nullable`). */
export interface JsonSchema {
  type?: JsonSchemaType;
  format?: string;
  title?: string;
  description?: string;
  default?: unknown;
  example?: unknown;
  enum?: unknown[];
  nullable?: boolean;
  readOnly?: boolean;
  writeOnly?: boolean;
  deprecated?: boolean;
  // string
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  // number
  minimum?: number;
  maximum?: number;
  /** Boolean in 3.0 (draft-04 style), unlike the numeric form of 3.1. */
  exclusiveMinimum?: boolean;
  exclusiveMaximum?: boolean;
  multipleOf?: number;
  // array
  items?: JsonSchemaOrRef;
  minItems?: number;
  maxItems?: number;
  uniqueItems?: boolean;
  // object
  properties?: Record<string, JsonSchemaOrRef>;
  required?: string[];
  additionalProperties?: boolean | JsonSchemaOrRef;
  minProperties?: number;
  maxProperties?: number;
  // composition
  anyOf?: JsonSchemaOrRef[];
  oneOf?: JsonSchemaOrRef[];
  allOf?: JsonSchemaOrRef[];
  not?: JsonSchemaOrRef;
}

export interface ReferenceObject {
  $ref: string;
}

export type JsonSchemaOrRef = JsonSchema | ReferenceObject;

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface OpenApiParameter {
  name: string;
  in: "path" | "query" | "header";
  required: boolean;
  description?: string;
  schema: JsonSchemaOrRef;
  style?: "form" | "deepObject" | "simple";
  explode?: boolean;
}

export interface OpenApiMediaType {
  schema: JsonSchemaOrRef;
  example?: unknown;
}

export interface OpenApiRequestBody {
  description?: string;
  required: boolean;
  content: Record<string, OpenApiMediaType>;
}

export interface OpenApiHeader {
  description?: string;
  schema: JsonSchemaOrRef;
}

export interface OpenApiResponse {
  description: string;
  headers?: Record<string, OpenApiHeader>;
  content?: Record<string, OpenApiMediaType>;
}

export type SecurityRequirement = Record<string, string[]>;

export interface OpenApiOperation {
  operationId: string;
  summary?: string;
  description?: string;
  tags: string[];
  parameters?: OpenApiParameter[];
  requestBody?: OpenApiRequestBody;
  responses: Record<string, OpenApiResponse | ReferenceObject>;
  security?: SecurityRequirement[];
  /** Which Moleculer action serves this operation (handy when reading the spec). */
  "x-moleculer-action"?: string;
  "x-auth"?: ActionAuth;
}

export type OpenApiPathItem = Partial<Record<"get" | "post" | "put" | "patch" | "delete", OpenApiOperation>>;

export interface OpenApiSecurityScheme {
  type: "http";
  scheme: "bearer";
  bearerFormat?: string;
  description?: string;
}

export interface OpenApiDocument {
  openapi: "3.0.3";
  info: { title: string; version: string; description?: string };
  servers?: Array<{ url: string; description?: string }>;
  tags?: Array<{ name: string; description?: string }>;
  paths: Record<string, OpenApiPathItem>;
  components: {
    schemas: Record<string, JsonSchema>;
    responses: Record<string, OpenApiResponse>;
    securitySchemes: Record<string, OpenApiSecurityScheme>;
  };
  /** Aliases that could not be described (method-less/`ALL` aliases); kept visible rather than silently dropped. */
  "x-undocumented-aliases"?: string[];
}

// ---------------------------------------------------------------------------------------
// Our action-level extensions (also exported so service code can type its actions).
// ---------------------------------------------------------------------------------------

export type ActionAuth = "none" | "optional" | "user" | "admin";

export interface ActionOpenApiMeta {
  summary?: string;
  description?: string;
  tags?: string[];
  /** Success status; default 200. 204 means "no body". */
  status?: number;
  /** Success body schema (OpenAPI 3.0 Schema Object; common JSON Schema 2020 forms are normalised). */
  response?: JsonSchema;
  /** Extra documented error statuses (e.g. 409, 429). */
  errors?: number[];
  /** Media type of the success body when it is not JSON (e.g. "text/plain", "text/html"). */
  contentType?: string;
  /** The action replays a repeated `Idempotency-Key` header (documented as an optional header parameter). */
  idempotencyKey?: boolean;
}

/**
 * A fastest-validator params schema: property name -> rule, plus `$$` meta keys
 * (`$$strict`, `$$async`, `$$root`). Kept loose (`unknown` values) so Moleculer's own
 * `ActionParams` type and registry data (plain JSON) are assignable without casts.
 */
export type FvParamsSchema = { readonly [key: string]: unknown };

/** One fastest-validator rule: shorthand string, rule object, or array (= `multi`). */
export type FvRule = string | FvRuleObject | readonly FvRule[];
export interface FvRuleObject {
  readonly type?: string;
  readonly optional?: boolean;
  readonly nullable?: boolean;
  readonly default?: unknown;
  readonly [key: string]: unknown;
}

export interface ActionInfo {
  params?: FvParamsSchema;
  auth?: ActionAuth;
  openapi?: ActionOpenApiMeta;
}

export interface GatewayRouteInfo {
  path: string;
  /**
   * moleculer-web aliases. Values are normally action names ("user.me", optionally
   * "multipart:file.save" / "stream:file.save"); arrays (middlewares + action name),
   * `{ action }` objects and function handlers are tolerated as moleculer-web allows them.
   */
  aliases: Readonly<Record<string, unknown>>;
}

export interface BuildOpenApiOptions {
  info: { title: string; version: string; description?: string };
  /** Base URL put in `servers`; paths already include the route prefix (e.g. "/api"). */
  serverUrl?: string;
  routes: readonly GatewayRouteInfo[];
  actions: Readonly<Record<string, ActionInfo>>;
  /**
   * Auth level assumed for a registered action that declares none. Default "admin",
   * mirroring the gateway, which fails closed on a missing `auth`.
   */
  defaultAuth?: ActionAuth;
}

// ---------------------------------------------------------------------------------------
// fastest-validator -> JSON Schema
// ---------------------------------------------------------------------------------------

type Dict = Record<string, unknown>;

function isDict(value: unknown): value is Dict {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

function isNonNegativeInt(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

/** Same parsing as fastest-validator's `parseShortHand` ("string|min:3|optional", "no-empty", "string[]"). */
function parseShorthand(text: string): Dict {
  const parts = text.split("|").map((part) => part.trim());
  const head = parts[0] ?? "";
  const rule: Dict = head.endsWith("[]") ? { type: "array", items: head.slice(0, -2) } : { type: head };
  for (const part of parts.slice(1)) {
    if (part === "") continue;
    const colon = part.indexOf(":");
    if (colon !== -1) {
      const key = part.slice(0, colon).trim();
      const raw = part.slice(colon + 1).trim();
      let value: unknown = raw;
      if (raw === "true" || raw === "false") value = raw === "true";
      else if (raw !== "" && !Number.isNaN(Number(raw))) value = Number(raw);
      rule[key] = value;
    } else if (part.startsWith("no-")) {
      rule[part.slice(3)] = false;
    } else {
      rule[part] = true;
    }
  }
  return rule;
}

/**
 * Expand any rule form into a rule object with a `type`, like fastest-validator's
 * `resolveType`. Returns undefined for something that is not a rule at all.
 */
function normalizeRule(input: unknown): Dict | undefined {
  if (typeof input === "string") return parseShorthand(input);
  if (Array.isArray(input)) {
    const rules = input.map(normalizeRule).filter((r): r is Dict => r !== undefined);
    return {
      type: "multi",
      rules,
      // fastest-validator: the multi is optional/nullable only if every alternative is.
      optional: rules.length > 0 && rules.every((r) => r.optional === true),
      nullable: rules.length > 0 && rules.every((r) => r.nullable === true),
    };
  }
  if (!isDict(input)) return undefined;
  // `{ $$type: "object|optional", a: "string" }`: object shorthand with inline props.
  if (typeof input.$$type === "string") {
    const props: Dict = { ...input };
    delete props.$$type;
    return { ...parseShorthand(input.$$type), props };
  }
  // `{ type: "string|min:3", ... }`: explicit keys win over the shorthand's.
  if (typeof input.type === "string" && (input.type.includes("|") || input.type.endsWith("[]"))) {
    return { ...parseShorthand(input.type), ...input, type: parseShorthand(input.type).type };
  }
  return input;
}

/** A rule whose absence is accepted: optional, defaulted (FV fills it in) or forbidden. */
function isRuleOptional(rule: Dict): boolean {
  return rule.optional === true || (rule.default !== undefined && rule.default !== null) || rule.type === "forbidden";
}

function appendDescription(schema: JsonSchema, text: string): void {
  schema.description = schema.description ? `${schema.description} ${text}` : text;
}

/** Type of an `enum`/`equal` list when all values share one JSON primitive type. */
function inferPrimitiveType(values: readonly unknown[]): JsonSchemaType | undefined {
  const types = new Set(values.map((v) => (typeof v === "number" ? (Number.isInteger(v) ? "integer" : "number") : typeof v)));
  if (types.size === 1) {
    const only = [...types][0];
    if (only === "string" || only === "boolean" || only === "integer" || only === "number") return only;
  }
  if ([...types].every((t) => t === "integer" || t === "number")) return "number";
  return undefined;
}

/** JSON-safe values only: a default/example that is a function or a Date would break JSON output. */
function isJsonValue(value: unknown): boolean {
  if (value === null || typeof value === "string" || typeof value === "boolean") return true;
  if (typeof value === "number") return Number.isFinite(value);
  if (Array.isArray(value)) return value.every(isJsonValue);
  if (isDict(value)) return Object.getPrototypeOf(value) === Object.prototype && Object.values(value).every(isJsonValue);
  return false;
}

function patternSource(pattern: unknown, flags: unknown): { source: string; note?: string } | undefined {
  let source: string | undefined;
  let flagText = typeof flags === "string" ? flags : "";
  if (pattern instanceof RegExp) {
    source = pattern.source;
    flagText = pattern.flags || flagText;
  } else if (typeof pattern === "string") {
    source = pattern;
  }
  if (source === undefined) return undefined;
  // JSON Schema patterns have no flags; say so rather than silently changing the meaning.
  return flagText ? { source, note: `Pattern flags: ${flagText}.` } : { source };
}

const STRING_CHARSET_PATTERNS: ReadonlyArray<[string, string]> = [
  ["alpha", "^[a-zA-Z]+$"],
  ["numeric", "^-?[0-9]\\d*(\\.\\d+)?$"],
  ["alphanum", "^[a-zA-Z0-9]+$"],
  ["alphadash", "^[a-zA-Z0-9_-]+$"],
  ["hex", "^[0-9a-fA-F]+$"],
];

function applyLengthRules(schema: JsonSchema, rule: Dict, kind: "string" | "array"): void {
  const minKey = kind === "string" ? "minLength" : "minItems";
  const maxKey = kind === "string" ? "maxLength" : "maxItems";
  if (isNonNegativeInt(rule.min)) schema[minKey] = rule.min;
  if (isNonNegativeInt(rule.max)) schema[maxKey] = rule.max;
  if (isNonNegativeInt(rule.length)) {
    schema[minKey] = rule.length;
    schema[maxKey] = rule.length;
  }
  // `empty: false` rejects "" / [] (fastest-validator's default is to accept them).
  if (rule.empty === false && (schema[minKey] ?? 0) < 1) schema[minKey] = 1;
}

function convertString(rule: Dict): JsonSchema {
  const schema: JsonSchema = { type: "string" };
  applyLengthRules(schema, rule, "string");
  const pattern = patternSource(rule.pattern, rule.patternFlags);
  if (pattern) {
    schema.pattern = pattern.source;
    if (pattern.note) appendDescription(schema, pattern.note);
  } else {
    for (const [flag, source] of STRING_CHARSET_PATTERNS) {
      if (rule[flag] === true) {
        schema.pattern = source;
        break;
      }
    }
  }
  if (rule.base64 === true) schema.format = "byte";
  // (Array.isArray narrows to any[]: the values are whatever the rule lists.)
  if (Array.isArray(rule.enum) && rule.enum.length > 0) schema.enum = [...(rule.enum as unknown[])];
  if (typeof rule.contains === "string") appendDescription(schema, `Must contain "${rule.contains}".`);
  if (rule.singleLine === true) appendDescription(schema, "Single line.");
  return schema;
}

function convertNumber(rule: Dict): JsonSchema {
  const schema: JsonSchema = { type: rule.integer === true ? "integer" : "number" };
  if (isFiniteNumber(rule.min)) schema.minimum = rule.min;
  if (isFiniteNumber(rule.max)) schema.maximum = rule.max;
  if (rule.positive === true && !(schema.minimum !== undefined && schema.minimum > 0)) {
    schema.minimum = 0;
    schema.exclusiveMinimum = true;
  }
  if (rule.negative === true && !(schema.maximum !== undefined && schema.maximum < 0)) {
    schema.maximum = 0;
    schema.exclusiveMaximum = true;
  }
  if (isFiniteNumber(rule.equal)) schema.enum = [rule.equal];
  if (isFiniteNumber(rule.notEqual)) schema.not = { enum: [rule.notEqual] };
  return schema;
}

function convertObject(rule: Dict, depth: number): JsonSchema {
  const schema: JsonSchema = { type: "object" };
  const props = isDict(rule.props) ? rule.props : isDict(rule.properties) ? rule.properties : undefined;
  if (props) {
    const properties: Record<string, JsonSchemaOrRef> = {};
    const required: string[] = [];
    for (const [name, child] of Object.entries(props)) {
      if (name.startsWith("$$")) continue; // meta keys, not properties
      const normalized = normalizeRule(child);
      properties[name] = convertRule(child, depth + 1);
      if (!normalized || !isRuleOptional(normalized)) required.push(name);
    }
    schema.properties = properties;
    if (required.length > 0) schema.required = required; // 3.0 forbids an empty `required`
  }
  // strict: true rejects unknown keys; strict: "remove" strips them (so they are accepted).
  if (rule.strict === true) schema.additionalProperties = false;
  if (isNonNegativeInt(rule.minProps)) schema.minProperties = rule.minProps;
  if (isNonNegativeInt(rule.maxProps)) schema.maxProperties = rule.maxProps;
  return schema;
}

/** Guards against cyclic rule objects (FV supports them; JSON Schema output cannot). */
const MAX_DEPTH = 32;

function convertRule(input: unknown, depth: number): JsonSchema {
  if (depth > MAX_DEPTH) return { description: "Nested too deeply to describe." };
  const rule = normalizeRule(input);
  if (!rule) return { description: "Unrecognised validation rule." };
  const type = typeof rule.type === "string" ? rule.type : "";
  let schema: JsonSchema;

  switch (type) {
    case "any":
      schema = {};
      break;
    case "string":
      schema = convertString(rule);
      break;
    case "email":
      schema = { type: "string", format: "email" };
      applyLengthRules(schema, rule, "string");
      break;
    case "uuid":
      schema = { type: "string", format: "uuid" };
      if (isFiniteNumber(rule.version)) appendDescription(schema, `UUID version ${rule.version}.`);
      break;
    case "url":
      schema = { type: "string", format: "uri" };
      break;
    case "objectID":
      schema = { type: "string", pattern: "^[0-9a-fA-F]{24}$" };
      break;
    case "mac":
      schema = { type: "string", description: "MAC address." };
      break;
    case "luhn":
      schema = { type: "string", description: "Number with a valid Luhn checksum." };
      break;
    case "currency":
      schema = { type: "string", description: "Currency amount." };
      break;
    case "date":
      // JSON has no Date: clients send an ISO 8601 string (FV needs `convert: true` for it).
      schema = { type: "string", format: "date-time" };
      break;
    case "number":
      schema = convertNumber(rule);
      break;
    case "boolean":
      schema = { type: "boolean" };
      break;
    case "enum": {
      const values = Array.isArray(rule.values) ? rule.values.filter(isJsonValue) : [];
      schema = {};
      const inferred = inferPrimitiveType(values);
      if (inferred) schema.type = inferred;
      if (values.length > 0) schema.enum = values;
      break;
    }
    case "equal": {
      schema = {};
      if (isJsonValue(rule.value) && rule.value !== null) {
        const inferred = inferPrimitiveType([rule.value]);
        if (inferred) schema.type = inferred;
        schema.enum = [rule.value];
      }
      break;
    }
    case "array": {
      schema = { type: "array", items: rule.items === undefined ? {} : convertRule(rule.items, depth + 1) };
      applyLengthRules(schema, rule, "array");
      if (rule.unique === true) schema.uniqueItems = true;
      if (Array.isArray(rule.enum) && rule.enum.length > 0) {
        const items: JsonSchema = isDict(schema.items) && !("$ref" in schema.items) ? schema.items : {};
        items.enum = [...(rule.enum as unknown[])];
        schema.items = items;
      }
      if (rule.contains !== undefined) appendDescription(schema, `Must contain ${JSON.stringify(rule.contains)}.`);
      break;
    }
    case "tuple": {
      // 3.0 has no positional `items`; describe length and the union of element schemas.
      const elements = Array.isArray(rule.items) ? rule.items.map((item) => convertRule(item, depth + 1)) : [];
      schema = { type: "array", items: elements.length === 1 ? elements[0] : elements.length > 1 ? { anyOf: elements } : {} };
      if (elements.length > 0) {
        schema.minItems = elements.length;
        schema.maxItems = elements.length;
        appendDescription(schema, "Tuple (elements in the listed order).");
      }
      break;
    }
    case "object":
      schema = convertObject(rule, depth);
      break;
    case "record":
      schema = {
        type: "object",
        additionalProperties: rule.value === undefined ? true : convertRule(rule.value, depth + 1),
      };
      break;
    case "multi": {
      const alternatives = Array.isArray(rule.rules) ? rule.rules.map((r) => convertRule(r, depth + 1)) : [];
      // anyOf, not oneOf: FV accepts a value matching any rule, and rules may overlap.
      schema = alternatives.length === 1 ? alternatives[0] : alternatives.length > 1 ? { anyOf: alternatives } : {};
      break;
    }
    case "forbidden":
      schema = { not: {}, description: "Must not be sent." };
      break;
    case "class":
    case "function":
    case "custom":
      schema = { description: `"${type}" rule: cannot be described in JSON Schema.` };
      break;
    default:
      schema = { description: type ? `Unknown validation rule type "${type}".` : "Validation rule without a type." };
  }

  // Common modifiers.
  if (rule.nullable === true) {
    schema.nullable = true;
    // In 3.0, `enum` still applies to null unless null is listed.
    if (schema.enum && !schema.enum.includes(null)) schema.enum = [...schema.enum, null];
  }
  if (rule.default !== undefined && typeof rule.default !== "function" && isJsonValue(rule.default)) {
    schema.default = rule.default;
  }
  if (typeof rule.label === "string" && rule.label) schema.title = rule.label;
  if (typeof rule.description === "string" && rule.description) {
    schema.description = schema.description ? `${rule.description} ${schema.description}` : rule.description;
  }
  if (rule.example !== undefined && isJsonValue(rule.example)) schema.example = rule.example;
  if (rule.deprecated === true) schema.deprecated = true;
  return schema;
}

/**
 * Convert a fastest-validator schema to an OpenAPI 3.0 Schema Object.
 *
 * A params object (`{ email: "email", $$strict: true }`) becomes an object schema, as
 * fastest-validator's `compile` treats it; a `$$root: true` schema, a shorthand string, an
 * array of rules or a rule object with a string `type` is converted as a single rule.
 * Unknown rule types become `{}` with a description instead of throwing.
 */
export function fastestValidatorToJsonSchema(schema: FvParamsSchema | FvRule): JsonSchema {
  if (typeof schema === "string" || Array.isArray(schema)) return convertRule(schema, 0);
  if (!isDict(schema)) return { description: "Unrecognised validation schema." };
  if (schema.$$root === true) {
    const rule: Dict = { ...schema };
    delete rule.$$root;
    return convertRule(rule, 0);
  }
  const props: Dict = {};
  for (const [key, value] of Object.entries(schema)) if (!key.startsWith("$$")) props[key] = value;
  return convertRule({ type: "object", props, strict: schema.$$strict }, 0);
}

// ---------------------------------------------------------------------------------------
// Author-supplied response schemas: accept JSON Schema 2020-12 habits, emit valid 3.0.
// ---------------------------------------------------------------------------------------

const STRING_KEYWORDS = ["title", "description", "format", "pattern"] as const;
const BOOLEAN_KEYWORDS = ["readOnly", "writeOnly", "deprecated", "uniqueItems", "nullable"] as const;
const NUMBER_KEYWORDS = [
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
  "minProperties",
  "maxProperties",
  "multipleOf",
  "minimum",
  "maximum",
] as const;
const SCHEMA_TYPES: readonly string[] = ["string", "number", "integer", "boolean", "array", "object"];

/**
 * Normalise a hand-written schema to OpenAPI 3.0: `type: [X, "null"]` -> `nullable`,
 * `const` -> `enum`, numeric `exclusiveMinimum` -> boolean form, `examples` -> `example`,
 * drop keywords 3.0 does not know. Only `#/components/...` references survive.
 */
export function toOpenApi30Schema(input: unknown, depth = 0): JsonSchemaOrRef {
  if (!isDict(input) || depth > MAX_DEPTH) return {};
  if (typeof input.$ref === "string") {
    return input.$ref.startsWith("#/components/") ? { $ref: input.$ref } : { description: `Unresolvable reference ${input.$ref}.` };
  }
  const out: JsonSchema = {};
  for (const key of STRING_KEYWORDS) {
    const value = input[key];
    if (typeof value === "string") out[key] = value;
  }
  for (const key of BOOLEAN_KEYWORDS) {
    const value = input[key];
    if (typeof value === "boolean") out[key] = value;
  }
  for (const key of NUMBER_KEYWORDS) {
    const value = input[key];
    if (isFiniteNumber(value)) out[key] = value;
  }
  if (typeof input.exclusiveMinimum === "number") {
    out.minimum = input.exclusiveMinimum;
    out.exclusiveMinimum = true;
  } else if (typeof input.exclusiveMinimum === "boolean") out.exclusiveMinimum = input.exclusiveMinimum;
  if (typeof input.exclusiveMaximum === "number") {
    out.maximum = input.exclusiveMaximum;
    out.exclusiveMaximum = true;
  } else if (typeof input.exclusiveMaximum === "boolean") out.exclusiveMaximum = input.exclusiveMaximum;

  const types = (Array.isArray(input.type) ? input.type : [input.type]).filter((t): t is string => typeof t === "string");
  if (types.includes("null")) out.nullable = true;
  const realTypes = types.filter((t) => SCHEMA_TYPES.includes(t)) as JsonSchemaType[];
  let typeAlternatives: JsonSchemaType[] = [];
  if (realTypes.length === 1) out.type = realTypes[0];
  else if (realTypes.length > 1) typeAlternatives = realTypes;

  if (input.const !== undefined && isJsonValue(input.const)) out.enum = [input.const];
  else if (Array.isArray(input.enum) && input.enum.length > 0) out.enum = input.enum.filter(isJsonValue);
  if (out.nullable && out.enum && !out.enum.includes(null)) out.enum.push(null);
  if (input.default !== undefined && isJsonValue(input.default)) out.default = input.default;
  if (input.example !== undefined && isJsonValue(input.example)) out.example = input.example;
  else if (Array.isArray(input.examples) && input.examples.length > 0 && isJsonValue(input.examples[0])) {
    out.example = input.examples[0];
  }

  if (isDict(input.properties)) {
    out.properties = {};
    for (const [name, child] of Object.entries(input.properties)) out.properties[name] = toOpenApi30Schema(child, depth + 1);
  }
  if (Array.isArray(input.required)) {
    const required = input.required.filter((r): r is string => typeof r === "string");
    if (required.length > 0) out.required = [...new Set(required)];
  }
  if (typeof input.additionalProperties === "boolean") out.additionalProperties = input.additionalProperties;
  else if (isDict(input.additionalProperties)) out.additionalProperties = toOpenApi30Schema(input.additionalProperties, depth + 1);

  if (Array.isArray(input.prefixItems) && input.prefixItems.length > 0) {
    out.items = { anyOf: input.prefixItems.map((item) => toOpenApi30Schema(item, depth + 1)) };
  } else if (Array.isArray(input.items)) {
    out.items = input.items.length > 0 ? { anyOf: input.items.map((item) => toOpenApi30Schema(item, depth + 1)) } : {};
  } else if (isDict(input.items)) out.items = toOpenApi30Schema(input.items, depth + 1);
  // 3.0 requires `items` whenever `type` is "array".
  if (out.type === "array" && out.items === undefined) out.items = {};

  for (const key of ["anyOf", "oneOf", "allOf"] as const) {
    const list = input[key];
    if (Array.isArray(list) && list.length > 0) out[key] = list.map((item) => toOpenApi30Schema(item, depth + 1));
  }
  if (isDict(input.not)) out.not = toOpenApi30Schema(input.not, depth + 1);

  if (typeAlternatives.length > 0) {
    // `type: ["string", "integer"]` has no 3.0 spelling except a union.
    const union: JsonSchemaOrRef[] = typeAlternatives.map((t) => (t === "array" ? { type: t, items: out.items ?? {} } : { type: t }));
    out.anyOf = out.anyOf ? [...out.anyOf, { anyOf: union }] : union;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Paths: moleculer-web (path-to-regexp v8) syntax -> OpenAPI templates
// ---------------------------------------------------------------------------------------

type PathToken =
  { kind: "text"; value: string } | { kind: "param"; name: string; wildcard: boolean } | { kind: "group"; tokens: PathToken[] };

const ID_START = /^[$_\p{ID_Start}]$/u;
const ID_CONTINUE = /^[$\u200c\u200d\p{ID_Continue}]$/u;

/**
 * Tokenise path-to-regexp v8 syntax: `:name`, `:"quoted name"`, `*splat`, `{optional}`
 * groups, `\` escapes. Malformed input is read as literal text instead of throwing:
 * moleculer-web would already have refused such a route at startup.
 */
function tokenizePath(path: string): PathToken[] {
  const chars = [...path];
  let index = 0;

  function readName(): string | undefined {
    if (chars[index] === '"') {
      let name = "";
      let j = index + 1;
      while (j < chars.length && chars[j] !== '"') {
        if (chars[j] === "\\") j++;
        name += chars[j] ?? "";
        j++;
      }
      if (j >= chars.length || name === "") return undefined;
      index = j + 1;
      return name;
    }
    if (!ID_START.test(chars[index] ?? "")) return undefined;
    let name = chars[index++] ?? "";
    while (index < chars.length && ID_CONTINUE.test(chars[index] ?? "")) name += chars[index++];
    return name;
  }

  function parse(inGroup: boolean): PathToken[] {
    const tokens: PathToken[] = [];
    const pushText = (value: string): void => {
      const last = tokens[tokens.length - 1];
      if (last && last.kind === "text") last.value += value;
      else tokens.push({ kind: "text", value });
    };
    while (index < chars.length) {
      const ch = chars[index] ?? "";
      if (ch === "\\") {
        pushText(chars[index + 1] ?? "");
        index += 2;
      } else if (ch === "{") {
        index++;
        tokens.push({ kind: "group", tokens: parse(true) });
      } else if (ch === "}") {
        index++;
        if (inGroup) return tokens;
        pushText(ch);
      } else if (ch === ":" || ch === "*") {
        index++;
        const name = readName();
        if (name === undefined) pushText(ch);
        else tokens.push({ kind: "param", name, wildcard: ch === "*" });
      } else {
        pushText(ch);
        index++;
      }
    }
    return tokens;
  }

  return parse(false);
}

type FlatToken = Exclude<PathToken, { kind: "group" }>;

/** Every combination of optional groups present/absent (capped, as a safety net). */
function expandGroups(tokens: readonly PathToken[]): FlatToken[][] {
  let variants: FlatToken[][] = [[]];
  for (const token of tokens) {
    if (token.kind === "group") {
      const inner = expandGroups(token.tokens);
      const next: FlatToken[][] = [];
      for (const variant of variants) {
        next.push(variant); // group absent
        for (const option of inner) next.push([...variant, ...option]);
      }
      variants = next.slice(0, 64);
    } else {
      variants = variants.map((variant) => [...variant, token]);
    }
  }
  return variants;
}

interface PathVariant {
  /** OpenAPI template, e.g. "/api/users/{id}". */
  template: string;
  params: Array<{ name: string; wildcard: boolean }>;
}

function toPathVariants(fullPath: string): PathVariant[] {
  const seen = new Map<string, PathVariant>();
  for (const variant of expandGroups(tokenizePath(fullPath))) {
    let template = "";
    const params: PathVariant["params"] = [];
    for (const token of variant) {
      if (token.kind === "text") template += token.value;
      else {
        template += `{${token.name}}`;
        if (!params.some((p) => p.name === token.name)) params.push({ name: token.name, wildcard: token.wildcard });
      }
    }
    template = template.replace(/\/{2,}/g, "/");
    if (!template.startsWith("/")) template = `/${template}`;
    if (template.length > 1 && template.endsWith("/")) template = template.slice(0, -1);
    if (!seen.has(template)) seen.set(template, { template, params });
  }
  return [...seen.values()];
}

/** Same joining as moleculer-web's Alias (addSlashes(route.path) + trimmed alias path). */
function joinRoutePath(routePath: string, aliasPath: string): string {
  let base = routePath.startsWith("/") ? routePath : `/${routePath}`;
  if (!base.endsWith("/")) base += "/";
  let rest = aliasPath;
  if (rest.startsWith("/")) rest = rest.slice(1);
  if (rest.endsWith("/")) rest = rest.slice(0, -1);
  const full = base + rest;
  return full !== "/" && full.endsWith("/") ? full.slice(0, -1) : full;
}

// ---------------------------------------------------------------------------------------
// Alias table -> operations
// ---------------------------------------------------------------------------------------

const METHODS: readonly HttpMethod[] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const BODY_METHODS: ReadonlySet<HttpMethod> = new Set<HttpMethod>(["POST", "PUT", "PATCH"]);

type AliasKind = "call" | "multipart" | "stream";

interface AliasEntry {
  method: HttpMethod;
  fullPath: string;
  /** Undefined for function handlers (no action behind the alias). */
  action?: string;
  kind: AliasKind;
}

/** Extract the action name (and moleculer-web alias type) from an alias value. */
function parseAliasTarget(target: unknown): { action?: string; kind: AliasKind } {
  let name: string | undefined;
  if (typeof target === "string") name = target;
  else if (Array.isArray(target)) name = target.find((t): t is string => typeof t === "string");
  else if (isDict(target) && typeof target.action === "string") {
    name = target.action;
    if (target.type === "multipart" || target.type === "stream") return { action: name, kind: target.type };
  }
  if (name === undefined) return { kind: "call" };
  const colon = name.indexOf(":");
  if (colon > 0) {
    const prefix = name.slice(0, colon);
    const kind: AliasKind = prefix === "multipart" || prefix === "stream" ? prefix : "call";
    return { action: name.slice(colon + 1), kind };
  }
  return { action: name, kind: "call" };
}

function collectAliases(routes: readonly GatewayRouteInfo[]): { entries: AliasEntry[]; skipped: string[] } {
  const entries: AliasEntry[] = [];
  const skipped: string[] = [];
  for (const route of routes) {
    for (const [key, target] of Object.entries(route.aliases)) {
      const parts = key.trim().split(/\s+/);
      const hasMethod = parts.length >= 2;
      const method = hasMethod ? (parts[0] ?? "").toUpperCase() : "*";
      const aliasPath = hasMethod ? (parts[1] ?? "") : (parts[0] ?? "");
      if (method === "REST") {
        // moleculer-web's "REST /users": "users" shorthand (with optional only/except).
        const base = typeof target === "string" ? target : isDict(target) && typeof target.action === "string" ? target.action : undefined;
        if (base === undefined) {
          skipped.push(key);
          continue;
        }
        let names = ["list", "get", "create", "update", "patch", "remove"];
        if (isDict(target)) {
          if (Array.isArray(target.only)) names = names.filter((n) => (target.only as unknown[]).includes(n));
          if (Array.isArray(target.except)) names = names.filter((n) => !(target.except as unknown[]).includes(n));
        }
        const bare = aliasPath.endsWith("/") ? aliasPath.slice(0, -1) : aliasPath;
        const rest: Record<string, [HttpMethod, string]> = {
          list: ["GET", aliasPath],
          get: ["GET", `${bare}/:id`],
          create: ["POST", aliasPath],
          update: ["PUT", `${bare}/:id`],
          patch: ["PATCH", `${bare}/:id`],
          remove: ["DELETE", `${bare}/:id`],
        };
        for (const name of names) {
          const entry = rest[name];
          if (!entry) continue;
          entries.push({ method: entry[0], fullPath: joinRoutePath(route.path, entry[1]), action: `${base}.${name}`, kind: "call" });
        }
        continue;
      }
      if (!(METHODS as readonly string[]).includes(method)) {
        // "*" / "ALL" / method-less aliases answer every method: not describable as one operation.
        skipped.push(key);
        continue;
      }
      const { action, kind } = parseAliasTarget(target);
      entries.push({ method: method as HttpMethod, fullPath: joinRoutePath(route.path, aliasPath), action, kind });
    }
  }
  return { entries, skipped };
}

// ---------------------------------------------------------------------------------------
// Errors and shared components
// ---------------------------------------------------------------------------------------

/** The codes a client can see: the one catalog's (lib/errors.ts), MALFORMED_REQUEST leaving as VALIDATION_ERROR. */
export const ERROR_CODES = (Object.keys(ERROR_STATUS) as ErrorCode[]).filter(
  (c): c is Exclude<ErrorCode, "MALFORMED_REQUEST"> => c !== "MALFORMED_REQUEST",
);

/**
 * The error body, from its contract (meridian.common.v1.ErrorResponse), with `code` limited
 * to the error catalog's codes.
 */
export const ERROR_SCHEMA: JsonSchema = (() => {
  const body = messageJsonSchema(root.lookupType("meridian.common.v1.ErrorResponse"));
  const error = messageJsonSchema(root.lookupType("meridian.common.v1.Error"));
  const properties = {
    ...(error.properties as Record<string, JsonSchema>),
    code: { type: "string", enum: [...ERROR_CODES] } satisfies JsonSchema,
  };
  return {
    ...body,
    description: "The single error shape of every response with status >= 400.",
    properties: { error: { ...error, properties } },
  };
})();

interface StandardError {
  name: string;
  description: string;
  code: (typeof ERROR_CODES)[number];
  message: string;
  retryAfter?: boolean;
}

/** Reused via `components.responses`; statuses not listed here are emitted inline. */
const STANDARD_ERRORS: Readonly<Record<number, StandardError>> = {
  400: {
    name: "BadRequest",
    description: "Malformed request (invalid JSON or parameters). Code VALIDATION_ERROR.",
    code: "VALIDATION_ERROR",
    message: "Parameters validation error",
  },
  401: {
    name: "Unauthorized",
    description: "Missing, invalid or expired access token. Code UNAUTHORIZED.",
    code: "UNAUTHORIZED",
    message: "Unauthorized",
  },
  403: { name: "Forbidden", description: "Authenticated but not allowed. Code FORBIDDEN.", code: "FORBIDDEN", message: "Forbidden" },
  404: { name: "NotFound", description: "No such resource (or not yours). Code NOT_FOUND.", code: "NOT_FOUND", message: "Not found" },
  409: {
    name: "Conflict",
    description: "Conflict with the current state. Code CONFLICT, OUT_OF_STOCK or UNPAID_LIMIT.",
    code: "CONFLICT",
    message: "Conflict",
  },
  413: {
    name: "PayloadTooLarge",
    description: "Request body too large. Code PAYLOAD_TOO_LARGE.",
    code: "PAYLOAD_TOO_LARGE",
    message: "Payload too large",
  },
  415: {
    name: "UnsupportedMediaType",
    description: "Request body is not application/json. Code UNSUPPORTED_MEDIA_TYPE.",
    code: "UNSUPPORTED_MEDIA_TYPE",
    message: "Unsupported media type",
  },
  422: {
    name: "UnprocessableEntity",
    description: "Well-formed but semantically invalid request. Code VALIDATION_ERROR.",
    code: "VALIDATION_ERROR",
    message: "Validation error",
  },
  429: {
    name: "TooManyRequests",
    description: "Rate limit exceeded; retry after `Retry-After` seconds. Code RATE_LIMITED.",
    code: "RATE_LIMITED",
    message: "Too many requests",
    retryAfter: true,
  },
  500: {
    name: "InternalError",
    description: "Unexpected server error. Code INTERNAL.",
    code: "INTERNAL",
    message: "Internal server error",
  },
  503: {
    name: "ServiceUnavailable",
    description: "A backing service is unavailable. Code SERVICE_UNAVAILABLE.",
    code: "SERVICE_UNAVAILABLE",
    message: "Service unavailable",
  },
};

function errorResponse(description: string, code: string, message: string, retryAfter: boolean): OpenApiResponse {
  const response: OpenApiResponse = {
    description,
    content: {
      "application/json": {
        schema: { $ref: "#/components/schemas/Error" },
        example: { error: { code, message } },
      },
    },
  };
  if (retryAfter) {
    // The IETF draft's names (draft-ietf-httpapi-ratelimit-headers), lib/rate-limit.ts.
    response.headers = {
      "Retry-After": { description: "Seconds to wait before retrying.", schema: { type: "integer", minimum: 0 } },
      "RateLimit-Limit": {
        description: "Requests allowed in the window of the limit that refused this one.",
        schema: { type: "integer", minimum: 1 },
      },
      "RateLimit-Remaining": { description: "Requests left in that window (0 here).", schema: { type: "integer", minimum: 0 } },
      "RateLimit-Reset": { description: "Seconds until that window ends.", schema: { type: "integer", minimum: 0 } },
    };
  }
  return response;
}

function buildComponents(): OpenApiDocument["components"] {
  const responses: Record<string, OpenApiResponse> = {};
  for (const status of Object.keys(STANDARD_ERRORS)
    .map(Number)
    .sort((a, b) => a - b)) {
    const e = STANDARD_ERRORS[status];
    if (e) responses[e.name] = errorResponse(e.description, e.code, e.message, e.retryAfter === true);
  }
  return {
    schemas: { Error: ERROR_SCHEMA },
    responses,
    securitySchemes: {
      bearerAuth: {
        type: "http",
        scheme: "bearer",
        bearerFormat: "JWT",
        description: "Access token from POST /api/auth/login, /register or /refresh.",
      },
    },
  };
}

function errorResponseFor(status: number): OpenApiResponse | ReferenceObject {
  const standard = STANDARD_ERRORS[status];
  if (standard) return { $ref: `#/components/responses/${standard.name}` };
  return errorResponse(`Error (HTTP ${status}).`, "ERROR", "Error", false);
}

const SUCCESS_DESCRIPTIONS: Readonly<Record<number, string>> = {
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
};

function isValidStatus(status: unknown, min: number, max: number): status is number {
  return typeof status === "number" && Number.isInteger(status) && status >= min && status <= max;
}

// ---------------------------------------------------------------------------------------
// Operation building
// ---------------------------------------------------------------------------------------

const SCALAR_TYPES: ReadonlySet<string> = new Set(["string", "number", "integer", "boolean"]);

function isReference(schema: JsonSchemaOrRef | boolean | undefined): schema is ReferenceObject {
  return typeof schema === "object" && "$ref" in schema;
}

/** Path params are always present and always strings on the wire; keep a declared scalar schema's constraints. */
function pathParamSchema(declared: JsonSchemaOrRef | undefined, wildcard: boolean): JsonSchemaOrRef {
  if (declared && !isReference(declared) && declared.type && SCALAR_TYPES.has(declared.type)) {
    const schema: JsonSchema = { ...declared };
    delete schema.nullable;
    delete schema.default;
    if (schema.enum) schema.enum = schema.enum.filter((v) => v !== null);
    return schema;
  }
  return wildcard ? { type: "string", description: "May contain '/'." } : { type: "string" };
}

interface OperationDraft {
  method: HttpMethod;
  template: string;
  operation: Omit<OpenApiOperation, "operationId">;
  /** Base for the operationId (action name, or method+path for handler aliases). */
  idBase: string;
}

function serviceNameOf(action: string): string {
  const dot = action.lastIndexOf(".");
  return dot > 0 ? action.slice(0, dot) : action;
}

function isAuth(value: unknown): value is ActionAuth {
  return value === "none" || value === "optional" || value === "user" || value === "admin";
}

function buildOperation(entry: AliasEntry, variant: PathVariant, info: ActionInfo | undefined, defaultAuth: ActionAuth): OperationDraft {
  const { method } = entry;
  const meta = info?.openapi;
  const known = info !== undefined;
  const action = entry.action;
  // Unknown actions: we cannot tell, so no security is claimed.
  const auth: ActionAuth | undefined = known ? (isAuth(info.auth) ? info.auth : defaultAuth) : undefined;

  const tags = meta?.tags?.filter((t) => typeof t === "string" && t !== "") ?? [];
  if (tags.length === 0) tags.push(action ? serviceNameOf(action) : "gateway");

  const operation: Omit<OpenApiOperation, "operationId"> = { tags, responses: {} };
  operation.summary = meta?.summary ?? action ?? `${method} ${variant.template}`;
  const descriptions: string[] = [];
  if (meta?.description) descriptions.push(meta.description);
  if (action && !known) descriptions.push(`Served by action \`${action}\`, which was not registered when this document was generated.`);
  if (auth === "admin") descriptions.push("Requires an admin account.");
  if (descriptions.length > 0) operation.description = descriptions.join("\n\n");
  if (action) operation["x-moleculer-action"] = action;
  if (auth) operation["x-auth"] = auth;

  // Split params between path, query and body.
  const hasParamsSchema = info?.params !== undefined && isDict(info.params);
  const converted = hasParamsSchema && info?.params ? fastestValidatorToJsonSchema(info.params) : undefined;
  const isObjectParams = converted?.type === "object";
  const properties = isObjectParams ? (converted.properties ?? {}) : {};
  const required = new Set(isObjectParams ? (converted.required ?? []) : []);
  const pathNames = new Set(variant.params.map((p) => p.name));

  const parameters: OpenApiParameter[] = variant.params.map((p) => ({
    name: p.name,
    in: "path",
    required: true,
    schema: pathParamSchema(properties[p.name], p.wildcard),
  }));

  const restNames = Object.keys(properties).filter((name) => !pathNames.has(name));
  const restRequired = restNames.filter((name) => required.has(name));
  const hasParams = Object.keys(properties).length > 0 || (converted !== undefined && !isObjectParams);

  if (BODY_METHODS.has(method)) {
    if (entry.kind === "multipart") {
      operation.requestBody = {
        required: true,
        content: { "multipart/form-data": { schema: { type: "object", additionalProperties: { type: "string", format: "binary" } } } },
      };
    } else if (entry.kind === "stream") {
      operation.requestBody = {
        required: true,
        content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } },
      };
    } else if (converted && !isObjectParams) {
      // `$$root` params: the body is the whole value.
      operation.requestBody = { required: true, content: { "application/json": { schema: converted } } };
    } else if (restNames.length > 0) {
      const body: JsonSchema = { type: "object", properties: {} };
      for (const name of restNames) {
        const prop = properties[name];
        if (body.properties && prop) body.properties[name] = prop;
      }
      if (restRequired.length > 0) body.required = restRequired;
      if (converted?.additionalProperties === false) body.additionalProperties = false;
      operation.requestBody = { required: restRequired.length > 0, content: { "application/json": { schema: body } } };
    } else if (!hasParamsSchema) {
      // No params declared (or action unknown): anything may be sent, nothing is checked.
      operation.requestBody = { required: false, content: { "application/json": { schema: { type: "object" } } } };
    }
  } else {
    for (const name of restNames) {
      const schema = properties[name] ?? {};
      const parameter: OpenApiParameter = { name, in: "query", required: required.has(name), schema };
      if (!isReference(schema)) {
        if (schema.description) parameter.description = schema.description;
        // moleculer-web parses the query string with `qs`: nested objects as a[b]=1.
        if (schema.type === "object") {
          parameter.style = "deepObject";
          parameter.explode = true;
        }
      }
      parameters.push(parameter);
    }
  }
  if (meta?.idempotencyKey) {
    parameters.push({
      name: "Idempotency-Key",
      in: "header",
      required: false,
      description:
        "A repeat with the same key and the same request changes nothing again (the operation says what it answers); the same key with another request is a 409 CONFLICT.",
      schema: { type: "string", minLength: 1, maxLength: 200, pattern: "^[\\x21-\\x7e]+$" },
    });
  }
  if (parameters.length > 0) operation.parameters = parameters;

  // Success response.
  const status = isValidStatus(meta?.status, 200, 399) ? meta.status : 200;
  const success: OpenApiResponse = { description: SUCCESS_DESCRIPTIONS[status] ?? "Success" };
  if (status !== 204 && status !== 304) {
    const mediaType = typeof meta?.contentType === "string" && meta.contentType.includes("/") ? meta.contentType : "application/json";
    const fallback: JsonSchema = mediaType === "application/json" ? { type: "object" } : { type: "string" };
    success.content = {
      [mediaType]: { schema: meta?.response !== undefined ? toOpenApi30Schema(meta.response) : fallback },
    };
  }
  const responses: Record<string, OpenApiResponse | ReferenceObject> = { [String(status)]: success };

  // Error responses.
  const errorStatuses = new Set<number>([500]);
  if (hasParams) {
    errorStatuses.add(400);
    errorStatuses.add(422);
  }
  if (operation.requestBody) {
    // Any body can be malformed JSON (400), too large (413) or not JSON (415).
    errorStatuses.add(400);
    errorStatuses.add(413);
    if (entry.kind === "call") errorStatuses.add(415);
  }
  if (auth === "user" || auth === "admin" || auth === "optional") errorStatuses.add(401); // invalid token is 401 even where optional
  if (auth === "admin") errorStatuses.add(403);
  if (variant.params.length > 0) errorStatuses.add(404);
  for (const extra of meta?.errors ?? []) if (isValidStatus(extra, 400, 599)) errorStatuses.add(extra);
  errorStatuses.delete(status);
  for (const code of [...errorStatuses].sort((a, b) => a - b)) responses[String(code)] = errorResponseFor(code);
  operation.responses = Object.fromEntries(Object.entries(responses).sort(([a], [b]) => Number(a) - Number(b)));

  if (auth === "user" || auth === "admin") operation.security = [{ bearerAuth: [] }];
  else if (auth === "optional") operation.security = [{}, { bearerAuth: [] }];

  const idBase = action ?? `${method.toLowerCase()}${variant.template.replace(/[^A-Za-z0-9]+/g, "_")}`;
  return { method, template: variant.template, operation, idBase };
}

/**
 * Build the OpenAPI 3.0.3 document for the gateway's alias table.
 *
 * Deterministic: paths sorted, methods in a fixed order, operationIds assigned in that
 * order (an action exposed under several aliases gets `name`, `name_2`, ...). The first
 * alias wins when two routes declare the same method and path, as in moleculer-web.
 */
export function buildOpenApiDocument(options: BuildOpenApiOptions): OpenApiDocument {
  const { entries, skipped } = collectAliases(options.routes);

  const drafts: OperationDraft[] = [];
  const taken = new Set<string>();
  for (const entry of entries) {
    const info =
      entry.action !== undefined && Object.prototype.hasOwnProperty.call(options.actions, entry.action)
        ? options.actions[entry.action]
        : undefined;
    for (const variant of toPathVariants(entry.fullPath)) {
      const key = `${entry.method} ${variant.template}`;
      if (taken.has(key)) continue;
      taken.add(key);
      drafts.push(buildOperation(entry, variant, info, options.defaultAuth ?? "admin"));
    }
  }

  const methodRank = (m: HttpMethod): number => METHODS.indexOf(m);
  drafts.sort((a, b) => (a.template < b.template ? -1 : a.template > b.template ? 1 : methodRank(a.method) - methodRank(b.method)));

  const paths: Record<string, OpenApiPathItem> = {};
  const usedIds = new Set<string>();
  const tagNames = new Set<string>();
  for (const draft of drafts) {
    let operationId = draft.idBase;
    for (let n = 2; usedIds.has(operationId); n++) operationId = `${draft.idBase}_${n}`;
    usedIds.add(operationId);
    for (const tag of draft.operation.tags) tagNames.add(tag);
    const item = (paths[draft.template] ??= {});
    const lower = draft.method.toLowerCase() as Lowercase<HttpMethod>;
    item[lower] = { operationId, ...draft.operation };
  }

  const info: OpenApiDocument["info"] = { title: options.info.title, version: options.info.version };
  if (options.info.description) info.description = options.info.description;
  const document: OpenApiDocument = { openapi: "3.0.3", info, paths, components: buildComponents() };
  if (options.serverUrl) document.servers = [{ url: options.serverUrl }];
  if (tagNames.size > 0) document.tags = [...tagNames].sort().map((name) => ({ name }));
  // Reorder keys so the JSON reads top-down (openapi, info, servers, tags, paths, components).
  const ordered: OpenApiDocument = {
    openapi: document.openapi,
    info: document.info,
    ...(document.servers ? { servers: document.servers } : {}),
    ...(document.tags ? { tags: document.tags } : {}),
    paths: document.paths,
    components: document.components,
  };
  if (skipped.length > 0) ordered["x-undocumented-aliases"] = [...skipped].sort();
  return ordered;
}
