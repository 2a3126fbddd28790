/**
 * The payment service's migrations run up, down and up again on SQLite and on the real
 * MariaDB, and the database itself keeps one reusable PENDING payment per pending key
 * (NULLs never collide) and one refund row per refund id.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, isUniqueViolation, migrateDown, migrateLatest, pendingMigrations } from "../../lib/db";
import { testConfig } from "../../test/support/app";
import { sqlitePlans } from "../../test/support/sqlite-plans";
import { hasSucceededPayment } from "./payment.repo";

const MIGRATIONS = path.join(__dirname, "migrations");
const TABLES = ["payments", "refunds", "sandbox_payments", "sandbox_refunds", "outbox", "inbox", "dead_letters"];

for (const db of ["sqlite", "mariadb"] as const) {
  it(`payment migrations: up, down, up on ${db}; pending key and refund id unique`, async () => {
    const config = testConfig({ db });
    await ensureDatabase(config, "payment");
    const knex = createKnex(config, "payment");
    try {
      assert.ok((await pendingMigrations(knex, MIGRATIONS)) > 0);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
      assert.equal(await pendingMigrations(knex, MIGRATIONS), 0);
      for (const table of TABLES) assert.ok(await knex.schema.hasTable(table), table);
      const row = (id: string, key: string | null) => ({
        id,
        order_id: "o1",
        user_id: "u1",
        provider: "sandbox",
        status: key ? "PENDING" : "FAILED",
        amount: 100,
        currency: "CNY",
        subject: "s",
        pending_key: key,
        reconcile_after: 1,
        created_at: 1,
        updated_at: 1,
      });
      await knex("payments").insert(row("a".repeat(32), "o1|sandbox|100|CNY"));
      await assert.rejects(knex("payments").insert(row("b".repeat(32), "o1|sandbox|100|CNY")), (e) => isUniqueViolation(e));
      await knex("payments").insert(row("c".repeat(32), null));
      await knex("payments").insert(row("d".repeat(32), null));
      const refund = {
        id: "r1",
        payment_id: "a".repeat(32),
        order_id: "o1",
        status: "PENDING",
        amount: 1,
        currency: "CNY",
        reason: "x",
        reconcile_after: 1,
        created_at: 1,
        updated_at: 1,
      };
      await knex("refunds").insert(refund);
      await assert.rejects(knex("refunds").insert(refund), (e) => isUniqueViolation(e));
      await migrateDown(knex, MIGRATIONS);
      for (const table of TABLES) assert.equal(await knex.schema.hasTable(table), false, table);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
    } finally {
      await knex.destroy();
      await dropDatabase(config, "payment");
    }
  });
}

it("on SQLite, whether an order has a succeeded payment is read through (order_id, status), not by walking every payment in that status", async () => {
  const config = testConfig({ db: "sqlite" });
  const knex = createKnex(config, "payment");
  try {
    await migrateLatest(knex, MIGRATIONS);
    const plans = await sqlitePlans(knex, () => hasSucceededPayment(knex, "o1"));
    assert.equal(plans.length, 1, JSON.stringify(plans));
    assert.match(plans[0].plan, /USING (COVERING )?INDEX payments_order_status \(order_id=\? AND status=\?\)/, plans[0].plan);
  } finally {
    await knex.destroy();
  }
});
