import type { Knex } from "knex";

// `popular` for a user's preferred categories and brands reads one index range per category
// or brand, in the ranking's own order (buyers, then product id) and LIMITed: the indexes end
// with the tie-breaker, so no range is sorted (#16; it sorted every row of those categories,
// 1.1–1.3 ms a ranking at 100,000 orders). They replace the two without it, their prefixes.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("rec_items", (t) => {
    t.index(["category", "buyers", "product_id"], "rec_items_category_top");
    t.index(["brand", "buyers", "product_id"], "rec_items_brand_top");
  });
  await knex.schema.alterTable("rec_items", (t) => {
    t.dropIndex(["category", "buyers"], "rec_items_category_popular");
    t.dropIndex(["brand", "buyers"], "rec_items_brand_popular");
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("rec_items", (t) => {
    t.index(["category", "buyers"], "rec_items_category_popular");
    t.index(["brand", "buyers"], "rec_items_brand_popular");
  });
  await knex.schema.alterTable("rec_items", (t) => {
    t.dropIndex(["category", "buyers", "product_id"], "rec_items_category_top");
    t.dropIndex(["brand", "buyers", "product_id"], "rec_items_brand_top");
  });
}
