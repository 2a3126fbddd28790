/**
 * RabbitMQ names of the business-event layer, namespaced by the Moleculer NAMESPACE so
 * several systems (or test runs) can share one broker and vhost.
 *
 * - one durable topic exchange per namespace; the routing key is the event name
 *   (`user.registered`);
 * - per consuming service: a durable work queue bound to each event it consumes, one retry
 *   queue per backoff step (queue TTL, dead-lettered back to the work queue; the delay is in
 *   the name, so changing the delays declares new queues instead of clashing with old
 *   arguments), and a dead-letter queue (no consumer: `npm run dead-letters`).
 */
import type { Channel } from "amqplib";

export interface Topology {
  exchange: string;
  workQueue(service: string): string;
  retryQueue(service: string, delayMs: number): string;
  deadQueue(service: string): string;
}

export function topology(namespace: string): Topology {
  const base = `meridian${namespace ? `.${namespace}` : ""}.events`;
  return {
    exchange: base,
    workQueue: (service) => `${base}.${service}`,
    retryQueue: (service, delayMs) => `${base}.${service}.retry.${delayMs}ms`,
    deadQueue: (service) => `${base}.${service}.dead`,
  };
}

/** Declares the exchange only (what a publisher needs). Idempotent. */
export async function assertExchange(ch: Channel, topo: Topology): Promise<void> {
  await ch.assertExchange(topo.exchange, "topic", { durable: true });
}

/** Declares a consumer's queues and bindings. Idempotent; every replica runs it at start. */
export async function assertConsumerTopology(
  ch: Channel,
  topo: Topology,
  service: string,
  events: string[],
  retryDelaysMs: number[],
): Promise<void> {
  await assertExchange(ch, topo);
  const work = topo.workQueue(service);
  await ch.assertQueue(work, { durable: true });
  for (const event of events) await ch.bindQueue(work, topo.exchange, event);
  for (const delay of retryDelaysMs)
    await ch.assertQueue(topo.retryQueue(service, delay), {
      durable: true,
      // Expired messages go back to the work queue through the default exchange. A queue
      // TTL (not a per-message one) so that no message waits behind a longer delay.
      arguments: { "x-message-ttl": delay, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": work },
    });
  await ch.assertQueue(topo.deadQueue(service), { durable: true });
}
