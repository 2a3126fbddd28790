import type { Knex } from "knex";

// A user's orders in a status (the hoarding check of every create counts the user's unpaid
// orders): an index on (user_id, status). SQLite, which has no statistics unless ANALYZE ran,
// planned that lookup on (status, reservation_expires_at) instead, so each create walked every
// user's PENDING_PAYMENT orders (bench/RESULTS.md, #16). MariaDB's statistics already chose
// (user_id, created_at); there the new index only costs its upkeep.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("orders", (t) => t.index(["user_id", "status"], "orders_user_status"));
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("orders", (t) => t.dropIndex(["user_id", "status"], "orders_user_status"));
}
