/**
 * Broadcast consumers: EVERY replica of a service receives every event, for services that
 * keep a derived copy in their own memory (each search replica's in-process index).
 *
 * This is the other delivery mode beside the work queues of consumer.ts (one replica gets
 * each event, exactly-once effects through the inbox). A broadcast consumer has no inbox
 * and no database; it relies on two rules of its handlers instead:
 * - they are idempotent and order-proof (the events carry the source row's version and the
 *   handler applies only a newer one), so a duplicate or late message is harmless;
 * - the copy can be rebuilt from its source (`onResync`), and that repairs anything missed.
 *
 * Cluster mode: one queue per replica, `…events.<service>.replica.<nodeId>`, exclusive and
 * auto-deleted (it lives as long as this replica's connection; a dead replica leaves no
 * queue filling up), bound to the events. The guarantee and its limit: while the queue
 * exists it gets every event published after it was bound; messages are acked after the
 * handler resolves (a crash redelivers them... to nobody: the queue dies with the
 * connection, and a new one starts with a resync). So `onResync` runs after EVERY (re)bind,
 * AFTER the queue is bound: a change committed before the rebuild reads its source is in
 * the rebuild, one committed after it is in the queue, and the version rule sorts out the
 * overlap. A handler that fails is logged, acked, and answered with a resync.
 *
 * Embedded mode: a subscriber on the broker's in-process bus (the producer's relay calls it
 * after the commit); same rules, and a failure asks for a resync instead of a retry.
 */
import type { Channel, ConsumeMessage } from "amqplib";
import type { ServiceBroker } from "moleculer";
import type { AmqpLink } from "./amqp";
import { withTimeout } from "../timeout";
import { ReconnectLoop } from "./amqp";
import { busFor, parseEnvelope, type EmbeddedSubscriber } from "./consumer";
import type { Envelope } from "./outbox";
import { assertExchange, type Topology } from "./topology";

/**
 * A handler of one event's payload. Declared as a method (the `{ m(…) }["m"]` form) so that its
 * parameters are checked bivariantly: `Record<string, BroadcastHandler>` maps each event to a
 * handler typed by that event's contract, while this file calls them with an `unknown` payload.
 */
export type BroadcastHandler<P = unknown> = {
  handle(payload: P, envelope: Envelope<P>): Promise<void> | void;
}["handle"];

interface Logger {
  info(...a: unknown[]): void;
  warn(...a: unknown[]): void;
  error(...a: unknown[]): void;
}

export interface BroadcastStats {
  applied: number;
  failed: number;
  /** Times the queue was (re)bound, each followed by a resync. */
  bindings: number;
}

export interface BroadcastOptions {
  service: string;
  nodeId: string;
  handlers: Record<string, BroadcastHandler>;
  /** The copy may have missed events: rebuild it from the source. Must not throw. */
  onResync: () => void;
  logger: Logger;
  prefetch?: number;
}

export const replicaQueue = (topo: Topology, service: string, nodeId: string) => `${topo.exchange}.${service}.replica.${nodeId}`;

export class AmqpBroadcastConsumer {
  readonly stats: BroadcastStats = { applied: 0, failed: 0, bindings: 0 };
  private readonly reconnect: ReconnectLoop;
  private current: { ch: Channel; tag?: string } | undefined;

  constructor(private readonly opts: BroadcastOptions & { link: AmqpLink; topo: Topology }) {
    // A resync after every binding: the queue is new each time (see the header).
    this.reconnect = new ReconnectLoop(
      `Broadcast consumer '${opts.service}'`,
      opts.logger,
      () => this.setup(),
      () => opts.onResync(),
    );
  }

  /** Resolves once the queue is bound and consumed (first setup); reconnects in the background. */
  start(): Promise<void> {
    return this.reconnect.start();
  }

  private async setup(): Promise<{ closed: Promise<void> }> {
    const { service, nodeId, topo, handlers } = this.opts;
    const conn = await this.opts.link.connection();
    const ch = await conn.createChannel();
    const closed = new Promise<void>((resolve) => {
      ch.on("error", () => undefined);
      ch.on("close", () => resolve());
    });
    // Fire-and-forget: `closed` never rejects, and this callback cannot throw.
    void closed.then(() => {
      if (this.current?.ch === ch) this.current = undefined;
    });
    await assertExchange(ch, topo);
    const queue = replicaQueue(topo, service, nodeId);
    // exclusive: only this connection may use it, and the broker deletes it when the
    // connection goes; a restarted replica with the same node id gets a fresh, empty one.
    await ch.assertQueue(queue, { exclusive: true, autoDelete: true, durable: false });
    for (const event of Object.keys(handlers)) await ch.bindQueue(queue, topo.exchange, event);
    await ch.prefetch(this.opts.prefetch ?? 50);
    this.current = { ch };
    const { consumerTag } = await ch.consume(queue, (msg) => {
      if (msg) void this.onMessage(ch, msg);
      // Cancelled by the broker: the queue was deleted (on a cluster, when the broker node it
      // was on is declared down, which can race with this declaring it again). A new setup
      // binds a new queue (and resyncs): closing the channel starts it.
      else ch.close().catch(() => undefined);
    });
    this.current.tag = consumerTag;
    this.stats.bindings++;
    return { closed };
  }

  private async onMessage(ch: Channel, msg: ConsumeMessage): Promise<void> {
    try {
      // amqplib types contentType as any: AMQP carries it as a short string, or not at all.
      const envelope = parseEnvelope(msg.content, msg.properties.contentType as string | undefined);
      const handler = this.opts.handlers[envelope.name];
      if (!handler) throw new Error(`no handler for '${envelope.name}'`);
      await handler(envelope.payload, envelope);
      this.stats.applied++;
    } catch (err) {
      this.stats.failed++;
      this.opts.logger.warn(
        `Broadcast event ${msg.properties.messageId ?? "?"} failed in '${this.opts.service}', resyncing: ${(err as Error).message}`,
      );
      this.opts.onResync();
    }
    try {
      ch.ack(msg);
    } catch {
      // Channel gone: the queue goes with it, and the next binding resyncs.
    }
  }

  async stop(): Promise<void> {
    const ended = this.reconnect.stop();
    const cur = this.current;
    const quiet = (p: Promise<unknown>, what: string) =>
      withTimeout(p, 5000, what).catch((err) =>
        this.opts.logger.warn(`Broadcast consumer '${this.opts.service}' stop: ${(err as Error).message}`),
      );
    if (cur?.tag) await quiet(cur.ch.cancel(cur.tag), "cancel");
    if (cur)
      await quiet(
        cur.ch.close().catch(() => undefined),
        "channel close",
      );
    await quiet(ended, "reconnect loop");
  }
}

/** Embedded mode: a subscriber on the broker's bus; a failed apply asks for a resync. */
export function addEmbeddedBroadcast(broker: ServiceBroker, opts: BroadcastOptions): { stats: BroadcastStats; remove(): void } {
  const stats: BroadcastStats = { applied: 0, failed: 0, bindings: 1 };
  const sub: EmbeddedSubscriber = {
    service: `${opts.service}#broadcast`,
    events: Object.keys(opts.handlers),
    ready: Promise.resolve(),
    async deliver(envelope) {
      try {
        await opts.handlers[envelope.name](envelope.payload, envelope);
        stats.applied++;
      } catch (err) {
        stats.failed++;
        opts.logger.warn(`Broadcast event ${envelope.id} failed in '${opts.service}', resyncing: ${(err as Error).message}`);
        opts.onResync();
      }
    },
    async deliverBatch(envelopes) {
      // No database here (in-memory handlers): one by one, in order; deliver does not throw.
      for (const envelope of envelopes) await this.deliver(envelope);
      return envelopes.map(() => undefined);
    },
    async deadLetter() {
      // Never reached: deliver does not throw.
    },
  };
  const bus = busFor(broker);
  bus.add(sub);
  return { stats, remove: () => bus.remove(sub) };
}
