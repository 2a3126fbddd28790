import type { Knex } from "knex";

// The payments of an order in a status (`hasSucceededPayment`, asked twice by every
// payment.create): an index on (order_id, status). SQLite, which has no statistics unless
// ANALYZE ran, planned that lookup on payments_unacknowledged (status, order_ack_at) instead, so
// each one for an unpaid order walked every payment in that status, a cost that grew with every
// sale (`npm run bench:plans`, bench/RESULTS.md, #16). MariaDB's statistics already chose a
// selective index (payments_order); there this one may be chosen instead, and costs its upkeep.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("payments", (t) => t.index(["order_id", "status"], "payments_order_status"));
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("payments", (t) => t.dropIndex(["order_id", "status"], "payments_order_status"));
}
