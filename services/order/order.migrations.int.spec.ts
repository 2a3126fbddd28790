/**
 * The order service's migrations run up, down and up again on SQLite and on the real
 * MariaDB, and the hardening migration moves stored orders off the retired
 * PARTIALLY_REFUNDED status to the fulfilment status they had (paid, shipped, delivered),
 * keeps their idempotency keys (order_id → resource_id), and rolls back.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, inTransaction, migrateDown, migrateLatest, pendingMigrations } from "../../lib/db";
import { testConfig } from "../../test/support/app";
import { sqlitePlans } from "../../test/support/sqlite-plans";
import { listOrders, unpaidState } from "./order.repo";

const MIGRATIONS = path.join(__dirname, "migrations");
const TABLES = [
  "orders",
  "order_items",
  "order_history",
  "order_payments",
  "order_refunds",
  "idempotency_keys",
  "order_returns",
  "order_user_limits",
  "order_drafts",
];
const INIT = "20261125010000_order_init.ts";

for (const db of ["sqlite", "mariadb"] as const) {
  it(`order migrations on ${db}: PARTIALLY_REFUNDED orders get their fulfilment status back; up, down, up`, async () => {
    const config = testConfig({ db });
    await ensureDatabase(config, "order");
    const knex = createKnex(config, "order");
    const migrator = { directory: MIGRATIONS, tableName: "knex_migrations", loadExtensions: [".ts"] };
    try {
      // The schema as it was, with orders partly refunded at each stage.
      await knex.migrate.up({ ...migrator, name: INIT });
      const order = (id: string, shipped: boolean, shipment: object | null) => ({
        id,
        user_id: "u1",
        status: "PARTIALLY_REFUNDED",
        total_amount: 1000,
        currency: "EUR",
        shipping_address: "{}",
        shipment: shipment && JSON.stringify(shipment),
        shipped,
        paid_payment_id: `pay-${id}`,
        paid_amount: 1000,
        refunded_amount: 100,
        reservation_expires_at: null,
        created_at: 1,
        updated_at: 2,
      });
      await knex("orders").insert([
        order("o-paid", false, null),
        order("o-shipped", true, { carrier: "SF", trackingNumber: "1", shippedAt: "2026-01-01T00:00:00.000Z" }),
        order("o-delivered", true, {
          carrier: "SF",
          trackingNumber: "1",
          shippedAt: "2026-01-01T00:00:00.000Z",
          deliveredAt: "2026-01-02T00:00:00.000Z",
        }),
        { ...order("o-full", false, null), status: "REFUNDED", refunded_amount: 1000 },
      ]);
      await knex("order_history").insert([
        { order_id: "o-paid", status: "PENDING_PAYMENT", at: 1 },
        { order_id: "o-paid", status: "PAID", at: 2 },
        { order_id: "o-paid", status: "PARTIALLY_REFUNDED", at: 3 },
      ]);
      await knex("idempotency_keys").insert({
        user_id: "u1",
        idem_key: "k1",
        fingerprint: "f".repeat(64),
        order_id: "o-paid",
        created_at: 1,
      });

      assert.ok((await pendingMigrations(knex, MIGRATIONS)) > 0);
      await migrateLatest(knex, MIGRATIONS);
      assert.equal(await pendingMigrations(knex, MIGRATIONS), 0);
      for (const table of TABLES) assert.ok(await knex.schema.hasTable(table), table);
      const status = async (id: string) => (await knex("orders").where({ id }).first()).status;
      assert.equal(await status("o-paid"), "PAID");
      assert.equal(await status("o-shipped"), "SHIPPED");
      assert.equal(await status("o-delivered"), "DELIVERED");
      assert.equal(await status("o-full"), "REFUNDED", "a full refund stays REFUNDED");
      assert.deepEqual(
        (await knex("order_history").where({ order_id: "o-paid" }).orderBy("seq")).map((h) => h.status),
        ["PENDING_PAYMENT", "PAID"],
      );
      assert.equal((await knex("idempotency_keys").where({ idem_key: "k1" }).first()).resource_id, "o-paid");

      await migrateDown(knex, MIGRATIONS);
      for (const table of TABLES) assert.equal(await knex.schema.hasTable(table), false, table);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
    } finally {
      await knex.destroy();
      await dropDatabase(config, "order");
    }
  });
}

it("on SQLite, a user's orders in a status (a create's unpaid count, GET /api/orders?status=) are read through (user_id, status), not by walking every user's orders in that status", async () => {
  const config = testConfig({ db: "sqlite" });
  const knex = createKnex(config, "order");
  try {
    await migrateLatest(knex, MIGRATIONS);
    const plans = await sqlitePlans(knex, () => inTransaction(knex, (trx) => unpaidState(trx, "u1", 0)));
    const ofOrders = plans.filter((p) => /from `orders`/.test(p.sql));
    assert.equal(ofOrders.length, 1, JSON.stringify(plans));
    assert.match(ofOrders[0].plan, /USING (COVERING )?INDEX orders_user_status \(user_id=\? AND status=\?\)/, ofOrders[0].plan);
    // The list's count, and its page (ordered by created_at: SQLite reads the user's orders by (user_id, created_at)).
    const listed = await sqlitePlans(knex, () => listOrders(knex, { userId: "u1", status: "PAID", limit: 20, offset: 0 }));
    assert.equal(listed.length, 2, JSON.stringify(listed));
    const [count, page] = listed;
    assert.match(count.plan, /USING (COVERING )?INDEX orders_user_status \(user_id=\? AND status=\?\)/, `${count.sql}: ${count.plan}`);
    assert.match(page.plan, /USING INDEX \w+ \(user_id=\?/, `${page.sql}: ${page.plan}`);
  } finally {
    await knex.destroy();
  }
});
