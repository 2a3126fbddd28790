/**
 * Business events on RabbitMQ: an `EventEnvelope` (proto/meridian/wire/v1/packets.proto)
 * whose payload is the event's contract message, content type application/x-protobuf.
 * A payload without a contract, or one that does not fit it, travels as JSON inside the
 * envelope and is counted (meridian_serializer_json_fallback_total{packet="AMQP"}).
 *
 * Reading also accepts the JSON envelope (content type application/json) that nodes before
 * this format published, so messages already waiting in a queue or among the dead letters are
 * not lost. The other way does not hold: an older node cannot read this format, so upgrading
 * from it is a stop-and-start, not a rolling update (README, "Evolving a contract").
 */
import type { ServiceBroker } from "moleculer";
import { countBusiness } from "../metrics";
import { decodeData, encodeData, eventCodec, root } from "../serializer/contracts-runtime";
import type { Envelope } from "./outbox";

export const EVENT_CONTENT_TYPE = "application/x-protobuf";
const EnvelopeT = root.lookupType("meridian.wire.v1.EventEnvelope");

/** The bytes of an envelope; the payload as its contract message when it has one that fits. */
export function encodeEnvelope(envelope: Envelope, broker?: ServiceBroker): Buffer {
  const { data, contract } = encodeData(envelope.payload, eventCodec(envelope.name));
  if (!contract && envelope.payload != null) countBusiness(broker, "serializer_json_fallback", { packet: "AMQP", name: envelope.name });
  const message = { id: envelope.id, name: envelope.name, source: envelope.source, occurredAt: envelope.occurredAt, payload: data, end: true };
  return EnvelopeT.encode(message).finish() as Buffer;
}

/** An envelope from a message's bytes: protobuf, or the JSON of older publishers. Throws on garbage. */
export function parseEnvelope(content: Buffer, contentType?: string): Envelope {
  const mediaType = contentType?.split(";")[0]!.trim().toLowerCase();
  if (mediaType === "application/json" || (mediaType === undefined && content[0] === 0x7b /* { */)) {
    const e = JSON.parse(content.toString("utf8")) as Envelope;
    if (!e || typeof e.id !== "string" || typeof e.name !== "string") throw new Error("not an event envelope");
    return e;
  }
  const m = EnvelopeT.decode(content) as unknown as { id: string; name: string; source: string; occurredAt: string; payload?: Record<string, unknown>; end: boolean };
  if (m.end !== true || !m.id || !m.name) throw new Error("not an event envelope (truncated or foreign bytes)");
  const payload = decodeData(m.payload, () => eventCodec(m.name), `event ${m.name}`);
  return { id: m.id, name: m.name, source: m.source, occurredAt: m.occurredAt, payload: payload === undefined ? null : payload };
}

