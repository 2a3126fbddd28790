import type { Knex } from "knex";
import { createEventTables, dropEventTables } from "../../../lib/events/migrations";

// Payments, refunds, the sandbox platform's own records, and the service's outbox/inbox
// (it publishes payment.* and refund.*). Times are epoch milliseconds (BIGINT); money is
// integer minor units (BIGINT) plus an ISO 4217 code, never a float.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("payments", (t) => {
    // 32 lower-case hex: fits WeChat Pay's out_trade_no (6–32 chars) and Alipay's (64).
    t.string("id", 32).primary();
    t.string("order_id", 64).notNullable();
    t.string("user_id", 64).notNullable();
    t.string("provider", 16).notNullable();
    // PENDING → SUCCEEDED | FAILED; FAILED → SUCCEEDED (a late success: money was taken).
    t.string("status", 16).notNullable();
    t.bigInteger("amount").notNullable();
    t.string("currency", 3).notNullable();
    t.string("subject", 256).notNullable();
    t.text("pay_url").nullable();
    t.text("code_url").nullable();
    t.text("form", "mediumtext").nullable();
    t.string("provider_txn_id", 200).nullable();
    t.string("failure_reason", 64).nullable();
    // "<order>|<provider>|<amount>|<currency>" while PENDING, NULL afterwards: the unique
    // index (NULLs never collide) is the guard that one order has one reusable PENDING
    // payment per provider and amount, also under concurrent creates.
    t.string("pending_key", 140).nullable().unique("payments_pending_key");
    // Reconciliation: not looked at before this time; a sweep claims a row by moving it.
    t.bigInteger("reconcile_after").notNullable();
    t.bigInteger("paid_at").nullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.index(["order_id", "created_at"], "payments_order");
    t.index(["status", "reconcile_after"], "payments_due");
    t.check("?? > 0", ["amount"], "payments_amount_check");
  });
  await knex.schema.createTable("refunds", (t) => {
    // The caller's refund id: the idempotency key, and the platform's out_request_no / out_refund_no.
    t.string("id", 64).primary();
    t.string("payment_id", 32).notNullable().index("refunds_payment");
    t.string("order_id", 64).notNullable();
    t.string("status", 16).notNullable();
    t.bigInteger("amount").notNullable();
    t.string("currency", 3).notNullable();
    t.string("reason", 500).notNullable();
    t.string("provider_refund_id", 200).nullable();
    t.string("failure_code", 64).nullable();
    t.bigInteger("reconcile_after").notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.index(["status", "reconcile_after"], "refunds_due");
    t.check("?? > 0", ["amount"], "refunds_amount_check");
  });
  // What the built-in sandbox "platform" knows (it has no servers of its own): the tester's
  // choice on the pay page, and the refunds it accepted (idempotent on the refund id).
  await knex.schema.createTable("sandbox_payments", (t) => {
    t.string("payment_id", 32).primary();
    t.bigInteger("amount").notNullable();
    t.string("currency", 3).notNullable();
    t.string("status", 16).notNullable();
    t.string("provider_txn_id", 64).notNullable();
    t.bigInteger("paid_at").nullable();
    t.bigInteger("updated_at").notNullable();
  });
  await knex.schema.createTable("sandbox_refunds", (t) => {
    t.string("refund_id", 64).primary();
    t.string("payment_id", 32).notNullable();
    t.bigInteger("amount").notNullable();
    t.string("provider_refund_id", 64).notNullable();
    t.bigInteger("created_at").notNullable();
  });
  await createEventTables(knex);
}

export async function down(knex: Knex): Promise<void> {
  await dropEventTables(knex);
  await knex.schema.dropTableIfExists("sandbox_refunds");
  await knex.schema.dropTableIfExists("sandbox_payments");
  await knex.schema.dropTableIfExists("refunds");
  await knex.schema.dropTableIfExists("payments");
}
