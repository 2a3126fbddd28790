/**
 * The notification service's migrations run up, down and up again on SQLite and on the real
 * MariaDB, and the database itself keeps one notification and one e-mail per event.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, isUniqueViolation, migrateDown, migrateLatest, pendingMigrations } from "../../lib/db";
import { testConfig } from "../../test/support/app";

const MIGRATIONS = path.join(__dirname, "migrations");
const TABLES = ["notifications", "emails", "outbox", "inbox", "dead_letters"];

for (const db of ["sqlite", "mariadb"] as const) {
  it(`notification migrations: up, down, up on ${db}; one notification and one e-mail per event`, async () => {
    const config = testConfig({ db });
    await ensureDatabase(config, "notification");
    const knex = createKnex(config, "notification");
    try {
      assert.ok((await pendingMigrations(knex, MIGRATIONS)) > 0);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
      assert.equal(await pendingMigrations(knex, MIGRATIONS), 0);
      for (const table of TABLES) assert.ok(await knex.schema.hasTable(table), table);
      const n = {
        id: "n1",
        user_id: "u",
        type: "order.created",
        title: "t",
        body: "b",
        data: "{}",
        read_at: null,
        created_at: 1,
        source_message_id: "m1",
      };
      await knex("notifications").insert(n);
      await assert.rejects(knex("notifications").insert({ ...n, id: "n2" }), (e) => isUniqueViolation(e));
      const e = {
        id: "e1",
        source_message_id: "m1",
        notification_id: "n1",
        user_id: "u",
        type: "order.created",
        status: "pending",
        message_id_header: "<x@y>",
        attempts: 0,
        next_attempt_at: 1,
        created_at: 1,
      };
      await knex("emails").insert(e);
      await assert.rejects(knex("emails").insert({ ...e, id: "e2", notification_id: "n2" }), (err) => isUniqueViolation(err));
      await migrateDown(knex, MIGRATIONS);
      for (const table of TABLES) assert.equal(await knex.schema.hasTable(table), false, table);
      assert.ok((await migrateLatest(knex, MIGRATIONS)).length > 0);
    } finally {
      await knex.destroy();
      await dropDatabase(config, "notification");
    }
  });
}
