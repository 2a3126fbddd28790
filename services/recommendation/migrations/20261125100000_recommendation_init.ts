import type { Knex } from "knex";
import { createEventTables, dropEventTables } from "../../../lib/events/migrations";

// The recommendation model (recommendation.domain.ts) in the service's own database, shared
// by every replica: the purchases it is computed from, each user's contributing set, the
// counts (buyers per product, co-purchases per pair), a copy of the catalog fields the
// ranking needs, and the rebuild's state. Times are epoch milliseconds (BIGINT).
export async function up(knex: Knex): Promise<void> {
  // The catalog as product events describe it, plus the product's buyer count. A row may
  // exist before its product event arrives (a purchase came first): version -1, empty
  // category, never recommended until the event fills it.
  await knex.schema.createTable("rec_items", (t) => {
    t.string("product_id", 64).primary();
    t.string("name", 200).notNullable().defaultTo("");
    t.string("category", 100).notNullable().defaultTo("");
    t.string("brand", 100).nullable();
    t.integer("available").notNullable().defaultTo(0);
    t.boolean("deleted").notNullable().defaultTo(false);
    t.bigInteger("version").notNullable().defaultTo(-1);
    t.integer("buyers").notNullable().defaultTo(0);
    t.bigInteger("updated_at").notNullable();
    t.index(["buyers", "product_id"], "rec_items_popular");
    t.index(["category", "buyers"], "rec_items_category_popular");
    t.index(["brand", "buyers"], "rec_items_brand_popular");
  });
  // One row per user that ever bought: the lock that serializes changes to one user's set.
  await knex.schema.createTable("rec_users", (t) => {
    t.string("user_id", 64).primary();
    t.bigInteger("updated_at").notNullable();
  });
  // Paid, not fully refunded order lines: what the model is computed from.
  await knex.schema.createTable("rec_purchases", (t) => {
    t.string("order_id", 64).notNullable();
    t.string("product_id", 64).notNullable();
    t.string("user_id", 64).notNullable();
    t.bigInteger("at").notNullable();
    t.bigInteger("created_at").notNullable();
    t.primary(["order_id", "product_id"]);
    t.index(["user_id", "at"], "rec_purchases_user");
  });
  // Orders fully refunded: a late `order.paid` for one of them is ignored.
  await knex.schema.createTable("rec_refunded_orders", (t) => {
    t.string("order_id", 64).primary();
    t.string("user_id", 64).notNullable();
    t.bigInteger("at").notNullable();
  });
  // Each user's contributing set (the domain's CONTRIBUTING_ITEMS most recent products).
  await knex.schema.createTable("rec_user_items", (t) => {
    t.string("user_id", 64).notNullable();
    t.string("product_id", 64).notNullable();
    t.bigInteger("at").notNullable();
    t.primary(["user_id", "product_id"]);
    t.index(["user_id", "at"], "rec_user_items_recent");
  });
  // co(p, q), stored in both directions so a product's neighbours are one index range.
  await knex.schema.createTable("rec_pairs", (t) => {
    t.string("product_id", 64).notNullable();
    t.string("other_id", 64).notNullable();
    t.integer("co").notNullable();
    t.primary(["product_id", "other_id"]);
    t.index(["product_id", "co", "other_id"], "rec_pairs_top");
  });
  // One row: the lock a rebuild takes exclusively (event handlers take it shared), and the
  // rebuild's progress, readable by every replica.
  await knex.schema.createTable("rec_meta", (t) => {
    t.integer("id").primary();
    t.bigInteger("model_version").notNullable().defaultTo(0);
    t.string("rebuild_status", 16).notNullable().defaultTo("idle");
    t.string("rebuild_phase", 32).nullable();
    t.integer("rebuild_done").notNullable().defaultTo(0);
    t.integer("rebuild_total").nullable();
    t.string("rebuild_by", 100).nullable();
    t.bigInteger("rebuild_lease_until").nullable();
    t.bigInteger("rebuild_started_at").nullable();
    t.bigInteger("rebuild_finished_at").nullable();
    t.string("rebuild_error", 500).nullable();
    t.text("rebuild_summary").nullable();
  });
  await knex("rec_meta").insert({ id: 1 });
  await createEventTables(knex);
}

export async function down(knex: Knex): Promise<void> {
  await dropEventTables(knex);
  for (const t of ["rec_meta", "rec_pairs", "rec_user_items", "rec_refunded_orders", "rec_purchases", "rec_users", "rec_items"])
    await knex.schema.dropTableIfExists(t);
}
