import type { Knex } from "knex";
import { createEventTables, dropEventTables } from "../../../lib/events/migrations";

// Carts and their lines, and the service's outbox/inbox (it consumes order.paid). No price
// is stored: prices are read from the product service when a cart is shown. Times are epoch
// milliseconds (BIGINT).
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("carts", (t) => {
    // One row per user who ever added something: the row every write to the cart locks
    // (`FOR UPDATE`), so the line count and the currency are checked against the truth.
    t.string("user_id", 64).primary();
    // The currency of the cart's lines; meaningful only while it has lines (reset by the
    // first add into an empty cart).
    t.string("currency", 3).nullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
  });
  await knex.schema.createTable("cart_items", (t) => {
    t.string("user_id", 64).notNullable();
    t.string("product_id", 64).notNullable();
    t.integer("quantity").notNullable();
    t.bigInteger("added_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    // One line per (user, product): an add is one upsert on this key (quantity = quantity + n).
    t.primary(["user_id", "product_id"]);
    // The line bound, enforced by the database too (MariaDB 10.11 and SQLite enforce CHECK).
    t.check("?? >= 1 AND ?? <= 99", ["quantity", "quantity"], "cart_items_quantity_check");
  });
  await createEventTables(knex);
}

export async function down(knex: Knex): Promise<void> {
  await dropEventTables(knex);
  await knex.schema.dropTableIfExists("cart_items");
  await knex.schema.dropTableIfExists("carts");
}
