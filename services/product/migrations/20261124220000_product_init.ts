import type { Knex } from "knex";
import { createEventTables, dropEventTables } from "../../../lib/events/migrations";

// Products, stock reservations, and the service's outbox/inbox (it publishes product.* and
// stock.changed). Times are epoch milliseconds (BIGINT); money is integer minor units
// (BIGINT) plus an ISO 4217 code, never a float.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("products", (t) => {
    t.string("id", 36).primary();
    // The unique index, not a prior read, is the duplicate-sku guard. Soft-deleted products
    // keep their sku (a deleted sku cannot be reused).
    t.string("sku", 64).notNullable().unique();
    t.string("name", 200).notNullable();
    t.text("description").notNullable();
    t.string("category", 100).notNullable();
    t.string("brand", 100).nullable();
    t.text("tags").notNullable();
    t.bigInteger("price_amount").notNullable();
    t.string("price_currency", 3).notNullable();
    t.text("images").notNullable();
    t.integer("on_hand").notNullable().defaultTo(0);
    t.integer("reserved").notNullable().defaultTo(0);
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.bigInteger("deleted_at").nullable();
    t.index(["category"]);
    t.index(["brand"]);
    t.index(["created_at"]);
    t.index(["price_amount"]);
    // The stock invariant, enforced by the database too (MariaDB 10.11 and SQLite enforce CHECK):
    // a bug in a conditional update fails loudly instead of overselling.
    t.check("?? >= 0 AND ?? >= 0 AND ?? <= ??", ["reserved", "on_hand", "reserved", "on_hand"], "products_stock_check");
  });
  await knex.schema.createTable("reservations", (t) => {
    // One row per (order, product): a replayed reserve hits the primary key and is a no-op.
    t.string("order_id", 64).notNullable();
    t.string("product_id", 36).notNullable();
    t.integer("quantity").notNullable();
    // held → committed | released | expired; only `held` counts in products.reserved.
    t.string("status", 16).notNullable();
    t.bigInteger("expires_at").notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.primary(["order_id", "product_id"]);
    t.index(["status", "expires_at"]);
    t.index(["product_id"]);
    t.check("?? > 0", ["quantity"], "reservations_quantity_check");
  });
  await createEventTables(knex);
}

export async function down(knex: Knex): Promise<void> {
  await dropEventTables(knex);
  await knex.schema.dropTableIfExists("reservations");
  await knex.schema.dropTableIfExists("products");
}
