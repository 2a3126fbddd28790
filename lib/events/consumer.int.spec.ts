/**
 * `applyBatch` on both engines (SQLite and the real MariaDB): several messages in one
 * transaction, duplicates skipped without undoing their neighbours, and a failing handler
 * leaving nothing behind (the consumers then apply the messages one by one).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "mocha";
import type { Knex } from "knex";
import { createKnex, ensureDatabase, migrateLatest } from "../db";
import { MYSQL_URL, uniqueNamespace } from "../../test/support/servers";
import { applyBatch, applyOnce, type BatchItem, type EventHandler } from "./consumer";
import { FIXTURE_MIGRATIONS, recordEffect } from "./fixtures/services";
import type { Envelope } from "./outbox";
import { dropAll, eventsConfig, newDataDir } from "./support";

const envelope = (n: number): Envelope => ({
  id: randomUUID(),
  name: "order.placed",
  source: "test",
  occurredAt: new Date().toISOString(),
  payload: { n },
});

for (const engine of ["sqlite", "mariadb"] as const) {
  describe(`applyBatch on ${engine}`, () => {
    const config = eventsConfig({ namespace: uniqueNamespace(), dataDir: newDataDir(), db: engine, mysqlUrl: MYSQL_URL });
    let db: Knex;
    before(async () => {
      await ensureDatabase(config, "audit");
      db = createKnex(config, "audit");
      await migrateLatest(db, FIXTURE_MIGRATIONS);
    });
    after(async () => {
      await db.destroy();
      await dropAll(config, ["audit"]);
    });
    const effectIds = async () => (await db("effects").select<{ message_id: string }[]>("message_id")).map((r) => r.message_id).sort();
    const commits = async (work: () => Promise<unknown>) => {
      let n = 0;
      const count = (q: { sql: string }) => void (/^commit/i.test(q.sql.trim()) && n++);
      db.on("query", count);
      try {
        await work();
      } finally {
        db.off("query", count);
      }
      return n;
    };

    it("ten messages: one transaction, ten effects", async () => {
      const items: BatchItem[] = Array.from({ length: 10 }, (_, n) => ({ envelope: envelope(n), handler: recordEffect }));
      const before = await effectIds();
      const n = await commits(async () => assert.deepEqual(await applyBatch(db, items), Array(10).fill("applied")));
      assert.equal(n, 1, "one COMMIT for the batch");
      assert.deepEqual(await effectIds(), [...before, ...items.map((i) => i.envelope.id)].sort());
    });

    it("the inbox rows first, in ONE statement, in message-id order, then the handlers in the batch's order", async () => {
      const seen: string[] = [];
      const handler: EventHandler = async (trx, payload, env) => {
        seen.push(`handler ${env.id}`);
        await recordEffect(trx, payload, env);
      };
      const items: BatchItem[] = Array.from({ length: 6 }, (_, n) => ({ envelope: envelope(300 + n), handler }));
      const inboxInsert = (q: { sql: string; bindings?: unknown[] }) => {
        if (/insert (ignore )?into .?inbox/i.test(q.sql))
          seen.push(`inbox ${q.bindings?.filter((b) => items.some((i) => i.envelope.id === b)).join(" ")}`);
      };
      db.on("query", inboxInsert);
      try {
        await applyBatch(db, items);
      } finally {
        db.off("query", inboxInsert);
      }
      const ids = items.map((i) => i.envelope.id);
      assert.deepEqual(seen, [`inbox ${[...ids].sort().join(" ")}`, ...ids.map((id) => `handler ${id}`)]);
    });

    it("an id the database stores otherwise (a lone surrogate): the batch refuses it whole; one by one its handler runs", async () => {
      const odd = { ...envelope(500), id: `odd-${randomUUID()}-\ud800` };
      const items: BatchItem[] = [envelope(501), odd].map((e) => ({ envelope: e, handler: recordEffect }));
      const before = await effectIds();
      await assert.rejects(applyBatch(db, items), /came back changed/);
      assert.deepEqual(await effectIds(), before, "nothing committed");
      assert.equal(await applyOnce(db, odd, recordEffect), "applied");
    });

    it("an id longer than the inbox column: the batch refuses it whole (never a cut id); one by one, MariaDB refuses it alone (SQLite keeps it whole)", async () => {
      const long = { ...envelope(400), id: "x".repeat(65) };
      const items: BatchItem[] = [envelope(401), long].map((e) => ({ envelope: e, handler: recordEffect }));
      const before = await effectIds();
      await assert.rejects(applyBatch(db, items), /longer than the inbox columns/);
      assert.deepEqual(await effectIds(), before);
      assert.equal(await applyOnce(db, items[0].envelope, recordEffect), "applied");
      if (engine === "mariadb") await assert.rejects(applyOnce(db, long, recordEffect), /too long/i);
      else assert.equal(await applyOnce(db, long, recordEffect), "applied");
      assert.equal((await db("inbox").where({ message_id: "x".repeat(64) })).length, 0, "never a cut id");
    });

    it("a message already applied, and one twice in the batch: skipped; the others applied once", async () => {
      const old = envelope(100);
      assert.equal(await applyOnce(db, old, recordEffect), "applied");
      const fresh = [envelope(101), envelope(102)];
      const items: BatchItem[] = [fresh[0], old, fresh[1], fresh[0]].map((e) => ({ envelope: e, handler: recordEffect }));
      assert.deepEqual(await applyBatch(db, items), ["applied", "duplicate", "applied", "duplicate"]);
      const ids = await effectIds();
      for (const e of [old, ...fresh]) assert.equal(ids.filter((id) => id === e.id).length, 1, `one effect for ${e.id}`);
    });

    it("a handler that fails: the batch commits nothing, not even the inbox rows before it", async () => {
      const refuse: EventHandler = async () => {
        throw new Error("refused");
      };
      const items: BatchItem[] = [envelope(200), envelope(201), envelope(202)].map((e, i) => ({
        envelope: e,
        handler: i === 2 ? refuse : recordEffect,
      }));
      const before = await effectIds();
      await assert.rejects(applyBatch(db, items), /refused/);
      assert.deepEqual(await effectIds(), before);
      assert.equal(
        (
          await db("inbox").whereIn(
            "message_id",
            items.map((i) => i.envelope.id),
          )
        ).length,
        0,
      );
    });
  });
}
