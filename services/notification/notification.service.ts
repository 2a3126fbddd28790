/**
 * Notification service: turns the order service's business events into one in-app
 * notification and one e-mail each, from templates (notification.domain.ts).
 *
 * Events consumed (EventsMixin; the payloads are the order service's contract):
 * `order.created` → `order.created`, `order.paid` → `payment.succeeded`,
 * `order.payment_failed` → `payment.failed`, `order.shipped`, `order.delivered`,
 * `order.cancelled`, `order.refunded` → `refund.succeeded`, `order.payment_refunded` (a charge
 * the order did not keep, returned) → `payment.refunded`.
 *
 * Guarantees and their limits:
 * - One notification and one e-mail job per event. The handler runs inside the inbox
 *   transaction (lib/events/consumer.ts `applyOnce`): the inbox row, the notification and
 *   the `emails` outbox row commit together or not at all, so a repeated event (redelivery,
 *   retry, a concurrent copy) is a no-op. Both rows are also unique per event message id:
 *   the notification's insert fails on a duplicate arriving after the inbox's 7-day
 *   retention, and the handler then writes nothing more.
 * - The handler does no I/O besides its own database: the recipient's address and name are
 *   looked up (`user.get`) when the e-mail is sent, so a slow or absent user service never
 *   holds the inbox transaction open, and the e-mail goes to the address the user has then.
 * - Sending (every replica runs the sender loop): an e-mail due now is claimed with one
 *   conditional UPDATE (`status = 'pending' AND next_attempt_at <= now AND claim expired`,
 *   row count checked), which also counts the attempt; then the message goes to SMTP; then
 *   the row is marked `sent`, conditional on the claim. Replicas never send a row at the same
 *   time while its claim (CLAIM_LEASE_MS) lives, and the SMTP timeouts (mailer.ts) end an
 *   attempt well before that. A failure is retried with exponential backoff
 *   (MAIL_RETRY_BASE_MS, doubling, capped at an hour, 10 % jitter) up to MAIL_MAX_ATTEMPTS
 *   attempts, then the row is `failed` and logged as an error; a recipient the server refuses
 *   for good (5xx on RCPT/DATA) or a user that no longer exists fails at once.
 * - Hand-over: once the handler's transaction commits, its e-mail and notification go to this
 *   replica's sender in memory, which claims the row (the same conditional UPDATE) and sends
 *   without reading anything back; a pass finds what a hand-over did not take (a crash before
 *   the claim, a stop, a long queue) in the table, as before.
 * - The limit: sending is at-least-once on the SMTP side. A crash (or a lost database)
 *   between the SMTP server's acceptance and the `sent` mark, or an acceptance whose reply
 *   was lost (a timeout after DATA), sends the message again on a later attempt: normally
 *   once more. Every copy carries the same Message-ID header (`<notification-<id>@domain>`,
 *   from MAIL_FROM's domain), so receivers and mail stores can drop the duplicate.
 * - Without SMTP_URL (embedded default; allowed in cluster mode too) e-mails are kept in
 *   the database only: the sender renders them and stores them with status `stored`,
 *   readable with `notification.outbox` (REPL, tests). Nothing leaves the machine.
 */
import { forRunner } from "../../lib/runner";
import { randomUUID } from "node:crypto";
import path from "node:path";
import type { Context } from "moleculer";
import type { Knex } from "knex";
import type { AppConfig } from "../../lib/config";
import { requireUser, type RequestContext } from "../../lib/context";
import { isUniqueViolation, type Db } from "../../lib/db";
import { errorCode, notFound } from "../../lib/errors";
import type { EventHandler } from "../../lib/events/consumer";
import type { Envelope } from "../../lib/events/outbox";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin, type EventsServiceThis } from "../../mixins/events.mixin";
import { createMailer, isPermanentRejection, type Mailer } from "./mailer";
import {
  EVENT_TYPES,
  emailFor,
  messageIdFor,
  notificationFor,
  parseListQuery,
  recipientOf,
  retryDelayMs,
  toPublicNotification,
  type NotificationRecord,
} from "./notification.domain";
import * as repo from "./notification.repo";
import { callAction } from "../../lib/call";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { periodic, type Periodic } from "../../lib/periodic";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { Events } from "../../proto/gen/contracts";

/** How long a claim keeps other replicas off an e-mail: far above the SMTP timeouts. */
export const CLAIM_LEASE_MS = 5 * 60_000;
/** E-mails looked at per query of a sender pass. */
const SEND_BATCH = 50;
/** E-mails sent at once by one replica (by its passes, and again by its hand-overs). */
const SEND_CONCURRENCY = 5;
/** How long a stopping sender waits for its sends: past the SMTP timeouts (mailer.ts). */
const STOP_WAIT_MS = 60_000;
/** Hand-overs waiting beyond this many are left to the passes (they are in the table). */
const HANDOVER_QUEUE = 1000;

/** What the sender needs of an e-mail row. */
type EmailJob = Pick<repo.EmailRow, "id" | "user_id" | "notification_id" | "message_id_header" | "attempts" | "type">;

type Ctx<P = Record<string, unknown>> = RequestContext<P>;

interface Logger {
  info(...a: unknown[]): void;
  warn(...a: unknown[]): void;
  error(...a: unknown[]): void;
}

interface NotificationServiceThis extends EventsServiceThis {
  db: Db;
  broker: Context["broker"];
  logger: Logger;
  sender?: EmailSender;
  mailer?: Mailer;
}

/**
 * The e-mail outbox's sender loop of one replica: a pass when woken (a handler's commit)
 * and every `pollMs` (rows of other replicas, retries that came due, claims left by a crash).
 */
export class EmailSender {
  private loop?: Periodic;
  private stopping = false;
  /** Hand-overs not yet claimed, and the sends of claimed ones in flight. */
  private readonly handedOver: { email: EmailJob; notification: NotificationRecord }[] = [];
  private readonly handOverSends = new Set<Promise<void>>();

  constructor(
    private readonly opts: {
      db: Db;
      mailer: Mailer;
      nodeId: string;
      maxAttempts: number;
      retryBaseMs: number;
      pollMs: number;
      logger: Logger;
      /** The recipient: `user.get` through the broker. */
      lookupUser(id: string): Promise<{ email: string; name?: string | null }>;
    },
  ) {}

  start(): void {
    this.loop ??= periodic("E-mail sender", this.opts.pollMs, () => this.pass(), this.opts.logger, {
      // A pass stops claiming once stopping; the sends in flight end within the SMTP timeouts
      // (connect 10 s + greeting 10 s + socket 30 s). Waited for past them, so the mailer and
      // the database are not closed under a send (which would send that e-mail again later).
      stopWaitMs: STOP_WAIT_MS,
    });
  }

  /** Runs a pass now (or right after the one in progress). */
  kick(): void {
    if (!this.stopping) this.loop?.kick();
  }

  /**
   * An e-mail its handler has just committed, with its notification: claimed (the same
   * conditional UPDATE as a pass's) and sent without reading either back, and without a pass's
   * query for due rows (#16: 3 statements fewer per e-mail). What this cannot take (stopping,
   * a long queue) stays pending in the table for the passes; one a pass claimed first is skipped.
   */
  handOver(email: EmailJob, notification: NotificationRecord): void {
    if (this.stopping) return;
    if (this.handedOver.length >= HANDOVER_QUEUE) return this.kick();
    this.handedOver.push({ email, notification });
    this.drainHandOvers();
  }

  private drainHandOvers(): void {
    while (!this.stopping && this.handOverSends.size < SEND_CONCURRENCY && this.handedOver.length) {
      const { email, notification } = this.handedOver.shift()!;
      const token = this.newToken();
      const send = repo
        // Only the row as its handler wrote it (no attempt yet): one a pass tried meanwhile
        // (and failed, with its own count and backoff) is left to the passes.
        .claimEmailOnly(this.opts.db, email.id, token, Date.now(), CLAIM_LEASE_MS, email.attempts)
        .then((claimed) => (claimed ? this.send({ ...email, attempts: email.attempts + 1 }, token, notification) : undefined))
        .catch((err: unknown) =>
          this.opts.logger.warn(
            `E-mail ${email.id}: hand-over failed, left to the sender's passes: ${String((err as Error)?.message ?? err)}`,
          ),
        )
        .finally(() => {
          this.handOverSends.delete(send);
          this.drainHandOvers();
        });
      this.handOverSends.add(send);
    }
  }

  /** Waits for the pass and the hand-over sends in progress (their SMTP timeouts bound them; at most 60 s). */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop?.stop();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all([...this.handOverSends]), new Promise((resolve) => (timer = setTimeout(resolve, STOP_WAIT_MS)))]);
    clearTimeout(timer);
  }

  private newToken(): string {
    return `${this.opts.nodeId.slice(0, 60)}:${randomUUID()}`;
  }

  /** Claims and sends what is due; returns how many e-mails it handled. */
  async pass(): Promise<number> {
    let handled = 0;
    while (!this.stopping) {
      const ids = await repo.dueEmailIds(this.opts.db, Date.now(), SEND_BATCH);
      let claimed = 0;
      for (let i = 0; i < ids.length && !this.stopping; i += SEND_CONCURRENCY) {
        const results = await Promise.all(ids.slice(i, i + SEND_CONCURRENCY).map((id) => this.claimAndSend(id)));
        claimed += results.filter(Boolean).length;
      }
      handled += claimed;
      // Another replica took them, or there is nothing more: the next poll looks again.
      if (ids.length < SEND_BATCH || claimed === 0) break;
    }
    return handled;
  }

  private async claimAndSend(id: string): Promise<boolean> {
    const token = this.newToken();
    const row = await repo.claimEmail(this.opts.db, id, token, Date.now(), CLAIM_LEASE_MS);
    if (!row) return false;
    await this.send(row, token);
    return true;
  }

  /** Sends a claimed e-mail (its notification read here unless given) and records the outcome. */
  private async send(row: EmailJob, token: string, given?: NotificationRecord): Promise<void> {
    try {
      const notification = given ?? (await repo.findNotification(this.opts.db, row.user_id, row.notification_id));
      if (!notification) throw Object.assign(new Error("notification not found"), { permanentFailure: true });
      let user: { email: string; name?: string | null };
      try {
        user = await this.opts.lookupUser(row.user_id);
      } catch (err) {
        if (errorCode(err) === "NOT_FOUND") throw Object.assign(new Error("user not found"), { permanentFailure: true });
        throw err;
      }
      const content = emailFor(notification, user);
      // The state change that counts comes after the SMTP server's acceptance: a crash in
      // between resends (see the header), never loses the e-mail.
      if (this.opts.mailer.kind === "smtp")
        await this.opts.mailer.send({ ...content, to: user.email, messageId: row.message_id_header, notificationId: row.notification_id });
      const done = await repo.finishEmail(
        this.opts.db,
        row.id,
        token,
        this.opts.mailer.kind === "smtp" ? "sent" : "stored",
        { to: user.email, ...content },
        Date.now(),
      );
      if (!done) this.opts.logger.warn(`E-mail ${row.id}: claim lost before it was marked (it may be sent again)`);
    } catch (err) {
      const message = String((err as Error)?.message ?? err);
      const giveUp =
        (err as { permanentFailure?: boolean }).permanentFailure === true ||
        isPermanentRejection(err) ||
        row.attempts >= this.opts.maxAttempts;
      const nextAt = Date.now() + retryDelayMs(row.attempts, this.opts.retryBaseMs, Math.random());
      await repo.failEmail(this.opts.db, row.id, token, message, nextAt, giveUp);
      if (giveUp)
        this.opts.logger.error(
          `E-mail ${row.id} (${row.type} for user ${row.user_id}) failed for good after ${row.attempts} attempt(s): ${message}`,
        );
      else
        this.opts.logger.warn(
          `E-mail ${row.id}: attempt ${row.attempts}/${this.opts.maxAttempts} failed, next in ${nextAt - Date.now()} ms: ${message}`,
        );
    }
  }
}

export function createNotificationService(config: AppConfig): TypedServiceSchema<NotificationServiceThis> {
  // Handlers are plain functions (EventsMixin's options); they wake this service's sender
  // through this holder once their transaction has committed.
  const wake: { sender?: EmailSender } = {};

  const onEvent = (event: string): EventHandler =>
    async function (this: NotificationServiceThis, trx: Knex.Transaction, payload: Record<string, unknown>, envelope: Envelope) {
      const userId = recipientOf(payload);
      const content = notificationFor(event, payload);
      const id = randomUUID();
      const now = Date.now();
      // The user's notifications commit in `seq` order: the live feed reads them by it.
      await repo.lockUserFeed(trx, userId, now);
      const notification: NotificationRecord = { id, userId, ...content, readAt: null, createdAt: now };
      try {
        await repo.insertNotification(trx, notification, envelope.id);
      } catch (err) {
        // Unique per event: this event's notification exists (a duplicate arriving after the
        // inbox's retention). Only this statement failed; nothing more is written (the feed
        // row above was touched, its `updated_at` only).
        if (isUniqueViolation(err)) return;
        throw err;
      }
      const email = {
        id: randomUUID(),
        user_id: userId,
        notification_id: id,
        message_id_header: messageIdFor(id, config.mail.from),
        attempts: 0,
        type: content.type,
      };
      await repo.insertEmail(trx, {
        id: email.id,
        sourceMessageId: envelope.id,
        notificationId: id,
        userId,
        type: content.type,
        messageIdHeader: email.message_id_header,
        now,
      });
      // For the edges' live feeds (lib/live/feeds.ts): committed with the notification.
      await this.publishEvent(trx, Events.NotificationCreated, {
        notificationId: id,
        userId,
        type: content.type,
        occurredAt: new Date(now).toISOString(),
      });
      trx.executionPromise.then(
        () => wake.sender?.handOver(email, notification),
        () => undefined,
      );
    };

  return {
    name: "notification",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [
      EventsMixin({ name: "notification", config, consumes: Object.fromEntries(Object.keys(EVENT_TYPES).map((e) => [e, onEvent(e)])) }),
      DbMixin({ name: "notification", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      list: {
        auth: "user",
        params: Params["notification.list"],
        async handler(
          this: NotificationServiceThis,
          ctx: Ctx<ActionParams<"notification.list">>,
        ): Promise<ActionResponse<"notification.list">> {
          const me = requireUser(ctx);
          const q = parseListQuery(ctx.params);
          const { items, total } = await repo.listNotifications(this.db, me.id, q);
          return { items: items.map(toPublicNotification), total, page: q.page, pageSize: q.pageSize };
        },
      },

      read: {
        auth: "user",
        // Unknown fields (an injected userId) are dropped: ownership alone decides, 404.
        params: Params["notification.read"],
        async handler(
          this: NotificationServiceThis,
          ctx: Ctx<ActionParams<"notification.read">>,
        ): Promise<ActionResponse<"notification.read">> {
          const me = requireUser(ctx);
          const n = await repo.markRead(this.db, me.id, ctx.params.id, Date.now());
          if (!n) throw notFound("Notification");
          return toPublicNotification(n);
        },
      },

      /**
       * The e-mail outbox, newest first: what was (or will be) sent, or, without SMTP_URL,
       * the e-mails kept in the database. Not routed; for the REPL and tests.
       */
      outbox: {
        visibility: "public",
        params: Params["notification.outbox"],
        async handler(
          this: NotificationServiceThis,
          ctx: Ctx<ActionParams<"notification.outbox">>,
        ): Promise<ActionResponse<"notification.outbox">> {
          const rows = await repo.listEmails(this.db, ctx.params.userId, ctx.params.limit ?? 100);
          return rows.map((r) => ({
            id: r.id,
            notificationId: r.notification_id,
            sourceMessageId: r.source_message_id,
            userId: r.user_id,
            type: r.type,
            status: r.status,
            to: r.to_address,
            subject: r.subject,
            text: r.text,
            html: r.html,
            messageId: r.message_id_header,
            attempts: r.attempts,
            nextAttemptAt: new Date(r.next_attempt_at).toISOString(),
            lastError: r.last_error,
            sentAt: r.sent_at === null ? null : new Date(r.sent_at).toISOString(),
            createdAt: new Date(r.created_at).toISOString(),
          }));
        },
      },

      /**
       * For the edges' live feeds: a user's notifications after the one given (all of them
       * without one), oldest first. Not routed; the edge passes the verified caller's id.
       */
      since: {
        visibility: "public",
        params: Params["notification.since"],
        async handler(
          this: NotificationServiceThis,
          ctx: Ctx<ActionParams<"notification.since">>,
        ): Promise<ActionResponse<"notification.since">> {
          const { userId, after } = ctx.params;
          if (ctx.params.newest) {
            const n = await repo.newestNotification(this.db, userId);
            return { items: n ? [toPublicNotification(n)] : [] };
          }
          const limit = ctx.params.limit ?? 100;
          if (after === undefined) return { items: (await repo.firstNotifications(this.db, userId, limit)).map(toPublicNotification) };
          const items = await repo.notificationsAfterId(this.db, userId, after, limit);
          // An empty page: nothing newer, or a cursor that is not one of the user's notifications (404).
          if (!items.length && (await repo.seqOf(this.db, userId, after)) === undefined) throw notFound("Notification");
          return { items: items.map(toPublicNotification) };
        },
      },

      /** Runs one sender pass now and answers how many e-mails it handled. Not routed (REPL, tests). */
      sendPending: {
        visibility: "public",
        params: Params["notification.sendPending"],
        async handler(this: NotificationServiceThis): Promise<ActionResponse<"notification.sendPending">> {
          return { handled: (await this.sender?.pass()) ?? 0 };
        },
      },
    },

    async started(this: NotificationServiceThis) {
      const mailer = createMailer(config.mail);
      this.sender = new EmailSender({
        db: this.db,
        mailer,
        nodeId: config.nodeId,
        maxAttempts: config.mail.maxAttempts,
        retryBaseMs: config.mail.retryBaseMs,
        pollMs: config.events.pollIntervalMs,
        logger: this.logger,
        lookupUser: (id) => callAction(this.broker, "user.get", { id }),
      });
      this.mailer = mailer;
      wake.sender = this.sender;
      this.logger.info(
        mailer.kind === "smtp"
          ? "Notification e-mail: SMTP"
          : "Notification e-mail: no SMTP_URL, e-mails are kept in the database (notification.outbox)",
      );
      this.sender.start();
      this.sender.kick();
    },

    async stopped(this: NotificationServiceThis) {
      wake.sender = undefined;
      await this.sender?.stop();
      this.mailer?.close();
    },
  };
}

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createNotificationService);
