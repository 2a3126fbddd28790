/**
 * The relay: publishes committed outbox rows and marks them sent.
 *
 * Cluster mode (`AmqpRelay`): rows go to the namespace's topic exchange on a ConfirmChannel
 * as persistent messages (messageId = row id, routing key = event name); a row is marked
 * sent only after the broker confirmed it (and, for an event with consumers, routed it to a
 * queue: see `AmqpRelay`) (for a durable queue, RabbitMQ confirms a
 * persistent message once it is written to disk). A crash or an outage between publish and
 * mark leaves the row pending, and the next pass publishes it again: at-least-once on the
 * wire, duplicates absorbed by the consumers' inboxes.
 *
 * Two ways a row reaches a relay (both modes):
 * - the hand-over: `publishEvent` writes the row with a lease (`available_at` = insert time +
 *   `leaseMs`: no sweep takes it before then) and, once its transaction committed, hands it to
 *   its own process's relay, which publishes it from memory and marks it (with the other marks
 *   of the next MARK_DELAY_MS, in one statement), with no claim of the table and no transaction
 *   open while the broker confirms;
 * - the sweep, at most twice per `pollIntervalMs`: rows due (`available_at <= now`) that no
 *   hand-over holds here: a crash between commit and publish (here or on another replica:
 *   after the lease), a publish that failed (its lease released at once), retries that came
 *   due, rows of a writer without a relay. On MariaDB a sweep first looks for a due row (one plain SELECT; an idle
 *   sweep costs nothing more), then claims in one READ COMMITTED transaction: `SELECT … FOR
 *   UPDATE SKIP LOCKED` of up to `batchSize` rows, publish, wait for the confirms, mark,
 *   commit. Replicas skip locked rows, so each row is published by one replica in normal
 *   operation; READ COMMITTED takes no gap locks, so producers' inserts are never blocked by a
 *   sweep. On SQLite (one process per file) a sweep reads without a lock.
 * The lease runs from the row's insert. A hand-over is given up once the lease is over (a
 * transaction that outlasted it, a backlog), and a failed pass releases its rows and its queue
 * at once; a crashed process's rows wait for the lease (AMQP 5 s) and the next sweep. The
 * limits: a publish still waiting on the broker when the lease ends (a broker stalled for
 * seconds) may be published by another replica's sweep as well, and so may a published row
 * whose mark (sent MARK_DELAY_MS before the lease ends at the latest) has not committed by then
 * (a stalled database), and every row when a replica's clock runs ahead of the producer's by
 * more than the lease (`available_at` is the producer's clock, `now` the sweeper's):
 * duplicates, absorbed by the inboxes.
 *
 * Embedded mode (`EmbeddedRelay`): the same rows are delivered in-process to the local
 * subscribers (consumer.ts), each applying a pass's rows through its inbox in one transaction
 * (one by one when that fails). A row is marked sent
 * when every subscriber applied it (or dead-lettered it); a failure keeps the row pending
 * with `attempts + 1` and `available_at` pushed back by the retry delay, and re-delivers to
 * every subscriber (those that already applied it see a duplicate, a no-op).
 *
 * Ordering: a relay publishes hand-overs in commit order and a sweep's rows in `seq` order
 * (the order of the inserts, not of the commits); the two paths, replicas, retries and
 * concurrent consumers reorder further: consumers must not rely on order.
 */
import type { Channel, ConfirmChannel } from "amqplib";
import type { Knex } from "knex";
import type { ServiceBroker } from "moleculer";
import { isMysql } from "../db";
import { countBusiness } from "../metrics";
import { AGAIN, periodic, type Periodic } from "../periodic";
import { throttle } from "../throttle";
import { withTimeout } from "../timeout";
import { backoffMs, type AmqpLink } from "./amqp";
import type { EmbeddedBus, EmbeddedSubscriber } from "./consumer";
import { anyDue, claimPending, markRetry, markSent, purgeOld, releaseLeases, toEnvelope, type RelayRow } from "./outbox";
import { assertExchange, assertWorkQueue, type Topology } from "./topology";
import { encodeEnvelope, EVENT_CONTENT_TYPE } from "./wire";

export interface RelayLogger {
  info(...a: unknown[]): void;
  warn(...a: unknown[]): void;
}

export interface RelayOptions {
  db: Knex;
  /** The publishing service (the envelope's `source`). */
  source: string;
  logger: RelayLogger;
  /** How often the relay sweeps the table for rows no hand-over published (at most twice in it). */
  pollIntervalMs: number;
  /**
   * How long a kick waits before its pass, so the commits of that moment leave in one pass
   * (0: at once). Measured (#16): 2 ms cut an embedded checkout's relay passes 5× (one per
   * commit before) and its CPU by 16 %, and lowered its latency (less queueing).
   */
  kickDelayMs?: number;
  batchSize?: number;
  /** Sent outbox rows and inbox rows older than this are deleted (hourly). */
  retentionMs?: number;
  /** For the business counters (lib/metrics.ts); none: not counted. */
  broker?: ServiceBroker;
}

const DAY = 86_400_000;
/** Handed-over rows waiting beyond this many are left to the sweeps (they are in the table). */
const HANDOVER_QUEUE = 10_000;
/**
 * How long the mark of a row published from memory waits for the marks of that moment to go
 * with it in one statement (`markLater`). Measured (#16): a cluster checkout's hand-overs were
 * marked in ~4 statements, each its own commit; the relays of five nodes at 20 checkouts/s
 * marked every ~60 ms each. A lease runs from the row's insert, so a row published late in its
 * lease (a slow transaction, a backlog) is marked sooner: no later than MARK_DELAY_MS before its
 * lease ends, when another replica's sweep could take it.
 */
const MARK_DELAY_MS = 200;
/** A mark (one statement) that has not answered by then is given up, as a release is (see `release`). */
const MARK_TIMEOUT_MS = 2_000;

abstract class RelayLoop {
  protected readonly batchSize: number;
  private loop: Periodic | undefined;
  private lastPurge = Date.now();
  /** Rows handed over by this process's commits, not yet taken by a pass. */
  private readonly handedOver: RelayRow[] = [];
  /** Ids handed over and not yet done with (published rows until marked): a sweep leaves them to the hand-over. */
  private readonly held = new Set<string>();
  /** Published rows whose mark waits (markLater) or is running. */
  protected readonly unmarked = new Set<string>();
  private nextMarks: string[] = [];
  private markTimer: NodeJS.Timeout | undefined;
  /** When the timer fires (epoch ms). */
  private markTimerAt = Infinity;
  /** When the pending marks must go at the latest (epoch ms; see MARK_DELAY_MS). */
  private markBy = Infinity;
  /** Flushes of marks in progress: side by side (one stalled does not delay the next), a stop waits for them. */
  private readonly flushes = new Set<Promise<void>>();
  private lastSweep = 0;
  /** The last sweep claimed a full batch: the next pass sweeps again at once. */
  private sweepFull = false;
  /** Rows this relay published (delivered), counted then, before their mark (for tests and the benchmark). */
  published = 0;
  /** Passes that found rows, and those that found none (the benchmark: rows per pass). */
  passes = { withRows: 0, empty: 0 };
  /** How long a mark waits for others (MARK_DELAY_MS; a test lengthens it to see the marks held). */
  markDelayMs = MARK_DELAY_MS;

  /**
   * How long a row written by `publishEvent` is this process's own (`addOutboxEvent`'s lease):
   * longer than a healthy hand-over takes (queue, publish, confirm, mark), so that no other
   * relay publishes it meanwhile; after it, a crash's rows are published by the sweeps.
   */
  abstract readonly leaseMs: number;

  constructor(protected readonly opts: RelayOptions) {
    this.batchSize = opts.batchSize ?? 100;
  }

  /** Publishes (delivers) these rows and marks them; returns how many it handled. */
  protected abstract deliverHandedOver(rows: RelayRow[]): Promise<number>;
  /** Claims due rows from the table, publishes and marks those `keep` leaves (not `held`): how many it claimed and handled. */
  protected abstract sweep(now: number, keep: (rows: RelayRow[]) => RelayRow[]): Promise<{ claimed: number; handled: number }>;
  protected async prepare(): Promise<void> {}
  protected abstract reset(): Promise<void>;

  /**
   * Passes at once after a local commit (kick) or a full batch, and every pollIntervalMs; after
   * a failure (broker or database down) the channel is reset and the next pass waits a growing
   * backoff, logged once per outage: the rows stay pending and that pass re-drives them.
   */
  start(): void {
    if (this.loop) return;
    this.lastSweep = 0;
    this.loop = periodic(`Event relay of '${this.opts.source}'`, this.opts.pollIntervalMs, () => this.onePass(), this.opts.logger, {
      backoffMs,
      // Bounded: a pass's confirms time out (confirmTimeoutMs).
      stopWaitMs: 15_000,
      kickDelayMs: this.opts.kickDelayMs,
    });
    this.loop.kick();
  }

  /**
   * A row this process's transaction has just committed (`publishEvent`, after the commit):
   * published within `kickDelayMs` from memory, without a claim of the table (#16: a sweep's
   * claim is a transaction of five statements on MariaDB; a hand-over's only statement is the
   * mark). Kicks in that window share one pass. What this cannot take (not started, stopped, a
   * long queue) stays in the table, due for the sweeps once its lease ends.
   */
  handOver(row: RelayRow): void {
    // A row written unleased (leaseFor: 0), or whose transaction outlasted its lease (remote
    // calls before the commit), is the sweeps' only: both paths would publish it.
    if (!this.loop || row.available_at <= Date.now() || this.handedOver.length >= HANDOVER_QUEUE) return;
    this.handedOver.push(row);
    this.held.add(row.id);
    this.loop.kick();
  }

  /**
   * The lease for a row about to be written: none while this relay would not take the row at
   * its commit (not running, failing, a long queue), so that the next sweep takes it, not the
   * lease's end.
   */
  leaseFor(): number {
    // Failing: its backoff may outlast the lease.
    return this.loop && !this.loop.failures && this.handedOver.length < HANDOVER_QUEUE ? this.leaseMs : 0;
  }

  /** Waits for the pass in progress (bounded), then closes the channel; `start` resumes. */
  async stop(): Promise<void> {
    const loop = this.loop;
    this.loop = undefined;
    await loop?.stop();
    await this.flushMarks();
    await this.reset();
    // Not published here: another replica (or the next start) takes them at its next sweep
    // rather than at the lease's end.
    await this.releaseQueue();
    // A pass that outlived the loop's stop wait may have published (and marked later) since.
    await this.flushMarks();
  }

  /** The queued hand-overs left to the sweeps, due at once (the database down: at their lease's end). */
  private async releaseQueue(): Promise<void> {
    const left = this.handedOver.splice(0).map((r) => r.id);
    for (const id of left) this.held.delete(id);
    await this.release(left);
  }

  /** Bounded: a stalled database must not hold a stop or a failing pass (the rows then wait for their lease). */
  protected async release(ids: string[]): Promise<void> {
    await withTimeout(releaseLeases(this.opts.db, ids, Date.now()), 2_000, "releasing outbox leases").catch(() => undefined);
  }

  /**
   * One pass: the handed-over rows first, then, at most twice per pollIntervalMs (or at once
   * while the table has a backlog), a sweep of the table: rows whose lease ended (a crash between commit
   * and publish, here or on another replica), retries that came due, rows of other writers.
   */
  protected async pass(): Promise<number> {
    await this.prepare();
    let handled = 0;
    const taken = this.handedOver.splice(0, this.batchSize);
    // A row that waited here past its lease (a backlog) is due for the sweeps, here and on
    // the other replicas: left to them rather than raced.
    const now = Date.now();
    const rows = taken.filter((r) => r.available_at > now);
    for (const r of taken) if (r.available_at <= now) this.held.delete(r.id);
    if (rows.length) {
      try {
        handled += await this.deliverHandedOver(rows);
      } finally {
        // Published ones stay held until their mark (markLater).
        for (const r of rows) if (!this.unmarked.has(r.id)) this.held.delete(r.id);
      }
    }
    // At most twice per poll interval, so that kicked passes in between do not stretch it.
    if (this.sweepFull || Date.now() - this.lastSweep >= this.opts.pollIntervalMs / 2) {
      this.lastSweep = Date.now();
      this.sweepFull = false;
      const swept = await this.sweep(Date.now(), (found) => found.filter((r) => !this.held.has(r.id)));
      this.sweepFull = swept.claimed >= this.batchSize;
      handled += swept.handled;
    }
    return handled;
  }

  /**
   * Rows published (delivered) outside a claim's transaction, marked sent with the others of
   * the next MARK_DELAY_MS in one statement (at once from batchSize on). Held until then, so
   * this process's sweeps leave them alone; other replicas' sweeps wait for their lease. The
   * guarantee is the one a mark right after the publish gave: a crash (or a failed mark) before
   * it leaves the rows pending, published again after their lease; duplicates, absorbed by the
   * inboxes. What it costs: a crash may now leave the last 200 ms of published rows to be
   * published again, not only the one pass in flight.
   */
  protected markLater(rows: RelayRow[]): void {
    if (!rows.length) return;
    for (const row of rows) {
      this.held.add(row.id);
      this.unmarked.add(row.id);
      this.nextMarks.push(row.id);
      this.markBy = Math.min(this.markBy, row.available_at - this.markDelayMs);
    }
    const now = Date.now();
    const at = Math.min(now + this.markDelayMs, this.markBy);
    // Stopped: at once (a pass that outlived the stop's wait), not on a timer after the database closed.
    if (this.nextMarks.length >= this.batchSize || at <= now || !this.loop) return void this.flushMarks();
    if (this.markTimer && this.markTimerAt <= at) return;
    clearTimeout(this.markTimer);
    this.markTimerAt = at;
    // Unref'd: it never holds a process open; a stop flushes, and an exit without one leaves the
    // rows to be published again after their lease, as a crash does.
    this.markTimer = setTimeout(() => void this.flushMarks(), at - now).unref();
  }

  /** Marks what markLater holds now; resolves once every flush in progress has ended (it never rejects). */
  protected async flushMarks(): Promise<void> {
    clearTimeout(this.markTimer);
    this.markTimer = undefined;
    this.markTimerAt = Infinity;
    this.markBy = Infinity;
    const ids = this.nextMarks;
    this.nextMarks = [];
    if (ids.length) {
      const flush = (async () => {
        try {
          // Bounded: a stalled database must not hold a stop. The statement may still commit
          // later; until then the rows, no longer held, may be published again (duplicates,
          // absorbed by the inboxes).
          await withTimeout(markSent(this.opts.db, ids, Date.now()), MARK_TIMEOUT_MS, "marking outbox rows sent");
        } catch (err) {
          this.opts.logger.warn(
            `Event relay of '${this.opts.source}': ${ids.length} published row(s) not marked sent (${(err as Error).message}); published again after their lease`,
          );
        } finally {
          for (const id of ids) {
            this.unmarked.delete(id);
            this.held.delete(id);
          }
        }
      })();
      this.flushes.add(flush);
      void flush.finally(() => this.flushes.delete(flush));
    }
    await Promise.all([...this.flushes]);
  }

  private async onePass(): Promise<typeof AGAIN | undefined> {
    let handled: number;
    try {
      handled = await this.pass();
      this.passes[handled ? "withRows" : "empty"]++;
    } catch (err) {
      await this.reset().catch(() => undefined);
      // The backoff may outlast the leases: the queued rows go to the sweeps (of the healthy
      // replicas too) rather than wait here for this relay's recovery.
      await this.releaseQueue();
      throw err;
    }
    if (Date.now() - this.lastPurge > 3_600_000) {
      this.lastPurge = Date.now();
      await purgeOld(this.opts.db, Date.now() - (this.opts.retentionMs ?? 7 * DAY));
    }
    return this.handedOver.length || this.sweepFull ? AGAIN : undefined;
  }
}

export interface AmqpRelayOptions extends RelayOptions {
  link: AmqpLink;
  topo: Topology;
  /** A pass gives up on confirms after this long (the rows stay pending). */
  confirmTimeoutMs?: number;
  /**
   * The services that consume an event (the contracts' `consumes`); undefined for an event
   * with no contract (the tests' fixture services), which is expected to reach a queue that
   * its consumer declared. See `AmqpRelay`.
   */
  consumersOf?: (event: string) => readonly string[] | undefined;
  /** The events this service publishes (its contract's): their consumers' queues are declared at every new channel. */
  publishes?: readonly string[];
}

/**
 * Routing, not only confirms. RabbitMQ confirms a message it routed to no queue (no binding
 * for its event): confirmed and dropped. Two cases would lose an event that way:
 * - a consumer that has never started: its queue and bindings do not exist yet (a first
 *   deployment, a consumer added later). So at every new channel (every reconnect), before
 *   its first claim, the relay declares the work queue and binding of every service the
 *   contracts say consumes (`consumes`, through a work queue) an event this service publishes
 *   (`assertWorkQueue`): the event waits in that queue until the consumer starts.
 * - a binding lost by the broker (reported after node restarts: rabbitmq-server#8994, #5075).
 *   So events that have consumers are published `mandatory`: a message routed to no queue is
 *   returned (before its confirm), its row stays pending (`attempts + 1`, published again after
 *   a growing delay, up to 30 s), and the next pass declares that event's bindings again.
 * Declarations run before the claim, outside its transaction (no row lock waits on them), on a
 * channel of their own with a timeout, one event at a time: a queue that refuses its
 * declaration (other arguments) holds back only that event, which is retried and logged.
 * The limit: `mandatory` only sees "no queue at all". An event with two consumers, one of whose
 * bindings is lost while the other's holds, is routed, and that consumer misses it; the
 * declaration at the next reconnect repairs the binding for later events.
 * Events that no service consumes through a work queue are published without `mandatory`, as
 * before: `user.registered`, and those only followed per replica (`follows`: search's product
 * events, the edges' live streams), whose queues live with their replicas. An event with no
 * contract (the tests' fixtures) is published `mandatory`, relying on its consumer's own
 * declaration.
 */
export class AmqpRelay extends RelayLoop {
  private channel: ConfirmChannel | undefined;
  private readonly lock: boolean;
  /** Events whose consumers' queues and bindings are to be declared before the next claim. */
  private readonly toDeclare = new Set<string>();
  /** Message ids RabbitMQ returned in this pass (routed to no queue). */
  private readonly returned = new Set<string>();
  /** At most one warning a minute about events routed to no queue, or queues not declared. */
  private readonly mayWarn = throttle(60_000);
  /** Messages RabbitMQ routed to no queue, kept pending (for tests and the operator's logs). */
  unroutable = 0;
  /**
   * Far above a healthy hand-over (milliseconds), short enough that a crashed process's events
   * leave soon after. A hand-over held up longer (a broker stalled toward the confirm timeout)
   * may be published by another replica's sweep too: a duplicate, absorbed by the inboxes.
   */
  readonly leaseMs = 5_000;

  constructor(private readonly amqpOpts: AmqpRelayOptions) {
    super(amqpOpts);
    this.lock = isMysql(amqpOpts.db);
  }

  private async confirmChannel(): Promise<ConfirmChannel> {
    if (this.channel) return this.channel;
    const conn = await this.amqpOpts.link.connection();
    const ch = await conn.createConfirmChannel();
    ch.on("error", () => undefined);
    ch.on("close", () => {
      if (this.channel === ch) this.channel = undefined;
    });
    // RabbitMQ sends a message's return before its confirm, so the confirm callback sees it.
    ch.on("return", (msg: { properties: { messageId?: string } }) => this.returned.add(String(msg.properties.messageId)));
    await assertExchange(ch, this.amqpOpts.topo);
    for (const event of this.amqpOpts.publishes ?? []) this.toDeclare.add(event);
    this.channel = ch;
    return ch;
  }

  protected async reset(): Promise<void> {
    const ch = this.channel;
    this.channel = undefined;
    await ch?.close().catch(() => undefined);
  }

  protected override async prepare(): Promise<void> {
    await this.confirmChannel();
    if (this.toDeclare.size) await this.declareConsumers();
  }

  /**
   * Outside any transaction: the rows are this relay's by their lease. What the broker did not
   * confirm is released for the sweeps (published again after the backoff, not at the lease's
   * end); a crash before the mark leaves them leased, published again after it.
   */
  protected async deliverHandedOver(rows: RelayRow[]): Promise<number> {
    let outcome: Awaited<ReturnType<AmqpRelay["publishAndMark"]>>;
    try {
      outcome = await this.publishAndMark(this.opts.db, rows, async (ids) => {
        const confirmed = new Set(ids);
        this.markLater(rows.filter((r) => confirmed.has(r.id)));
      });
    } catch (err) {
      // No channel, or a failed retry mark of a row routed nowhere: the rows not confirmed are
      // released; the confirmed ones wait for their mark (released, another replica would
      // publish them again).
      await this.release(rows.filter((r) => !this.unmarked.has(r.id)).map((r) => r.id));
      throw err;
    }
    if (outcome.unsent.length) await this.release(outcome.unsent.map((r) => r.id));
    return this.settle(outcome);
  }

  /**
   * On MariaDB: a cheap look for due rows, and only then a READ COMMITTED transaction claiming
   * them with `FOR UPDATE SKIP LOCKED` (the header). On SQLite: a plain read.
   */
  protected async sweep(now: number, keep: (rows: RelayRow[]) => RelayRow[]): Promise<{ claimed: number; handled: number }> {
    const { db } = this.opts;
    if (!this.lock) {
      const rows = await claimPending(db, this.batchSize, now, false);
      return {
        claimed: rows.length,
        handled: this.settle(await this.publishAndMark(db, keep(rows), (ids) => markSent(db, ids, Date.now()))),
      };
    }
    if (!(await anyDue(db, now))) return { claimed: 0, handled: 0 };
    const { claimed, outcome } = await db.transaction(
      async (trx) => {
        const rows = await claimPending(trx, this.batchSize, now, true);
        // Marked inside the claim: its rows are due, so another replica would claim them after the commit.
        return { claimed: rows.length, outcome: await this.publishAndMark(trx, keep(rows), (ids) => markSent(trx, ids, Date.now())) };
      },
      { isolationLevel: "read committed" },
    );
    return { claimed, handled: this.settle(outcome) };
  }

  private async publishAndMark(
    db: Knex,
    rows: RelayRow[],
    mark: (ids: string[]) => Promise<void>,
  ): Promise<{ rows: number; confirmed: number; unroutable: RelayRow[]; unsent: RelayRow[] }> {
    if (!rows.length) return { rows: 0, confirmed: 0, unroutable: [], unsent: [] };
    const ch = await this.confirmChannel();
    const { confirmed, unroutable } = await this.publish(ch, rows);
    if (confirmed.length) await mark(confirmed);
    for (const row of unroutable)
      await markRetry(
        db,
        row.id,
        row.attempts + 1,
        Date.now() + backoffMs(row.attempts + 3, 30_000),
        "routed to no queue by RabbitMQ (no binding for the event)",
      );
    const done = new Set([...confirmed, ...unroutable.map((r) => r.id)]);
    return { rows: rows.length, confirmed: confirmed.length, unroutable, unsent: rows.filter((r) => !done.has(r.id)) };
  }

  /** Counts what was published; throws when the broker did not confirm everything (the loop resets the channel and backs off). */
  private settle(outcome: { rows: number; confirmed: number; unroutable: RelayRow[]; unsent: RelayRow[] }): number {
    this.published += outcome.confirmed;
    if (outcome.unroutable.length) this.onUnroutable(outcome.unroutable);
    if (outcome.unsent.length) throw new Error(`${outcome.unsent.length} of ${outcome.rows} message(s) not confirmed by RabbitMQ`);
    return outcome.rows;
  }

  private mustRoute(event: string): boolean {
    const consumers = this.amqpOpts.consumersOf?.(event);
    return consumers === undefined || consumers.length > 0;
  }

  /**
   * Declares the consumers' work queues and bindings of the events in `toDeclare`, on a channel
   * of its own: a refused declaration closes that channel only, and its event stays to declare.
   */
  private async declareConsumers(): Promise<void> {
    const { topo, consumersOf, link, confirmTimeoutMs = 10_000 } = this.amqpOpts;
    const conn = await link.connection();
    let ch: Channel | undefined;
    try {
      for (const event of [...this.toDeclare]) {
        try {
          if (!ch) {
            ch = await conn.createChannel();
            ch.on("error", () => undefined);
          }
          const declaring = ch;
          for (const service of consumersOf?.(event) ?? [])
            await withTimeout(assertWorkQueue(declaring, topo, service, event), confirmTimeoutMs, "queue declaration");
          this.toDeclare.delete(event);
        } catch (err) {
          await ch?.close().catch(() => undefined);
          ch = undefined;
          this.warn(`the queues of ${event}'s consumers could not be declared (${(err as Error).message}); tried again at the next pass`);
        }
      }
    } finally {
      await ch?.close().catch(() => undefined);
    }
  }

  private onUnroutable(rows: RelayRow[]): void {
    this.unroutable += rows.length;
    // Declared again before the next claim: a binding the broker lost is restored.
    for (const row of rows) this.toDeclare.add(row.event);
    const events = [...new Set(rows.map((r) => r.event))].join(", ");
    this.warn(
      `${rows.length} message(s) of ${events} routed to no queue by RabbitMQ; kept pending and published again (${this.unroutable} so far)`,
    );
  }

  private warn(what: string): void {
    if (this.mayWarn()) this.opts.logger.warn(`Event relay of '${this.opts.source}': ${what}`);
  }

  /**
   * Publishes the rows; resolves with the ids the broker confirmed and routed, and the rows
   * it confirmed but routed to no queue (returned: only events that must reach a consumer
   * are published `mandatory`).
   */
  private async publish(ch: ConfirmChannel, rows: RelayRow[]): Promise<{ confirmed: string[]; unroutable: RelayRow[] }> {
    const { topo, source, confirmTimeoutMs = 10_000 } = this.amqpOpts;
    this.returned.clear();
    const confirmed: string[] = [];
    const unroutable: RelayRow[] = [];
    let pending = rows.length;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      const settle = () => --pending === 0 && resolve();
      // A confirm that never comes (broker stalled, connection half-dead) must not hold the
      // pass, and its row locks, forever: after the timeout what is unconfirmed stays pending.
      timer = setTimeout(resolve, confirmTimeoutMs);
      for (const row of rows) {
        const envelope = toEnvelope(row, source);
        try {
          ch.publish(
            topo.exchange,
            row.event,
            encodeEnvelope(envelope, this.opts.broker),
            {
              persistent: true,
              mandatory: this.mustRoute(row.event),
              messageId: row.id,
              type: row.event,
              appId: source,
              contentType: EVENT_CONTENT_TYPE,
              timestamp: Math.floor(Number(row.occurred_at) / 1000),
            },
            (err) => {
              if (!err && this.returned.has(row.id)) unroutable.push(row);
              else if (!err) {
                confirmed.push(row.id);
                countBusiness(this.opts.broker, "events_published", { service: source, event: row.event }); // confirmed by RabbitMQ
              }
              settle();
            },
          );
        } catch {
          settle(); // channel already closed
        }
      }
    });
    clearTimeout(timer);
    const result = { confirmed: [...confirmed], unroutable: [...unroutable] };
    if (result.confirmed.length + result.unroutable.length < rows.length) await this.reset();
    return result;
  }
}

export interface EmbeddedRelayOptions extends RelayOptions {
  bus: EmbeddedBus;
  maxAttempts: number;
  retryDelaysMs: number[];
}

export class EmbeddedRelay extends RelayLoop {
  /**
   * One process per database file: its sweeps leave the rows held by the hand-over (`held`)
   * alone, so the lease only has to cover the row's transaction (from its insert to its commit)
   * and the moment before its hand-over.
   */
  readonly leaseMs = 1_000;

  constructor(private readonly embOpts: EmbeddedRelayOptions) {
    super(embOpts);
  }

  protected async reset(): Promise<void> {}

  protected deliverHandedOver(rows: RelayRow[]): Promise<number> {
    return this.deliver(rows, true);
  }

  protected async sweep(now: number, keep: (rows: RelayRow[]) => RelayRow[]): Promise<{ claimed: number; handled: number }> {
    const rows = await claimPending(this.embOpts.db, this.batchSize, now, false);
    // Marked at once: a sweep's rows are due, and held ones would fill the next sweeps' batches.
    return { claimed: rows.length, handled: await this.deliver(keep(rows), false) };
  }

  private async deliver(rows: RelayRow[], handedOver: boolean): Promise<number> {
    const { db, source, bus, maxAttempts, retryDelaysMs } = this.embOpts;
    if (!rows.length) return 0;
    const envelopes = rows.map((row) => toEnvelope(row, source));
    // Each subscriber gets all of this pass's rows it subscribes to at once (one transaction
    // when none fails, consumer.ts); a row is sent once every subscriber applied it.
    const failures = new Map<string, { sub: EmbeddedSubscriber; err: Error }[]>();
    const subs = new Set(rows.flatMap((row) => bus.subscribers(row.event)));
    for (const sub of subs) {
      // Removed during the pass (its service stopped): as if it had never subscribed.
      if (!bus.has(sub)) continue;
      const mine = rows.flatMap((row, i) => (sub.events.includes(row.event) ? [i] : []));
      let errors: (Error | undefined)[];
      try {
        errors = await sub.deliverBatch(mine.map((i) => envelopes[i]));
      } catch (err) {
        errors = mine.map(() => err as Error);
      }
      errors.forEach((err, k) => {
        if (!err) return;
        const id = rows[mine[k]].id;
        failures.set(id, [...(failures.get(id) ?? []), { sub, err }]);
      });
    }
    const sent = rows.filter((row) => !failures.has(row.id));
    // One process per database file: a hand-over's rows are held until marked (or their mark
    // failed), so no sweep delivers them again meanwhile.
    if (handedOver) this.markLater(sent);
    else
      await markSent(
        db,
        sent.map((row) => row.id),
        Date.now(),
      );
    this.published += sent.length;
    for (const row of sent) countBusiness(this.opts.broker, "events_published", { service: source, event: row.event });
    for (const [i, row] of rows.entries()) {
      const failed = failures.get(row.id);
      if (!failed) continue;
      const attempts = row.attempts + 1;
      const message = failed.map((f) => f.err.message).join("; ");
      if (attempts >= maxAttempts) {
        for (const f of failed) await f.sub.deadLetter(envelopes[i], attempts, f.err);
        await markRetry(db, row.id, attempts, row.available_at, message);
        await markSent(db, [row.id], Date.now());
      } else {
        const delay = retryDelaysMs[Math.min(attempts - 1, retryDelaysMs.length - 1)] ?? 1000;
        await markRetry(db, row.id, attempts, Date.now() + delay, message);
        for (const f of failed) countBusiness(this.opts.broker, "events_retried", { service: f.sub.service, event: row.event });
      }
    }
    return rows.length;
  }
}
