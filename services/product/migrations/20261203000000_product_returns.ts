import type { Knex } from "knex";

// Goods an approved return brings back to the shelf (order service's `return.approved` with
// `restock`): one row per (return, product), so a return is restocked once, and never more
// of an order's product than it sold.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("stock_returns", (t) => {
    t.string("return_id", 36).notNullable();
    t.string("product_id", 36).notNullable();
    t.string("order_id", 36).notNullable();
    t.integer("quantity").notNullable();
    t.bigInteger("created_at").notNullable();
    t.primary(["return_id", "product_id"]);
    t.index(["order_id", "product_id"]);
    t.check("?? > 0", ["quantity"], "stock_returns_quantity_check");
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("stock_returns");
}
