/**
 * `Statement` (lib/db.ts) on both engines (SQLite and the real MariaDB): a statement compiled
 * once binds each run's named values, answers rows and changed counts as the builder would,
 * runs inside the caller's transaction (its rollback takes the write back) and outside one,
 * and is still seen by knex's `query` event.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import type { Knex } from "knex";
import { createKnex, dropDatabase, ensureDatabase, inTransaction, param, Statement } from "./db";
import { MYSQL_URL, uniqueNamespace } from "../test/support/servers";
import { eventsConfig, newDataDir } from "./events/support";

interface Item {
  id: string;
  qty: number;
  flag: number;
  note: string | null;
}

const insertItem = new Statement<{ id: string; qty: number; flag: boolean; note: string | null }>((db) =>
  db("items").insert({ id: param("id"), qty: param("qty"), flag: param("flag"), note: param("note") }),
);
const itemById = new Statement<{ id: string }, Item>((db) =>
  db("items")
    .where({ id: param("id") })
    .first("id", "qty", "flag", "note"),
);
const addQty = new Statement<{ id: string; by: number; atMost: number }>((db) =>
  db("items")
    .where({ id: param("id") })
    .where("qty", "<=", param("atMost"))
    .update({ qty: db.raw("qty + ?", [param("by")]) }),
);

for (const engine of ["sqlite", "mariadb"] as const) {
  describe(`Statement on ${engine}`, () => {
    const config = eventsConfig({ namespace: uniqueNamespace(), dataDir: newDataDir(), db: engine, mysqlUrl: MYSQL_URL });
    let db: Knex;
    before(async () => {
      await ensureDatabase(config, "stmt");
      db = createKnex(config, "stmt");
      await db.schema.createTable("items", (t) => {
        t.string("id", 36).primary();
        t.integer("qty").notNullable();
        t.boolean("flag").notNullable();
        t.string("note").nullable();
      });
    });
    after(async () => {
      await db.destroy();
      await dropDatabase(config, "stmt");
    });

    it("binds each run's values into the text compiled once: the same rows as the builder's statement", async () => {
      await inTransaction(db, async (trx) => {
        await insertItem.run(trx, { id: "a", qty: 2, flag: true, note: null });
        await insertItem.run(trx, { id: "b", qty: 5, flag: false, note: "x?y" });
      });
      assert.deepEqual((await itemById.run(db, { id: "a" })).rows, [{ id: "a", qty: 2, flag: 1, note: null }]);
      assert.deepEqual((await itemById.run(db, { id: "b" })).rows, [{ id: "b", qty: 5, flag: 0, note: "x?y" }]);
      assert.deepEqual(await db("items").where({ id: "b" }).first("id", "qty", "flag", "note"), { id: "b", qty: 5, flag: 0, note: "x?y" });
      assert.deepEqual((await itemById.run(db, { id: "none" })).rows, []);
      assert.equal(await itemById.first(db, { id: "none" }), undefined);
      assert.deepEqual(await inTransaction(db, (trx) => itemById.first(trx, { id: "a" })), { id: "a", qty: 2, flag: 1, note: null });
    });

    it("answers the rows a write changed, in a transaction and outside one", async () => {
      const inTrx = await inTransaction(db, (trx) => addQty.run(trx, { id: "a", by: 3, atMost: 10 }));
      assert.equal(inTrx.changes, 1);
      assert.equal((await addQty.run(db, { id: "a", by: 3, atMost: 2 })).changes, 0, "the WHERE refuses: qty is 5");
      assert.equal((await addQty.run(db, { id: "a", by: 1, atMost: 5 })).changes, 1);
      assert.equal((await itemById.run(db, { id: "a" })).rows[0].qty, 6);
    });

    it("runs inside the caller's transaction: its rollback takes the write back, and its reads see its own writes", async () => {
      await assert.rejects(
        inTransaction(db, async (trx) => {
          await insertItem.run(trx, { id: "c", qty: 1, flag: true, note: null });
          assert.equal((await itemById.run(trx, { id: "c" })).rows.length, 1, "seen inside the transaction");
          throw new Error("roll back");
        }),
        /roll back/,
      );
      assert.deepEqual((await itemById.run(db, { id: "c" })).rows, [], "nothing left by the rolled-back transaction");
    });

    it("a duplicate key fails with the driver's code (what isUniqueViolation reads) after the SQL text, and a missing value is refused", async () => {
      await assert.rejects(
        inTransaction(db, (trx) => insertItem.run(trx, { id: "a", qty: 1, flag: true, note: null })),
        (err: { code?: string; message?: string }) =>
          ["ER_DUP_ENTRY", "SQLITE_CONSTRAINT_PRIMARYKEY"].includes(err.code ?? "") && /^insert into `items`/.test(err.message ?? ""),
      );
      await assert.rejects(itemById.run(db, {} as { id: string }), /no value for 'id'/);
    });

    it("knex's query event sees it, in a transaction and outside one", async () => {
      const seen: string[] = [];
      const record = (q: { sql: string }) => seen.push(q.sql);
      db.on("query", record);
      try {
        await inTransaction(db, (trx) => itemById.run(trx, { id: "a" }));
        await itemById.run(db, { id: "b" });
      } finally {
        db.off("query", record);
      }
      const text = itemById.toSQL(db, { id: "a" }).sql;
      assert.equal(seen.filter((s) => s === text).length, 2, `seen: ${seen.join(" | ")}`);
    });

    it("refuses to run in a transaction that has ended", async () => {
      let done: Knex.Transaction | undefined;
      await inTransaction(db, async (trx) => void (done = trx));
      await assert.rejects(itemById.run(done!, { id: "a" }), /complete/);
    });
  });
}
