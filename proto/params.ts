/**
 * A request message → the fastest-validator `params` schema Moleculer checks before the
 * action's handler. The rules are the fields' `(meridian.options.v1.rules)` (protovalidate's
 * vocabulary) and the message's `(meridian.options.v1.unknown_fields)`; presence is the
 * field's own (`optional` may be absent, a wrapper message may be null, anything else is
 * required), so one .proto declares the wire, the types and the validation together.
 *
 * Numbers and booleans of an rpc routed by GET or DELETE also take their string form
 * (`convert`): they arrive from a query string or a path.
 */
import protobuf from "protobufjs";
import { fullName, INT32_TYPES, INT64_TYPES, isWrapper, NUMBER_TYPES } from "./registry";

export type Rule = Record<string, unknown>;
export type ParamsSchema = Record<string, unknown>;

interface StringRules {
  len?: number;
  min_len?: number;
  max_len?: number;
  pattern?: string;
  email?: boolean;
  uri?: boolean;
  in?: string[];
  trim?: boolean;
}
interface NumberRules {
  gte?: number;
  lte?: number;
  not_in?: number[];
}
interface RepeatedRules {
  min_items?: number;
  max_items?: number;
  items?: FieldRules;
}
export interface FieldRules {
  string?: StringRules;
  int32?: NumberRules;
  int64?: NumberRules;
  repeated?: RepeatedRules;
}

const OPT = "meridian.options.v1";
const RULE_KINDS = new Set(["string", "int32", "int64", "repeated"]);

/** A field's rules, as written (protobufjs keeps an aggregate option whole in parsedOptions). */
export function fieldRules(field: protobuf.Field): FieldRules {
  const out: Record<string, Record<string, unknown>> = {};
  for (const o of (field.parsedOptions ?? []) as Record<string, unknown>[]) {
    const v = o[`(${OPT}.rules)`] as Record<string, Record<string, unknown>> | undefined;
    if (!v) continue;
    for (const [kind, rules] of Object.entries(v)) {
      if (!RULE_KINDS.has(kind)) throw new Error(`proto: ${field.fullName}: unknown rule kind ${kind}`);
      out[kind] = { ...out[kind], ...rules };
    }
  }
  return out;
}

/** `(meridian.options.v1.unknown_fields)` of a message as fastest-validator's strict value. */
function strictOf(type: protobuf.Type): true | "remove" | undefined {
  const v: unknown = type.options?.[`(${OPT}.unknown_fields)`];
  return v === "UNKNOWN_FIELDS_REFUSE" ? true : v === "UNKNOWN_FIELDS_DROP" ? "remove" : undefined;
}

const list = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

function stringRule(r: StringRules, where: string): Rule {
  const values = list(r.in);
  if (values.length) return { type: "enum", values };
  if (r.email) return { type: "email", normalize: true, ...(r.max_len !== undefined && { max: Number(r.max_len) }) };
  if (r.uri) return { type: "url", ...(r.max_len !== undefined && { max: Number(r.max_len) }) };
  if (r.pattern !== undefined && typeof r.pattern !== "string") throw new Error(`proto: ${where}: pattern must be a string`);
  return {
    type: "string",
    ...(r.trim && { trim: true }),
    ...(r.len !== undefined && { length: Number(r.len) }),
    ...(r.min_len !== undefined && { min: Number(r.min_len) }),
    ...(r.max_len !== undefined && { max: Number(r.max_len) }),
    ...(r.pattern !== undefined && { pattern: r.pattern }),
  };
}

function numberRule(type: string, r: NumberRules, convert: boolean, where: string): Rule {
  const notIn = list(r.not_in).map(Number);
  if (notIn.length > 1) throw new Error(`proto: ${where}: not_in takes one value here (fastest-validator's notEqual)`);
  return {
    type: "number",
    ...((INT32_TYPES.has(type) || INT64_TYPES.has(type)) && { integer: true }),
    ...(convert && { convert: true }),
    ...(r.gte !== undefined && { min: Number(r.gte) }),
    ...(r.lte !== undefined && { max: Number(r.lte) }),
    ...(notIn.length && { notEqual: notIn[0] }),
  };
}

/** The rule of one value of `field` (its type, without presence or `repeated`). */
function valueRule(field: protobuf.Field, rules: FieldRules, convert: boolean, where: string): Rule {
  field.resolve();
  const t = field.resolvedType;
  if (t instanceof protobuf.Type) {
    if (isWrapper(t)) {
      const inner = t.fieldsArray[0];
      if (inner.repeated) return arrayRule(inner, rules, convert, where);
      return { ...valueRule(inner, rules, convert, where), nullable: true };
    }
    return objectRule(t, convert);
  }
  if (t) throw new Error(`proto: ${where}: enums are not used in contracts (a string with rules.string.in)`);
  const kind = INT64_TYPES.has(field.type) ? "int64" : INT32_TYPES.has(field.type) ? "int32" : undefined;
  for (const k of ["string", "int32", "int64"] as const)
    if (rules[k] && (k === "string" ? field.type !== "string" : k !== kind))
      throw new Error(`proto: ${where}: rules.${k} on a ${field.type} field`);
  if (field.type === "string") return stringRule(rules.string ?? {}, where);
  if (NUMBER_TYPES.has(field.type)) return numberRule(field.type, (kind && rules[kind]) ?? {}, convert, where);
  if (field.type === "bool") return { type: "boolean", ...(convert && { convert: true }) };
  throw new Error(`proto: ${where}: ${field.type} fields cannot be request params`);
}

function arrayRule(field: protobuf.Field, rules: FieldRules, convert: boolean, where: string): Rule {
  const r = rules.repeated ?? {};
  return {
    type: "array",
    ...(r.min_items !== undefined && { min: Number(r.min_items) }),
    ...(r.max_items !== undefined && { max: Number(r.max_items) }),
    items: valueRule(field, r.items ?? {}, convert, `${where}[]`),
  };
}

function fieldRule(field: protobuf.Field, convert: boolean): Rule {
  const where = `${fullName(field.parent!)}.${field.name}`;
  if (field.map) throw new Error(`proto: ${where}: map fields cannot be request params`);
  const rules = fieldRules(field);
  if (rules.repeated && !field.repeated && !(field.resolvedType instanceof protobuf.Type && isWrapper(field.resolvedType)))
    throw new Error(`proto: ${where}: rules.repeated on a field that is not a list`);
  const rule = field.repeated ? arrayRule(field, rules, convert, where) : valueRule(field, rules, convert, where);
  return field.options?.proto3_optional === true ? { ...rule, optional: true } : rule;
}

function propsOf(type: protobuf.Type, convert: boolean): Record<string, Rule> {
  return Object.fromEntries(type.fieldsArray.map((f) => [f.name, fieldRule(f, convert)]));
}

function objectRule(type: protobuf.Type, convert: boolean): Rule {
  const strict = strictOf(type);
  return { type: "object", ...(strict !== undefined && { strict }), props: propsOf(type, convert) };
}

/** The `params` of an action whose request is `type`; `query`: routed by GET or DELETE. */
export function paramsSchema(type: protobuf.Type, query: boolean): ParamsSchema {
  const strict = strictOf(type);
  return { ...(strict !== undefined && { $$strict: strict }), ...propsOf(type, query) };
}
