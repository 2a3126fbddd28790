/**
 * The contracts at run time, once per process and shared by every broker and by the event
 * layer: the protobufjs reflection of proto/gen/descriptor.json, the registry read from it,
 * the compiled codecs, and the `Data` encoding (a contract message, or JSON as the fallback)
 * used by Moleculer packets and by business events on RabbitMQ alike.
 */
import protobuf from "protobufjs/light";
import descriptor from "../../proto/gen/descriptor.json";
import { readContracts, type Contracts } from "../../proto/registry";
import type * as pb from "../../proto/gen/meridian/wire/v1/packets";
import { createCodecs, type MessageCodec } from "./contract-codec";

/** One set of contracts: its reflection, registry and compiled codecs. */
export interface ContractsRuntime {
  root: protobuf.Root;
  contracts: Contracts;
  codecFor(type: protobuf.Type): MessageCodec;
  /** An action of a service that has contracts: its payloads should never travel as JSON. */
  isBusinessAction(action: unknown): action is string;
  /**
   * An event of the business catalog. Those go through the outbox, never as Moleculer
   * events; one that did anyway is counted when it is JSON. Moleculer events for
   * infrastructure (`cache.clean.product`, `$node.*`) have no contract and are not counted.
   */
  isBusinessEvent(event: unknown): event is string;
  requestCodec(action: unknown): MessageCodec | null;
  responseCodec(action: string): MessageCodec | null;
  eventCodec(event: unknown): MessageCodec | null;
}

/**
 * The runtime of a descriptor (proto/gen/descriptor.json's shape). The process uses one, built
 * from the generated descriptor (below); a test of mixed versions builds one per version.
 */
export function createContractsRuntime(json: object): ContractsRuntime {
  const root = protobuf.Root.fromJSON(json as protobuf.INamespace);
  root.resolveAll();
  const contracts = readContracts(root);
  const codecFor = createCodecs();
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
    eventCodec(event) {
      const t = typeof event === "string" ? contracts.events.get(event) : undefined;
      return t ? codecFor(t) : null;
    },
  };
}

// One reflection and one set of compiled codecs per process, shared by every broker.
export const runtime = createContractsRuntime(descriptor);
export const { root, contracts, codecFor, isBusinessAction, isBusinessEvent, requestCodec, responseCodec, eventCodec } = runtime;

type Obj = Record<string, any>;

export const utf8 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("utf8");
/** JSON bytes of a schemaless value; undefined stays absent. */
export function json(v: unknown): Buffer | undefined {
  if (v === undefined) return undefined;
  const s = JSON.stringify(v);
  return s === undefined ? undefined : Buffer.from(s);
}

/** Encodes REQ params / RES data / EVENT data; `contract` says whether `message` was used. */
export function encodeData(value: unknown, codec: MessageCodec | null): { data?: pb.Data; contract: boolean } {
  if (value === undefined) return { contract: false };
  if (value === null) return { data: { isNull: true } as pb.Data, contract: false };
  if (Buffer.isBuffer(value)) return { data: { buffer: value } as pb.Data, contract: false };
  if (codec) {
    const bytes = codec.encode(value);
    if (bytes) return { data: { message: bytes } as pb.Data, contract: true };
  }
  const j = json(value);
  return j ? { data: { json: j } as pb.Data, contract: false } : { contract: false };
}

export function decodeData(d: Obj | null | undefined, codec: () => MessageCodec | null, what: string): unknown {
  if (d == null) return undefined;
  switch (d.value as string | undefined) {
    case "isNull":
      return null;
    case "json":
      return JSON.parse(utf8(d.json));
    case "buffer":
      return Buffer.from(d.buffer);
    case "message": {
      const c = codec();
      if (!c) throw new Error(`a contract message for ${what}, which has no contract here`);
      return c.decode(d.message);
    }
    default:
      return undefined;
  }
}

