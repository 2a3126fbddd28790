/**
 * The contracts at run time, once per process and shared by every broker and by the event
 * layer: the protobufjs reflection of proto/gen/descriptor.json, the registry read from it,
 * the compiled codecs, and the `Data` encoding (a contract message, or JSON as the fallback)
 * used by Moleculer packets and by business events on RabbitMQ alike.
 */
import protobuf from "protobufjs/light";
import descriptor from "../../proto/gen/descriptor.json";
import { readContracts, type Contracts } from "../../proto/registry";
import { LEN, VARINT, type Reader, type Writer } from "./bytes";
import { createCodecs, type MessageCodec } from "./contract-codec";

/**
 * One set of contracts: its reflection, registry and compiled codecs. The functions do not use
 * `this` (closures over the runtime): the process's set is exported as plain functions below.
 */
export interface ContractsRuntime {
  root: protobuf.Root;
  contracts: Contracts;
  codecFor(this: void, type: protobuf.Type): MessageCodec;
  /** An action of a service that has contracts: its payloads should never travel as JSON. */
  isBusinessAction(this: void, action: unknown): action is string;
  /**
   * An event of the business catalog. Those go through the outbox, never as Moleculer
   * events; one that did anyway is counted when it is JSON. Moleculer events for
   * infrastructure (`cache.clean.product`, `$node.*`) have no contract and are not counted.
   */
  isBusinessEvent(this: void, event: unknown): event is string;
  requestCodec(this: void, action: unknown): MessageCodec | null;
  responseCodec(this: void, action: string): MessageCodec | null;
  eventCodec(this: void, event: unknown): MessageCodec | null;
  /**
   * The services whose contracts say they consume a business event through their work queue
   * (`consumes`, not `follows`); undefined for an event with no contract.
   */
  consumersOf(this: void, event: string): readonly string[] | undefined;
}

/**
 * The runtime of a descriptor (proto/gen/descriptor.json's shape). The process uses one, built
 * from the generated descriptor (below); a test of mixed versions builds one per version.
 */
export function createContractsRuntime(json: object): ContractsRuntime {
  const root = protobuf.Root.fromJSON(json);
  root.resolveAll();
  const contracts = readContracts(root);
  const codecFor = createCodecs();
  const consumers = new Map<string, string[]>(
    [...contracts.events.keys()].map((e) => [e, [...contracts.services.values()].filter((s) => s.consumes.includes(e)).map((s) => s.name)]),
  );
  const services = new Set([...contracts.actions.keys()].map((a) => a.slice(0, a.indexOf("."))));
  return {
    root,
    contracts,
    codecFor,
    isBusinessAction: (action): action is string => typeof action === "string" && services.has(action.slice(0, action.indexOf("."))),
    isBusinessEvent: (event): event is string => typeof event === "string" && contracts.events.has(event),
    requestCodec(action) {
      const c = typeof action === "string" ? contracts.actions.get(action) : undefined;
      return c ? codecFor(c.request) : null;
    },
    responseCodec(action) {
      const c = contracts.actions.get(action);
      return c?.response ? codecFor(c.response) : null;
    },
    consumersOf(event) {
      return consumers.get(event);
    },
    eventCodec(event) {
      const t = typeof event === "string" ? contracts.events.get(event) : undefined;
      return t ? codecFor(t) : null;
    },
  };
}

// One reflection and one set of compiled codecs per process, shared by every broker.
export const runtime = createContractsRuntime(descriptor);
export const { root, contracts, codecFor, isBusinessAction, isBusinessEvent, requestCodec, responseCodec, eventCodec, consumersOf } =
  runtime;

/** Field name → field number of a message, read from its contract (so no number is written twice). */
function fieldNumbers(type: protobuf.Type): Record<string, number> {
  return Object.fromEntries(type.fieldsArray.map((f) => [f.name, f.id]));
}

/** Throws unless a field came with the wire type its declaration gives it. */
function expectWireType(tag: number, wireType: number, what: string): void {
  if ((tag & 7) !== wireType) throw new RangeError(`${what}: wire type ${tag & 7}, expected ${wireType}`);
}

const D = fieldNumbers(root.lookupType("meridian.wire.v1.Data")) as { isNull: number; json: number; buffer: number; message: number };

/**
 * Writes REQ params / RES data / EVENT data as field `field` (a `meridian.wire.v1.Data`):
 * the contract message when the value fits it, else JSON; answers whether the contract was
 * used. undefined leaves the field absent.
 */
export function writeData(w: Writer, field: number, value: unknown, codec: MessageCodec | null): boolean {
  if (value === undefined) return false;
  const start = w.pos;
  w.tag(field, LEN);
  const at = w.fork();
  if (value === null) {
    w.tag(D.isNull, VARINT);
    w.bool(true);
  } else if (Buffer.isBuffer(value)) {
    w.tag(D.buffer, LEN);
    w.bytes(value);
  } else {
    if (codec) {
      const mark = w.pos;
      w.tag(D.message, LEN);
      const body = w.fork();
      if (codec.write(w, value)) {
        w.join(body);
        w.join(at);
        return true;
      }
      w.pos = mark; // does not fit: rewind, and send it as JSON
    }
    const s = JSON.stringify(value);
    if (s === undefined) {
      w.pos = start;
      return false;
    }
    w.tag(D.json, LEN);
    w.string(s);
  }
  w.join(at);
  return false;
}

/**
 * Reads a `Data` field's value (its tag was read); `codec` is asked only for a contract
 * message, and `what` (the action or event, for an error) only when something is wrong.
 */
export function readData(r: Reader, tag: number, codec: () => MessageCodec | null, what: () => string): unknown {
  expectWireType(tag, LEN, "payload");
  const end = r.delimited();
  let value: unknown = undefined;
  while (r.pos < end) {
    const t = r.uint32();
    const id = t >>> 3;
    if (id === D.isNull) {
      r.skip(t & 7);
      value = null;
    } else if (id === D.json) {
      expectWireType(t, LEN, "payload");
      value = JSON.parse(r.string());
    } else if (id === D.buffer) {
      expectWireType(t, LEN, "payload");
      value = Buffer.from(r.bytes());
    } else if (id === D.message) {
      expectWireType(t, LEN, "payload");
      const c = codec();
      if (!c) throw new Error(`a contract message for ${what()}, which has no contract here`);
      value = c.read(r, r.delimited());
    } else r.skip(t & 7);
  }
  if (r.pos !== end) throw new RangeError(`the payload of ${what()} overruns its length`);
  return value;
}
