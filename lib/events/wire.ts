/**
 * Business events on RabbitMQ: an `EventEnvelope` (proto/meridian/wire/v1/packets.proto)
 * whose payload is the event's contract message, content type application/x-protobuf.
 * A payload without a contract, or one that does not fit it, travels as JSON inside the
 * envelope and is counted (meridian_serializer_json_fallback_total{packet="AMQP"}).
 *
 * Reading also accepts the JSON envelope (content type application/json) that nodes before
 * this format published, so messages already waiting in a queue or among the dead letters are
 * not lost. The other way does not hold: an older node cannot read this format, so upgrading
 * from it is a stop-and-start, not a rolling update (docs/contracts.md, "Evolving a contract").
 */
import type { ServiceBroker } from "moleculer";
import { countBusiness } from "../metrics";
import { Reader, Writer } from "../serializer/bytes";
import { eventCodec, root } from "../serializer/contracts-runtime";
import { EnvelopeCodec } from "../serializer/envelope";
import type { Envelope } from "./outbox";

export const EVENT_CONTENT_TYPE = "application/x-protobuf";
const EnvelopeT = new EnvelopeCodec(root.lookupType("meridian.wire.v1.EventEnvelope"));
// The relay publishes one envelope at a time, synchronously: one buffer serves them all.
const writer = new Writer(4096);

/** The bytes of an envelope; the payload as its contract message when it has one that fits. */
export function encodeEnvelope(envelope: Envelope, broker?: ServiceBroker): Buffer {
  writer.reset();
  const contract = EnvelopeT.write(writer, envelope, envelope.payload, eventCodec(envelope.name));
  if (!contract && envelope.payload != null) countBusiness(broker, "serializer_json_fallback", { packet: "AMQP", name: envelope.name });
  return writer.finish();
}

/** An envelope from a message's bytes: protobuf, or the JSON of older publishers. Throws on garbage. */
export function parseEnvelope(content: Buffer, contentType?: string): Envelope {
  const mediaType = contentType?.split(";")[0]!.trim().toLowerCase();
  if (mediaType === "application/json" || (mediaType === undefined && content[0] === 0x7b) /* { */) {
    const e = JSON.parse(content.toString("utf8")) as Envelope;
    if (!e || typeof e.id !== "string" || typeof e.name !== "string") throw new Error("not an event envelope");
    return e;
  }
  const { packet: m, end } = EnvelopeT.read(
    new Reader(content),
    (p) => eventCodec(p.name),
    (p) => `event ${String(p.name)}`,
  );
  const { id, name, source, occurredAt } = m;
  // The string fields always decode as strings ("" when absent): `typed` only tells TypeScript.
  const typed = typeof id === "string" && typeof name === "string" && typeof source === "string" && typeof occurredAt === "string";
  if (!end || !typed || !id || !name) throw new Error("not an event envelope (truncated or foreign bytes)");
  return { id, name, source, occurredAt, payload: m.payload === undefined ? null : m.payload };
}
