import type { Knex } from "knex";

// A user's orders in a status (the hoarding check of every create counts the user's unpaid
// orders; GET /api/orders?status= counts the user's orders in a status): an index on (user_id,
// status). SQLite, which has no statistics unless ANALYZE ran, planned both on (status,
// reservation_expires_at) instead, so each walked every user's orders in that status
// (`npm run bench:plans`, bench/RESULTS.md, #16). MariaDB's statistics already chose a selective
// index ((user_id, created_at)); there this one may be chosen instead, and costs its upkeep.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("orders", (t) => t.index(["user_id", "status"], "orders_user_status"));
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("orders", (t) => t.dropIndex(["user_id", "status"], "orders_user_status"));
}
