/**
 * The cart service's migrations run up, down and up again on SQLite and on the real
 * MariaDB, and the database itself enforces one line per (user, product) and 1 ≤ quantity ≤ 99.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, isUniqueViolation, migrateDown, migrateLatest, pendingMigrations } from "../../lib/db";
import { testConfig } from "../../test/support/app";
import { isCheckViolation } from "./cart.repo";

const MIGRATIONS = path.join(__dirname, "migrations");
const TABLES = ["carts", "cart_items", "cart_add_keys", "outbox", "inbox", "dead_letters"];

for (const db of ["sqlite", "mariadb"] as const) {
  it(`cart migrations: up, down, up on ${db}; unique (user, product), quantity CHECK`, async () => {
    const config = testConfig({ db });
    await ensureDatabase(config, "cart");
    const knex = createKnex(config, "cart");
    try {
      assert.ok((await pendingMigrations(knex, MIGRATIONS)) > 0);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
      assert.equal(await pendingMigrations(knex, MIGRATIONS), 0);
      for (const table of TABLES) assert.ok(await knex.schema.hasTable(table), table);
      await knex("carts").insert({ user_id: "u1", currency: "EUR", created_at: 1, updated_at: 1 });
      await assert.rejects(knex("carts").insert({ user_id: "u1", currency: null, created_at: 1, updated_at: 1 }), (e) =>
        isUniqueViolation(e),
      );
      const line = { user_id: "u1", product_id: "p1", quantity: 99, added_at: 1, updated_at: 1 };
      await knex("cart_items").insert(line);
      await assert.rejects(knex("cart_items").insert(line), (e) => isUniqueViolation(e));
      for (const quantity of [0, 100, -1])
        await assert.rejects(
          knex("cart_items").insert({ ...line, product_id: `q${quantity}`, quantity }),
          (e) => isCheckViolation(e),
          String(quantity),
        );
      await assert.rejects(
        knex("cart_items")
          .where({ product_id: "p1" })
          .update({ quantity: knex.raw("quantity + 1") }),
        (e) => isCheckViolation(e),
      );
      await migrateDown(knex, MIGRATIONS);
      for (const table of TABLES) assert.equal(await knex.schema.hasTable(table), false, table);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
    } finally {
      await knex.destroy();
      await dropDatabase(config, "cart");
    }
  });
}
