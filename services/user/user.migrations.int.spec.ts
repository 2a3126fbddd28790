/**
 * The user service's migrations run up, down and up again on SQLite and on the real MariaDB.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, migrateDown, migrateLatest, pendingMigrations } from "../../lib/db";
import { testConfig } from "../../test/support/app";

const MIGRATIONS = path.join(__dirname, "migrations");

for (const db of ["sqlite", "mariadb"] as const) {
  it(`user migrations: up, down, up on ${db}`, async () => {
    const config = testConfig({ db });
    await ensureDatabase(config, "user");
    const knex = createKnex(config, "user");
    try {
      assert.ok((await pendingMigrations(knex, MIGRATIONS)) > 0);
      const applied = await migrateLatest(knex, MIGRATIONS);
      assert.ok(applied.length > 0);
      assert.equal(await pendingMigrations(knex, MIGRATIONS), 0);
      for (const table of ["users", "refresh_tokens", "addresses"]) assert.ok(await knex.schema.hasTable(table), table);
      // The unique e-mail is the registration guard: the database itself enforces it.
      const row = {
        id: "1",
        email: "a@b.co",
        name: "A",
        password_hash: "h",
        role: "customer",
        preferences: "{}",
        created_at: 1,
        updated_at: 1,
      };
      await knex("users").insert(row);
      await assert.rejects(knex("users").insert({ ...row, id: "2" }));
      await migrateDown(knex, MIGRATIONS);
      for (const table of ["users", "refresh_tokens", "addresses"]) assert.equal(await knex.schema.hasTable(table), false, table);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
    } finally {
      await knex.destroy();
      await dropDatabase(config, "user");
    }
  });
}
