/**
 * RabbitMQ names of the business-event layer, namespaced by the Moleculer NAMESPACE so
 * several systems (or test runs) can share one broker and vhost.
 *
 * - one durable topic exchange per namespace; the routing key is the event name
 *   (`user.registered`);
 * - per consuming service: a work queue bound to each event it consumes, one retry queue per
 *   backoff step (queue TTL, dead-lettered back to the work queue; the delay is in the name,
 *   so changing the delays declares new queues instead of clashing with old arguments), and
 *   a dead-letter queue (no consumer: `npm run dead-letters`).
 *
 * All three are quorum queues (#17): replicated on the nodes of a RabbitMQ cluster, a message
 * the broker confirmed survives the loss of a minority of them (one of three), and consumers
 * and publishers go on through any node. On a single broker they are quorum queues with one
 * member, durable as before. A queue's type cannot change in place, so the quorum queues
 * have names of their own (`….quorum`, `….quorum.retry.<d>ms`, `….quorum.dead`); the classic
 * queues of an earlier deployment keep the old names (`legacy`) and `migrateClassicQueues`
 * empties them into the new ones.
 *
 * A retry queue dead-letters expired messages back to the work queue "at least once": RabbitMQ
 * keeps a message in the retry queue until the work queue confirmed it (quorum queues'
 * `x-dead-letter-strategy`, which needs `x-overflow: reject-publish`); the default (at most
 * once) could drop a waiting retry on a node's loss.
 */
import type { Channel, ChannelModel } from "amqplib";

interface Queues {
  workQueue(service: string): string;
  retryQueue(service: string, delayMs: number): string;
  deadQueue(service: string): string;
}

export interface Topology extends Queues {
  exchange: string;
  /** The classic queues' names, before #17 (what `migrateClassicQueues` empties). */
  legacy: Queues;
}

export function topology(namespace: string): Topology {
  const base = `meridian${namespace ? `.${namespace}` : ""}.events`;
  return {
    exchange: base,
    workQueue: (service) => `${base}.${service}.quorum`,
    retryQueue: (service, delayMs) => `${base}.${service}.quorum.retry.${delayMs}ms`,
    deadQueue: (service) => `${base}.${service}.quorum.dead`,
    legacy: {
      workQueue: (service) => `${base}.${service}`,
      retryQueue: (service, delayMs) => `${base}.${service}.retry.${delayMs}ms`,
      deadQueue: (service) => `${base}.${service}.dead`,
    },
  };
}

const QUORUM = { "x-queue-type": "quorum" } as const;
/** A work queue's declaration: one constant, since a publisher declares it too (below). */
const WORK_QUEUE = { durable: true, arguments: QUORUM };

/** Declares the exchange only (what a publisher needs). Idempotent. */
export async function assertExchange(ch: Channel, topo: Topology): Promise<void> {
  await ch.assertExchange(topo.exchange, "topic", { durable: true });
}

/**
 * A consumer's work queue and its binding to `event`, declared by a publisher for every
 * consumer the contracts name (relay.ts): an event committed before that consumer's first
 * start then waits in its queue instead of being dropped as unroutable. Idempotent, and the
 * same declaration as the consumer's own.
 */
export async function assertWorkQueue(ch: Channel, topo: Topology, service: string, event: string): Promise<void> {
  await ch.assertQueue(topo.workQueue(service), WORK_QUEUE);
  await ch.bindQueue(topo.workQueue(service), topo.exchange, event);
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
  await ch.assertQueue(work, WORK_QUEUE);
  for (const event of events) await ch.bindQueue(work, topo.exchange, event);
  for (const delay of retryDelaysMs)
    await ch.assertQueue(topo.retryQueue(service, delay), {
      durable: true,
      // Expired messages go back to the work queue through the default exchange. A queue
      // TTL (not a per-message one) so that no message waits behind a longer delay.
      arguments: {
        ...QUORUM,
        "x-message-ttl": delay,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": work,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
      },
    });
  await ch.assertQueue(topo.deadQueue(service), { durable: true, arguments: QUORUM });
}

/**
 * Empties a consumer's classic queues of an earlier deployment into its quorum queues, for an
 * upgrade without a lost event; idempotent, run at every (re)connect after
 * `assertConsumerTopology`. Resolves with the legacy queues still there (0: done).
 *
 * 1. The old work queue is unbound from the events first: from then on every new event goes
 *    to the quorum queue only. (A node of the old version that reconnects binds it again;
 *    the event then reaches both queues and the inbox applies it once.)
 * 2. Each old queue's messages are republished (confirmed) to its quorum counterpart, then
 *    acked: a crash in between leaves a copy in both, and the inbox absorbs the second one.
 *    The retry queues go first, into the work queue (a retry then runs early, which is
 *    harmless), because they dead-letter into the old work queue; then the work queue; then
 *    the dead letters, into the dead-letter queue.
 * 3. An old queue is deleted only when empty and unused: while nodes of the old version
 *    still consume it (a rolling upgrade), it stays, with its retry queues (their retries
 *    must have somewhere to go back to), and the caller tries again later.
 *
 * The limit: only the retry queues of today's delays are known by name; a retry queue of a
 * delay configured before is left to the operator (docs/running.md "Upgrading to quorum queues").
 */
export async function migrateClassicQueues(
  conn: ChannelModel,
  topo: Topology,
  service: string,
  events: string[],
  retryDelaysMs: number[],
): Promise<{ moved: number; left: string[] }> {
  const old = topo.legacy;
  const work = await inspect(conn, old.workQueue(service));
  const dead = await inspect(conn, old.deadQueue(service));
  const retries = (await Promise.all(retryDelaysMs.map((d) => inspect(conn, old.retryQueue(service, d))))).filter((q) => q !== undefined);
  if (!work && !dead && !retries.length) return { moved: 0, left: [] };
  let moved = 0;
  const left: string[] = [];
  if (work)
    await onChannel(conn, async (ch) => {
      for (const event of events) await ch.unbindQueue(work.queue, topo.exchange, event);
    });
  // An old node may start consuming (and retrying) at any moment: read its presence again
  // right before each deletion it would depend on.
  const oldNodesGone = async () => ((await inspect(conn, old.workQueue(service)))?.consumerCount ?? 0) === 0;
  for (const q of retries) {
    moved += await moveMessages(conn, q.queue, topo.workQueue(service));
    if (!((await oldNodesGone()) && (await deleteIfDone(conn, q.queue)))) left.push(q.queue);
  }
  if (work) {
    moved += await moveMessages(conn, work.queue, topo.workQueue(service));
    // Last, once no retry queue can dead-letter into it any more.
    if (left.length || !(await deleteIfDone(conn, work.queue))) left.push(work.queue);
  }
  if (dead) {
    moved += await moveMessages(conn, dead.queue, topo.deadQueue(service));
    if (!(await deleteIfDone(conn, dead.queue))) left.push(dead.queue);
  }
  return { moved, left };
}

/**
 * Runs `fn` on a channel of its own, closed after. A refused operation (a queue another
 * replica's migration has just deleted: 404) closes that channel only, never the link the
 * consumer and the relay share (an 'error' without a listener would).
 */
async function onChannel<T>(conn: ChannelModel, fn: (ch: Channel) => Promise<T>): Promise<T | undefined> {
  const ch = await conn.createChannel();
  ch.on("error", () => undefined);
  try {
    return await fn(ch);
  } catch {
    return undefined; // gone meanwhile, or refused: the next pass looks again
  } finally {
    await ch.close().catch(() => undefined);
  }
}

/** The queue's counts, or undefined when it does not exist. */
async function inspect(
  conn: ChannelModel,
  queue: string,
): Promise<{ queue: string; messageCount: number; consumerCount: number } | undefined> {
  return onChannel(conn, async (ch) => {
    const ok = await ch.checkQueue(queue);
    return { queue, messageCount: ok.messageCount, consumerCount: ok.consumerCount };
  });
}

/**
 * Republishes every ready message of `from` to `to` (confirmed, then acked); resolves with
 * the count. `to` is checked first: a publish to a missing queue would be confirmed and lost.
 */
async function moveMessages(conn: ChannelModel, from: string, to: string): Promise<number> {
  let moved = 0;
  await onChannel(conn, async (ch) => {
    await ch.checkQueue(to);
    const pub = await conn.createConfirmChannel();
    pub.on("error", () => undefined);
    try {
      for (;;) {
        const msg = await ch.get(from, { noAck: false });
        if (!msg) return;
        await new Promise<void>((resolve, reject) =>
          // amqplib confirms with null, or an Error (nacked, channel closed): lib/channel.js
          pub.sendToQueue(to, msg.content, { ...msg.properties, persistent: true }, (e: Error | null) => (e ? reject(e) : resolve())),
        );
        ch.ack(msg);
        moved++;
      }
    } finally {
      await pub.close().catch(() => undefined);
    }
  });
  return moved;
}

/** Deletes the queue if it is empty and has no consumer; false when it is kept. */
async function deleteIfDone(conn: ChannelModel, queue: string): Promise<boolean> {
  // 406: still holds messages or has consumers; 404: another replica deleted it (done too).
  const result = await onChannel(conn, async (ch) => {
    await ch.deleteQueue(queue, { ifEmpty: true, ifUnused: true });
    return true;
  });
  return result === true || (await inspect(conn, queue)) === undefined;
}
