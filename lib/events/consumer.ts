/**
 * Consumers: apply each message once through the service's `inbox`.
 *
 * `applyOnce` is the one rule, shared by both modes: in ONE transaction (the database's
 * default isolation, REPEATABLE READ on InnoDB, serialized on SQLite) insert the message id
 * into `inbox`, then run the handler's effect. The inbox primary key is the guard: a
 * duplicate fails the insert, the transaction rolls back, and the message counts as handled.
 * Lock order is always inbox row first, then the effect's rows. Two copies handled at once
 * on MariaDB: the second insert waits on the first's key and fails once it commits.
 *
 * Cluster mode (`AmqpConsumer`): manual acks, sent only after the commit (a crash before the
 * ack redelivers the message; the inbox absorbs it). Retry with backoff: a failed message is
 * republished (confirmed) to the retry queue of its step, with `x-attempts` incremented, and
 * only then acked; the retry queue's TTL dead-letters it back to the work queue. After
 * `maxAttempts` failures it goes to the dead-letter queue instead (`npm run dead-letters`).
 * A crash between republish and ack leaves two copies: the inbox absorbs the extra one.
 *
 * Embedded mode (`EmbeddedSubscriber`): the producer's relay calls `deliver` in-process; the
 * relay keeps the retry state on the outbox row, and dead letters go to this service's
 * `dead_letters` table, replayed when `replay_requested_at` is set (by the command).
 */
import type { Channel, ConfirmChannel, ConsumeMessage } from "amqplib";
import type { Knex } from "knex";
import type { ServiceBroker } from "moleculer";
import { ReconnectLoop, withTimeout, type AmqpLink } from "./amqp";
import { inTransaction, isUniqueViolation } from "../db";
import { countBusiness } from "../metrics";
import type { Envelope } from "./outbox";
import { parseEnvelope } from "./wire";
import { assertConsumerTopology, type Topology } from "./topology";

export type EventHandler<P = any> = (trx: Knex.Transaction, payload: P, envelope: Envelope<P>) => Promise<void>;

export interface ConsumerStats {
  applied: number;
  duplicates: number;
  retried: number;
  deadLettered: number;
}

export const newStats = (): ConsumerStats => ({ applied: 0, duplicates: 0, retried: 0, deadLettered: 0 });

class DuplicateMessage extends Error {}

/** Inbox row and effect in one transaction. "duplicate" when the id was already applied. */
export async function applyOnce(db: Knex, envelope: Envelope, handler: EventHandler): Promise<"applied" | "duplicate"> {
  try {
    await inTransaction(db, async (trx) => {
      try {
        await trx("inbox").insert({ message_id: envelope.id, event: envelope.name, received_at: Date.now() });
      } catch (err) {
        if (isUniqueViolation(err)) throw new DuplicateMessage(envelope.id);
        throw err;
      }
      await handler(trx, envelope.payload, envelope);
    });
    return "applied";
  } catch (err) {
    if (err instanceof DuplicateMessage) return "duplicate";
    throw err;
  }
}

export { parseEnvelope };

interface Logger {
  info(...a: unknown[]): void;
  warn(...a: unknown[]): void;
  error(...a: unknown[]): void;
}

export interface AmqpConsumerOptions {
  service: string;
  db: Knex;
  link: AmqpLink;
  topo: Topology;
  handlers: Record<string, EventHandler>;
  maxAttempts: number;
  retryDelaysMs: number[];
  prefetch: number;
  logger: Logger;
  /** For the business counters (lib/metrics.ts); none: not counted. */
  broker?: ServiceBroker;
}

export class AmqpConsumer {
  readonly stats = newStats();
  private readonly reconnect: ReconnectLoop;
  private current: { ch: Channel; pub: ConfirmChannel; tag?: string } | undefined;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly opts: AmqpConsumerOptions) {
    this.reconnect = new ReconnectLoop(`Event consumer '${opts.service}'`, opts.logger, () => this.setup());
  }

  /** Resolves once consuming (first setup); reconnects in the background afterwards. */
  start(): Promise<void> {
    return this.reconnect.start();
  }

  /** Opens the channels, declares the topology, consumes; resolves with "closed". */
  private async setup(): Promise<{ closed: Promise<void> }> {
    const { service, topo, handlers, retryDelaysMs, prefetch } = this.opts;
    const conn = await this.opts.link.connection();
    const ch = await conn.createChannel();
    const pub = await conn.createConfirmChannel();
    const closed = new Promise<void>((resolve) => {
      for (const c of [ch, pub]) {
        c.on("error", () => undefined);
        c.on("close", () => resolve());
      }
    });
    closed.then(() => {
      if (this.current?.ch === ch) this.current = undefined;
      ch.close().catch(() => undefined);
      pub.close().catch(() => undefined);
    });
    await assertConsumerTopology(ch, topo, service, Object.keys(handlers), retryDelaysMs);
    await ch.prefetch(prefetch);
    this.current = { ch, pub };
    const { consumerTag } = await ch.consume(topo.workQueue(service), (msg) => {
      if (!msg) return; // cancelled by the broker (queue deleted)
      const p = this.onMessage(ch, pub, msg).finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    });
    this.current.tag = consumerTag;
    // Wrapped: an async function returning a promise would wait for it.
    return { closed };
  }

  private async onMessage(ch: Channel, pub: ConfirmChannel, msg: ConsumeMessage): Promise<void> {
    const attempts = Number(msg.properties.headers?.["x-attempts"] ?? 0) + 1;
    try {
      const envelope = parseEnvelope(msg.content, msg.properties.contentType);
      const handler = this.opts.handlers[envelope.name];
      if (!handler) throw new Error(`no handler for '${envelope.name}'`);
      const outcome = await applyOnce(this.opts.db, envelope, handler);
      this.stats[outcome === "applied" ? "applied" : "duplicates"]++;
      countBusiness(this.opts.broker, outcome === "applied" ? "events_applied" : "events_duplicates", { service: this.opts.service, event: envelope.name });
      safe(() => ch.ack(msg));
    } catch (err) {
      const { topo, service, maxAttempts, retryDelaysMs } = this.opts;
      const dead = attempts >= maxAttempts;
      const queue = dead ? topo.deadQueue(service) : topo.retryQueue(service, retryDelaysMs[Math.min(attempts - 1, retryDelaysMs.length - 1)]);
      const headers = {
        ...msg.properties.headers,
        "x-attempts": attempts,
        "x-last-error": String((err as Error)?.message ?? err).slice(0, 500),
        "x-routing-key": msg.fields.routingKey,
        ...(dead ? { "x-dead-lettered-at": new Date().toISOString() } : {}),
      };
      try {
        await withTimeout(
          new Promise<void>((resolve, reject) =>
            pub.sendToQueue(queue, msg.content, { ...msg.properties, headers, persistent: true }, (e) => (e ? reject(e) : resolve())),
          ),
          10_000,
          "republish confirm",
        );
        this.stats[dead ? "deadLettered" : "retried"]++;
        countBusiness(this.opts.broker, dead ? "events_dead_lettered" : "events_retried", { service, event: String(msg.properties.type ?? msg.fields.routingKey) });
        if (dead) this.opts.logger.error(`Event ${msg.properties.messageId} moved to ${queue} after ${attempts} attempt(s): ${headers["x-last-error"]}`);
        safe(() => ch.ack(msg));
      } catch {
        // Not republished: let the broker redeliver it (or it will on reconnect).
        safe(() => ch.nack(msg, false, true));
      }
    }
  }

  /**
   * Stops consuming, lets the handlers in progress commit and ack (up to `graceMs`; any not
   * acked by then is redelivered by the broker), then closes the channels. Every wait is
   * bounded, so a dead connection cannot hang a service's stop.
   */
  async stop(graceMs = 10_000): Promise<void> {
    const ended = this.reconnect.stop();
    const cur = this.current;
    const quiet = <T>(p: Promise<T>, ms: number, what: string) =>
      withTimeout(p, ms, what).catch((err) => this.opts.logger.warn(`Event consumer '${this.opts.service}' stop: ${(err as Error).message}`));
    if (cur?.tag) await quiet(cur.ch.cancel(cur.tag), 5000, "cancel");
    await quiet(Promise.allSettled([...this.inFlight]), graceMs, "handlers in progress");
    // Closing one closes the other (see setup): "already closing" is not a problem.
    await quiet(cur ? cur.ch.close().catch(() => undefined) : Promise.resolve(), 5000, "channel close");
    await quiet(cur ? cur.pub.close().catch(() => undefined) : Promise.resolve(), 5000, "channel close");
    await quiet(ended, 5000, "reconnect loop");
  }
}

function safe(fn: () => void): void {
  try {
    fn();
  } catch {
    // Channel closed: the broker redelivers unacked messages.
  }
}

// ---- embedded mode ----

export interface EmbeddedSubscriber {
  service: string;
  events: string[];
  /** Resolves when the subscriber's service started (its database is migrated). */
  ready: Promise<void>;
  deliver(envelope: Envelope): Promise<void>;
  deadLetter(envelope: Envelope, attempts: number, err: Error): Promise<void>;
}

export class EmbeddedBus {
  private readonly subs = new Set<EmbeddedSubscriber>();
  add(sub: EmbeddedSubscriber): void {
    this.subs.add(sub);
  }
  remove(sub: EmbeddedSubscriber): void {
    this.subs.delete(sub);
  }
  subscribers(event: string): EmbeddedSubscriber[] {
    return [...this.subs].filter((s) => s.events.includes(event));
  }
}

const buses = new WeakMap<ServiceBroker, EmbeddedBus>();

/** The in-process bus of one broker (embedded mode: every service is in this broker). */
export function busFor(broker: ServiceBroker): EmbeddedBus {
  let bus = buses.get(broker);
  if (!bus) buses.set(broker, (bus = new EmbeddedBus()));
  return bus;
}

export function embeddedSubscriber(opts: {
  service: string;
  db: () => Knex;
  handlers: Record<string, EventHandler>;
  stats: ConsumerStats;
  ready: Promise<void>;
  logger: Logger;
  broker?: ServiceBroker;
}): EmbeddedSubscriber {
  return {
    service: opts.service,
    events: Object.keys(opts.handlers),
    ready: opts.ready,
    async deliver(envelope) {
      await opts.ready;
      const outcome = await applyOnce(opts.db(), envelope, opts.handlers[envelope.name]!);
      opts.stats[outcome === "applied" ? "applied" : "duplicates"]++;
      countBusiness(opts.broker, outcome === "applied" ? "events_applied" : "events_duplicates", { service: opts.service, event: envelope.name });
    },
    async deadLetter(envelope, attempts, err) {
      await opts.ready;
      const db = opts.db();
      const row = {
        message_id: envelope.id,
        event: envelope.name,
        envelope: JSON.stringify(envelope),
        attempts,
        last_error: String(err?.message ?? err).slice(0, 500),
        failed_at: Date.now(),
        replay_requested_at: null,
      };
      try {
        await db("dead_letters").insert(row);
      } catch (e) {
        if (!isUniqueViolation(e)) throw e;
        await db("dead_letters").where({ message_id: envelope.id }).update(row);
      }
      opts.stats.deadLettered++;
      countBusiness(opts.broker, "events_dead_lettered", { service: opts.service, event: envelope.name });
      opts.logger.error(`Event ${envelope.id} dead-lettered in '${opts.service}' after ${attempts} attempt(s): ${row.last_error}`);
    },
  };
}

/**
 * Embedded replay: applies the dead letters whose replay was requested. Success deletes the
 * dead letter in the same transaction as the effect; a failure leaves it dead (one attempt
 * per request, `attempts + 1`).
 */
export async function replayRequested(db: Knex, handlers: Record<string, EventHandler>, stats: ConsumerStats): Promise<number> {
  const rows = await db("dead_letters").whereNotNull("replay_requested_at").orderBy("failed_at").limit(100);
  for (const row of rows as { message_id: string; envelope: string; attempts: number }[]) {
    const envelope = JSON.parse(row.envelope) as Envelope;
    const handler = handlers[envelope.name];
    try {
      if (!handler) throw new Error(`no handler for '${envelope.name}'`);
      const outcome = await applyOnce(db, envelope, async (trx, payload, env) => {
        await trx("dead_letters").where({ message_id: row.message_id }).del();
        await handler(trx, payload, env);
      });
      if (outcome === "duplicate") await db("dead_letters").where({ message_id: row.message_id }).del();
      stats[outcome === "applied" ? "applied" : "duplicates"]++;
    } catch (err) {
      await db("dead_letters")
        .where({ message_id: row.message_id })
        .update({ attempts: row.attempts + 1, last_error: String((err as Error).message).slice(0, 500), replay_requested_at: null, failed_at: Date.now() });
    }
  }
  return rows.length;
}
