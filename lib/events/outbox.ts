/**
 * The outbox: knex-only helpers. A service writes its event row with `addOutboxEvent(trx, …)`
 * in the SAME transaction as the state change, so both commit or neither does; the relay
 * (relay.ts) publishes committed rows and marks them sent.
 */
import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import { auditEvent } from "../serializer/contract-audit";
import { param, Statement } from "../db";

/** What consumers receive; on RabbitMQ it travels as a protobuf EventEnvelope (wire.ts). */
export interface Envelope<P = unknown> {
  /** Outbox row id = AMQP messageId = the consumer's inbox key. */
  id: string;
  name: string;
  /** Publishing service. */
  source: string;
  /** ISO 8601 time of the commit's state change. */
  occurredAt: string;
  payload: P;
}

export interface OutboxRow {
  seq: number;
  id: string;
  event: string;
  payload: string;
  occurred_at: number;
  available_at: number;
  attempts: number;
  last_error: string | null;
  sent_at: number | null;
}

/** What the relay needs of a row to publish it and mark it (a claimed row, or one handed over). */
export type RelayRow = Pick<OutboxRow, "id" | "event" | "payload" | "occurred_at" | "available_at" | "attempts">;

/** The outbox row's insert, compiled once (every business event of every service writes one). */
const insertRow = new Statement<Record<keyof RelayRow, string | number>>((db) =>
  db("outbox").insert({
    id: param("id"),
    event: param("event"),
    payload: param("payload"),
    occurred_at: param("occurred_at"),
    available_at: param("available_at"),
    attempts: param("attempts"),
  }),
);

/**
 * Inserts an event row in the caller's transaction and returns it (its id is the message id).
 * `leaseMs`: the row is not due for the relays' sweeps (`available_at`) until then: the relay
 * of the process that commits it takes it from memory at once (relay.ts, `handOver`); after
 * the lease (that process died, or its publish failed) any relay's sweep takes it.
 */
export async function addOutboxEvent(
  trx: Knex.Transaction,
  event: { name: string; payload: unknown; id?: string; occurredAt?: number },
  leaseMs = 0,
): Promise<RelayRow> {
  auditEvent(event.name, event.payload);
  const occurredAt = event.occurredAt ?? Date.now();
  const row: RelayRow = {
    id: event.id ?? randomUUID(),
    event: event.name,
    payload: JSON.stringify(event.payload ?? null),
    occurred_at: occurredAt,
    available_at: occurredAt + leaseMs,
    attempts: 0,
  };
  await insertRow.run(trx, row);
  return row;
}

export function toEnvelope(row: RelayRow, source: string): Envelope {
  return {
    id: row.id,
    name: row.event,
    source,
    occurredAt: new Date(Number(row.occurred_at)).toISOString(),
    payload: JSON.parse(row.payload),
  };
}

/**
 * Pending rows, lowest `seq` first. With `lock` (MariaDB, inside a transaction) the rows are
 * claimed with `FOR UPDATE SKIP LOCKED`: a replica skips rows another replica holds, so
 * replicas share the work without publishing a row twice while both are healthy. The
 * caller's transaction should be READ COMMITTED so that no gap lock blocks the producers'
 * inserts of new rows while the relay waits for the broker.
 */
export async function claimPending(db: Knex, limit: number, now: number, lock: boolean): Promise<OutboxRow[]> {
  const rows = lock
    ? (
        (await db.raw("SELECT * FROM outbox WHERE sent_at IS NULL AND available_at <= ? ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED", [
          now,
          limit,
        ])) as [OutboxRow[], unknown]
      )[0]
    : await db<OutboxRow>("outbox").whereNull("sent_at").andWhere("available_at", "<=", now).orderBy("seq").limit(limit);
  return rows.map((r) => ({ ...r, seq: Number(r.seq), occurred_at: Number(r.occurred_at), available_at: Number(r.available_at) }));
}

export async function markSent(db: Knex, ids: string[], now: number): Promise<void> {
  if (ids.length) await db("outbox").whereIn("id", ids).update({ sent_at: now });
}

/** Not delivered (embedded: a subscriber failed; AMQP: routed to no queue): try again at `availableAt`. */
export async function markRetry(db: Knex, id: string, attempts: number, availableAt: number, error: string): Promise<void> {
  await db("outbox")
    .where({ id })
    .update({ attempts, available_at: availableAt, last_error: error.slice(0, 500) });
}

/** Handed-over rows this relay will not publish (a failed publish, a stop): due for any sweep now, not at the lease's end. */
export async function releaseLeases(db: Knex, ids: string[], now: number): Promise<void> {
  if (ids.length)
    await db("outbox").whereIn("id", ids).whereNull("sent_at").andWhere("available_at", ">", now).update({ available_at: now });
}

/** Whether any row is due (a sweep's cheap look before it opens a transaction to claim). */
export async function anyDue(db: Knex, now: number): Promise<boolean> {
  return (await db("outbox").select("seq").whereNull("sent_at").andWhere("available_at", "<=", now).limit(1)).length > 0;
}

export async function pendingCount(db: Knex): Promise<number> {
  const row = (await db("outbox").whereNull("sent_at").count({ n: "*" }).first()) as { n: number | string } | undefined;
  return Number(row?.n ?? 0);
}

/** Deletes sent outbox rows and inbox rows older than `before`, at most `limit` of each. */
export async function purgeOld(db: Knex, before: number, limit = 1000): Promise<number> {
  // Keys first: MariaDB refuses a subquery on the table a DELETE is deleting from.
  const seqs = (await db("outbox").select("seq").where("sent_at", "<", before).limit(limit)).map((r: { seq: number }) => r.seq);
  const ids = (await db("inbox").select("message_id").where("received_at", "<", before).limit(limit)).map(
    (r: { message_id: string }) => r.message_id,
  );
  const sent = seqs.length ? await db("outbox").whereIn("seq", seqs).del() : 0;
  const inbox = ids.length ? await db("inbox").whereIn("message_id", ids).del() : 0;
  return sent + inbox;
}

/**
 * The latest outbox rows, newest first; with `containing`, only those whose payload holds that
 * text (an order id, say: a LIKE over the JSON, fine for looking at a system, not a hot path).
 */
export async function recentOutbox(db: Knex, limit: number, containing?: string): Promise<OutboxRow[]> {
  const q = db<OutboxRow>("outbox").orderBy("seq", "desc").limit(limit);
  // Letters, digits and dashes only (an id): no LIKE wildcard, and no escape syntax, which
  // SQLite and MariaDB spell differently.
  if (containing !== undefined) {
    // At least 8 characters: a shorter text would match most payloads by chance.
    if (!/^[A-Za-z0-9-]{8,64}$/.test(containing)) throw new Error("an id to look for: 8 to 64 letters, digits and dashes");
    q.where("payload", "like", `%${containing}%`);
  }
  return (await q).map((r) => ({
    ...r,
    seq: Number(r.seq),
    occurred_at: Number(r.occurred_at),
    sent_at: r.sent_at === null ? null : Number(r.sent_at),
  }));
}

/** Of these message ids, those this database's inbox holds (applied here), with when. */
export async function inboxReceived(db: Knex, ids: string[]): Promise<Map<string, number>> {
  if (!ids.length) return new Map();
  const rows = await db<{ message_id: string; received_at: number | string }>("inbox")
    .whereIn("message_id", ids)
    .select("message_id", "received_at");
  return new Map(rows.map((r) => [r.message_id, Number(r.received_at)]));
}
