/**
 * The notification service in this process: events delivered through the consumer path
 * (the embedded bus's subscriber, i.e. the inbox's `applyOnce`), the in-app API through the
 * gateway, and the e-mail outbox — kept in the database on SQLite (no SMTP_URL), and sent to
 * a real SMTP server (`smtp-server`, parsed with `mailparser`) on MariaDB + Redis.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "mocha";
import type { Knex } from "knex";
import { simpleParser, type ParsedMail } from "mailparser";
import { SMTPServer } from "smtp-server";
import { busFor } from "../../lib/events/consumer";
import type { Envelope } from "../../lib/events/outbox";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { freePort } from "../../test/support/ports";
import { createMailer } from "./mailer";
import { EVENT_TYPES, messageIdFor, retryDelayMs } from "./notification.domain";
import { EmailSender } from "./notification.service";
import { SAMPLE_EVENTS } from "./test-fixtures";

/** One notification per consumed event type (the samples cover each). */
const EVENT_COUNT = Object.keys(SAMPLE_EVENTS).length;
import { eventually } from "../../test/support/eventually";
import { untilQuiet } from "../../test/support/quiet";

const FROM_DOMAIN = "meridian.test";

/** A real SMTP server on a fixed port that can be stopped and started again ("down"). */
class TestSmtp {
  readonly received: { mail: ParsedMail; rcpt: string[] }[] = [];
  private server?: SMTPServer;
  constructor(readonly port: number) {}

  async start(): Promise<void> {
    const received = this.received;
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ["STARTTLS"],
      logger: false,
      onRcptTo(address, _session, cb) {
        // A mailbox that does not exist: a permanent rejection.
        if (address.address.startsWith("bounce")) return cb(Object.assign(new Error("5.1.1 no such mailbox"), { responseCode: 550 }));
        cb();
      },
      onData(stream, session, cb) {
        simpleParser(stream).then(
          (mail) => {
            received.push({ mail, rcpt: session.envelope.rcptTo.map((r) => r.address) });
            cb();
          },
          (err: Error) => cb(err),
        );
      },
    });
    server.on("error", () => undefined);
    await new Promise<void>((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  withMessageId(id: string) {
    return this.received.filter((r) => r.mail.messageId === id);
  }

  /** SMTP sessions open now: a send in progress (the mailer opens one per message). */
  openConnections(): number {
    return this.server?.connections.size ?? 0;
  }
}

const waitFor = <T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 15_000) =>
  eventually(what, check, timeoutMs, 25);

interface OutboxItem {
  id: string;
  notificationId: string;
  sourceMessageId: string;
  userId: string;
  type: string;
  status: string;
  to: string | null;
  subject: string | null;
  text: string | null;
  html: string | null;
  messageId: string;
  attempts: number;
  lastError: string | null;
}

for (const storage of ["sqlite", "mariadb"] as const) {
  const smtpMode = storage === "mariadb";
  describe(`notification service (${storage}, e-mail ${smtpMode ? "over SMTP" : "kept in the database"})`, () => {
    let app: TestApp;
    let smtp: TestSmtp | undefined;
    const users: Record<"ada" | "bob", { id: string; email: string; token: string }> = {} as never;
    const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
    const db = () => (app.broker.getLocalService("notification") as unknown as { db: Knex }).db;
    const subscriber = (event: string) => {
      const sub = busFor(app.broker)
        .subscribers(event)
        .find((s) => s.service === "notification");
      assert.ok(sub, `a notification subscriber for ${event}`);
      return sub;
    };
    const envelope = (event: string, payload: Record<string, unknown>): Envelope => ({
      id: randomUUID(),
      name: event,
      source: "order",
      occurredAt: new Date().toISOString(),
      payload,
    });
    const deliver = (e: Envelope) => subscriber(e.name).deliver(e);
    const outbox = async (userId?: string) => await app.broker.call<OutboxItem[], unknown>("notification.outbox", userId ? { userId } : {});
    const emailOf = async (sourceMessageId: string) => (await outbox()).find((e) => e.sourceMessageId === sourceMessageId);
    const done = smtpMode ? "sent" : "stored";
    /**
     * Waits until no e-mail is pending or claimed and no SMTP session is open, then runs one
     * more sender pass itself (it awaits its sends): after that, whatever a sender would
     * still send has been sent, so a count taken now is final.
     */
    const mailQuiet = async () => {
      await untilQuiet(
        "the e-mail outbox",
        {
          "e-mails pending or claimed": async () => {
            const row = (await db()("emails").where({ status: "pending" }).orWhereNotNull("claimed_by").count({ n: "*" }).first()) as {
              n: number | string;
            };
            return Number(row.n);
          },
          "open SMTP sessions": () => smtp?.openConnections() ?? 0,
        },
        30_000,
        25,
      );
      return await app.broker.call<{ handled: number }>("notification.sendPending");
    };

    before(async () => {
      const env: Record<string, string> = {
        EVENTS_POLL_INTERVAL_MS: "50",
        MAIL_FROM: `Meridian Shop <shop@${FROM_DOMAIN}>`,
        MAIL_RETRY_BASE_MS: "200",
        MAIL_MAX_ATTEMPTS: "4",
      };
      if (smtpMode) {
        smtp = new TestSmtp(await freePort());
        await smtp.start();
        env.SMTP_URL = `smtp://127.0.0.1:${smtp.port}`;
      }
      app = await startTestApp({ db: storage, redis: storage === "mariadb", services: ["gateway", "user", "notification"], env });
      for (const [key, name] of [
        ["ada", "Ada"],
        ["bob", "Bob"],
      ] as const) {
        const email = `${key}-${randomUUID().slice(0, 8)}@example.com`;
        const r = await call("POST", "/api/auth/register", { body: { email, password: "correct horse battery", name } });
        assert.equal(r.status, 201, r.text);
        users[key] = { id: r.body.user.id, email, token: r.body.accessToken };
      }
    });
    after(async () => {
      await app?.stop();
      await smtp?.stop();
    });

    it("every event type: one in-app notification (newest first) and one e-mail to the user's address", async () => {
      const delivered: { event: string; env: Envelope }[] = [];
      for (const [event, sample] of Object.entries(SAMPLE_EVENTS)) {
        const env = envelope(event, { ...sample, userId: users.ada.id });
        await deliver(env);
        delivered.push({ event, env });
      }
      const r = await call("GET", "/api/notifications", { token: users.ada.token });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.total, EVENT_COUNT);
      assert.equal(r.body.page, 1);
      assert.equal(r.body.pageSize, 20);
      assert.deepEqual(
        r.body.items.map((n: { type: string }) => n.type),
        delivered.map((d) => EVENT_TYPES[d.event]).reverse(),
        "newest first",
      );
      for (const n of r.body.items) {
        assert.deepEqual(Object.keys(n).sort(), ["body", "createdAt", "data", "id", "read", "title", "type"]);
        assert.equal(n.read, false);
        assert.equal(n.data.orderId, SAMPLE_EVENTS["order.created"].orderId);
        assert.match(n.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      }
      const byType = new Map(r.body.items.map((n: { type: string }) => [n.type, n]));
      assert.match((byType.get("order.created") as { body: string }).body, /CN¥1,234\.56/);

      // The e-mails: one per event, to Ada's address, with the template's subject.
      for (const { env } of delivered) {
        const e = await waitFor(`e-mail for ${env.name}`, async () => {
          const row = await emailOf(env.id);
          return row?.status === done ? row : undefined;
        });
        const n = r.body.items.find((x: { id: string }) => x.id === e.notificationId);
        assert.ok(n, "the e-mail belongs to the notification");
        assert.equal(e.to, users.ada.email);
        assert.equal(e.subject, `Meridian: ${n.title}`);
        assert.equal(e.messageId, `<notification-${n.id}@${FROM_DOMAIN}>`);
        assert.match(e.text!, /^Hello Ada,/);
        assert.ok(e.text!.includes(n.body));
        assert.equal(e.attempts, 1);
        if (smtp) {
          const got = await waitFor("arrival", async () => smtp!.withMessageId(e.messageId).length > 0 && smtp!.withMessageId(e.messageId));
          assert.equal(got.length, 1);
          const m = got[0];
          assert.deepEqual(m.rcpt, [users.ada.email]);
          assert.equal(m.mail.subject, e.subject);
          assert.equal(m.mail.from?.value[0]?.address, `shop@${FROM_DOMAIN}`);
          assert.equal((m.mail.to as { value: { address: string }[] }).value[0].address, users.ada.email);
          assert.equal(m.mail.headers.get("x-meridian-notification"), n.id);
          assert.ok(m.mail.text?.includes(n.body));
          assert.ok(typeof m.mail.html === "string" && m.mail.html.includes("Order reference"));
        }
      }
    });

    it("unread filter, mark read (idempotent), pages", async () => {
      const all = (await call("GET", "/api/notifications", { token: users.ada.token })).body.items as { id: string; read: boolean }[];
      assert.equal(all.length, EVENT_COUNT);
      const r1 = await call("POST", `/api/notifications/${all[0].id}/read`, { token: users.ada.token });
      assert.equal(r1.status, 200, r1.text);
      assert.equal(r1.body.id, all[0].id);
      assert.equal(r1.body.read, true);
      const again = await call("POST", `/api/notifications/${all[0].id}/read`, { token: users.ada.token });
      assert.equal(again.status, 200);
      assert.deepEqual(again.body, r1.body, "reading twice changes nothing");
      assert.equal((await call("POST", `/api/notifications/${all[3].id}/read`, { token: users.ada.token })).status, 200);

      const unread = await call("GET", "/api/notifications?unread=true", { token: users.ada.token });
      assert.equal(unread.status, 200);
      assert.equal(unread.body.total, EVENT_COUNT - 2);
      assert.ok(unread.body.items.every((n: { read: boolean }) => !n.read));
      assert.ok(!unread.body.items.some((n: { id: string }) => n.id === all[0].id || n.id === all[3].id));
      const everything = await call("GET", "/api/notifications?unread=false", { token: users.ada.token });
      assert.equal(everything.body.total, EVENT_COUNT);

      const page2 = await call("GET", "/api/notifications?page=2&pageSize=3", { token: users.ada.token });
      assert.equal(page2.status, 200);
      assert.deepEqual(
        page2.body.items.map((n: { id: string }) => n.id),
        all.slice(3, 6).map((n) => n.id),
      );
      assert.equal(page2.body.total, EVENT_COUNT);
      for (const q of ["pageSize=101", "page=0", "unread=maybe", "userId=x"])
        assert.equal((await call("GET", `/api/notifications?${q}`, { token: users.ada.token })).status, 422, q);
    });

    it("identity only from the token: someone else's notification is 404, lists are per user", async () => {
      const ada = (await call("GET", "/api/notifications", { token: users.ada.token })).body.items as { id: string }[];
      const bob = await call("GET", "/api/notifications", { token: users.bob.token });
      assert.equal(bob.status, 200);
      assert.deepEqual(bob.body, { items: [], total: 0, page: 1, pageSize: 20 });
      const other = await call("POST", `/api/notifications/${ada[1].id}/read`, { token: users.bob.token });
      assert.equal(other.status, 404, other.text);
      assert.equal(other.body.error.code, "NOT_FOUND");
      assert.equal((await call("POST", `/api/notifications/${randomUUID()}/read`, { token: users.bob.token })).status, 404);
      // Ada's notification is still unread: Bob's attempt changed nothing.
      const still = (await call("GET", "/api/notifications?unread=true", { token: users.ada.token })).body.items as { id: string }[];
      assert.ok(still.some((n) => n.id === ada[1].id));
      assert.equal((await call("GET", "/api/notifications")).status, 401);
      assert.equal((await call("POST", `/api/notifications/${ada[1].id}/read`)).status, 401);
      // The e-mail outbox is not routed.
      assert.equal((await call("GET", "/api/notifications/outbox", { token: users.ada.token })).status, 404);
    });

    it("notification.since (the live feeds' read): after a cursor in creation order, paged; the newest; an unknown or someone else's cursor is NOT_FOUND", async () => {
      type Since = { items: { id: string }[] };
      const since = (params: Record<string, unknown>) => app.broker.call<Since, Record<string, unknown>>("notification.since", params);
      const newestFirst = (await call("GET", "/api/notifications?pageSize=100", { token: users.ada.token })).body.items as { id: string }[];
      const oldestFirst = newestFirst.map((n) => n.id).reverse();
      assert.equal(oldestFirst.length, EVENT_COUNT);
      const ada = users.ada.id;
      assert.deepEqual(
        (await since({ userId: ada })).items.map((n) => n.id),
        oldestFirst,
        "without a cursor: from the first",
      );
      assert.deepEqual(
        (await since({ userId: ada, newest: true })).items.map((n) => n.id),
        [oldestFirst.at(-1)],
      );
      assert.deepEqual(
        (await since({ userId: ada, after: oldestFirst[2] })).items.map((n) => n.id),
        oldestFirst.slice(3),
        "after a cursor: the later ones, oldest first",
      );
      assert.deepEqual(
        (await since({ userId: ada, after: oldestFirst[2], limit: 2 })).items.map((n) => n.id),
        oldestFirst.slice(3, 5),
      );
      assert.deepEqual((await since({ userId: ada, after: oldestFirst.at(-1) })).items, [], "after the newest: nothing");
      for (const [what, params] of [
        ["an unknown cursor", { userId: ada, after: randomUUID() }],
        ["someone else's cursor", { userId: users.bob.id, after: oldestFirst[0] }],
      ] as const)
        await assert.rejects(since(params), (err: { type?: string }) => err.type === "NOT_FOUND", what);
      assert.deepEqual((await since({ userId: users.bob.id })).items, [], "Bob has none");
    });

    it("the same event 10 times, then 10 times at once: one notification, one e-mail", async () => {
      const env = envelope("order.shipped", { ...SAMPLE_EVENTS["order.shipped"], userId: users.bob.id, trackingNumber: "DUP-1" });
      for (let i = 0; i < 10; i++) await deliver(env);
      await Promise.all(Array.from({ length: 10 }, () => deliver(env)));
      const e = await waitFor("the e-mail", async () => {
        const row = await emailOf(env.id);
        return row?.status === done ? row : undefined;
      });
      // Counted again once the sender has nothing left: nothing more went out.
      assert.deepEqual(await mailQuiet(), { handled: 0 });
      const list = await call("GET", "/api/notifications", { token: users.bob.token });
      assert.equal(list.body.items.filter((n: { data: { trackingNumber?: string } }) => n.data.trackingNumber === "DUP-1").length, 1);
      assert.equal((await db()("notifications").where({ source_message_id: env.id })).length, 1);
      assert.equal((await db()("emails").where({ source_message_id: env.id })).length, 1);
      assert.equal((await db()("inbox").where({ message_id: env.id })).length, 1);
      assert.equal(e.attempts, 1);
      // After the inbox's retention (its row purged), the same event again: the notification's
      // own uniqueness skips it, and the rest of that delivery still commits (its inbox row).
      await db()("inbox").where({ message_id: env.id }).del();
      await deliver(env);
      assert.equal((await db()("notifications").where({ source_message_id: env.id })).length, 1);
      assert.equal((await db()("emails").where({ source_message_id: env.id })).length, 1);
      assert.equal((await db()("inbox").where({ message_id: env.id })).length, 1, "the redelivery was applied (as a no-op), not refused");
      assert.deepEqual(await mailQuiet(), { handled: 0 });
      if (smtp) assert.equal(smtp.withMessageId(e.messageId).length, 1, "one e-mail on the SMTP server");
    });

    it("a malformed event is refused and writes nothing, not even its inbox row (so the event layer's retry can apply it)", async () => {
      const env = envelope("order.created", { orderId: "o-bad" });
      await assert.rejects(deliver(env), /userId/);
      assert.equal((await db()("notifications").where({ source_message_id: env.id })).length, 0);
      assert.equal((await db()("inbox").where({ message_id: env.id })).length, 0, "rolled back: a retry applies it later");
    });

    it("an unknown user: the in-app row is kept, the e-mail fails at once (not retried)", async () => {
      const env = envelope("order.delivered", { ...SAMPLE_EVENTS["order.delivered"], userId: "no-such-user" });
      await deliver(env);
      const e = await waitFor("failed e-mail", async () => {
        const row = await emailOf(env.id);
        return row?.status === "failed" ? row : undefined;
      });
      assert.equal(e.attempts, 1);
      assert.match(e.lastError!, /user not found/);
      const kept = (await db()("notifications").where({ source_message_id: env.id })) as { user_id: string; type: string }[];
      assert.deepEqual(
        kept.map((n) => [n.user_id, n.type]),
        [["no-such-user", "order.delivered"]],
        "the in-app row is kept",
      );
    });

    if (smtpMode) {
      it("SMTP down at first: retried with exponential backoff, delivered once when it is back", async () => {
        await smtp!.stop();
        const env = envelope("order.paid", { ...SAMPLE_EVENTS["order.paid"], userId: users.bob.id, paymentId: "pay-down" });
        await deliver(env);
        const failedTwice = await waitFor("two failed attempts", async () => {
          const row = await db()("emails").where({ source_message_id: env.id }).first();
          return row && Number(row.attempts) >= 2 && row.claimed_by === null && row.status === "pending" ? row : undefined;
        });
        assert.ok(failedTwice.last_error, "the connection failure is recorded");
        const waited = Number(failedTwice.next_attempt_at) - Number(failedTwice.last_attempt_at);
        const attempts = Number(failedTwice.attempts);
        assert.ok(
          waited >= retryDelayMs(attempts, 200) - 50 && waited <= retryDelayMs(attempts, 200, 1) + 200,
          `backoff after ${attempts} attempts: ${waited} ms`,
        );
        assert.equal(smtp!.received.filter((m) => m.mail.subject?.includes("Payment received") && m.rcpt[0] === users.bob.email).length, 0);

        await smtp!.start();
        const e = await waitFor("sent after the outage", async () => {
          const row = await emailOf(env.id);
          return row?.status === "sent" ? row : undefined;
        });
        assert.deepEqual(await mailQuiet(), { handled: 0 });
        assert.equal(smtp!.withMessageId(e.messageId).length, 1, "delivered once");
        assert.ok(e.attempts >= 3 && e.attempts <= 4, `attempts ${e.attempts}`);
        assert.equal(e.lastError, null);
      });

      it("SMTP never back: gives up after MAIL_MAX_ATTEMPTS (status failed); a refused mailbox fails at once", async () => {
        await smtp!.stop();
        const env = envelope("order.delivered", { ...SAMPLE_EVENTS["order.delivered"], userId: users.bob.id });
        await deliver(env);
        // 4 attempts: waits of 200, 400, 800 ms (+ up to 10 %) between them.
        const e = await waitFor("failed for good", async () => {
          const row = await emailOf(env.id);
          return row?.status === "failed" ? row : undefined;
        });
        assert.equal(e.attempts, 4);
        assert.ok(e.lastError);
        await smtp!.start();
        // With the server back, a sender pass (run here, awaited) handles nothing: a failed e-mail is final.
        assert.deepEqual(await mailQuiet(), { handled: 0 });
        assert.equal(smtp!.withMessageId(e.messageId).length, 0, "a failed e-mail is not sent later");

        // A mailbox the server refuses for good (550 on RCPT TO).
        const r = await call("POST", "/api/auth/register", {
          body: { email: `bounce-${randomUUID().slice(0, 8)}@example.com`, password: "correct horse battery", name: "B" },
        });
        const bounce = envelope("order.delivered", { ...SAMPLE_EVENTS["order.delivered"], userId: r.body.user.id });
        await deliver(bounce);
        const b = await waitFor("bounce", async () => {
          const row = await emailOf(bounce.id);
          return row?.status === "failed" ? row : undefined;
        });
        assert.equal(b.attempts, 1);
        assert.match(b.lastError!, /550|no such mailbox/);
      });

      it("three senders (replicas) on one database: 30 e-mails, each claimed and sent once", async () => {
        const quiet = { info() {}, warn() {}, error() {} };
        const replicas = [1, 2].map(
          (i) =>
            new EmailSender({
              db: db(),
              mailer: createMailer(app.config.mail),
              nodeId: `replica-${i}`,
              maxAttempts: 4,
              retryBaseMs: 200,
              pollMs: 10,
              logger: quiet,
              lookupUser: (id) => app.broker.call<{ email: string; name: string }, unknown>("user.get", { id }),
            }),
        );
        for (const r of replicas) r.start();
        try {
          const envs = Array.from({ length: 30 }, (_, i) =>
            envelope("order.shipped", { ...SAMPLE_EVENTS["order.shipped"], userId: users.bob.id, trackingNumber: `R-${i}` }),
          );
          await Promise.all(envs.map((e) => deliver(e)));
          const ids = new Set(envs.map((e) => e.id));
          const rows = await waitFor("30 sent", async () => {
            const all = (await outbox()).filter((e) => ids.has(e.sourceMessageId));
            return all.length === 30 && all.every((e) => e.status === "sent") ? all : undefined;
          });
          // Counted again once no replica has anything left to send.
          await mailQuiet();
          for (const row of rows) {
            assert.equal(smtp!.withMessageId(row.messageId).length, 1, row.messageId);
            assert.equal(row.attempts, 1, "no claim was taken twice");
          }
        } finally {
          await Promise.all(replicas.map((r) => r.stop()));
        }
      });

      it("a claim left by a crashed replica expires, and the e-mail is sent by another", async () => {
        const LEASE = 3000;
        const now = Date.now();
        const nid = randomUUID();
        const source = randomUUID();
        const messageId = messageIdFor(nid, `shop@${FROM_DOMAIN}`);
        await db().transaction(async (trx) => {
          await trx("notifications").insert({
            id: nid,
            user_id: users.bob.id,
            type: "order.delivered",
            title: "Order x delivered",
            body: "Delivered.",
            data: JSON.stringify({ orderId: "x" }),
            read_at: null,
            created_at: now,
            source_message_id: source,
          });
          // Claimed by a replica that died right after its claim (attempt 1), lease 3 s.
          await trx("emails").insert({
            id: randomUUID(),
            source_message_id: source,
            notification_id: nid,
            user_id: users.bob.id,
            type: "order.delivered",
            status: "pending",
            message_id_header: messageId,
            attempts: 1,
            next_attempt_at: now,
            claimed_by: "dead-replica:1",
            claimed_until: now + LEASE,
            last_attempt_at: now,
            created_at: now,
          });
        });
        // A pass run now (awaited) leaves a live claim alone.
        assert.deepEqual(await app.broker.call("notification.sendPending"), { handled: 0 });
        assert.ok(Date.now() < now + LEASE, "the pass ran while the claim was live (else the check above proves nothing)");
        assert.equal((await emailOf(source))!.status, "pending", "nobody takes a live claim");
        const e = await waitFor("sent after the lease", async () => {
          const row = await db()("emails").where({ source_message_id: source }).first();
          return row?.status === "sent" ? row : undefined;
        });
        assert.ok(Number(e.sent_at) >= now + LEASE);
        assert.equal(Number(e.attempts), 2);
        assert.equal(smtp!.withMessageId(messageId).length, 1);
      });

      it("no e-mail reached the SMTP server twice", () => {
        const ids = smtp!.received.map((m) => m.mail.messageId);
        assert.equal(new Set(ids).size, ids.length);
      });
    } else {
      it("without SMTP_URL the e-mails are kept in the database (status stored), rendered", async () => {
        const mails = await outbox(users.ada.id);
        assert.ok(mails.length >= EVENT_COUNT);
        assert.ok(mails.every((m) => m.status === "stored" && m.to === users.ada.email && m.html?.startsWith("<!doctype html>")));
      });
    }
  });
}
