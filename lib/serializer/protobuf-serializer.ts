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
 * Every packet is written in one pass into one reusable buffer (bytes.ts): the envelope's
 * fields, then the payload checked against its contract while it is written (contract-codec.ts),
 * falling back to JSON by rewinding. Reading builds the packet and the payload directly.
 *
 * Bad bytes (truncated, garbage, an unknown packet type or contract) make deserialize throw
 * a ProtobufPacketError after logging it; Moleculer's transporter catches it, logs it again
 * as "Invalid incoming packet" and drops the packet (AMQP acknowledges it: no redelivery loop).
 */
import { Serializers, type Logger, type ServiceBroker } from "moleculer";
import protobuf from "protobufjs/light";
import { countBusiness } from "../metrics";
import { Reader, Writer } from "./bytes";
import { explainMisfit, type MessageCodec } from "./contract-codec";
import { createContractsRuntime, runtime, type ContractsRuntime } from "./contracts-runtime";
import { EnvelopeCodec } from "./envelope";

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

/** A Moleculer packet's fields (its shape depends on the packet type). */
type Obj = Record<string, unknown>;

/**
 * Each packet type's envelope, and what its absent fields decode to: exactly what Moleculer's
 * JSON serializer delivers for the same packet (the round-trip test holds every packet to it).
 */
function envelopes(root: protobuf.Root) {
  const t = (name: string) => root.lookupType(`meridian.wire.v1.${name}`);
  const context = ["tracing", "parentID", "requestID", "caller"];
  return {
    REQ: new EnvelopeCodec(t("Request"), { null: context, undefined: ["params", "meta", "headers"] }),
    RES: new EnvelopeCodec(t("Response"), { undefined: ["data", "meta", "headers"], hidden: ["action"] }),
    EVENT: new EnvelopeCodec(t("Event"), { null: [...context, "needAck"], undefined: ["data", "meta", "headers"] }),
    INFO: new EnvelopeCodec(t("Info"), { undefined: ["services", "hostname"] }),
    HEARTBEAT: new EnvelopeCodec(t("Heartbeat"), { null: ["cpu"] }),
    DISCOVER: new EnvelopeCodec(t("Discover")),
    DISCONNECT: new EnvelopeCodec(t("Disconnect")),
    PING: new EnvelopeCodec(t("Ping")),
    PONG: new EnvelopeCodec(t("Pong")),
    GOSSIP: new EnvelopeCodec(t("Gossip")),
  };
}

/** Required string fields of the envelope: a decoded packet without them is garbage. */
function required<K extends string>(end: boolean, m: Obj, ...names: K[]): asserts m is Obj & Record<K, string> {
  if (!end) throw new Error("no end marker (truncated?)");
  for (const n of names) if (typeof m[n] !== "string" || m[n] === "") throw new Error(`missing ${n}`);
}

export class ProtobufSerializer extends Serializers.Base {
  readonly pendingLimit: number;
  /** Request id → action name, for the REQs this node received and has not answered yet. */
  readonly pending = new Map<string, string>();
  private logger?: Logger;

  private readonly rt: ContractsRuntime;
  private readonly E: ReturnType<typeof envelopes>;
  /** One buffer for every packet this serializer writes (serialize is synchronous). */
  private readonly w = new Writer();
  /**
   * Set while a packet is written: a value's toJSON or getter that serializes another packet
   * (re-entering) gets a fresh Writer instead of overwriting the one in use.
   */
  private writing = false;

  constructor(opts: ProtobufSerializerOptions = {}) {
    super();
    this.pendingLimit = opts.pendingLimit ?? 10_000;
    this.rt = opts.descriptor ? createContractsRuntime(opts.descriptor) : runtime;
    this.E = envelopes(this.rt.root);
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
    if (this.writing) return this.write(new Writer(1024), obj, type);
    this.writing = true;
    try {
      this.w.reset();
      return this.write(this.w, obj, type);
    } finally {
      this.writing = false;
    }
  }

  private write(w: Writer, obj: Obj, type: string): Buffer {
    switch (type) {
      case "REQ": {
        const codec = this.rt.requestCodec(obj.action);
        const contract = this.E.REQ.write(w, obj, obj.params, codec);
        if (!contract && this.rt.isBusinessAction(obj.action)) this.fallback("REQ", obj.action, codec, obj.params);
        break;
      }
      case "RES": {
        let action: string | undefined;
        // Only string ids are remembered (decode checks them): any other id has no entry.
        if (typeof obj.id === "string") {
          action = this.pending.get(obj.id);
          if (action !== undefined) this.pending.delete(obj.id);
        }
        const codec = action !== undefined && obj.success ? this.rt.responseCodec(action) : null;
        // The action is named only when the data is its contract message (the receiver needs it to decode).
        const contract = this.E.RES.write(w, obj, obj.data, codec, { action });
        if (!contract && action !== undefined && obj.success) this.fallback("RES", action, codec, obj.data);
        break;
      }
      case "EVENT": {
        const codec = this.rt.eventCodec(obj.event);
        const contract = this.E.EVENT.write(w, obj, obj.data, codec);
        if (!contract && this.rt.isBusinessEvent(obj.event)) this.fallback("EVENT", obj.event, codec, obj.data);
        break;
      }
      case "INFO":
      case "HEARTBEAT":
      case "DISCOVER":
      case "DISCONNECT":
      case "PING":
      case "PONG":
        this.E[type].write(w, obj);
        break;
      case "GOSSIP_HELLO":
      case "GOSSIP_REQ":
      case "GOSSIP_RES": {
        const { ver, sender, ...rest } = obj;
        this.E.GOSSIP.write(w, { ver, sender, json: rest });
        break;
      }
      default:
        throw new ProtobufPacketError(`ProtobufSerializer: cannot serialize packet type ${JSON.stringify(type)}`);
    }
    return w.finish();
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

  // Serializers.Base's own return type (moleculer/src/serializers/base.d.ts): a packet's fields
  // depend on its type, and callers (the transporter, tests) read them as such; decode is typed.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
  override deserialize(buf: Buffer | string, type: string): any {
    try {
      if (typeof buf === "string") throw new Error("expected bytes, got a string");
      return this.decode(buf, type);
    } catch (err) {
      const size = typeof buf === "string" ? buf.length : buf?.length;
      const error = new ProtobufPacketError(`Invalid protobuf ${type} packet (${size} bytes) rejected: ${(err as Error).message}`, {
        cause: err,
      });
      this.logger?.error(error.message);
      throw error;
    }
  }

  private decode(buf: Uint8Array, type: string): Obj {
    const r = new Reader(buf);
    switch (type) {
      case "REQ": {
        const { packet, end } = this.E.REQ.read(
          r,
          (p) => this.rt.requestCodec(p.action),
          (p) => `action ${String(p.action)}`,
        );
        required(end, packet, "ver", "sender", "id", "action");
        if (this.rt.isBusinessAction(packet.action)) this.remember(packet.id, packet.action);
        return packet;
      }
      case "RES": {
        const { packet, end } = this.E.RES.read(
          r,
          // `action` is a string field: a string when present
          (_, h) => (typeof h.action === "string" && h.action ? this.rt.responseCodec(h.action) : null),
          (_, h) => `the response of ${typeof h.action === "string" ? h.action : "an unnamed action"}`,
        );
        required(end, packet, "ver", "sender", "id");
        return packet;
      }
      case "EVENT": {
        const { packet, end } = this.E.EVENT.read(
          r,
          (p) => this.rt.eventCodec(p.event),
          (p) => `event ${String(p.event)}`,
        );
        required(end, packet, "ver", "sender", "id", "event");
        // `groups` is a repeated field: always an array ([] when absent)
        if (Array.isArray(packet.groups) && packet.groups.length === 0) delete packet.groups;
        return packet;
      }
      case "INFO":
      case "HEARTBEAT":
      case "DISCOVER":
      case "DISCONNECT": {
        const { packet, end } = this.E[type].read(r);
        required(end, packet, "ver", "sender");
        return packet;
      }
      case "PING":
      case "PONG": {
        const { packet, end } = this.E[type].read(r);
        required(end, packet, "ver", "sender", "id");
        return packet;
      }
      case "GOSSIP_HELLO":
      case "GOSSIP_REQ":
      case "GOSSIP_RES": {
        const { packet, end } = this.E.GOSSIP.read(r);
        required(end, packet, "ver", "sender");
        const rest = packet.json;
        if (typeof rest !== "object" || rest === null || Array.isArray(rest)) throw new Error("gossip body is not an object");
        return { ...rest, ver: packet.ver, sender: packet.sender };
      }
      default:
        throw new Error(`unknown packet type ${JSON.stringify(type)}`);
    }
  }
}
