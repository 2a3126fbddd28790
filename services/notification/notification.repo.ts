/**
 * Data access of the notification service: the only file that knows its tables.
 *
 * The e-mail outbox is claimed row by row with ONE conditional UPDATE each
 * (`WHERE id = ? AND status = 'pending' AND next_attempt_at <= now AND claim expired`),
 * checked by row count: on InnoDB the UPDATE reads the latest committed row under its lock,
 * on SQLite writers are serialized, so two replicas never both win the same row. Every later
 * write of the sender is conditional on its own claim token (`claimed_by`), so a replica
 * whose claim ran out cannot overwrite what the next claimant did.
 */
import type { Knex } from "knex";
import { param, Statement } from "../../lib/db";
import type { NotificationData } from "../../proto/gen/meridian/notification/v1/notification";
import type { ListQuery, NotificationRecord, NotificationType } from "./notification.domain";

interface NotificationRow {
  seq: number | string;
  id: string;
  user_id: string;
  type: string;
  title: string;
  body: string;
  data: string;
  read_at: number | string | null;
  created_at: number | string;
  source_message_id: string;
}

export interface EmailRow {
  id: string;
  source_message_id: string;
  notification_id: string;
  user_id: string;
  type: string;
  status: "pending" | "sent" | "stored" | "failed";
  message_id_header: string;
  to_address: string | null;
  subject: string | null;
  text: string | null;
  html: string | null;
  attempts: number;
  next_attempt_at: number;
  claimed_by: string | null;
  claimed_until: number | null;
  last_attempt_at: number | null;
  last_error: string | null;
  sent_at: number | null;
  created_at: number;
}

const num = (v: number | string | null): number | null => (v === null ? null : Number(v));

/** The stored `data`: written by this service from NotificationData (notification.domain.ts). */
const parseData = (json: string): NotificationData => JSON.parse(json) as NotificationData;

const toNotification = (r: NotificationRow): NotificationRecord => ({
  id: r.id,
  userId: r.user_id,
  type: r.type as NotificationType,
  title: r.title,
  body: r.body,
  data: parseData(r.data),
  readAt: num(r.read_at),
  createdAt: Number(r.created_at),
});

/** An `emails` row as the driver gives it: MariaDB's BIGINT columns may come back as strings. */
type StoredEmail = {
  [K in keyof EmailRow]: EmailRow[K] extends number
    ? number | string
    : EmailRow[K] extends number | null
      ? number | string | null
      : EmailRow[K];
};

const toEmail = (r: StoredEmail): EmailRow => ({
  ...r,
  attempts: Number(r.attempts),
  next_attempt_at: Number(r.next_attempt_at),
  claimed_until: num(r.claimed_until),
  last_attempt_at: num(r.last_attempt_at),
  sent_at: num(r.sent_at),
  created_at: Number(r.created_at),
});

// ---- notifications ----

/** The consumer's three writes per notification, compiled once (lib/db.ts Statement; two notifications per checkout). */
const NOTIFICATION_COLUMNS = ["id", "user_id", "type", "title", "body", "data", "read_at", "created_at", "source_message_id"] as const;
const insertNotificationRow = new Statement<Record<(typeof NOTIFICATION_COLUMNS)[number], Knex.Value>>((db) =>
  db("notifications").insert(Object.fromEntries(NOTIFICATION_COLUMNS.map((c) => [c, param(c)]))),
);
const upsertFeed = new Statement<{ user_id: string; now: number }>((db) =>
  db("notification_feeds")
    .insert({ user_id: param("user_id"), updated_at: param("now") })
    .onConflict("user_id")
    .merge({ updated_at: param("now") }),
);
const EMAIL_COLUMNS = [
  "id",
  "source_message_id",
  "notification_id",
  "user_id",
  "type",
  "status",
  "message_id_header",
  "attempts",
  "next_attempt_at",
  "created_at",
] as const;
const insertEmailRow = new Statement<Record<(typeof EMAIL_COLUMNS)[number], Knex.Value>>((db) =>
  db("emails").insert(Object.fromEntries(EMAIL_COLUMNS.map((c) => [c, param(c)]))),
);

/** Throws a unique violation (lib/db.ts isUniqueViolation) when this event's notification exists. */
export async function insertNotification(trx: Knex.Transaction, n: NotificationRecord, sourceMessageId: string): Promise<void> {
  await insertNotificationRow.run(trx, {
    id: n.id,
    user_id: n.userId,
    type: n.type,
    title: n.title,
    body: n.body,
    data: JSON.stringify(n.data),
    read_at: n.readAt,
    created_at: n.createdAt,
    source_message_id: sourceMessageId,
  });
}

/** The caller's notifications, newest first; `unread` keeps those not read yet. */
export async function listNotifications(db: Knex, userId: string, q: ListQuery): Promise<{ items: NotificationRecord[]; total: number }> {
  const base = () => {
    const b = db<NotificationRow>("notifications").where("user_id", userId);
    return q.unread ? b.whereNull("read_at") : b;
  };
  const [rows, count] = await Promise.all([
    base()
      .orderBy([
        { column: "created_at", order: "desc" },
        { column: "seq", order: "desc" },
      ])
      .limit(q.pageSize)
      .offset((q.page - 1) * q.pageSize),
    base().count({ n: "*" }).first() as Promise<{ n: number | string } | undefined>,
  ]);
  return { items: rows.map(toNotification), total: Number(count?.n ?? 0) };
}

/**
 * Takes the user's feed lock for the rest of `trx` (see the migration 20261204: one user's
 * notifications commit in `seq` order). The row is made on first use.
 */
export async function lockUserFeed(trx: Knex.Transaction, userId: string, now: number): Promise<void> {
  // One statement that takes the row's exclusive lock whether it inserts or updates (INSERT …
  // ON DUPLICATE KEY UPDATE): an insert-ignore then an update would take a shared lock first,
  // and two such transactions deadlock upgrading it.
  await upsertFeed.run(trx, { user_id: userId, now });
}

/** A user's newest notification by `seq` (the live feed's starting point). */
export async function newestNotification(db: Knex, userId: string): Promise<NotificationRecord | undefined> {
  const row = await db<NotificationRow>("notifications").where("user_id", userId).orderBy("seq", "desc").first();
  return row ? toNotification(row) : undefined;
}

/** The position of a user's notification in creation order; undefined for another user's or an unknown id. */
export async function seqOf(db: Knex, userId: string, id: string): Promise<number | undefined> {
  const row = await db<NotificationRow>("notifications").where({ id, user_id: userId }).first("seq");
  return row ? Number(row.seq) : undefined;
}

/** A user's first notifications, oldest first. */
export async function firstNotifications(db: Knex, userId: string, limit: number): Promise<NotificationRecord[]> {
  return (await db<NotificationRow>("notifications").where("user_id", userId).orderBy("seq", "asc").limit(limit)).map(toNotification);
}

/**
 * A user's notifications created after their notification `afterId`, oldest first, in one
 * statement (the cursor's position is a subquery: a live feed's read after a wake is one round
 * trip, not two). Empty both when nothing is newer and when `afterId` is not one of the user's
 * notifications: `seqOf` tells them apart, only when the page is empty.
 */
export async function notificationsAfterId(db: Knex, userId: string, afterId: string, limit: number): Promise<NotificationRecord[]> {
  const cursor = db<NotificationRow>("notifications").where({ id: afterId, user_id: userId }).select("seq");
  return (
    await db<NotificationRow>("notifications").where("user_id", userId).where("seq", ">", cursor).orderBy("seq", "asc").limit(limit)
  ).map(toNotification);
}

/** Scoped to the owner: someone else's id finds nothing. */
export async function findNotification(db: Knex, userId: string, id: string): Promise<NotificationRecord | undefined> {
  const row = await db<NotificationRow>("notifications").where({ id, user_id: userId }).first();
  return row ? toNotification(row) : undefined;
}

/** Marks read once (the first read time stays); undefined when the caller has no such notification. */
export async function markRead(db: Knex, userId: string, id: string, now: number): Promise<NotificationRecord | undefined> {
  await db("notifications").where({ id, user_id: userId }).whereNull("read_at").update({ read_at: now });
  return findNotification(db, userId, id);
}

// ---- e-mail outbox ----

export async function insertEmail(
  trx: Knex.Transaction,
  e: { id: string; sourceMessageId: string; notificationId: string; userId: string; type: string; messageIdHeader: string; now: number },
): Promise<void> {
  await insertEmailRow.run(trx, {
    id: e.id,
    source_message_id: e.sourceMessageId,
    notification_id: e.notificationId,
    user_id: e.userId,
    type: e.type,
    status: "pending",
    message_id_header: e.messageIdHeader,
    attempts: 0,
    next_attempt_at: e.now,
    created_at: e.now,
  });
}

const claimable = (q: Knex.QueryBuilder, now: number) =>
  q
    .where("status", "pending")
    .andWhere("next_attempt_at", "<=", now)
    // (`void`: the callback builds the nested condition on `w`; its result is not a query to await.)
    .andWhere((w) => void w.whereNull("claimed_until").orWhere("claimed_until", "<=", now));

/** Ids of e-mails due now and not claimed by a live claim, oldest due first. */
export async function dueEmailIds(db: Knex, now: number, limit: number): Promise<string[]> {
  const rows = (await claimable(db("emails").select("id"), now).orderBy("next_attempt_at").limit(limit)) as { id: string }[];
  return rows.map((r) => r.id);
}

/**
 * Claims one e-mail for `leaseMs` and counts the attempt (so a row that crashes its sender
 * every time still runs out of attempts). Returns the row, or undefined when another
 * replica claimed it first.
 */
export async function claimEmail(db: Knex, id: string, token: string, now: number, leaseMs: number): Promise<EmailRow | undefined> {
  if (!(await claimEmailOnly(db, id, token, now, leaseMs))) return undefined;
  const row = await db("emails").where({ id, claimed_by: token }).first<StoredEmail | undefined>();
  return row ? toEmail(row) : undefined;
}

/**
 * claimEmail without reading the row back, for a sender that holds it already: true when
 * claimed. With `attempts`, only while the row still has that many attempts: a row some pass
 * tried meanwhile is not the one held in memory (its count and backoff moved on).
 */
export async function claimEmailOnly(
  db: Knex,
  id: string,
  token: string,
  now: number,
  leaseMs: number,
  attempts?: number,
): Promise<boolean> {
  const q = claimable(db("emails").where("id", id), now);
  if (attempts !== undefined) q.where("attempts", attempts);
  const n = await q.update({
    claimed_by: token,
    claimed_until: now + leaseMs,
    attempts: db.raw("attempts + 1"),
    last_attempt_at: now,
  });
  return n === 1;
}

/** Final state after a successful hand-over (`sent`) or storing (`stored`). False if the claim was lost. */
export async function finishEmail(
  db: Knex,
  id: string,
  token: string,
  status: "sent" | "stored",
  mail: { to: string; subject: string; text: string; html: string },
  now: number,
): Promise<boolean> {
  const n = await db("emails").where({ id, claimed_by: token, status: "pending" }).update({
    status,
    to_address: mail.to,
    subject: mail.subject,
    text: mail.text,
    html: mail.html,
    sent_at: now,
    claimed_by: null,
    claimed_until: null,
    last_error: null,
  });
  return n === 1;
}

/** A failed attempt: due again at `nextAt`, or `failed` for good when `giveUp`. */
export async function failEmail(db: Knex, id: string, token: string, error: string, nextAt: number, giveUp: boolean): Promise<boolean> {
  const n = await db("emails")
    .where({ id, claimed_by: token, status: "pending" })
    .update({
      status: giveUp ? "failed" : "pending",
      next_attempt_at: nextAt,
      claimed_by: null,
      claimed_until: null,
      last_error: error.slice(0, 500),
    });
  return n === 1;
}

/** A user's e-mails, newest first (the embedded "mailbox" and tests). */
export async function listEmails(db: Knex, userId: string | undefined, limit: number): Promise<EmailRow[]> {
  const q = db("emails")
    .orderBy([
      { column: "created_at", order: "desc" },
      { column: "id", order: "asc" },
    ])
    .limit(limit);
  if (userId) q.where("user_id", userId);
  return (await q).map(toEmail);
}
