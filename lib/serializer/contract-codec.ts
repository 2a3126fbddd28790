/**
 * Plain JS values ⇄ contract messages, with the exact JSON semantics Moleculer's JSON
 * serializer would give: a value is encoded with its contract only if decoding gives back
 * what JSON would (it "fits"), otherwise the serializer sends it as generic JSON. So an unknown
 * field, a wrong type or a missing required field reaches the receiving action unchanged and
 * its validator answers exactly as without protobuf (a `role` smuggled into `user.register`
 * is still a 422, not silently dropped).
 *
 * Rules (see meridian/options/v1/options.proto for wrappers):
 *  - a field without `optional` must be present (not undefined, not null); repeated fields
 *    must be arrays; an `optional` one may be absent or undefined, never null;
 *  - a wrapper message field stands for its inner value: an array, or a string that may be null;
 *  - strings must be well-formed UTF-16 (protobuf's UTF-8 would replace a lone surrogate);
 *  - numbers must be finite, and integers in range for integer types;
 *  - objects must be plain, with no key outside the message's fields (undefined values are
 *    ignored, as JSON.stringify drops them).
 *
 * Each message type is compiled once, from its reflection, into two closures: `write` checks a
 * value against those rules while it writes it (one pass, straight into the packet's buffer;
 * the caller rewinds the buffer when it answers false), and `read` builds the plain value from
 * the bytes (no intermediate message object). A field without `optional` is not written when
 * it holds its default (proto3's implicit presence): it decodes to the same default.
 */
import protobuf from "protobufjs/light";
import { INT64_TYPES } from "../../proto/registry";
import { I32, I64, LEN, Reader, VARINT, Writer } from "./bytes";

export interface MessageCodec {
  type: protobuf.Type;
  /** Encodes `value` if it fits the contract exactly, else returns null. */
  encode(value: unknown): Uint8Array | null;
  /** Decodes a contract message into the plain value the sender had. Throws on bad bytes. */
  decode(bytes: Uint8Array): unknown;
  /**
   * Writes `value`'s fields (the message body, without tag or length) if it fits; false if it
   * does not, having written part of it: the caller rewinds `w.pos`.
   */
  write(w: Writer, value: unknown): boolean;
  /** Reads a message body that ends at `end` (the caller read its length). */
  read(r: Reader, end: number): unknown;
}

const isWrapper = (t: protobuf.Type) => t.options?.["(meridian.options.v1.wrapper)"] === true;
const isWellFormed: (s: string) => boolean =
  typeof (String.prototype as { isWellFormed?: unknown }).isWellFormed === "function"
    ? (s) => (s as unknown as { isWellFormed(): boolean }).isWellFormed()
    : (s) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * One scalar type: the JS expression that checks a value fits (over a variable name), the
 * Writer/Reader methods that carry it, and the literal of its default. `fits` is the same
 * check as a function (for explainMisfit).
 */
interface Scalar {
  check(x: string): string;
  wireType: number;
  write: keyof Writer;
  read: keyof Reader;
  zero: string;
  fits(v: unknown): boolean;
}

const I32_MIN = -(2 ** 31);
const I32_MAX = 2 ** 31 - 1;
const U32_MAX = 2 ** 32 - 1;
/** Not -0 (JSON would give 0; protobuf keeps the sign only in doubles). */
const notNegZero = (x: string) => `(${x} !== 0 || 1 / ${x} > 0)`;
const intIn = (min: number, max: number) => (x: string) =>
  `(typeof ${x} === "number" && Number.isInteger(${x}) && ${x} >= ${min} && ${x} <= ${max} && ${notNegZero(x)})`;
// 64-bit integers: only safe JS integers fit (what JSON could carry exactly anyway).
const safeFrom = (min: number) => (x: string) => `(Number.isSafeInteger(${x}) && ${x} >= ${min} && ${notNegZero(x)})`;

const scalar = (s: Omit<Scalar, "fits">): Scalar => {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- the check's own source as a function: built by `check` from fixed templates over the name "x", no outside input
  const fits = new Function("H", "x", `return ${s.check("x")};`) as (h: typeof HELPERS, x: unknown) => boolean;
  return { ...s, fits: fits.bind(null, HELPERS) };
};

/** What generated code reaches besides the Writer and Reader it is given (envelope.ts's too). */
export const HELPERS = {
  isWellFormed,
  isPlainObject,
  overrun(type: string): never {
    throw new RangeError(`${type}: a field overruns the message's length`);
  },
  /** A tag the switch did not take: a known field with the wrong wire type is garbage; an unknown field is skipped. */
  other(r: Reader, tag: number, known: Set<number>, type: string): void {
    if (known.has(tag >>> 3)) throw new RangeError(`${type}: field ${tag >>> 3} has wire type ${tag & 7}, not its declared one`);
    r.skip(tag & 7);
  },
};

const SCALARS: Record<string, Scalar> = {
  string: scalar({
    check: (x) => `(typeof ${x} === "string" && H.isWellFormed(${x}))`,
    wireType: LEN,
    write: "string",
    read: "string",
    zero: `""`,
  }),
  bool: scalar({ check: (x) => `(typeof ${x} === "boolean")`, wireType: VARINT, write: "bool", read: "bool", zero: "false" }),
  double: scalar({
    check: (x) => `(typeof ${x} === "number" && Number.isFinite(${x}) && ${notNegZero(x)})`,
    wireType: I64,
    write: "double",
    read: "double",
    zero: "0",
  }),
  // float loses precision: only double round-trips every JS number, so nothing fits a float.
  float: scalar({ check: () => "false", wireType: I32, write: "double", read: "float", zero: "0" }),
  int32: scalar({ check: intIn(I32_MIN, I32_MAX), wireType: VARINT, write: "int32", read: "int32", zero: "0" }),
  sint32: scalar({ check: intIn(I32_MIN, I32_MAX), wireType: VARINT, write: "sint32", read: "sint32", zero: "0" }),
  sfixed32: scalar({ check: intIn(I32_MIN, I32_MAX), wireType: I32, write: "sfixed32", read: "sfixed32", zero: "0" }),
  uint32: scalar({ check: intIn(0, U32_MAX), wireType: VARINT, write: "uint32", read: "uint32", zero: "0" }),
  fixed32: scalar({ check: intIn(0, U32_MAX), wireType: I32, write: "fixed32", read: "fixed32", zero: "0" }),
  int64: scalar({ check: safeFrom(Number.MIN_SAFE_INTEGER), wireType: VARINT, write: "int64", read: "int64", zero: "0" }),
  sint64: scalar({ check: safeFrom(Number.MIN_SAFE_INTEGER), wireType: VARINT, write: "sint64", read: "sint64", zero: "0" }),
  sfixed64: scalar({ check: safeFrom(Number.MIN_SAFE_INTEGER), wireType: I64, write: "fixed64", read: "sfixed64", zero: "0" }),
  uint64: scalar({ check: safeFrom(0), wireType: VARINT, write: "int64", read: "uint64", zero: "0" }),
  fixed64: scalar({ check: safeFrom(0), wireType: I64, write: "fixed64", read: "fixed64", zero: "0" }),
};
for (const t of INT64_TYPES) if (!SCALARS[t]) throw new Error(`contract-codec: no codec for the 64-bit type ${t}`);

function scalarOf(type: string, where: string): Scalar {
  const s = SCALARS[type];
  if (!s) throw new Error(`${where}: type ${type} is not supported in contracts`);
  return s;
}

/** The generated functions do not use `this`: they are passed around alone (codecFor, D[i]). */
interface Compiled {
  write(this: void, w: Writer, v: unknown): boolean;
  read(this: void, r: Reader, end: number): unknown;
}

export const tagOf = (id: number, wireType: number) => ((id << 3) | wireType) >>> 0;
const prop = (name: string) => `[${JSON.stringify(name)}]`;

/**
 * Compiles (once per type) the write and read functions of a message type, as JavaScript
 * generated from its reflection, as protobufjs itself does: property names, tags and checks
 * become constants in straight-line code, which V8 optimizes far better than a loop over
 * field descriptions (measured: such a loop left the codec at half the speed of JSON, because
 * every property read and write through a variable key is a slow, megamorphic access).
 * Nested message types are other compiled types, reached through `D[i]`.
 */
function compile(type: protobuf.Type, cache: Map<protobuf.Type, Compiled>): Compiled {
  const cached = cache.get(type);
  if (cached) return cached;
  // Placeholder first, so recursive types resolve to the same (later filled) object.
  const compiled: Compiled = { write: () => false, read: () => undefined };
  cache.set(type, compiled);

  const deps: Compiled[] = [];
  const dep = (field: protobuf.Field): string | null => {
    field.resolve();
    const t = field.resolvedType;
    if (t instanceof protobuf.Type) {
      const c = compile(t, cache);
      let i = deps.indexOf(c);
      if (i < 0) i = deps.push(c) - 1;
      return `D[${i}]`;
    }
    if (t) throw new Error(`${type.fullName}.${field.name}: enums are not supported in contracts`);
    return null;
  };
  const where = JSON.stringify(type.fullName);

  /** Statements that write value `x` of `field` (repeated: an array) or `return false`. */
  const writeField = (field: protobuf.Field, x: string): string => {
    const d = dep(field);
    if (d) {
      const one = (e: string) =>
        `w.uint32(${tagOf(field.id, LEN)}); { const at = w.fork(); if (!${d}.write(w, ${e})) return false; w.join(at); }`;
      return field.repeated ? `for (let i = 0; i < ${x}.length; i++) { ${one(`${x}[i]`)} }` : one(x);
    }
    const s = scalarOf(field.type, `${type.fullName}.${field.name}`);
    const one = (e: string) => `if (!${s.check(e)}) return false; w.uint32(${tagOf(field.id, s.wireType)}); w.${s.write}(${e});`;
    if (!field.repeated) return one(x);
    if (s.wireType === LEN) return `for (let i = 0; i < ${x}.length; i++) { const e = ${x}[i]; ${one("e")} }`;
    // repeated numbers and bools: packed (proto3's default)
    return `if (${x}.length > 0) { w.uint32(${tagOf(field.id, LEN)}); const at = w.fork();
      for (let i = 0; i < ${x}.length; i++) { const e = ${x}[i]; if (!${s.check("e")}) return false; w.${s.write}(e); }
      w.join(at); }`;
  };

  /** `case` clauses that read `field` into variable `v`. */
  const readCases = (field: protobuf.Field, v: string): string => {
    const d = dep(field);
    if (d) {
      const one = `${d}.read(r, r.delimited())`;
      return `case ${tagOf(field.id, LEN)}: ${field.repeated ? `(${v} ??= []).push(${one})` : `${v} = ${one}`}; break;`;
    }
    const s = scalarOf(field.type, `${type.fullName}.${field.name}`);
    if (!field.repeated) return `case ${tagOf(field.id, s.wireType)}: ${v} = r.${s.read}(); break;`;
    const unpacked = `case ${tagOf(field.id, s.wireType)}: (${v} ??= []).push(r.${s.read}()); break;`;
    if (s.wireType === LEN) return unpacked;
    // packed (what we write) and unpacked (what proto2-style writers send) are both read
    return `${unpacked}
      case ${tagOf(field.id, LEN)}: { const e = r.delimited(); const packed = (${v} ??= []); while (r.pos < e) packed.push(r.${s.read}()); if (r.pos !== e) H.overrun(${where}); break; }`;
  };

  const known = `new Set(${JSON.stringify(type.fieldsArray.map((f) => f.id))})`;
  let writeBody: string;
  let readBody: string;

  if (isWrapper(type)) {
    const inner = type.fieldsArray[0];
    if (inner.repeated) {
      writeBody = `if (!Array.isArray(v)) return false; ${writeField(inner, "v")} return true;`;
      readBody = `let a; while (r.pos < end) { const tag = r.uint32(); switch (tag) { ${readCases(inner, "a")} default: H.other(r, tag, K, ${where}); } }
        if (r.pos !== end) H.overrun(${where}); return a === undefined ? [] : a;`;
    } else {
      // null is the wrapper without its value; a value is always written, even a default.
      writeBody = `if (v === null) return true; ${writeField(inner, "v")} return true;`;
      readBody = `let x = null; while (r.pos < end) { const tag = r.uint32(); switch (tag) { ${readCases(inner, "x")} default: H.other(r, tag, K, ${where}); } }
        if (r.pos !== end) H.overrun(${where}); return x;`;
    }
  } else {
    const fields = type.fieldsArray;
    const names = fields.map((f) => `case ${JSON.stringify(f.name)}:`).join(" ");
    const writes = [...fields]
      .sort((a, b) => a.id - b.id) // field-number order, as protobuf implementations write
      .map((f) => {
        const x = `v${prop(f.name)}`;
        const optional = f.options?.proto3_optional === true;
        if (f.repeated) return `x = ${x}; if (!Array.isArray(x)) return false; ${writeField(f, "x")}`;
        const d = dep(f);
        const wrapper = f.resolvedType instanceof protobuf.Type && isWrapper(f.resolvedType);
        const absent = optional ? `if (x !== undefined) {` : `if (x === undefined) return false; {`;
        if (d) return `x = ${x}; ${absent} ${wrapper ? "" : "if (x === null) return false;"} ${writeField(f, "x")} }`;
        if (optional) return `x = ${x}; ${absent} ${writeField(f, "x")} }`;
        // Implicit presence: a default is not written; it decodes to the same default.
        const s = scalarOf(f.type, f.fullName);
        return `x = ${x}; if (x === undefined) return false; if (x !== ${s.zero} || !${s.check("x")}) { ${writeField(f, "x")} }`;
      });
    writeBody = `if (!H.isPlainObject(v)) return false;
      for (const k in v) { ${fields.length ? `switch (k) { ${names} break; default: ` : ""}if (v[k] !== undefined) return false;${fields.length ? " }" : ""} }
      let x; ${writes.join("\n")} return true;`;
    const vars = fields.map((_, i) => `f${i}`);
    // Keys in declaration order, as the sender's object had them from the same contract.
    const builds = fields.map((f, i) => {
      const key = `o${prop(f.name)}`;
      if (f.repeated) return `${key} = f${i} === undefined ? [] : f${i};`;
      if (f.options?.proto3_optional === true) return `if (f${i} !== undefined) ${key} = f${i};`;
      const d = dep(f);
      // an absent message field without `optional` decodes as its empty message
      return `${key} = f${i} === undefined ? ${d ? `${d}.read(r, r.pos)` : scalarOf(f.type, f.fullName).zero} : f${i};`;
    });
    readBody = `${vars.length ? `let ${vars.join(", ")};` : ""}
      while (r.pos < end) { const tag = r.uint32(); switch (tag) { ${fields.map((f, i) => readCases(f, `f${i}`)).join("\n")} default: H.other(r, tag, K, ${where}); } }
      if (r.pos !== end) H.overrun(${where});
      const o = {}; ${builds.join("\n")} return o;`;
  }
  const name = type.fullName.replace(/\W/g, "_");
  const source = `"use strict"; const K = ${known};
    return { write: function write${name}(w, v) { ${writeBody} }, read: function read${name}(r, end) { ${readBody} } };`;
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- generating the code is the point (see above); its source is built from the type's reflection only (names through JSON.stringify, numeric tags, fixed templates), never from a payload
  const make = new Function("H", "D", source) as (h: typeof HELPERS, d: Compiled[]) => Compiled;
  const made = make(HELPERS, deps);
  compiled.write = made.write;
  compiled.read = made.read;
  return compiled;
}

/**
 * An open message: a JS object of which some keys have a field (all `optional`), any other
 * key allowed. `write` writes the body of the keys whose value fits their field and answers
 * the others as an object (undefined if none), for the caller to send as JSON; `read` reads a
 * body back into an object keyed like the original. A field's key is its
 * `(meridian.options.v1.meta_key)`, else its camelCase name. Used for Moleculer's ctx.meta
 * (meridian.wire.v1.Meta).
 */
export interface OpenCodec {
  write(w: Writer, value: Record<string, unknown>): Record<string, unknown> | undefined;
  read(r: Reader, end: number): Record<string, unknown>;
}

export function createOpenCodec(type: protobuf.Type): OpenCodec {
  const cache = new Map<protobuf.Type, Compiled>();
  const deps: Compiled[] = [];
  const where = JSON.stringify(type.fullName);
  const writes: string[] = [];
  const reads: string[] = [];
  for (const f of type.fieldsArray) {
    if (f.repeated || f.options?.proto3_optional !== true)
      throw new Error(`${f.fullName}: an open message's fields are optional and single`);
    const key = JSON.stringify((f.options?.["(meridian.options.v1.meta_key)"] as string | undefined) ?? f.name);
    f.resolve();
    if (f.resolvedType instanceof protobuf.Type) {
      const d = `D[${deps.push(compile(f.resolvedType, cache)) - 1}]`;
      const tag = tagOf(f.id, LEN);
      writes.push(
        `case ${key}: { const mark = w.pos; w.uint32(${tag}); const at = w.fork(); if (${d}.write(w, x)) { w.join(at); continue; } w.pos = mark; break; }`,
      );
      reads.push(`case ${tag}: o[${key}] = ${d}.read(r, r.delimited()); break;`);
    } else {
      const s = scalarOf(f.type, f.fullName);
      const tag = tagOf(f.id, s.wireType);
      writes.push(`case ${key}: if (${s.check("x")}) { w.uint32(${tag}); w.${s.write}(x); continue; } break;`);
      reads.push(`case ${tag}: o[${key}] = r.${s.read}(); break;`);
    }
  }
  const source = `"use strict"; const K = new Set(${JSON.stringify(type.fieldsArray.map((f) => f.id))});
    return {
      write(w, v) {
        let rest;
        for (const k in v) {
          const x = v[k];
          if (x === undefined) continue;
          switch (k) { ${writes.join("\n")} }
          // no prototype: a "__proto__" key stays an own key, as JSON keeps it
          (rest ??= Object.create(null))[k] = x;
        }
        return rest;
      },
      read(r, end) {
        const o = {};
        while (r.pos < end) { const tag = r.uint32(); switch (tag) { ${reads.join("\n")} default: H.other(r, tag, K, ${where}); } }
        if (r.pos !== end) H.overrun(${where});
        return o;
      },
    };`;
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- generated as compile() does, from the Meta type's reflection only (keys through JSON.stringify, numeric tags, fixed templates), never from a payload
  const make = new Function("H", "D", source) as (h: typeof HELPERS, d: Compiled[]) => OpenCodec;
  return make(HELPERS, deps);
}

/** Returns the codec of a contract type, compiled on first use. */
export function createCodecs(): (type: protobuf.Type) => MessageCodec {
  const cache = new Map<protobuf.Type, Compiled>();
  const codecs = new Map<protobuf.Type, MessageCodec>();
  // For encode() alone (tests, the audit); the serializer writes into its own Writer.
  const scratch = new Writer(1024);
  return function codecFor(type: protobuf.Type): MessageCodec {
    let codec = codecs.get(type);
    if (codec) return codec;
    const { write, read } = compile(type, cache);
    codec = {
      type,
      write,
      read,
      encode(value) {
        scratch.reset();
        if (!write(scratch, value)) {
          scratch.reset();
          return null;
        }
        return scratch.finish();
      },
      decode(bytes) {
        const r = new Reader(bytes);
        return read(r, r.end);
      },
    };
    codecs.set(type, codec);
    return codec;
  };
}

/**
 * Why `value` does not fit `type` (the path of the first misfit and the reason), or null if
 * it fits. The same rules as `write`, by reflection: slow, only for diagnostics (the contract
 * audit, the fallback log), never on the hot path.
 */
export function explainMisfit(type: protobuf.Type, value: unknown, path = "$"): string | null {
  const scalar = (t: string, v: unknown, p: string) => (scalarOf(t, p).fits(v) ? null : `${p}: ${JSON.stringify(v)} is not a ${t}`);
  const one = (field: protobuf.Field, v: unknown, p: string): string | null => {
    field.resolve();
    const t = field.resolvedType;
    if (t instanceof protobuf.Type) return explainMisfit(t, v, p);
    if (t) return `${p}: enums are not supported`;
    return scalar(field.type, v, p);
  };
  if (isWrapper(type)) {
    const inner = type.fieldsArray[0];
    if (inner.repeated) {
      if (!Array.isArray(value)) return `${path}: expected an array, got ${typeof value}`;
      for (let i = 0; i < value.length; i++) {
        const e = one(inner, value[i], `${path}[${i}]`);
        if (e) return e;
      }
      return null;
    }
    return value === null ? null : one(inner, value, path);
  }
  if (!isPlainObject(value))
    return `${path}: expected an object (${type.name}), got ${value === null ? "null" : Array.isArray(value) ? "an array" : typeof value}`;
  for (const k in value) if (value[k] !== undefined && !type.fields[k]) return `${path}.${k}: not a field of ${type.name}`;
  for (const f of type.fieldsArray) {
    const x = value[f.name];
    const p = `${path}.${f.name}`;
    if (f.repeated) {
      if (!Array.isArray(x)) return `${p}: expected an array, got ${x === null ? "null" : typeof x}`;
      for (let i = 0; i < x.length; i++) {
        const e = one(f, x[i], `${p}[${i}]`);
        if (e) return e;
      }
      continue;
    }
    if (x === undefined) {
      if (f.options?.proto3_optional === true) continue;
      return `${p}: missing (not optional in ${type.name})`;
    }
    f.resolve();
    const wrapper = f.resolvedType instanceof protobuf.Type && isWrapper(f.resolvedType);
    if (x === null && !wrapper) return `${p}: null (not a nullable wrapper)`;
    const e = one(f, x, p);
    if (e) return e;
  }
  return null;
}
