import type { Knex } from "knex";

// The popularity order is kept in each replica's memory now (recommendation.memory.ts,
// PopularIndex), so no query reads rec_items by buyers: the three indexes that served those
// queries only cost every purchase its index updates (buyers changes with each one, #16).
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("rec_items", (t) => {
    t.dropIndex(["buyers", "product_id"], "rec_items_popular");
    t.dropIndex(["category", "buyers", "product_id"], "rec_items_category_top");
    t.dropIndex(["brand", "buyers", "product_id"], "rec_items_brand_top");
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("rec_items", (t) => {
    t.index(["buyers", "product_id"], "rec_items_popular");
    t.index(["category", "buyers", "product_id"], "rec_items_category_top");
    t.index(["brand", "buyers", "product_id"], "rec_items_brand_top");
  });
}
