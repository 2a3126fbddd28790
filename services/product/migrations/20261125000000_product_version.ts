import type { Knex } from "knex";

// A per-product version, raised by every write to the row (descriptive fields, stock,
// reservations, delete) in the same UPDATE, so it is strictly ordered per product under the
// row lock. Events carry it: a consumer that keeps a copy (the search index) applies a
// change only when its version is newer than what it holds, whatever order events arrive in.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("products", (t) => {
    t.bigInteger("version").notNullable().defaultTo(1);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("products", (t) => {
    t.dropColumn("version");
  });
}
