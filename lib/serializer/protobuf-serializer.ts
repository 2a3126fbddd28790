/**
 * Moleculer serializer that puts every packet in a protobuf envelope (proto/meridian/wire/v1/
 * packets.proto) and the params/data of actions and events with a contract (proto/meridian/
 * <service>/v1/*.proto) in their own protobuf messages. Anything else travels as generic JSON
 * inside the envelope: values without a contract, values that do not fit theirs exactly (so
 * validators see what the caller sent; a business payload that does is counted in
 * meridian_serializer_json_fallback_total), errors, meta, headers, INFO. Moleculer 0.15 dropped its own
 * ProtoBuf serializer (0.14's only wrapped JSON bytes in a protobuf envelope).
 *
 * Which contract a payload has:
 *  - REQ: its action's request type; EVENT: its event's type (both name themselves);
 *  - RES: a response only carries the request id. The node that sends a RES is the node that
 *    received the REQ, so deserializing a REQ of a business action (a service with contracts)
 *    remembers id → action, and serializing the RES takes the entry out (and counts a JSON
 *    answer as a fallback by the action's name). The RES then names the action
 *    in the envelope (`Response.action`), so the receiver decodes from the bytes alone and
 *    never needs a map of its own: a node that both calls and serves keeps only the REQs it
 *    received. The map is bounded (`pendingLimit`, default 10,000 entries, the oldest evicted
 *    first; about 1–2 MB at the limit): an entry is only left behind by a request that never
 *    gets a response, and a RES whose entry was evicted (more than `pendingLimit` requests in
 *    flight on one node) is still correct, just sent as generic JSON.
 *
 * Bad bytes (truncated, garbage, an unknown packet type or contract) make deserialize throw
 * a ProtobufPacketError after logging it; Moleculer's transporter catches it, logs it again
 * as "Invalid incoming packet" and drops the packet (AMQP acknowledges it: no redelivery loop).
 */
import { Serializers, type Logger, type ServiceBroker } from "moleculer";
import protobuf from "protobufjs/light";
import type * as pb from "../../proto/gen/meridian/wire/v1/packets";
import { countBusiness } from "../metrics";
import { explainMisfit, type MessageCodec } from "./contract-codec";
import { createContractsRuntime, decodeData, encodeData, json, runtime, utf8, type ContractsRuntime } from "./contracts-runtime";

export class ProtobufPacketError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ProtobufPacketError";
  }
}

export interface ProtobufSerializerOptions {
  /** Most request ids remembered for their responses (see above). Default 10,000. */
  pendingLimit?: number;
  /**
   * The contracts to speak, as proto/gen/descriptor.json's JSON. Default: the generated
   * descriptor (shared by the process). The mixed-version test gives each node its own.
   */
  descriptor?: object;
}

type Obj = Record<string, any>;
type Decoded<M> = { [K in keyof M]: M[K] } & Obj;
const parse = (b: Uint8Array | null | undefined): any => (b == null ? undefined : JSON.parse(utf8(b)));
const str = (v: unknown) => (typeof v === "string" ? v : v == null ? undefined : String(v));
const uint = (v: unknown) => (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff ? v : undefined);
const dbl = (v: unknown) => (typeof v === "number" ? v : undefined);
const bool = (v: unknown) => (typeof v === "boolean" ? v : undefined);

/** The envelope's message types, from a runtime's reflection. */
function packetTypes(root: protobuf.Root) {
  const t = (name: string) => root.lookupType(`meridian.wire.v1.${name}`);
  return {
    Request: t("Request"), Response: t("Response"), Event: t("Event"), Info: t("Info"), Heartbeat: t("Heartbeat"),
    Discover: t("Discover"), Disconnect: t("Disconnect"), Ping: t("Ping"), Pong: t("Pong"), Gossip: t("Gossip"),
  };
}

/** Required string fields of the envelope: a decoded packet without them is garbage. */
function required(m: Obj, ...names: string[]): void {
  if (m.end !== true) throw new Error("no end marker (truncated?)");
  for (const n of names) if (typeof m[n] !== "string" || m[n] === "") throw new Error(`missing ${n}`);
}

const has = (m: Obj, name: string) => m[name] != null;

export class ProtobufSerializer extends Serializers.Base {
  readonly pendingLimit: number;
  /** Request id → action name, for the REQs this node received and has not answered yet. */
  readonly pending = new Map<string, string>();
  private logger?: Logger;

  private readonly rt: ContractsRuntime;
  private readonly T: ReturnType<typeof packetTypes>;

  constructor(opts: ProtobufSerializerOptions = {}) {
    super();
    this.pendingLimit = opts.pendingLimit ?? 10_000;
    this.rt = opts.descriptor ? createContractsRuntime(opts.descriptor) : runtime;
    this.T = packetTypes(this.rt.root);
  }

  override init(broker: ServiceBroker): void {
    super.init(broker);
    this.logger = broker.getLogger("serializer");
  }

  private remember(id: string, action: string): void {
    if (this.pending.size >= this.pendingLimit && !this.pending.has(id)) {
      // Maps iterate in insertion order: the first key is the oldest.
      this.pending.delete(this.pending.keys().next().value as string);
    }
    this.pending.set(id, action);
  }

  override serialize(obj: Obj, type: string): Buffer {
    switch (type) {
      case "REQ": {
        const codec = this.rt.requestCodec(obj.action);
        const { data, contract } = encodeData(obj.params, codec);
        if (!contract && this.rt.isBusinessAction(obj.action)) this.fallback("REQ", obj.action, codec, obj.params);
        return this.encode(this.T.Request, {
          ver: str(obj.ver), sender: str(obj.sender), id: str(obj.id), action: str(obj.action), params: data,
          meta: json(obj.meta), headers: json(obj.headers), timeout: dbl(obj.timeout), level: uint(obj.level),
          tracing: bool(obj.tracing), parentId: str(obj.parentID), requestId: str(obj.requestID), caller: str(obj.caller),
          stream: bool(obj.stream), seq: uint(obj.seq),
        });
      }
      case "RES": {
        const action = this.pending.get(obj.id);
        if (action !== undefined) this.pending.delete(obj.id);
        const codec = action !== undefined && obj.success ? this.rt.responseCodec(action) : null;
        const { data, contract } = encodeData(obj.data, codec);
        if (!contract && action !== undefined && obj.success) this.fallback("RES", action, codec, obj.data);
        return this.encode(this.T.Response, {
          ver: str(obj.ver), sender: str(obj.sender), id: str(obj.id), success: Boolean(obj.success), data,
          meta: json(obj.meta), headers: json(obj.headers), error: json(obj.error), stream: bool(obj.stream),
          seq: uint(obj.seq), action: contract ? action : undefined,
        });
      }
      case "EVENT": {
        const codec = this.rt.eventCodec(obj.event);
        const { data, contract } = encodeData(obj.data, codec);
        if (!contract && this.rt.isBusinessEvent(obj.event)) this.fallback("EVENT", obj.event, codec, obj.data);
        return this.encode(this.T.Event, {
          ver: str(obj.ver), sender: str(obj.sender), id: str(obj.id), event: str(obj.event), data,
          meta: json(obj.meta), headers: json(obj.headers), groups: Array.isArray(obj.groups) ? obj.groups.map(String) : [],
          broadcast: Boolean(obj.broadcast), level: uint(obj.level), tracing: bool(obj.tracing), parentId: str(obj.parentID),
          requestId: str(obj.requestID), caller: str(obj.caller), needAck: bool(obj.needAck),
        });
      }
      case "INFO":
        return this.encode(this.T.Info, {
          ver: str(obj.ver), sender: str(obj.sender), services: json(obj.services),
          ipList: Array.isArray(obj.ipList) ? obj.ipList.map(String) : [], hostname: str(obj.hostname),
          client: json(obj.client), config: json(obj.config), instanceId: str(obj.instanceID),
          metadata: json(obj.metadata), seq: dbl(obj.seq),
        });
      case "HEARTBEAT":
        return this.encode(this.T.Heartbeat, { ver: str(obj.ver), sender: str(obj.sender), cpu: dbl(obj.cpu) });
      case "DISCOVER":
        return this.encode(this.T.Discover, { ver: str(obj.ver), sender: str(obj.sender) });
      case "DISCONNECT":
        return this.encode(this.T.Disconnect, { ver: str(obj.ver), sender: str(obj.sender) });
      case "PING":
        return this.encode(this.T.Ping, { ver: str(obj.ver), sender: str(obj.sender), time: dbl(obj.time), id: str(obj.id) });
      case "PONG":
        return this.encode(this.T.Pong, {
          ver: str(obj.ver), sender: str(obj.sender), time: dbl(obj.time), id: str(obj.id), arrived: dbl(obj.arrived),
        });
      case "GOSSIP_HELLO":
      case "GOSSIP_REQ":
      case "GOSSIP_RES": {
        const { ver, sender, ...rest } = obj;
        return this.encode(this.T.Gossip, { ver: str(ver), sender: str(sender), json: json(rest) });
      }
      default:
        throw new ProtobufPacketError(`ProtobufSerializer: cannot serialize packet type ${JSON.stringify(type)}`);
    }
  }

  /**
   * Counts a business payload that went as JSON (meridian_serializer_json_fallback_total):
   * no contract, or a value that does not fit it. null, undefined and Buffers have no
   * contract by design and are not counted. The reason is logged at debug level.
   */
  private fallback(packet: string, name: string, codec: MessageCodec | null, value: unknown): void {
    if (value == null || Buffer.isBuffer(value)) return;
    countBusiness(this.broker, "serializer_json_fallback", { packet, name });
    this.logger?.debug(`${packet} ${name} sent as JSON: ${codec ? explainMisfit(codec.type, value) : "no contract"}`);
  }

  private encode(type: protobuf.Type, message: Obj): Buffer {
    message.end = true;
    return type.encode(message).finish() as Buffer;
  }

  override deserialize(buf: Buffer | string, type: string): any {
    try {
      if (typeof buf === "string") throw new Error("expected bytes, got a string");
      return this.decode(buf, type);
    } catch (err) {
      const size = typeof buf === "string" ? buf.length : buf?.length;
      const error = new ProtobufPacketError(
        `Invalid protobuf ${type} packet (${size} bytes) rejected: ${(err as Error).message}`,
        { cause: err },
      );
      this.logger?.error(error.message);
      throw error;
    }
  }

  private decode(buf: Uint8Array, type: string): Obj {
    switch (type) {
      case "REQ": {
        const m = this.T.Request.decode(buf) as unknown as Decoded<pb.Request>;
        required(m, "ver", "sender", "id", "action");
        const out: Obj = {
          ver: m.ver, sender: m.sender, id: m.id, action: m.action,
          params: decodeData(m.params, () => this.rt.requestCodec(m.action), `action ${m.action}`),
          meta: parse(m.meta), headers: parse(m.headers),
          tracing: m.tracing ?? null, parentID: m.parentId ?? null, requestID: m.requestId ?? null, caller: m.caller ?? null,
        };
        if (has(m, "timeout")) out.timeout = m.timeout;
        if (has(m, "level")) out.level = m.level;
        if (has(m, "stream")) out.stream = m.stream;
        if (has(m, "seq")) out.seq = m.seq;
        if (this.rt.isBusinessAction(m.action)) this.remember(m.id, m.action);
        return out;
      }
      case "RES": {
        const m = this.T.Response.decode(buf) as unknown as Decoded<pb.Response>;
        required(m, "ver", "sender", "id");
        const action = m.action ?? undefined;
        const out: Obj = {
          ver: m.ver, sender: m.sender, id: m.id, success: m.success,
          data: decodeData(m.data, () => (action ? this.rt.responseCodec(action) : null), `the response of ${action ?? "an unnamed action"}`),
          meta: parse(m.meta), headers: parse(m.headers),
        };
        if (has(m, "error")) out.error = parse(m.error);
        if (has(m, "stream")) out.stream = m.stream;
        if (has(m, "seq")) out.seq = m.seq;
        return out;
      }
      case "EVENT": {
        const m = this.T.Event.decode(buf) as unknown as Decoded<pb.Event>;
        required(m, "ver", "sender", "id", "event");
        const out: Obj = {
          ver: m.ver, sender: m.sender, id: m.id, event: m.event,
          data: decodeData(m.data, () => this.rt.eventCodec(m.event), `event ${m.event}`),
          broadcast: m.broadcast,
          meta: parse(m.meta), headers: parse(m.headers),
          tracing: m.tracing ?? null, parentID: m.parentId ?? null, requestID: m.requestId ?? null, caller: m.caller ?? null,
          needAck: m.needAck ?? null,
        };
        if (m.groups.length) out.groups = m.groups;
        if (has(m, "level")) out.level = m.level;
        return out;
      }
      case "INFO": {
        const m = this.T.Info.decode(buf) as unknown as Decoded<pb.Info>;
        required(m, "ver", "sender");
        const out: Obj = { ver: m.ver, sender: m.sender, services: parse(m.services), ipList: m.ipList, hostname: m.hostname ?? undefined };
        if (has(m, "client")) out.client = parse(m.client);
        if (has(m, "config")) out.config = parse(m.config);
        if (has(m, "instanceId")) out.instanceID = m.instanceId;
        if (has(m, "metadata")) out.metadata = parse(m.metadata);
        if (has(m, "seq")) out.seq = m.seq;
        return out;
      }
      case "HEARTBEAT": {
        const m = this.T.Heartbeat.decode(buf) as unknown as Decoded<pb.Heartbeat>;
        required(m, "ver", "sender");
        return { ver: m.ver, sender: m.sender, cpu: m.cpu ?? null };
      }
      case "DISCOVER":
      case "DISCONNECT": {
        const m = (type === "DISCOVER" ? this.T.Discover : this.T.Disconnect).decode(buf) as unknown as Decoded<pb.Discover>;
        required(m, "ver", "sender");
        return { ver: m.ver, sender: m.sender };
      }
      case "PING": {
        const m = this.T.Ping.decode(buf) as unknown as Decoded<pb.Ping>;
        required(m, "ver", "sender", "id");
        return { ver: m.ver, sender: m.sender, time: m.time, id: m.id };
      }
      case "PONG": {
        const m = this.T.Pong.decode(buf) as unknown as Decoded<pb.Pong>;
        required(m, "ver", "sender", "id");
        return { ver: m.ver, sender: m.sender, time: m.time, id: m.id, arrived: m.arrived };
      }
      case "GOSSIP_HELLO":
      case "GOSSIP_REQ":
      case "GOSSIP_RES": {
        const m = this.T.Gossip.decode(buf) as unknown as Decoded<pb.Gossip>;
        required(m, "ver", "sender");
        const rest = parse(m.json);
        if (typeof rest !== "object" || rest === null || Array.isArray(rest)) throw new Error("gossip body is not an object");
        return { ...rest, ver: m.ver, sender: m.sender };
      }
      default:
        throw new Error(`unknown packet type ${JSON.stringify(type)}`);
    }
  }
}
