import type { Knex } from "knex";

// Times are epoch milliseconds (BIGINT): portable between SQLite and MariaDB, comparable,
// no time-zone conversion in drivers. The API renders them as ISO 8601.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("users", (t) => {
    t.string("id", 36).primary();
    // Stored lower-cased; the unique index, not a prior read, guards against two
    // registrations of one address racing each other.
    t.string("email", 254).notNullable().unique();
    t.string("name", 100).notNullable();
    t.string("password_hash", 255).notNullable();
    t.string("role", 16).notNullable().defaultTo("customer");
    t.text("preferences").notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
  });
  await knex.schema.createTable("refresh_tokens", (t) => {
    t.string("id", 36).primary();
    // Every token descends from one login; reuse of a rotated token revokes the family.
    t.string("family_id", 36).notNullable().index();
    t.string("user_id", 36).notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.string("secret_hash", 64).notNullable();
    t.bigInteger("expires_at").notNullable();
    t.bigInteger("used_at").nullable();
    t.bigInteger("revoked_at").nullable();
    t.bigInteger("created_at").notNullable();
    t.index(["user_id"]);
  });
  await knex.schema.createTable("addresses", (t) => {
    t.string("id", 36).primary();
    t.string("user_id", 36).notNullable().references("id").inTable("users").onDelete("CASCADE");
    t.string("recipient", 100).notNullable();
    t.string("phone", 32).notNullable();
    t.string("line1", 200).notNullable();
    t.string("line2", 200).nullable();
    t.string("city", 100).notNullable();
    t.string("province", 100).nullable();
    t.string("postal_code", 20).notNullable();
    t.string("country", 2).notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.index(["user_id"]);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("addresses");
  await knex.schema.dropTableIfExists("refresh_tokens");
  await knex.schema.dropTableIfExists("users");
}
