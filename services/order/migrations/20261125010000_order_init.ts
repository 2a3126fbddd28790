import type { Knex } from "knex";
import { createEventTables, dropEventTables } from "../../../lib/events/migrations";

// Orders with their frozen lines, history, the payments and refunds the order knows of,
// create-request idempotency keys, and the service's outbox/inbox. Times are epoch ms
// (BIGINT); money is integer minor units (BIGINT) plus an ISO 4217 code.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("orders", (t) => {
    t.string("id", 36).primary();
    t.string("user_id", 36).notNullable();
    t.string("status", 24).notNullable();
    t.bigInteger("total_amount").notNullable();
    t.string("currency", 3).notNullable();
    t.text("shipping_address").notNullable();
    t.text("shipment").nullable();
    t.boolean("shipped").notNullable().defaultTo(false);
    t.string("paid_payment_id", 64).nullable();
    t.bigInteger("paid_amount").notNullable().defaultTo(0);
    t.bigInteger("refunded_amount").notNullable().defaultTo(0);
    t.bigInteger("reservation_expires_at").nullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.index(["user_id", "created_at"]);
    t.index(["status", "reservation_expires_at"]);
    // Money invariants the code must never break, enforced by the database too.
    t.check("?? >= 0 AND ?? <= ??", ["refunded_amount", "refunded_amount", "paid_amount"], "orders_refund_check");
  });
  await knex.schema.createTable("order_items", (t) => {
    t.string("order_id", 36).notNullable();
    t.string("product_id", 36).notNullable();
    t.string("sku", 64).notNullable();
    t.string("name", 200).notNullable();
    t.bigInteger("unit_price").notNullable();
    t.integer("quantity").notNullable();
    t.primary(["order_id", "product_id"]);
  });
  await knex.schema.createTable("order_history", (t) => {
    t.increments("seq").primary();
    t.string("order_id", 36).notNullable();
    t.string("status", 24).notNullable();
    t.bigInteger("at").notNullable();
    t.index(["order_id", "seq"]);
  });
  await knex.schema.createTable("order_payments", (t) => {
    t.string("payment_id", 64).primary();
    t.string("order_id", 36).notNullable();
    t.string("provider", 16).notNullable();
    t.string("status", 16).notNullable();
    t.bigInteger("amount").notNullable();
    t.string("currency", 3).notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.index(["order_id"]);
  });
  await knex.schema.createTable("order_refunds", (t) => {
    t.string("id", 64).primary();
    t.string("order_id", 36).notNullable();
    t.string("payment_id", 64).notNullable();
    t.bigInteger("amount").notNullable();
    t.string("currency", 3).notNullable();
    t.string("status", 16).notNullable();
    t.string("reason", 200).notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.index(["order_id"]);
    t.index(["status", "updated_at"]);
    t.check("?? > 0", ["amount"], "order_refunds_amount_check");
  });
  await knex.schema.createTable("idempotency_keys", (t) => {
    // Scoped per user: one user's key never collides with another's.
    t.string("user_id", 36).notNullable();
    t.string("idem_key", 200).notNullable();
    t.string("fingerprint", 64).notNullable();
    t.string("order_id", 36).notNullable();
    t.bigInteger("created_at").notNullable();
    t.primary(["user_id", "idem_key"]);
  });
  await createEventTables(knex);
}

export async function down(knex: Knex): Promise<void> {
  await dropEventTables(knex);
  for (const table of ["idempotency_keys", "order_refunds", "order_payments", "order_history", "order_items", "orders"])
    await knex.schema.dropTableIfExists(table);
}
