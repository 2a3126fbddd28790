/**
 * The product service's migrations run up, down and up again on SQLite and on the real
 * MariaDB, and the database itself enforces the sku, reservation and stock guards.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, isUniqueViolation, migrateDown, migrateLatest, pendingMigrations } from "../../lib/db";
import { testConfig } from "../../test/support/app";

const MIGRATIONS = path.join(__dirname, "migrations");
const TABLES = ["products", "reservations", "outbox", "inbox"];

for (const db of ["sqlite", "mariadb"] as const) {
  it(`product migrations: up, down, up on ${db}; unique sku, unique (order, product), stock CHECK`, async () => {
    const config = testConfig({ db });
    await ensureDatabase(config, "product");
    const knex = createKnex(config, "product");
    try {
      assert.ok((await pendingMigrations(knex, MIGRATIONS)) > 0);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
      assert.equal(await pendingMigrations(knex, MIGRATIONS), 0);
      for (const table of TABLES) assert.ok(await knex.schema.hasTable(table), table);
      const row = {
        id: "p1",
        sku: "SKU-1",
        name: "A",
        description: "",
        category: "c",
        brand: null,
        tags: "[]",
        price_amount: 100,
        price_currency: "EUR",
        images: "[]",
        on_hand: 5,
        reserved: 0,
        created_at: 1,
        updated_at: 1,
      };
      await knex("products").insert(row);
      await assert.rejects(knex("products").insert({ ...row, id: "p2" }), (e) => isUniqueViolation(e));
      // reserved > on_hand and negative stock are refused by the CHECK constraint.
      await assert.rejects(knex("products").where({ id: "p1" }).update({ reserved: 6 }));
      await assert.rejects(knex("products").where({ id: "p1" }).update({ on_hand: -1, reserved: 0 }));
      const res = { order_id: "o1", product_id: "p1", quantity: 1, status: "held", expires_at: 1, created_at: 1, updated_at: 1 };
      await knex("reservations").insert(res);
      await assert.rejects(knex("reservations").insert(res), (e) => isUniqueViolation(e));
      await migrateDown(knex, MIGRATIONS);
      for (const table of TABLES) assert.equal(await knex.schema.hasTable(table), false, table);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
    } finally {
      await knex.destroy();
      await dropDatabase(config, "product");
    }
  });
}
