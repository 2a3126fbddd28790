/**
 * The compiled contract codecs against their rules and against protobufjs, on every message
 * type of proto/ with generated values (a seeded PRNG: the same values every run):
 *  - a value that fits round-trips to exactly what JSON would deliver, and `explainMisfit`
 *    agrees that it fits;
 *  - its bytes are protobuf as protobufjs reads them: protobufjs decodes them and its own
 *    re-encoding decodes back to the same value;
 *  - a value broken in one place (an unknown key, a missing or null field, a wrong type, -0,
 *    NaN, an unsafe integer, a lone surrogate, a non-plain object) does not encode, and
 *    `explainMisfit` says why;
 *  - the Writer and Reader at their edges: varint sizes, negative 64-bit integers, bodies and
 *    strings across the one-byte length boundary, a buffer that grows, truncated input.
 */
import { describe, it } from "mocha";
import assert from "node:assert/strict";
import type Long from "long";
import protobuf from "protobufjs/light";
import { Reader, Writer } from "./bytes";
import { createCodecs, createOpenCodec, explainMisfit } from "./contract-codec";
import { codecFor, root } from "./contracts-runtime";

/** mulberry32: small, seeded, good enough to pick test values. */
function prng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = prng(14);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];

const STRINGS = [
  "",
  "a",
  "ada@example.com",
  "é",
  "名前",
  "emoji 😀 ok",
  "x".repeat(42),
  "é".repeat(43),
  "y".repeat(200),
  "z".repeat(17_000),
];
const INTS: Record<string, number[]> = {
  int32: [0, 1, -1, 127, 128, 300, 2 ** 31 - 1, -(2 ** 31)],
  uint32: [0, 1, 127, 128, 16_383, 16_384, 2 ** 32 - 1],
  int64: [0, 1, -1, 2 ** 31, -(2 ** 31) - 1, 2 ** 40 + 7, -(2 ** 40) - 7, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 10 ** 12],
  uint64: [0, 1, 2 ** 32, 2 ** 35 + 3, Number.MAX_SAFE_INTEGER],
  sint64: [0, -1, 1, -(2 ** 40), Number.MIN_SAFE_INTEGER + 1],
  double: [0, 0.1, -2.5, 1e300, -1e-300, 5e-324, 4200],
};
INTS.sint32 = INTS.int32!;
INTS.sfixed32 = INTS.int32!;
INTS.fixed32 = INTS.uint32!;
INTS.fixed64 = INTS.uint64!;
INTS.sfixed64 = INTS.int64!;

const isWrapper = (t: protobuf.Type) => t.options?.["(meridian.options.v1.wrapper)"] === true;
const typeOf = (f: protobuf.Field) => (f.resolve(), f.resolvedType instanceof protobuf.Type ? f.resolvedType : null);

function scalarValue(type: string): unknown {
  if (type === "string") return pick(STRINGS);
  if (type === "bool") return rand() < 0.5;
  const xs = INTS[type];
  if (!xs) throw new Error(`no test values for ${type}`);
  return pick(xs);
}

function fieldValue(f: protobuf.Field, depth: number): unknown {
  const t = typeOf(f);
  const one = () => (t ? value(t, depth + 1) : scalarValue(f.type));
  if (f.repeated) return Array.from({ length: Math.floor(rand() * 4) }, one);
  return one();
}

/** A value that fits `type`. */
function value(type: protobuf.Type, depth = 0): unknown {
  if (isWrapper(type)) {
    const inner = type.fieldsArray[0];
    if (inner.repeated) return fieldValue(inner, depth);
    return rand() < 0.3 ? null : fieldValue(inner, depth);
  }
  const out: Record<string, unknown> = {};
  for (const f of type.fieldsArray) {
    const optional = f.options?.proto3_optional === true;
    if (optional && rand() < 0.4) continue;
    if (depth > 4 && optional) continue;
    out[f.name] = fieldValue(f, depth);
  }
  return out;
}

/** Every message type under meridian.* that carries business values (not the envelope). */
function contractTypes(): protobuf.Type[] {
  const out: protobuf.Type[] = [];
  const walk = (ns: protobuf.NamespaceBase) => {
    for (const o of ns.nestedArray) {
      if (o instanceof protobuf.Type && !o.fullName.startsWith(".meridian.wire.") && !o.fullName.startsWith(".meridian.options."))
        out.push(o);
      if (o instanceof protobuf.Namespace || o instanceof protobuf.Type) walk(o);
    }
  };
  walk(root.lookup("meridian") as protobuf.Namespace);
  return out;
}

const viaJson = (v: unknown) => JSON.parse(JSON.stringify(v));

/** One way to break a value that fits (at the top level or in a field), or null when none applies. */
function breakValue(type: protobuf.Type, v: unknown): { why: string; value: unknown } | null {
  if (isWrapper(type)) {
    const inner = type.fieldsArray[0];
    if (inner.repeated) return { why: "an object for a list", value: { items: v } };
    return inner.type === "string" ? { why: "a lone surrogate", value: "\ud800x" } : { why: "-0", value: -0 };
  }
  const obj = v as Record<string, unknown>;
  const fields = type.fieldsArray;
  const choices: (() => { why: string; value: unknown } | null)[] = [
    () => ({ why: "an unknown key", value: { ...obj, smuggled: "admin" } }),
    () => ({ why: "an array", value: [obj] }),
    () => ({ why: "a Date", value: new Date(0) }),
    () => {
      const f = fields.find((x) => !x.repeated && x.options?.proto3_optional !== true);
      return f ? { why: `${f.name} missing`, value: { ...obj, [f.name]: undefined } } : null;
    },
    () => {
      const f = fields.find((x) => !(typeOf(x) && isWrapper(typeOf(x)!)) && !x.repeated);
      return f ? { why: `${f.name} null`, value: { ...obj, [f.name]: null } } : null;
    },
    () => {
      const f = fields.find((x) => !typeOf(x) && !x.repeated);
      if (!f) return null;
      const bad =
        f.type === "string"
          ? pick([42, "\udc00", true])
          : f.type === "bool"
            ? pick([1, "true"])
            : pick([-0, NaN, Infinity, "1", 1.5, 2 ** 53]);
      // 1.5 fits a double; and a double takes any finite non-negative-zero number
      if (f.type === "double" && (bad === 1.5 || bad === 2 ** 53)) return { why: `${f.name} NaN`, value: { ...obj, [f.name]: NaN } };
      return { why: `${f.name} = ${String(bad)}`, value: { ...obj, [f.name]: bad } };
    },
    () => {
      const f = fields.find((x) => x.repeated);
      return f ? { why: `${f.name} not an array`, value: { ...obj, [f.name]: "x" } } : null;
    },
  ];
  for (let i = 0; i < 10; i++) {
    const b = pick(choices)();
    if (b) return b;
  }
  return { why: "an unknown key", value: { ...obj, smuggled: "admin" } };
}

describe("contract codecs", () => {
  const types = contractTypes();

  it(`every contract type (${types.length}): values that fit round-trip as JSON would, and protobufjs reads the bytes`, () => {
    assert.ok(types.length > 150, `only ${types.length} types found`);
    let checked = 0;
    for (const type of types) {
      const codec = codecFor(type);
      for (let i = 0; i < 12; i++) {
        const v = value(type);
        const what = `${type.fullName} ${JSON.stringify(v)?.slice(0, 300)}`;
        assert.equal(explainMisfit(type, v), null, what);
        const bytes = codec.encode(v);
        assert.ok(bytes, `does not encode: ${what}`);
        assert.deepEqual(codec.decode(bytes), viaJson(v), what);
        // protobufjs reads our bytes, and what it writes back decodes to the same value
        const theirs = type.encode(type.decode(bytes)).finish();
        assert.deepEqual(codec.decode(theirs), viaJson(v), `protobufjs re-encoding of ${what}`);
        checked++;
      }
    }
    assert.ok(checked > 1800);
  });

  it("a value broken in one place does not encode, and explainMisfit says where", () => {
    let broken = 0;
    for (const type of types) {
      const codec = codecFor(type);
      for (let i = 0; i < 6; i++) {
        const b = breakValue(type, value(type));
        if (!b) continue;
        const what = `${type.fullName}: ${b.why}`;
        assert.equal(codec.encode(b.value), null, `encoded anyway: ${what}`);
        assert.notEqual(explainMisfit(type, b.value), null, `explainMisfit found nothing: ${what}`);
        broken++;
      }
    }
    assert.ok(broken > 900, `${broken}`);
  });

  it("undefined values are ignored (JSON drops them); an optional field may be absent but not null", () => {
    const t = root.lookupType("meridian.user.v1.RegisterRequest");
    const c = codecFor(t);
    assert.deepEqual(c.decode(c.encode({ email: "a@b.c", password: "p", name: "n", extra: undefined })!), {
      email: "a@b.c",
      password: "p",
      name: "n",
    });
    const u = root.lookupType("meridian.user.v1.UpdateMeRequest");
    assert.ok(codecFor(u).encode({}));
    assert.equal(codecFor(u).encode({ name: null }), null);
  });

  it("shapes no contract has yet: a wrapper of packed numbers, nested, and every scalar type repeated", () => {
    const r = protobuf.Root.fromJSON({
      nested: {
        t: {
          nested: {
            IntList: { options: { "(meridian.options.v1.wrapper)": true }, fields: { items: { rule: "repeated", type: "int64", id: 1 } } },
            Holder: {
              fields: {
                ids: { type: "IntList", id: 1 },
                flags: { rule: "repeated", type: "bool", id: 2 },
                s32: { rule: "repeated", type: "sint32", id: 3 },
                f64: { rule: "repeated", type: "sfixed64", id: 4 },
                d: { rule: "repeated", type: "double", id: 5 },
                big: { type: "uint64", id: 100000 },
              },
            },
          },
        },
      },
    });
    const codecs = createCodecs();
    const list = codecs(r.lookupType("t.IntList"));
    assert.deepEqual(list.decode(list.encode([1, -2, 2 ** 40])!), [1, -2, 2 ** 40]);
    const holder = codecs(r.lookupType("t.Holder"));
    const v = { ids: [3, 4], flags: [true, false], s32: [-1, 2 ** 31 - 1], f64: [-(2 ** 40), 7], d: [0.5, -3], big: 2 ** 52 };
    const bytes = holder.encode(v)!;
    assert.deepEqual(holder.decode(bytes), v);
    const T = r.lookupType("t.Holder");
    assert.deepEqual(holder.decode(T.encode(T.decode(bytes)).finish()), v, "protobufjs re-encoding");
  });

  it("ctx.meta: keys with a field travel as fields, the others (or misfits) are left for JSON", () => {
    const meta = createOpenCodec(root.lookupType("meridian.wire.v1.Meta"));
    const w = new Writer(16);
    const value = {
      user: { id: "u1", role: "admin" },
      clientIp: "10.0.0.1",
      $statusCode: 201,
      $location: "/api/x",
      custom: [1],
      requestId: 7,
    };
    const rest = meta.write(w, value);
    assert.deepEqual({ ...rest }, { custom: [1], requestId: 7 });
    const bytes = w.finish();
    const r = new Reader(bytes);
    assert.deepEqual(meta.read(r, r.end), {
      user: { id: "u1", role: "admin" },
      clientIp: "10.0.0.1",
      $statusCode: 201,
      $location: "/api/x",
    });
    // a user that does not fit its message is left whole for JSON, and nothing of it is written
    const w2 = new Writer(16);
    assert.deepEqual(
      { ...meta.write(w2, { user: { id: "u1", role: "admin", extra: 1 }, $statusCode: -0 }) },
      { user: { id: "u1", role: "admin", extra: 1 }, $statusCode: -0 },
    );
    assert.equal(w2.finish().length, 0);
  });
});

describe("Writer and Reader", () => {
  it("varints at every size boundary, signed and 64-bit", () => {
    const w = new Writer(8);
    const u32 = [0, 1, 127, 128, 16_383, 16_384, 2 ** 21 - 1, 2 ** 21, 2 ** 28 - 1, 2 ** 28, 2 ** 32 - 1];
    const i64 = [0, -1, 1, -(2 ** 31), 2 ** 31, 2 ** 32, -(2 ** 32), 2 ** 52 + 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];
    for (const v of u32) w.uint32(v);
    for (const v of i64) w.int64(v);
    for (const v of i64) w.sint64(v);
    for (const v of [0, -1, 2 ** 31 - 1, -(2 ** 31)]) w.int32(v);
    for (const v of [0, -1, 2 ** 31 - 1, -(2 ** 31)]) w.sint32(v);
    for (const v of i64) w.fixed64(v);
    const bytes = w.finish();
    // protobufjs reads the same bytes the same way (its 64-bit reads are typed as a bare {low, high, unsigned}:
    // at run time a long.js Long, its dependency, or a number without it; either prints its decimal value)
    const pr = protobuf.Reader.create(bytes);
    const r = new Reader(bytes);
    for (const v of u32) {
      assert.equal(r.uint32(), v);
      assert.equal(pr.uint32(), v);
    }
    for (const v of i64) {
      assert.equal(r.int64(), v);
      assert.equal(Number((pr.int64() as Long | number).toString()), v);
    }
    for (const v of i64) {
      assert.equal(r.sint64(), v);
      assert.equal(Number((pr.sint64() as Long | number).toString()), v);
    }
    for (const v of [0, -1, 2 ** 31 - 1, -(2 ** 31)]) assert.equal(r.int32(), v);
    for (const v of [0, -1, 2 ** 31 - 1, -(2 ** 31)]) assert.equal(r.sint32(), v);
    for (const v of i64) assert.equal(r.sfixed64(), v);
    assert.equal(r.pos, r.end);
  });

  it("nested bodies and strings across the one-byte length boundary; the buffer grows", () => {
    for (const len of [0, 1, 42, 43, 127, 128, 129, 16_383, 16_384, 70_000]) {
      for (const ch of ["a", "é", "😀"]) {
        const s = Array.from(ch.repeat(len)).slice(0, len).join(""); // code points, never half an emoji
        const w = new Writer(4);
        w.tag(1, 2);
        const at = w.fork();
        w.tag(2, 2);
        w.string(s);
        w.tag(3, 0);
        w.uint32(len);
        w.join(at);
        w.tag(4, 0);
        w.bool(true);
        const bytes = w.finish();
        const pr = protobuf.Reader.create(bytes);
        assert.equal(pr.uint32(), (1 << 3) | 2);
        const body = pr.bytes();
        const inner = protobuf.Reader.create(body);
        assert.equal(inner.uint32(), (2 << 3) | 2);
        assert.equal(inner.string(), s, `${len} × ${ch}`);
        const r = new Reader(bytes);
        r.uint32();
        const end = r.delimited();
        r.uint32();
        assert.equal(r.string(), s);
        r.uint32();
        assert.equal(r.uint32(), len);
        assert.equal(r.pos, end);
      }
    }
  });

  it("a rewound write leaves nothing behind; finish resets", () => {
    const w = new Writer(4);
    w.string("kept");
    const mark = w.pos;
    w.string("x".repeat(5000));
    w.pos = mark;
    w.bool(true);
    const bytes = w.finish();
    assert.deepEqual([...bytes], [4, ...Buffer.from("kept"), 1]);
    assert.equal(w.finish().length, 0);
  });

  it("truncated or malformed input throws instead of reading past the end", () => {
    const w = new Writer();
    w.tag(1, 2);
    w.string("hello world");
    w.tag(2, 0);
    w.int64(-5);
    const bytes = w.finish();
    for (let n = 0; n < bytes.length; n++) {
      const r = new Reader(bytes.subarray(0, n));
      assert.throws(
        () => {
          r.uint32();
          r.string();
          r.uint32();
          r.int64();
        },
        RangeError,
        `cut at ${n}`,
      );
    }
    assert.throws(() => new Reader(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])).uint32(), RangeError);
    assert.throws(() => new Reader(Buffer.from([0x0b])).skip(3), RangeError);
  });
});
