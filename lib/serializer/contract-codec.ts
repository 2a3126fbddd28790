/**
 * Plain JS values ⇄ contract messages, with the exact JSON semantics Moleculer's JSON
 * serializer would give: a value is encoded with its contract only if decoding gives back
 * what JSON would (`fit`), otherwise the serializer sends it as generic JSON. So an unknown
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
 */
import protobuf from "protobufjs/light";
import { INT64_TYPES } from "../../proto/registry";

type Fit = (value: unknown) => unknown; // returns NO_FIT when the value does not fit
type ToPlain = (message: any) => unknown;

export const NO_FIT: unique symbol = Symbol("no fit");

export interface MessageCodec {
  type: protobuf.Type;
  /** Encodes `value` if it fits the contract exactly, else returns null. */
  encode(value: unknown): Uint8Array | null;
  /** Decodes a contract message into the plain value the sender had. Throws on bad bytes. */
  decode(bytes: Uint8Array): unknown;
}

const isWrapper = (t: protobuf.Type) => t.options?.["(meridian.options.v1.wrapper)"] === true;
const hasOwn = Object.prototype.hasOwnProperty;
const isWellFormed: (s: string) => boolean =
  typeof (String.prototype as { isWellFormed?: unknown }).isWellFormed === "function"
    ? (s) => (s as unknown as { isWellFormed(): boolean }).isWellFormed()
    : (s) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

const INT_RANGE: Record<string, [number, number]> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  sint32: [-(2 ** 31), 2 ** 31 - 1],
  sfixed32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  fixed32: [0, 2 ** 32 - 1],
};
type LongLike = { toNumber(): number };
const toNumber = (v: unknown) => (typeof v === "number" ? v : (v as LongLike).toNumber());

function scalarFit(type: string, where: string): Fit {
  switch (type) {
    case "string":
      return (v) => (typeof v === "string" && isWellFormed(v) ? v : NO_FIT);
    case "bool":
      return (v) => (typeof v === "boolean" ? v : NO_FIT);
    case "double":
    case "float":
      // float loses precision: only double round-trips every JS number.
      return type === "double" ? (v) => (typeof v === "number" && Number.isFinite(v) && !Object.is(v, -0) ? v : NO_FIT) : () => NO_FIT;
    default: {
      // 64-bit integers: only safe JS integers fit (what JSON could carry exactly anyway).
      if (INT64_TYPES.has(type)) {
        const min = type.startsWith("u") || type === "fixed64" ? 0 : Number.MIN_SAFE_INTEGER;
        return (v) => (typeof v === "number" && Number.isSafeInteger(v) && v >= min && !Object.is(v, -0) ? v : NO_FIT);
      }
      const range = INT_RANGE[type];
      if (!range) throw new Error(`${where}: type ${type} is not supported in contracts`);
      const [min, max] = range;
      return (v) => (typeof v === "number" && Number.isInteger(v) && v >= min && v <= max && !Object.is(v, -0) ? v : NO_FIT);
    }
  }
}

interface Compiled {
  fit: Fit;
  toPlain: ToPlain;
}

/** Compiles (once per type) the fit and toPlain functions of a message type. */
function compile(type: protobuf.Type, cache: Map<protobuf.Type, Compiled>): Compiled {
  const cached = cache.get(type);
  if (cached) return cached;
  // Placeholder first, so recursive types resolve to the same (later filled) object.
  const compiled: Compiled = { fit: () => NO_FIT, toPlain: () => undefined };
  cache.set(type, compiled);

  const valueCodec = (field: protobuf.Field): Compiled => {
    field.resolve();
    const t = field.resolvedType;
    if (t instanceof protobuf.Type) return compile(t, cache);
    if (t) throw new Error(`${type.fullName}.${field.name}: enums are not supported in contracts`);
    return { fit: scalarFit(field.type, `${type.fullName}.${field.name}`), toPlain: INT64_TYPES.has(field.type) ? toNumber : (v) => v };
  };

  if (isWrapper(type)) {
    const inner = type.fieldsArray[0]!;
    const name = inner.name;
    const elem = valueCodec(inner);
    if (inner.repeated) {
      compiled.fit = (v) => {
        if (!Array.isArray(v)) return NO_FIT;
        const items = new Array(v.length);
        for (let i = 0; i < v.length; i++) if ((items[i] = elem.fit(v[i])) === NO_FIT) return NO_FIT;
        return { [name]: items };
      };
      compiled.toPlain = (m) => (m[name] as unknown[]).map(elem.toPlain);
    } else {
      compiled.fit = (v) => {
        if (v === null) return {};
        const x = elem.fit(v);
        return x === NO_FIT ? NO_FIT : { [name]: x };
      };
      compiled.toPlain = (m) => (hasOwn.call(m, name) && m[name] != null ? elem.toPlain(m[name]) : null);
    }
    return compiled;
  }

  const fields = type.fieldsArray.map((f) => {
    const codec = valueCodec(f);
    const wrapper = f.resolvedType instanceof protobuf.Type && isWrapper(f.resolvedType);
    return {
      name: f.name,
      repeated: f.repeated,
      optional: f.options?.proto3_optional === true,
      message: f.resolvedType instanceof protobuf.Type,
      wrapper,
      long: INT64_TYPES.has(f.type),
      codec,
      // A required message field that is absent on the wire decodes as the empty message.
      empty: f.resolvedType instanceof protobuf.Type ? f.resolvedType.create({}) : undefined,
    };
  });
  const known = new Set(fields.map((f) => f.name));

  compiled.fit = (v) => {
    if (!isPlainObject(v)) return NO_FIT;
    for (const k in v) if (v[k] !== undefined && !known.has(k)) return NO_FIT;
    const out: Record<string, unknown> = {};
    for (const f of fields) {
      const x = v[f.name];
      if (f.repeated) {
        if (!Array.isArray(x)) return NO_FIT;
        const items = new Array(x.length);
        for (let i = 0; i < x.length; i++) if ((items[i] = f.codec.fit(x[i])) === NO_FIT) return NO_FIT;
        out[f.name] = items;
        continue;
      }
      if (x === undefined) {
        if (f.optional) continue;
        return NO_FIT;
      }
      if (x === null && !f.wrapper) return NO_FIT;
      const y = f.codec.fit(x);
      if (y === NO_FIT) return NO_FIT;
      out[f.name] = y;
    }
    return out;
  };

  compiled.toPlain = (m) => {
    const out: Record<string, unknown> = {};
    for (const f of fields) {
      const x = m[f.name];
      if (f.repeated) out[f.name] = (x as unknown[]).map(f.codec.toPlain);
      else if (f.message) {
        if (x != null) out[f.name] = f.codec.toPlain(x);
        else if (!f.optional) out[f.name] = f.codec.toPlain(f.empty);
      } else if (!f.optional) out[f.name] = f.long ? toNumber(x) : x;
      else if (hasOwn.call(m, f.name) && x != null) out[f.name] = f.long ? toNumber(x) : x;
    }
    return out;
  };
  return compiled;
}

/** Returns the codec of a contract type, compiled on first use. */
export function createCodecs(): (type: protobuf.Type) => MessageCodec {
  const cache = new Map<protobuf.Type, Compiled>();
  const codecs = new Map<protobuf.Type, MessageCodec>();
  return function codecFor(type: protobuf.Type): MessageCodec {
    let codec = codecs.get(type);
    if (codec) return codec;
    const { fit, toPlain } = compile(type, cache);
    codec = {
      type,
      encode(value) {
        const obj = fit(value);
        return obj === NO_FIT ? null : type.encode(obj as Record<string, unknown>).finish();
      },
      decode(bytes) {
        return toPlain(type.decode(bytes));
      },
    };
    codecs.set(type, codec);
    return codec;
  };
}

/**
 * Why `value` does not fit `type` (the path of the first misfit and the reason), or null if
 * it fits. The same rules as `fit`, by reflection: slow, only for diagnostics (the contract
 * audit, the fallback log), never on the hot path.
 */
export function explainMisfit(type: protobuf.Type, value: unknown, path = "$"): string | null {
  const scalar = (t: string, v: unknown, p: string) => (scalarFit(t, p)(v) === NO_FIT ? `${p}: ${JSON.stringify(v)} is not a ${t}` : null);
  const one = (field: protobuf.Field, v: unknown, p: string): string | null => {
    field.resolve();
    const t = field.resolvedType;
    if (t instanceof protobuf.Type) return explainMisfit(t, v, p);
    if (t) return `${p}: enums are not supported`;
    return scalar(field.type, v, p);
  };
  if (isWrapper(type)) {
    const inner = type.fieldsArray[0]!;
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
  if (!isPlainObject(value)) return `${path}: expected an object (${type.name}), got ${value === null ? "null" : Array.isArray(value) ? "an array" : typeof value}`;
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
