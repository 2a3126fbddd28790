/**
 * The chaos runner's guard before it starts (test/support/chaos.ts `waitForCatalog`), on the
 * product service's MariaDB schema: a catalog short of the demo catalog's size after
 * seeding (a first product node whose seeding died part-way, restarted on a non-empty table,
 * does not seed again) stops the run with the count in the message; a complete one, soft-
 * deleted products not counted, lets it go on.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import type { Knex } from "knex";
import { createKnex, dropDatabase, ensureDatabase, migrateLatest } from "../../lib/db";
import { testConfig } from "./app";
import { waitForCatalog } from "./chaos";

const NOW = 1_700_000_000_000;
const product = (n: number, deleted = false) => ({
  id: `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`,
  sku: `sku-${n}`,
  name: "x",
  description: "x",
  category: "c",
  brand: null,
  tags: "[]",
  price_amount: 100,
  price_currency: "CNY",
  images: "[]",
  on_hand: 10,
  reserved: 0,
  created_at: NOW,
  updated_at: NOW,
  deleted_at: deleted ? NOW : null,
});

describe("chaos: the catalog guard on MariaDB", () => {
  const config = testConfig({ db: "mariadb" });
  let db: Knex;

  before(async () => {
    await ensureDatabase(config, "product");
    db = createKnex(config, "product");
    await migrateLatest(db, path.join(__dirname, "..", "..", "services", "product", "migrations"));
    // 3 live products and a soft-deleted one: 3 count.
    await db("products").insert([product(1), product(2), product(3), product(4, true)]);
  });
  after(async () => {
    await db?.destroy();
    await dropDatabase(config, "product");
  });

  it("an incomplete catalog (3 of 5, a deleted product not counted) stops the run, naming the count", async () => {
    await assert.rejects(waitForCatalog(db, 5, 0), {
      message: "the catalog is incomplete after seeding: 3 of 5 products (DEMO_CATALOG_SIZE); chaos does not run on a partial catalog",
    });
  });

  it("a complete catalog lets the run go on with every live product and its stock", async () => {
    await db("products").insert([product(5), product(6)]);
    const products = await waitForCatalog(db, 5, 0);
    assert.equal(products.length, 5);
    assert.ok(products.every((p) => Number(p.on_hand) === 10));
  });
});
