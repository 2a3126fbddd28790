import type { Knex } from "knex";

// The payments of an order in a status (`hasSucceededPayment`, run by every payment.create and
// by the success path): an index on (order_id, status). SQLite, which has no statistics unless
// ANALYZE ran, planned that lookup on payments_unacknowledged (status, order_ack_at) instead,
// so each one walked every payment in that status: ~5.7 ms at 50,000 SUCCEEDED payments against
// ~40 µs with this index (bench/RESULTS.md, #16). MariaDB's statistics already chose
// payments_order; there the new index only costs its upkeep.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("payments", (t) => t.index(["order_id", "status"], "payments_order_status"));
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("payments", (t) => t.dropIndex(["order_id", "status"], "payments_order_status"));
}
