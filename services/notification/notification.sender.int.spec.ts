/**
 * The e-mail sender's hand-over (notification.service.ts `EmailSender.handOver`), on SQLite and
 * on the real MariaDB: an e-mail its handler has just committed is claimed and finished with
 * two statements (the claim's conditional UPDATE, the outcome's UPDATE), without reading the
 * row or its notification back and without a pass's query for due rows; an e-mail a pass (or
 * another replica) claimed first, or tried meanwhile, is left to it.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, migrateLatest } from "../../lib/db";
import { testConfig } from "../../test/support/app";
import { eventually } from "../../test/support/eventually";
import { createMailer } from "./mailer";
import type { NotificationRecord } from "./notification.domain";
import { EmailSender } from "./notification.service";

const MIGRATIONS = path.join(__dirname, "migrations");
const quiet = { info() {}, warn() {}, error() {} };

for (const engine of ["sqlite", "mariadb"] as const) {
  it(`e-mail hand-over on ${engine}: claimed and stored with two statements; one claimed or tried elsewhere first is left alone`, async () => {
    const config = testConfig({ db: engine });
    await ensureDatabase(config, "notification");
    const db = createKnex(config, "notification");
    const lookups: string[] = [];
    const sender = new EmailSender({
      db,
      mailer: createMailer({ from: "shop@meridian.test" }),
      nodeId: "hand-over-test",
      maxAttempts: 3,
      retryBaseMs: 100,
      // Never started: no pass runs, so every statement below is the hand-over's.
      pollMs: 3_600_000,
      logger: quiet,
      lookupUser: async (id) => {
        lookups.push(id);
        return { email: `${id}@example.com`, name: "Ada" };
      },
    });
    try {
      await migrateLatest(db, MIGRATIONS);
      const job = async (claimedBy: string | null, triedBefore = false) => {
        const now = Date.now();
        const notification: NotificationRecord = {
          id: randomUUID(),
          userId: "u-1",
          type: "order.shipped",
          title: "Order x shipped",
          body: "On its way.",
          data: { orderId: "x" },
          readAt: null,
          createdAt: now,
        };
        const email = {
          id: randomUUID(),
          user_id: "u-1",
          notification_id: notification.id,
          message_id_header: `<n-${notification.id}@meridian.test>`,
          attempts: 0,
          type: "order.shipped",
        };
        await db.transaction(async (trx) => {
          await trx("notifications").insert({
            id: notification.id,
            user_id: "u-1",
            type: notification.type,
            title: notification.title,
            body: notification.body,
            data: JSON.stringify(notification.data),
            read_at: null,
            created_at: now,
            source_message_id: randomUUID(),
          });
          await trx("emails").insert({
            id: email.id,
            source_message_id: randomUUID(),
            notification_id: notification.id,
            user_id: "u-1",
            type: "order.shipped",
            status: "pending",
            message_id_header: email.message_id_header,
            attempts: claimedBy || triedBefore ? 1 : 0,
            next_attempt_at: now,
            created_at: now,
            ...(claimedBy ? { claimed_by: claimedBy, claimed_until: now + 60_000, last_attempt_at: now } : {}),
          });
        });
        return { email, notification };
      };
      const statements: string[] = [];
      db.on("query", (q: { sql: string }) => statements.push(q.sql));

      const fresh = await job(null);
      statements.length = 0;
      sender.handOver(fresh.email, fresh.notification);
      const row = await eventually("stored", async () => {
        const r = await db("emails").where({ id: fresh.email.id }).first();
        return r?.status === "stored" ? r : undefined;
      });
      assert.equal(Number(row.attempts), 1);
      assert.equal(row.to_address, "u-1@example.com");
      assert.match(String(row.text), /On its way\./);
      // (The test's own polling read, `eventually` above, is the one statement left out.)
      const POLL = "select * from `emails` where `id` = ? limit ?";
      assert.deepEqual(
        statements.filter((s) => s !== POLL).map((s) => s.split(" ").slice(0, 3).join(" ")),
        ["update `emails` set", "update `emails` set"],
        "the claim and the outcome, nothing read back",
      );

      // Claimed by another replica first: this hand-over's claim fails, and nothing is sent here.
      const taken = await job("other-replica:1");
      sender.handOver(taken.email, taken.notification);
      // Tried by a pass meanwhile (attempt 1 failed, due again now): the row is no longer the
      // one held in memory, so the hand-over leaves it to the passes (its count and backoff).
      const tried = await job(null, true);
      sender.handOver(tried.email, tried.notification);
      await sender.stop(); // waits for the hand-overs in flight
      assert.deepEqual(lookups, ["u-1"], "only the first e-mail was sent");
      const left = await db("emails").where({ id: taken.email.id }).first();
      assert.equal(left.status, "pending");
      assert.equal(left.claimed_by, "other-replica:1");
      const retried = await db("emails").where({ id: tried.email.id }).first();
      assert.deepEqual([retried.status, Number(retried.attempts), retried.claimed_by], ["pending", 1, null]);
    } finally {
      await sender.stop();
      await db.destroy();
      await dropDatabase(config, "notification");
    }
  });
}
