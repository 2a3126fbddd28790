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
 * Batches (`applyBatch`): messages that wait together are applied in ONE transaction, so N
 * messages cost one commit instead of N: first every inbox row, in ONE statement in message-id
 * order (so two batches take the inbox keys in the same order) that skips the ids already
 * there and returns the new ones (`recordInbox`), then each new message's handler in turn; a
 * duplicate is skipped and the batch goes on. Any other failure (a handler's error, a deadlock: not
 * retried as a batch) rolls the whole batch back, and its messages are applied one by one
 * (`applyOnce`), so one bad message costs its neighbours a second run of their handlers,
 * never their effect or an extra attempt. Hence batching is only for consumers whose
 * handlers keep their effects in the transaction (or in `trx.executionPromise` hooks, which
 * run only on commit). A consumer whose handlers call other services inside the transaction
 * opts out (`batch: false`, the order service): a neighbour's failure would roll back its
 * state after the remote effect happened, and open the window in which a concurrent action
 * (a cancel waiting on the order's lock) acts on the old state.
 * The price: a batch holds its rows' locks until its last message is applied (a batch is at
 * most `batchSize` messages); two batches that lock the same effect rows in opposite orders
 * deadlock, and the loser is applied one by one.
 * Isolation: on InnoDB a batch runs READ COMMITTED. At REPEATABLE READ every plain read would
 * see the snapshot of the batch's FIRST read, so a handler that locks its row and then reads
 * (the recommendation model: lock the user, read their purchases) would miss what another
 * replica committed since, and lose its update (the two-replica test in
 * recommendation.int.spec.ts caught exactly that). READ COMMITTED gives each statement a fresh
 * snapshot: a handler reads, after its locks, what it read in a transaction of its own. It
 * takes no gap locks: the handlers lock rows by key (order, cart, reservations, user), and
 * uniqueness is kept by the keys. A message applied alone (`applyOnce`) stays REPEATABLE READ.
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
import { withTimeout } from "../timeout";
import { ReconnectLoop, type AmqpLink } from "./amqp";
import { inTransaction, isMysql, isUniqueViolation, param, rawRows, Statement } from "../db";
import { countBusiness } from "../metrics";
import type { Envelope } from "./outbox";
import { parseEnvelope } from "./wire";
import { periodic, type Periodic } from "../periodic";
import { protectionOff } from "../protections";
import { throttle } from "../throttle";
import { assertConsumerTopology, migrateClassicQueues, type Topology } from "./topology";

/**
 * A handler of one event's payload. Declared as a method (the `{ m(…) }["m"]` form) so that its
 * parameters are checked bivariantly: `Record<string, EventHandler>` maps each event to a
 * handler typed by that event's contract, while this file calls them with an `unknown` payload.
 */
export type EventHandler<P = unknown> = {
  handle(trx: Knex.Transaction, payload: P, envelope: Envelope<P>): Promise<void>;
}["handle"];

export interface ConsumerStats {
  applied: number;
  duplicates: number;
  retried: number;
  deadLettered: number;
  /** Committed transactions that applied messages (a batch counts once): applied ÷ this = batching. */
  transactions: number;
  /** Batches rolled back as a whole, their messages then applied one by one. */
  batchesRolledBack: number;
}

export const newStats = (): ConsumerStats => ({
  applied: 0,
  duplicates: 0,
  retried: 0,
  deadLettered: 0,
  transactions: 0,
  batchesRolledBack: 0,
});

class DuplicateMessage extends Error {}

/** A message's inbox row (the guard of `applyOnce`), compiled once. */
const insertInbox = new Statement<{ message_id: string; event: string; received_at: number }>((db) =>
  db("inbox").insert({ message_id: param("message_id"), event: param("event"), received_at: param("received_at") }),
);

/** Inbox row and effect in one transaction. "duplicate" when the id was already applied. */
export async function applyOnce(db: Knex, envelope: Envelope, handler: EventHandler): Promise<"applied" | "duplicate"> {
  try {
    await inTransaction(db, async (trx) => {
      try {
        // BREAK_PROTECTION=inbox (docs/tutorial.md): no inbox row, so no duplicate is seen.
        if (!protectionOff("inbox")) await insertInbox.run(trx, { message_id: envelope.id, event: envelope.name, received_at: Date.now() });
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

/** One message of a batch: its envelope and the handler for its name. */
export interface BatchItem {
  envelope: Envelope;
  handler: EventHandler;
}

/**
 * Several messages in ONE transaction (see the top of this file). Resolves with each message's
 * outcome, in order, once the transaction committed; rejects, with nothing committed, when
 * any handler failed or the transaction could not commit: the caller then applies the
 * messages one by one.
 */
export async function applyBatch(db: Knex, items: BatchItem[]): Promise<("applied" | "duplicate")[]> {
  // Not retried on a deadlock (attempts = 1): the one-by-one fallback is the retry.
  return inTransaction(
    db,
    async (trx) => {
      // By id, code unit order (a stable sort: a repeated id keeps its place).
      const idOf = (i: number) => items[i].envelope.id;
      const byId = [...items.keys()].sort((a, b) => (idOf(a) < idOf(b) ? -1 : idOf(a) > idOf(b) ? 1 : 0));
      // BREAK_PROTECTION=inbox (docs/tutorial.md): no inbox rows, so no duplicate is seen.
      const inboxOff = protectionOff("inbox");
      const recorded = inboxOff
        ? new Set<string>()
        : await recordInbox(
            trx,
            byId.map((i) => items[i].envelope),
          );
      // Already applied, or earlier in this batch (the first copy of an id is the one applied).
      const duplicate = new Set<number>();
      if (!inboxOff) for (const i of byId) if (!recorded.delete(idOf(i))) duplicate.add(i);
      // An id the database returned otherwise than it was sent (a lone UTF-16 surrogate comes
      // back as U+FFFD): its message would pass for a duplicate. One by one instead.
      if (recorded.size) throw new Error("an inbox id came back changed by the database");
      for (const [i, { envelope, handler }] of items.entries()) if (!duplicate.has(i)) await handler(trx, envelope.payload, envelope);
      return items.map((_, i) => (duplicate.has(i) ? "duplicate" : "applied"));
    },
    1,
    "read committed",
  );
}

/** `inbox` column sizes (migrations.ts). */
const INBOX_ID_MAX = 64;
const INBOX_EVENT_MAX = 100;
/** The `inbox` rows `RETURNING message_id` gives. */
type InboxId = { message_id: string };

/**
 * Records a batch's message ids in `inbox` in ONE statement, rows in the given order (the lock
 * order), and returns the ids that were new (#16: one statement per message before):
 * MariaDB's `INSERT IGNORE … RETURNING` and SQLite's `INSERT … ON CONFLICT DO NOTHING RETURNING`
 * both return only the rows they inserted. A copy of a row another transaction is inserting
 * waits for it, as the plain insert did, and is skipped once it commits. INSERT IGNORE also turns
 * other errors into warnings (a value too long would be cut): envelopes that do not fit the
 * columns are refused here, so the batch rolls back and they meet the plain insert one by one.
 */
async function recordInbox(trx: Knex.Transaction, envelopes: Envelope[]): Promise<Set<string>> {
  if (envelopes.some((e) => e.id.length > INBOX_ID_MAX || e.name.length > INBOX_EVENT_MAX))
    throw new Error("a message id or name longer than the inbox columns");
  const now = Date.now();
  const rows = envelopes.map(() => "(?, ?, ?)").join(", ");
  const values = envelopes.flatMap((e) => [e.id, e.name, now]);
  const mysql = isMysql(trx);
  const sql = mysql
    ? `INSERT IGNORE INTO inbox (message_id, event, received_at) VALUES ${rows} RETURNING message_id`
    : `INSERT INTO inbox (message_id, event, received_at) VALUES ${rows} ON CONFLICT (message_id) DO NOTHING RETURNING message_id`;
  const inserted = await rawRows<InboxId>(trx, sql, values);
  return new Set(inserted.map((r) => r.message_id));
}

/** What `applyMessages` needs of a consumer, in either mode. */
export interface ApplyContext {
  service: string;
  db: () => Knex;
  stats: ConsumerStats;
  logger: Logger;
  /** For the business counters (lib/metrics.ts); none: not counted. */
  broker?: ServiceBroker;
}

/**
 * Applies messages, the one mechanism of both modes: in one transaction when there are
 * several and it commits (`applyBatch`), else one by one (`applyOnce`), so the one that fails
 * is found. Counts the messages and the transactions; resolves with each message's error, or
 * undefined where it was applied (or already had been).
 */
export async function applyMessages(ctx: ApplyContext, items: BatchItem[]): Promise<(Error | undefined)[]> {
  const counted = ({ envelope }: BatchItem, outcome: "applied" | "duplicate") => {
    ctx.stats[outcome === "applied" ? "applied" : "duplicates"]++;
    countBusiness(ctx.broker, outcome === "applied" ? "events_applied" : "events_duplicates", {
      service: ctx.service,
      event: envelope.name,
    });
  };
  if (items.length > 1) {
    const outcomes = await applyBatch(ctx.db(), items).catch((err: unknown) => batchFailed(ctx, err));
    if (outcomes) {
      if (outcomes.includes("applied")) ctx.stats.transactions++;
      items.forEach((item, i) => counted(item, outcomes[i]));
      return items.map(() => undefined);
    }
  }
  const errors: (Error | undefined)[] = [];
  for (const item of items) {
    try {
      const outcome = await applyOnce(ctx.db(), item.envelope, item.handler);
      if (outcome === "applied") ctx.stats.transactions++;
      counted(item, outcome);
      errors.push(undefined);
    } catch (err) {
      errors.push(err as Error);
    }
  }
  return errors;
}

/**
 * A batch that rolled back: logged at most once a minute per consumer (every message still
 * gets applied one by one; a batch that always fails, say a database refusing READ
 * COMMITTED writes, would otherwise only show as lost throughput).
 */
function batchFailed({ stats, logger, service }: ApplyContext, err: unknown): void {
  stats.batchesRolledBack++;
  let mayWarn = batchWarnings.get(stats);
  if (!mayWarn) batchWarnings.set(stats, (mayWarn = throttle(60_000)));
  if (!mayWarn()) return;
  logger.warn(
    `Event consumer '${service}': a batch rolled back (${(err as Error)?.message ?? err}); its messages are applied one by one (${stats.batchesRolledBack} so far)`,
  );
}
const batchWarnings = new WeakMap<ConsumerStats, () => boolean>();

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
  /** Messages applied in one transaction at most (default: the prefetch ÷ `concurrency`, at least 1). */
  batchSize?: number;
  /**
   * Apply transactions in progress at once (default 8, under the knex pool of 10, so the
   * service's actions keep connections). Fewer, larger batches cost the same CPU but wait
   * longer behind a busy event loop: at 4, bench:events' p50 latency was 2-5× that at 8.
   */
  concurrency?: number;
  logger: Logger;
  /** For the business counters (lib/metrics.ts); none: not counted. */
  broker?: ServiceBroker;
}

/** A message as delivered: acked (or nacked) on the channel that delivered it. */
interface Delivery {
  ch: Channel;
  pub: ConfirmChannel;
  msg: ConsumeMessage;
}

export class AmqpConsumer {
  readonly stats = newStats();
  private readonly reconnect: ReconnectLoop;
  private current: { ch: Channel; pub: ConfirmChannel; tag?: string } | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  /** Delivered, not yet being applied: the next batch. */
  private waiting: Delivery[] = [];
  private drainScheduled = false;
  private stopping = false;
  private readonly batchSize: number;
  private readonly concurrency: number;
  private readonly applying: ApplyContext;
  /**
   * Empties the classic queues of an earlier deployment into the quorum ones (topology.ts):
   * at every (re)connect, and every minute, since nodes of the old version may still use
   * them during a rolling upgrade, or bind them again when they reconnect.
   */
  private readonly migration: Periodic;

  constructor(private readonly opts: AmqpConsumerOptions) {
    this.reconnect = new ReconnectLoop(
      `Event consumer '${opts.service}'`,
      opts.logger,
      () => this.setup(),
      () => this.migration.kick(),
    );
    this.migration = periodic(`Classic queue migration '${opts.service}'`, 60_000, () => this.migrateClassic(), opts.logger);
    this.applying = { service: opts.service, db: () => opts.db, stats: this.stats, logger: opts.logger, broker: opts.broker };
    this.concurrency = Math.max(1, opts.concurrency ?? 8);
    this.batchSize = Math.max(1, opts.batchSize ?? Math.ceil(opts.prefetch / this.concurrency));
  }

  /** Resolves once consuming (first setup); reconnects in the background afterwards. */
  start(): Promise<void> {
    this.stopping = false;
    return this.reconnect.start();
  }

  private async migrateClassic(): Promise<void> {
    if (!this.reconnect.isRunning) return;
    const { service, topo, handlers, retryDelaysMs, logger } = this.opts;
    const { moved, left } = await migrateClassicQueues(
      await this.opts.link.connection(),
      topo,
      service,
      Object.keys(handlers),
      retryDelaysMs,
    );
    if (moved) logger.info(`Event consumer '${service}': ${moved} message(s) moved from classic queues to quorum queues`);
    if (left.length)
      logger.warn(`Event consumer '${service}': classic queue(s) ${left.join(", ")} still in use or not empty; moved again in a minute`);
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
    // Fire-and-forget: `closed` never rejects, and the closes' failures are caught here.
    void closed.then(() => {
      if (this.current?.ch === ch) this.current = undefined;
      ch.close().catch(() => undefined);
      pub.close().catch(() => undefined);
    });
    await assertConsumerTopology(ch, topo, service, Object.keys(handlers), retryDelaysMs);
    await ch.prefetch(prefetch);
    this.current = { ch, pub };
    const { consumerTag } = await ch.consume(topo.workQueue(service), (msg) => {
      if (!msg) {
        // Cancelled by the broker (the queue was deleted): a new setup declares it again.
        ch.close().catch(() => undefined);
        return;
      }
      this.waiting.push({ ch, pub, msg });
      this.scheduleDrain();
    });
    this.current.tag = consumerTag;
    // Wrapped: an async function returning a promise would wait for it.
    return { closed };
  }

  /**
   * A microtask later, not at once: every delivery parsed from the same socket read is in
   * `waiting` by then and joins the same batch.
   */
  private scheduleDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    queueMicrotask(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  /** Starts batches while fewer than `concurrency` are in progress; each end starts the next. */
  private drain(): void {
    // Deliveries of a channel that closed cannot be acked: the broker redelivers them.
    if (this.waiting.length && this.waiting[0].ch !== this.current?.ch)
      this.waiting = this.waiting.filter((d) => d.ch === this.current?.ch);
    while (!this.stopping && this.waiting.length && this.inFlight.size < this.concurrency) {
      const batch = this.waiting.splice(0, this.batchSize);
      const p: Promise<void> = this.applyDeliveries(batch).finally(() => {
        this.inFlight.delete(p);
        this.drain();
      });
      this.inFlight.add(p);
    }
  }

  /** A batch of deliveries: applied (`applyMessages`), then each acked or sent to retry. */
  private async applyDeliveries(deliveries: Delivery[]): Promise<void> {
    const ready: (Delivery & BatchItem)[] = [];
    for (const d of deliveries) {
      try {
        // amqplib types contentType as any: AMQP carries it as a short string, or not at all.
        const envelope = parseEnvelope(d.msg.content, d.msg.properties.contentType as string | undefined);
        const handler = this.opts.handlers[envelope.name];
        if (!handler) throw new Error(`no handler for '${envelope.name}'`);
        ready.push({ ...d, envelope, handler });
      } catch (err) {
        await this.onFailure(d, err);
      }
    }
    const errors = await applyMessages(this.applying, ready);
    for (const [i, d] of ready.entries()) {
      const err = errors[i];
      if (err) await this.onFailure(d, err);
      else safe(() => d.ch.ack(d.msg)); // committed (or already applied): acked
    }
  }

  /** Not applied: republished to its retry queue (or the dead-letter queue), then acked. */
  private async onFailure({ ch, pub, msg }: Delivery, err: unknown): Promise<void> {
    const attempts = Number(msg.properties.headers?.["x-attempts"] ?? 0) + 1;
    const { topo, service, maxAttempts, retryDelaysMs } = this.opts;
    const dead = attempts >= maxAttempts;
    const queue = dead
      ? topo.deadQueue(service)
      : topo.retryQueue(service, retryDelaysMs[Math.min(attempts - 1, retryDelaysMs.length - 1)]);
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
          // amqplib confirms with null, or an Error (nacked, channel closed): lib/channel.js
          pub.sendToQueue(queue, msg.content, { ...msg.properties, headers, persistent: true }, (e: Error | null) =>
            e ? reject(e) : resolve(),
          ),
        ),
        10_000,
        "republish confirm",
      );
      this.stats[dead ? "deadLettered" : "retried"]++;
      countBusiness(this.opts.broker, dead ? "events_dead_lettered" : "events_retried", {
        service,
        event: String(msg.properties.type ?? msg.fields.routingKey),
      });
      if (dead)
        this.opts.logger.error(
          `Event ${msg.properties.messageId} moved to ${queue} after ${attempts} attempt(s): ${headers["x-last-error"]}`,
        );
      safe(() => ch.ack(msg));
    } catch {
      // Not republished: let the broker redeliver it (or it will on reconnect).
      safe(() => ch.nack(msg, false, true));
    }
  }

  /**
   * Stops consuming, lets the handlers in progress commit and ack (up to `graceMs`; any not
   * acked by then is redelivered by the broker), then closes the channels. Every wait is
   * bounded, so a dead connection cannot hang a service's stop.
   */
  async stop(graceMs = 10_000): Promise<void> {
    const ended = this.reconnect.stop();
    const migrating = this.migration.stop();
    // Deliveries not yet started stay unacked: the broker redelivers them when the channel closes.
    this.stopping = true;
    this.waiting = [];
    const cur = this.current;
    const quiet = <T>(p: Promise<T>, ms: number, what: string) =>
      withTimeout(p, ms, what).catch((err) =>
        this.opts.logger.warn(`Event consumer '${this.opts.service}' stop: ${(err as Error).message}`),
      );
    if (cur?.tag) await quiet(cur.ch.cancel(cur.tag), 5000, "cancel");
    await quiet(Promise.allSettled([...this.inFlight]), graceMs, "handlers in progress");
    // Closing one closes the other (see setup): "already closing" is not a problem.
    await quiet(cur ? cur.ch.close().catch(() => undefined) : Promise.resolve(), 5000, "channel close");
    await quiet(cur ? cur.pub.close().catch(() => undefined) : Promise.resolve(), 5000, "channel close");
    await quiet(ended, 5000, "reconnect loop");
    await quiet(migrating, 5000, "classic queue migration");
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

/** Rows of a relay pass applied in one transaction at most (embedded mode). */
export const EMBEDDED_BATCH = 8;

export interface EmbeddedSubscriber {
  service: string;
  events: string[];
  /** Resolves when the subscriber's service started (its database is migrated). */
  ready: Promise<void>;
  deliver(envelope: Envelope): Promise<void>;
  /**
   * Several envelopes of this subscriber's events, in one transaction when they can be
   * (`applyBatch`), else one by one: resolves with each one's error, or undefined if applied.
   */
  deliverBatch(envelopes: Envelope[]): Promise<(Error | undefined)[]>;
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
  has(sub: EmbeddedSubscriber): boolean {
    return this.subs.has(sub);
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
  /** false: one transaction per message (see the top of this file). */
  batch?: boolean;
}): EmbeddedSubscriber {
  const applying: ApplyContext = opts;
  const items = (envelopes: Envelope[]) => envelopes.map((envelope) => ({ envelope, handler: opts.handlers[envelope.name] }));
  return {
    service: opts.service,
    events: Object.keys(opts.handlers),
    ready: opts.ready,
    async deliver(envelope) {
      await opts.ready;
      const [err] = await applyMessages(applying, items([envelope]));
      if (err) throw err;
    },
    async deliverBatch(envelopes) {
      await opts.ready;
      const errors: (Error | undefined)[] = [];
      // In chunks: the service's one SQLite connection waits for a batch, so a batch is short.
      const size = opts.batch === false ? 1 : EMBEDDED_BATCH;
      for (let at = 0; at < envelopes.length; at += size)
        errors.push(...(await applyMessages(applying, items(envelopes.slice(at, at + size)))));
      return errors;
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
        .update({
          attempts: row.attempts + 1,
          last_error: String((err as Error).message).slice(0, 500),
          replay_requested_at: null,
          failed_at: Date.now(),
        });
    }
  }
  return rows.length;
}
