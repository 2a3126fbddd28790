/**
 * fast-check arbitraries built from fastest-validator rules (the `params` every action
 * declares, as the running broker's registry holds them), for the gateway fuzz. For each
 * rule two kinds of values: `valid` (what the rule accepts, boundaries included, or a real
 * value of the system when the caller has one for that field) and `broken` (what the rule
 * refuses: wrong type, out of bounds, off pattern, bad items, extra keys of a strict object).
 * A params object is then valid as a whole, broken in exactly one field, or mixed.
 * Only the rule forms the actions use are modelled in depth; any other type gets JSON values.
 * fuzz-schema.unit.spec.ts checks the two kinds against fastest-validator itself.
 */
import fc from "fast-check";

export interface FvRule {
  type: string;
  optional?: boolean;
  nullable?: boolean;
  min?: number;
  max?: number;
  length?: number;
  pattern?: string | RegExp;
  patternFlags?: string;
  values?: readonly unknown[];
  integer?: boolean;
  notEqual?: unknown;
  props?: Record<string, unknown>;
  properties?: Record<string, unknown>;
  items?: unknown;
  strict?: boolean | "remove";
  convert?: boolean;
  trim?: boolean;
}

/** A params schema as declared: field rules plus `$$strict` and the like. */
export type ParamsSchema = Record<string, unknown>;

/** Real values of the system for a field (ids of existing things, a known password…), or none. */
export type Hints = (field: string) => fc.Arbitrary<unknown> | undefined;
const noHints: Hints = () => undefined;

/** A field left out of the generated object. */
export const OMIT = Symbol("omit");

/** fastest-validator's shorthand ("string|min:3|optional") and full form, as one shape. */
export function normalizeRule(rule: unknown): FvRule {
  if (typeof rule === "string") {
    const [type, ...opts] = rule.split("|");
    const r: FvRule = { type: type.trim() };
    for (const o of opts) {
      const [k, v] = o.split(":").map((s) => s.trim());
      if (k === "optional") r.optional = v !== "false";
      else if (k === "min" || k === "max" || k === "length") r[k] = Number(v);
      else if (k === "integer") r.integer = v !== "false";
    }
    return r;
  }
  if (Array.isArray(rule)) return normalizeRule(rule[0]);
  if (rule && typeof rule === "object" && typeof (rule as FvRule).type === "string") return rule as FvRule;
  // `{ $$type: "object", ... }` and anything unknown: treat as "any".
  return { type: "any" };
}

const patternOf = (r: FvRule): RegExp | undefined =>
  r.pattern === undefined ? undefined : r.pattern instanceof RegExp ? r.pattern : new RegExp(r.pattern, r.patternFlags);

/** What fastest-validator checks for a string rule (after `trim`, which it applies first). */
function stringFits(r: FvRule, s: string): boolean {
  const v = r.trim ? s.trim() : s;
  if (r.min !== undefined && v.length < r.min) return false;
  if (r.max !== undefined && v.length > r.max) return false;
  if (r.length !== undefined && v.length !== r.length) return false;
  const re = patternOf(r);
  return !re || re.test(v);
}

/** Strings that tend to break things further in: SQL and path syntax, control and odd Unicode, format strings. */
export const NASTY_STRINGS = [
  "",
  " ",
  "\u0000",
  "' OR '1'='1",
  '"; DROP TABLE users; --',
  "../../etc/passwd",
  "%00",
  "%s%s%n",
  "${7*7}",
  "{{7*7}}",
  "<script>alert(1)</script>",
  "\ud800",
  "\uffff",
  "🛒",
  "ǅ",
  "\u202e",
  "null",
  "undefined",
  "NaN",
  "-0",
  "1e309",
  "__proto__",
  "constructor",
];

function validString(r: FvRule): fc.Arbitrary<string> {
  const re = patternOf(r);
  const min = r.length ?? r.min ?? 0;
  const max = r.length ?? Math.min(r.max ?? 40, 40);
  let base: fc.Arbitrary<string>;
  if (re) base = fc.stringMatching(re).map((s) => (r.max !== undefined ? s.slice(0, r.max) : s));
  else
    base = fc.oneof(
      { arbitrary: fc.string({ minLength: min, maxLength: Math.max(min, max) }), weight: 6 },
      { arbitrary: fc.string({ unit: "grapheme", minLength: min, maxLength: Math.max(min, max) }), weight: 1 },
      // The boundaries themselves.
      { arbitrary: fc.constantFrom("a".repeat(Math.max(min, 1)), "b".repeat(r.length ?? r.max ?? Math.max(min, 1))), weight: 1 },
    );
  const padded = r.trim ? fc.tuple(base, fc.constantFrom("", " ", "\t ")).map(([s, pad]) => `${pad}${s}${pad}`) : base;
  return padded.filter((s) => stringFits(r, s));
}

function validNumber(r: FvRule): fc.Arbitrary<number> {
  const min = r.min ?? -1e9;
  const max = r.max ?? 1e9;
  const inner = r.integer
    ? fc.oneof(
        { arbitrary: fc.integer({ min: Math.ceil(min), max: Math.floor(max) }), weight: 4 },
        { arbitrary: fc.constantFrom(Math.ceil(min), Math.floor(max)), weight: 1 },
      )
    : fc.oneof(
        { arbitrary: fc.double({ min, max, noNaN: true, noDefaultInfinity: true }), weight: 4 },
        { arbitrary: fc.constantFrom(min, max), weight: 1 },
      );
  return inner.filter((n) => n !== r.notEqual && !Object.is(n, -0));
}

/** Values `rule` accepts. With a hint for `field`, real values of the system most of the time. */
export function validValue(rule: unknown, field = "", hints: Hints = noHints): fc.Arbitrary<unknown> {
  const r = normalizeRule(rule);
  let base: fc.Arbitrary<unknown>;
  switch (r.type) {
    case "string":
      base = validString(r);
      break;
    case "email":
      base = fc.emailAddress().filter((s) => s.length <= (r.max ?? 254));
      break;
    case "url":
      base = fc.webUrl().filter((s) => s.length <= (r.max ?? 2048));
      break;
    case "number":
      base = validNumber(r);
      break;
    case "boolean":
      base = fc.boolean();
      break;
    case "enum":
    case "equal":
      base = fc.constantFrom(...(r.values ?? [null]));
      break;
    case "object": {
      const props = r.props ?? r.properties;
      base = props
        ? paramsArbitrary(props, { hints, mode: "valid" })
        : fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3, noNullPrototype: true });
      break;
    }
    case "array": {
      const minLength = r.min ?? 0;
      const maxLength = Math.max(minLength, Math.min(r.max ?? 4, 4));
      base = fc.array(validValue(r.items ?? { type: "any" }, field, hints), { minLength, maxLength });
      break;
    }
    default:
      base = fc.jsonValue({ maxDepth: 2 });
  }
  const hint = hints(field);
  if (hint) base = fc.oneof({ arbitrary: hint, weight: 4 }, { arbitrary: base, weight: 1 });
  // null is valid only where a rule is nullable: the broker's validator (lib/validator.ts)
  // refuses it elsewhere, also where the rule is only optional (fastest-validator alone would not).
  if (r.nullable) base = fc.oneof({ arbitrary: base, weight: 12 }, { arbitrary: fc.constant(null), weight: 1 });
  return base;
}

/** Values `rule` refuses (each one a different way to be wrong). */
export function brokenValue(rule: unknown, field = "", hints: Hints = noHints): fc.Arbitrary<unknown> {
  const r = normalizeRule(rule);
  const wrongType: fc.Arbitrary<unknown>[] = [];
  const specific: fc.Arbitrary<unknown>[] = [];
  const numberish = fc.oneof(
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom(1e308, -1e308, Number.MAX_SAFE_INTEGER + 2),
  );
  const stringish = fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom(...NASTY_STRINGS));
  switch (r.type) {
    case "string":
    case "email":
    case "url": {
      wrongType.push(
        numberish,
        fc.boolean(),
        fc.array(fc.string(), { maxLength: 2 }),
        fc.dictionary(fc.string({ maxLength: 4 }), fc.string(), { maxKeys: 2, noNullPrototype: true }),
      );
      const max = r.length ?? r.max;
      if (max !== undefined) specific.push(fc.integer({ min: 1, max: 64 }).map((k) => "x".repeat(max + k)));
      if ((r.min ?? r.length ?? 0) > 0) specific.push(fc.constantFrom("", ...(r.trim ? ["   ", "\t\n"] : [])));
      if (r.length !== undefined && r.length > 1) specific.push(fc.constant("x".repeat(r.length - 1)));
      const re = patternOf(r);
      if (re)
        specific.push(
          fc
            .oneof(stringish, fc.string({ unit: "grapheme", maxLength: 20 }))
            .filter((s) => !re.test(r.trim ? s.trim() : s) && s.length <= (max ?? Infinity)),
        );
      if (r.type === "email")
        specific.push(fc.constantFrom("not-an-email", "a@", "@b.c", "a@b", "a b@c.d", `${"a".repeat(250)}@example.com`));
      if (r.type === "url") specific.push(fc.constantFrom("not a url", "javascript:alert(1)", "http://", "ftp://x", "//x.y/z"));
      break;
    }
    case "number": {
      // Where the rule converts, Number(x) decides: true, [5] and "" would pass as numbers.
      if (r.convert) wrongType.push(fc.constant({}), fc.array(fc.integer(), { minLength: 2, maxLength: 3 }));
      else wrongType.push(fc.boolean(), fc.array(fc.integer(), { maxLength: 2 }), fc.constant({}));
      // A numeric string is valid only where the rule converts.
      if (!r.convert) specific.push(validNumber(r).map(String));
      else specific.push(fc.constantFrom("abc", "1e", "12abc", "--1", "1,5"));
      if (r.min !== undefined) specific.push(fc.integer({ min: 1, max: 1000 }).map((k) => r.min! - k));
      if (r.max !== undefined)
        specific.push(
          fc.integer({ min: 1, max: 1000 }).map((k) => r.max! + k),
          fc.constant(1e308),
        );
      if (r.integer)
        specific.push(
          validNumber(r)
            .map((n) => n + 0.5)
            .filter((n) => (r.min === undefined || n >= r.min) && (r.max === undefined || n <= r.max)),
        );
      if (r.notEqual !== undefined) specific.push(fc.constant(r.notEqual));
      break;
    }
    case "boolean":
      // Where the rule converts, 1/0, "1"/"0", "true"/"false" and "on"/"off" are booleans.
      wrongType.push(
        numberish.filter((n) => !r.convert || (n !== 0 && n !== 1)),
        fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
        fc.constant({}),
      );
      specific.push(r.convert ? fc.constantFrom("yes", "no", "maybe", 2, -1) : fc.constantFrom("true", "false", 1, 0, "yes"));
      break;
    case "enum":
    case "equal":
      wrongType.push(numberish, fc.boolean(), fc.array(fc.string(), { maxLength: 2 }));
      specific.push(
        stringish.filter((s) => !(r.values ?? []).includes(s)),
        fc.constantFrom(...(r.values ?? ["x"]).map((v) => String(v).toUpperCase() + "_")),
      );
      break;
    case "object": {
      wrongType.push(stringish, numberish, fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 2 }));
      const props = r.props ?? r.properties;
      if (props) {
        specific.push(paramsArbitrary(props, { hints, mode: "broken" }));
        if (r.strict === true)
          specific.push(paramsArbitrary(props, { hints, mode: "valid" }).map((o) => ({ ...(o as object), unexpected: 1 })));
      }
      break;
    }
    case "array": {
      wrongType.push(stringish, numberish, fc.constant({}));
      const item = r.items ?? { type: "any" };
      if (r.max !== undefined) specific.push(fc.array(validValue(item, field, hints), { minLength: r.max + 1, maxLength: r.max + 3 }));
      if ((r.min ?? 0) > 0) specific.push(fc.constant([]));
      if (r.items)
        specific.push(
          fc
            .tuple(fc.array(validValue(item, field, hints), { maxLength: 2 }), brokenValue(item, field, hints))
            .map(([ok, bad]) => [...ok, bad]),
        );
      break;
    }
    default:
      wrongType.push(fc.constant(undefined));
  }
  // null is wrong unless the rule is nullable (see validValue).
  if (!r.nullable) wrongType.push(fc.constant(null));
  const all = [...wrongType.map((arbitrary) => ({ arbitrary, weight: 1 })), ...specific.map((arbitrary) => ({ arbitrary, weight: 3 }))];
  return fc.oneof(...all);
}

export interface ParamsOptions {
  hints?: Hints;
  /** Fields given elsewhere (the path's parameters): not generated. */
  skip?: ReadonlySet<string>;
  /**
   * valid: every field acceptable (optional ones sometimes left out); broken: exactly one
   * field wrong (a value its rule refuses, or a required field missing); mixed: any of the
   * two per field, plus unknown keys.
   */
  mode?: "valid" | "broken" | "mixed";
}

const fieldsOf = (schema: ParamsSchema, skip?: ReadonlySet<string>) =>
  Object.entries(schema).filter(([k]) => !k.startsWith("$$") && !skip?.has(k));

/** An object for a params schema (see ParamsOptions.mode); fields left out are absent. */
export function paramsArbitrary(schema: ParamsSchema, opts: ParamsOptions = {}): fc.Arbitrary<Record<string, unknown>> {
  const hints = opts.hints ?? noHints;
  const fields = fieldsOf(schema, opts.skip);
  const mode = opts.mode ?? "mixed";
  const requiredFields = fields.filter(([, rule]) => !normalizeRule(rule).optional);
  const perField = fields.map(([name, rule]) => {
    const optional = normalizeRule(rule).optional === true;
    const valid = optional
      ? fc.oneof({ arbitrary: validValue(rule, name, hints), weight: 2 }, { arbitrary: fc.constant(OMIT), weight: 1 })
      : validValue(rule, name, hints);
    return fc.record({ valid, broken: brokenValue(rule, name, hints) });
  });
  const assemble = (values: { valid: unknown; broken: unknown }[], pick: (i: number) => "valid" | "broken" | "omit") => {
    const out: Record<string, unknown> = {};
    fields.forEach(([name], i) => {
      const choice = pick(i);
      const v = choice === "valid" ? values[i].valid : choice === "broken" ? values[i].broken : OMIT;
      if (v !== OMIT && v !== undefined) out[name] = v;
    });
    return out;
  };
  if (mode === "valid") return fc.tuple(...perField).map((values) => assemble(values, () => "valid"));
  if (mode === "broken") {
    if (!fields.length) return fc.constant({ unexpected: "x" });
    // Which field breaks, and how: a refused value, or (for a required field) its absence.
    return fc
      .tuple(fc.tuple(...perField), fc.nat({ max: fields.length - 1 }), fc.boolean())
      .map(([values, at, drop]) =>
        assemble(values, (i) => (i !== at ? "valid" : drop && requiredFields.some(([n]) => n === fields[at][0]) ? "omit" : "broken")),
      );
  }
  const extraKeys = fc.dictionary(
    fc.oneof(
      fc.constantFrom("id", "userId", "role", "status", "admin", "price", "total", "provider", "isAdmin"),
      fc.string({ minLength: 1, maxLength: 10 }),
    ),
    fc.jsonValue({ maxDepth: 1 }),
    { maxKeys: 3, noNullPrototype: true },
  );
  return fc
    .tuple(
      fc.tuple(...perField),
      fc.array(fc.constantFrom<"valid" | "broken" | "omit">("valid", "valid", "valid", "broken", "omit"), {
        minLength: fields.length,
        maxLength: fields.length,
      }),
      fc.option(extraKeys, { freq: 3 }),
    )
    .map(([values, picks, extra]) => ({ ...(extra ?? {}), ...assemble(values, (i) => picks[i]) }));
}

/** A params object as a client would send it, with how it was made: valid most often, else broken in one field, else mixed. */
export function requestParams(
  schema: ParamsSchema | undefined,
  opts: Omit<ParamsOptions, "mode"> & {
    /** Whole valid objects the caller knows (for rules across fields that a schema cannot say, like "one of a or b"). */
    examples?: fc.Arbitrary<Record<string, unknown>>;
  } = {},
): fc.Arbitrary<{ mode: "valid" | "broken" | "mixed"; value: Record<string, unknown> }> {
  const tagged = (mode: "valid" | "broken" | "mixed") => paramsArbitrary(schema ?? {}, { ...opts, mode }).map((value) => ({ mode, value }));
  if (!schema || !fieldsOf(schema, opts.skip).length)
    return fc.oneof(
      { arbitrary: fc.constant({ mode: "valid" as const, value: {} }), weight: 4 },
      { arbitrary: tagged("mixed"), weight: 1 },
    );
  const examples = opts.examples ? [{ arbitrary: opts.examples.map((value) => ({ mode: "valid" as const, value })), weight: 2 }] : [];
  return fc.oneof(
    { arbitrary: tagged("valid"), weight: 6 },
    ...examples,
    { arbitrary: tagged("broken"), weight: 3 },
    { arbitrary: tagged("mixed"), weight: 1 },
  );
}

/**
 * encodeURIComponent that does not throw: a lone surrogate (which it refuses) goes out as
 * the bytes of an encoded surrogate, i.e. invalid UTF-8 for the server to cope with.
 */
export function encodeAny(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return [...s]
      .map((ch) => {
        try {
          return encodeURIComponent(ch);
        } catch {
          return "%ED%A0%80";
        }
      })
      .join("");
  }
}

/** A query string as `qs` (moleculer-web's parser) reads it: nested keys in brackets, arrays by index. */
export function toQueryString(params: Record<string, unknown>): string {
  const parts: string[] = [];
  const add = (key: string, value: unknown) => {
    if (value === undefined) return;
    if (value !== null && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value);
      if (!entries.length) parts.push(`${encodeAny(key)}=`);
      for (const [k, v] of entries) add(`${key}[${k}]`, v);
      return;
    }
    // Not an object (handled above): a primitive, printed as `qs` prints it.
    const text =
      typeof value === "string"
        ? value
        : typeof value === "number" || typeof value === "boolean" || typeof value === "bigint"
          ? value.toString()
          : "";
    parts.push(`${encodeAny(key)}=${encodeAny(text)}`);
  };
  for (const [k, v] of Object.entries(params)) add(k, v);
  return parts.join("&");
}
