/**
 * The recommendation repo's `popular` (one LIMITed index range per preferred category and
 * brand, merged) answers what a plain sort of every matching row answers, on SQLite and on the
 * real MariaDB, with ties in buyers, a product in a preferred category and brand at once,
 * letter-case variants, deleted, unavailable and uncategorised rows; and the recommendation
 * migrations run up, down and up again on both.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { createKnex, dropDatabase, ensureDatabase, migrateDown, migrateLatest, pendingMigrations } from "../../lib/db";
import { testConfig } from "../../test/support/app";
import * as repo from "./recommendation.repo";

const MIGRATIONS = path.join(__dirname, "migrations");

for (const engine of ["sqlite", "mariadb"] as const) {
  test(`recommendation popular on ${engine}: per-category and per-brand ranges give the plain sort's answer; migrations up, down, up`, async () => {
    const config = testConfig({ db: engine });
    await ensureDatabase(config, "recommendation");
    const db = createKnex(config, "recommendation");
    try {
      await migrateLatest(db, MIGRATIONS);
      await migrateDown(db, MIGRATIONS);
      assert.ok((await pendingMigrations(db, MIGRATIONS)) > 0);
      await migrateLatest(db, MIGRATIONS);

      // A seeded pseudo-random catalog: 400 items over 5 categories and 4 brands, buyers 0–9
      // (many ties), some deleted, unavailable, uncategorised or without a brand.
      let seed = 7;
      // mulberry32: a small seeded generator whose low bits are usable (an LCG's are not).
      const rnd = (n: number) => {
        seed = (seed + 0x6d2b79f5) | 0;
        let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) % n;
      };
      const cats = ["phones", "Phones", "laptops", "audio", "cameras"];
      const brands = ["acme", "ACME", "globex", "initech"];
      const rows = Array.from({ length: 400 }, (_, i) => ({
        product_id: `p-${String(i).padStart(4, "0")}-${rnd(1000)}`,
        name: `item ${i}`,
        category: rnd(10) === 0 ? "" : cats[rnd(cats.length)]!,
        brand: rnd(6) === 0 ? null : brands[rnd(brands.length)]!,
        available: rnd(8) === 0 ? 0 : 1 + rnd(5),
        deleted: rnd(12) === 0,
        version: 1,
        buyers: rnd(10),
        updated_at: 1,
      }));
      for (let i = 0; i < rows.length; i += 100) await db("rec_items").insert(rows.slice(i, i + 100));

      // The plain sort of every matching row (the query `popular` ran before), on this engine
      // and its collation (MariaDB's compares case-insensitively).
      const variants = (xs: string[] = []) => [...new Set(xs.flatMap((x) => [x, x.toLowerCase()]))];
      const reference = async (opts: { categories?: string[]; brands?: string[]; limit: number }) => {
        const [c, b] = [variants(opts.categories), variants(opts.brands)];
        const q = db("rec_items").where({ deleted: false }).where("available", ">", 0).whereNot("category", "");
        if (c.length || b.length)
          q.where((w) => {
            if (c.length) w.orWhereIn("category", c);
            if (b.length) w.orWhereIn("brand", b);
          });
        const found = await q.orderBy([{ column: "buyers", order: "desc" }, { column: "product_id", order: "desc" }]).limit(opts.limit).select("product_id");
        return found.map((r: { product_id: string }) => r.product_id);
      };
      const cases = [
        { limit: 10 },
        { categories: ["Phones"], limit: 7 },
        { categories: ["laptops", "audio"], limit: 25 },
        { brands: ["ACME"], limit: 15 },
        { categories: ["cameras"], brands: ["globex", "initech"], limit: 30 },
        { categories: ["phones", "laptops", "audio", "cameras"], brands: ["acme", "globex", "initech"], limit: 500 },
        { categories: ["no-such-category"], limit: 5 },
      ];
      for (const c of cases) {
        const got = (await repo.popular(db, c)).map((i) => i.productId);
        assert.deepEqual(got, await reference(c), JSON.stringify(c));
      }
      assert.equal((await reference(cases[4]!)).length, 30, "the mixed case is cut by its limit (else it proves less)");
    } finally {
      await db.destroy();
      await dropDatabase(config, "recommendation");
    }
  });
}
