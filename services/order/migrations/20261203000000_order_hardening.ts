import type { Knex } from "knex";

// Hardening (API.md v1.1):
// - PARTIALLY_REFUNDED is retired as a status: refunds show in the payment status, and a
//   partly refunded order keeps its fulfilment status (it still ships). Stored orders get
//   back the status they had before their first partial refund (from `shipped` and the
//   shipment's deliveredAt), and the retired history entries go.
// - Idempotency keys name any resource (orders, refunds, returns, approvals): order_id →
//   resource_id; the fingerprint covers the operation and its target.
// - Returns (order_returns), the hoarding limits' per-user overrides and lock rows
//   (order_user_limits) and the creates under way that count against them (order_drafts).
export async function up(knex: Knex): Promise<void> {
  await knex("orders").where({ status: "PARTIALLY_REFUNDED", shipped: false }).update({ status: "PAID" });
  await knex("orders").where({ status: "PARTIALLY_REFUNDED" }).where("shipment", "like", '%"deliveredAt"%').update({ status: "DELIVERED" });
  await knex("orders").where({ status: "PARTIALLY_REFUNDED" }).update({ status: "SHIPPED" });
  await knex("order_history").where({ status: "PARTIALLY_REFUNDED" }).del();

  await knex.schema.alterTable("idempotency_keys", (t) => t.renameColumn("order_id", "resource_id"));

  await knex.schema.createTable("order_returns", (t) => {
    t.string("id", 36).primary();
    t.string("order_id", 36).notNullable();
    t.string("user_id", 36).notNullable();
    t.string("status", 16).notNullable();
    t.text("items").notNullable();
    t.string("reason", 500).notNullable();
    t.bigInteger("amount").nullable();
    t.string("currency", 3).nullable();
    t.boolean("restock").nullable();
    t.string("refund_id", 64).nullable();
    t.string("decision_reason", 500).nullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("decided_at").nullable();
    t.index(["order_id"]);
    t.index(["status", "created_at"]);
  });
  await knex.schema.createTable("order_user_limits", (t) => {
    t.string("user_id", 36).primary();
    // NULL: the configured default (MAX_UNPAID_ORDERS, MAX_UNPAID_UNITS_PER_PRODUCT).
    t.integer("max_unpaid_orders").nullable();
    t.integer("max_unpaid_units_per_product").nullable();
    t.bigInteger("updated_at").notNullable();
  });
  await knex.schema.createTable("order_drafts", (t) => {
    t.string("order_id", 36).primary();
    t.string("user_id", 36).notNullable();
    t.text("lines").notNullable();
    t.bigInteger("created_at").notNullable();
    t.index(["user_id", "created_at"]);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ["order_drafts", "order_user_limits", "order_returns"]) await knex.schema.dropTableIfExists(table);
  await knex.schema.alterTable("idempotency_keys", (t) => t.renameColumn("resource_id", "order_id"));
  // Lossy: the status comes back for orders partly refunded now, not the history entries.
  await knex("orders")
    .whereIn("status", ["PAID", "SHIPPED", "DELIVERED"])
    .where("refunded_amount", ">", 0)
    .whereRaw("refunded_amount < paid_amount")
    .update({ status: "PARTIALLY_REFUNDED" });
}
