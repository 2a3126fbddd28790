import type { Knex } from "knex";

// Hardening:
// - payments.expires_at: the trade's deadline at its platform (the order's reservation end);
//   the sandbox refuses completion after it. NULL for trades created before.
// - payments.order_ack_at: when the order service took a recorded success into account
//   (order.paid, or its automatic refund). A success left unacknowledged (its event
//   dead-lettered) is handed to the order service again by reconciliation. Successes
//   recorded before this migration count as acknowledged.
// - payments.close_requested_at: the order was cancelled (or expired); reconciliation closes
//   the trade at its platform (a remote call, so not inside the event's inbox transaction).
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("payments", (t) => {
    t.bigInteger("expires_at").nullable();
    t.bigInteger("order_ack_at").nullable();
    t.bigInteger("close_requested_at").nullable();
    t.index(["status", "order_ack_at"], "payments_unacknowledged");
  });
  await knex("payments")
    .where({ status: "SUCCEEDED" })
    .update({ order_ack_at: knex.ref("updated_at") });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("payments", (t) => {
    t.dropIndex(["status", "order_ack_at"], "payments_unacknowledged");
    t.dropColumn("order_ack_at");
    t.dropColumn("close_requested_at");
    t.dropColumn("expires_at");
  });
}
