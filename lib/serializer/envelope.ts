/**
 * One Moleculer packet type ⇄ its envelope message (proto/meridian/wire/v1/packets.proto),
 * written and read directly (bytes.ts). How each field travels follows from its declaration,
 * so the .proto stays the one description of the envelope:
 *  - string, double, uint32, bool, repeated string: as themselves;
 *  - bytes: a schemaless value as JSON (meta, headers, error, INFO's services…);
 *  - `Data`: the packet's payload, its contract message or JSON (contracts-runtime.ts);
 *  - `Meta`: ctx.meta's keys that have a field (contract-codec.ts, OpenCodec); the `meta` JSON
 *    field then carries only the other keys, and decoding merges both back into ctx.meta;
 *  - `end`: the last field, always true, so a truncated packet is told from a short one.
 * The packet's keys are the fields' names, with a final "Id" spelled "ID" as Moleculer does
 * (parent_id → parentID). A field absent on the wire becomes, per packet, what Moleculer's
 * JSON serializer would have delivered: omitted, null or undefined (`absent` below), or the
 * zero of a field without `optional`.
 */
import protobuf from "protobufjs/light";
import { I64, LEN, VARINT, type Reader, type Writer } from "./bytes";
import { HELPERS as CODEC_HELPERS, createOpenCodec, tagOf, type MessageCodec, type OpenCodec } from "./contract-codec";
import { readData, writeData } from "./contracts-runtime";

type Kind = "string" | "double" | "uint32" | "bool" | "json" | "strings" | "data" | "meta" | "end";
interface Slot {
  key: string;
  index: number;
  id: number;
  kind: Kind;
  optional: boolean;
  /** When absent on the wire: leave the key out, or set it to null / undefined / the zero. */
  absent: "omit" | "null" | "undefined" | "zero";
  /**
   * Ours, not Moleculer's: it says which contract the payload is (a RES's `action`), so it is
   * written only when the payload went as its contract message, and read into
   * `DecodedPacket.hidden`, not the packet.
   */
  hidden: boolean;
}

const jsKey = (name: string) => (name.length > 2 && name.endsWith("Id") ? `${name.slice(0, -2)}ID` : name);

function kindOf(f: protobuf.Field): Kind {
  if (f.name === "end") return "end";
  if (f.repeated) {
    if (f.type !== "string") throw new Error(`envelope field ${f.fullName}: only repeated strings are supported`);
    return "strings";
  }
  if (f.type === "bytes") return "json";
  if (f.type === "Data") return "data";
  if (f.type === "Meta") return "meta";
  if (f.type === "string" || f.type === "double" || f.type === "uint32" || f.type === "bool") return f.type;
  throw new Error(`envelope field ${f.fullName}: type ${f.type} is not supported`);
}

export interface DecodedPacket {
  packet: Record<string, unknown>;
  /** The envelope's own fields that are not packet keys (a RES's `action`). */
  hidden: Record<string, unknown>;
  /** The end marker was there: the packet is whole. */
  end: boolean;
}

const HELPERS = {
  ...CODEC_HELPERS,
  writeData,
  readData,
  mergeMeta(rest: unknown, known: Record<string, unknown>): Record<string, unknown> {
    if (typeof rest !== "object" || rest === null || Array.isArray(rest))
      throw new RangeError("meta: known keys beside a JSON rest that is not an object");
    return Object.assign(rest, known);
  },
};
const WIRE: Record<Kind, number> = {
  string: LEN,
  double: I64,
  uint32: VARINT,
  bool: VARINT,
  json: LEN,
  strings: LEN,
  data: LEN,
  meta: LEN,
  end: VARINT,
};
const READ: Record<Kind, string> = {
  string: "r.string()",
  double: "r.double()",
  uint32: "r.uint32()",
  bool: "r.bool()",
  json: "JSON.parse(r.string())",
  strings: "",
  data: "",
  meta: "M.read(r, r.delimited())",
  end: "r.bool()",
};
const ZERO_SRC: Record<Kind, string> = {
  string: `""`,
  double: "0",
  uint32: "0",
  bool: "false",
  json: "undefined",
  strings: "[]",
  data: "undefined",
  meta: "undefined",
  end: "false",
};

/** `obj`: a packet, or an event envelope (outbox.ts), read by its keys only. */
type Write = (w: Writer, obj: object, data: unknown, codec: MessageCodec | null, hidden: Record<string, unknown> | undefined) => boolean;
type Read = (
  r: Reader,
  dataCodec: ((packet: Record<string, unknown>, hidden: Record<string, unknown>) => MessageCodec | null) | undefined,
  what: ((packet: Record<string, unknown>, hidden: Record<string, unknown>) => string) | undefined,
) => DecodedPacket;

/**
 * An envelope's write and read, generated from its fields as JavaScript (as the contract
 * codecs are, for the same reason: constant property names and tags in straight-line code).
 */
export class EnvelopeCodec {
  private readonly writeFn: Write;
  private readonly readFn: Read;

  /**
   * `opts.null` / `opts.undefined` name the keys that decode to null or undefined when absent
   * (the others are omitted, or zero when required); `opts.hidden` the envelope's own fields.
   */
  constructor(type: protobuf.Type, opts: { null?: string[]; undefined?: string[]; hidden?: string[] } = {}) {
    const slots: Slot[] = [...type.fieldsArray]
      .sort((a, b) => a.id - b.id)
      .map((f, index) => {
        const key = jsKey(f.name);
        const optional = f.options?.proto3_optional === true;
        return {
          key,
          index,
          id: f.id,
          kind: kindOf(f),
          optional,
          hidden: opts.hidden?.includes(key) ?? false,
          absent: opts.null?.includes(key) ? "null" : opts.undefined?.includes(key) ? "undefined" : optional ? "omit" : "zero",
        };
      });
    for (const k of [...(opts.null ?? []), ...(opts.undefined ?? []), ...(opts.hidden ?? [])])
      if (!slots.some((s) => s.key === k)) throw new Error(`${type.fullName} has no field for the packet key ${k}`);
    const where = JSON.stringify(type.fullName);
    const name = type.name.replace(/\W/g, "_"); // becomes part of the generated functions' names
    const prop = (k: string) => `[${JSON.stringify(k)}]`;
    // ctx.meta: its known keys in the Meta field, the rest in the `meta` JSON field
    const metaSlot = slots.find((s) => s.kind === "meta");
    const metaJson = metaSlot && slots.find((s) => s.key === "meta" && s.kind === "json");
    if (metaSlot && !metaJson) throw new Error(`${type.fullName}: a Meta field needs a \`meta\` bytes field beside it`);
    const metaField = type.fieldsArray.find((f) => f.type === "Meta");
    metaField?.resolve();
    const M = metaField ? createOpenCodec(metaField.resolvedType as protobuf.Type) : undefined;

    const writes = slots.map((s) => {
      const tag = tagOf(s.id, WIRE[s.kind]);
      const get = s.hidden ? `x = contract && hidden !== undefined ? hidden${prop(s.key)} : undefined;` : `x = obj${prop(s.key)};`;
      switch (s.kind) {
        case "string":
          return `${get} if (x != null) { if (typeof x !== "string") x = String(x); ${s.optional ? "" : `if (x !== "")`} { w.uint32(${tag}); w.string(x); } }`;
        case "double":
          return `${get} if (typeof x === "number"${s.optional ? "" : " && x !== 0"}) { w.uint32(${tag}); w.double(x); }`;
        case "uint32":
          return `${get} if (typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= 4294967295) { w.uint32(${tag}); w.uint32(x); }`;
        case "bool":
          // an optional flag must be a boolean; a required one is coerced (success, broadcast)
          return s.optional
            ? `${get} if (typeof x === "boolean") { w.uint32(${tag}); w.bool(x); }`
            : `${get} if (x) { w.uint32(${tag}); w.bool(true); }`;
        case "json":
          if (s === metaJson)
            return `${get} if (x !== undefined) { let rest = x;
              if (H.isPlainObject(x)) { w.uint32(${tagOf(metaSlot!.id, LEN)}); const at = w.fork(); rest = M.write(w, x); w.join(at); }
              if (rest !== undefined) { const j = JSON.stringify(rest); if (j !== undefined) { w.uint32(${tag}); w.string(j); } } }`;
          return `${get} if (x !== undefined) { const j = JSON.stringify(x); if (j !== undefined) { w.uint32(${tag}); w.string(j); } }`;
        case "meta":
          return ""; // with the `meta` JSON field
        case "strings":
          return `${get} if (Array.isArray(x)) for (let i = 0; i < x.length; i++) { w.uint32(${tag}); w.string(String(x[i])); }`;
        case "data":
          return `contract = H.writeData(w, ${s.id}, data, codec);`;
        case "end":
          return `w.uint32(${tag}); w.bool(true);`;
      }
    });
    // eslint-disable-next-line @typescript-eslint/no-implied-eval -- generating the code is the point (see the class); its source is built from the envelope type's reflection only (keys through JSON.stringify, numeric tags, fixed templates), never from a packet
    const makeWrite = new Function(
      "H",
      "M",
      `"use strict"; return function write${name}(w, obj, data, codec, hidden) {
      let contract = false; let x; ${writes.join("\n")} return contract; };`,
    ) as (h: typeof HELPERS, m: OpenCodec | undefined) => Write;
    this.writeFn = makeWrite(HELPERS, M);

    const cases = slots.map((s) => {
      const tag = tagOf(s.id, WIRE[s.kind]);
      const v = `f${s.index}`;
      switch (s.kind) {
        case "strings":
          return `case ${tag}: (${v} ??= []).push(r.string()); break;`;
        case "data":
          // decoded after the loop, once the action or event name is known
          return `case ${tag}: dataAt = r.pos; r.pos = r.delimited(); break;`;
        case "end":
          return `case ${tag}: end = r.bool(); break;`;
        default:
          return `case ${tag}: ${v} = ${READ[s.kind]}; break;`;
      }
    });
    const builds = slots.map((s) => {
      if (s.kind === "end" || s.kind === "meta") return "";
      const target = `${s.hidden ? "h" : "p"}${prop(s.key)}`;
      if (s.kind === "data") return `${target} = undefined;`; // its place among the keys; the value comes below
      const v = `f${s.index}`;
      if (s === metaJson) {
        const known = `f${metaSlot!.index}`;
        // The known keys (fixed names) go into the JSON rest, not the other way: a "__proto__"
        // key of the rest must stay an own key, as JSON.parse made it.
        return `${target} = ${known} === undefined ? ${v} : ${v} === undefined ? ${known} : H.mergeMeta(${v}, ${known});`;
      }
      const absent = s.absent === "null" ? "null" : s.absent === "undefined" ? "undefined" : s.absent === "zero" ? ZERO_SRC[s.kind] : null;
      return absent === null ? `if (${v} !== undefined) ${target} = ${v};` : `${target} = ${v} === undefined ? ${absent} : ${v};`;
    });
    const data = slots.find((s) => s.kind === "data");
    // eslint-disable-next-line @typescript-eslint/no-implied-eval -- as for writeFn: source from the envelope type's reflection only, never from a packet
    const makeRead = new Function(
      "H",
      "M",
      `"use strict"; const K = new Set(${JSON.stringify(slots.map((s) => s.id))});
      return function read${name}(r, dataCodec, what) {
        let ${slots.map((s) => `f${s.index}`).join(", ")}; let dataAt = -1; let end = false;
        while (r.pos < r.end) { const tag = r.uint32(); switch (tag) { ${cases.join("\n")} default: H.other(r, tag, K, ${where}); } }
        const p = {}; const h = {}; ${builds.join("\n")}
        ${
          data
            ? `if (dataAt >= 0) { const after = r.pos; r.pos = dataAt;
          p${prop(data.key)} = H.readData(r, ${tagOf(data.id, LEN)}, () => (dataCodec ? dataCodec(p, h) : null), () => (what ? what(p, h) : ${JSON.stringify(data.key)}));
          r.pos = after; }`
            : ""
        }
        return { packet: p, hidden: h, end };
      };`,
    ) as (h: typeof HELPERS, m: OpenCodec | undefined) => Read;
    this.readFn = makeRead(HELPERS, M);
  }

  /**
   * Writes `obj`'s fields; `data` is the payload's value (the `Data` field) and `codec` its
   * contract; `hidden` holds the envelope's own fields (written after the payload). Returns
   * whether the payload went as its contract message. Values of a wrong type are coerced as
   * before the contracts (strings) or left out (numbers, flags).
   */
  write(w: Writer, obj: object, data?: unknown, codec: MessageCodec | null = null, hidden?: Record<string, unknown>): boolean {
    return this.writeFn(w, obj, data, codec, hidden);
  }

  /**
   * Reads a whole envelope. The payload is decoded last, with the codec `dataCodec` picks from
   * the other fields (the action or event it belongs to), whatever the order on the wire.
   */
  read(
    r: Reader,
    dataCodec?: (packet: Record<string, unknown>, hidden: Record<string, unknown>) => MessageCodec | null,
    what?: (packet: Record<string, unknown>, hidden: Record<string, unknown>) => string,
  ): DecodedPacket {
    return this.readFn(r, dataCodec, what);
  }
}
