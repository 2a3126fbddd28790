/**
 * The recommendation repo's reads for the memory (recommendation.memory.ts) answer what plain
 * per-table queries answer, on SQLite and on the real MariaDB: `neighbourLists` (a LIMITed
 * range per product glued with UNION ALL) and `userPurchases` (recent products and everything
 * bought in one statement), with ties; `applyProduct` says when a replica's memory must forget
 * a row; and the recommendation migrations run up, down and up again on both.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, migrateDown, migrateLatest, pendingMigrations } from "../../lib/db";
import { testConfig } from "../../test/support/app";
import * as repo from "./recommendation.repo";

const MIGRATIONS = path.join(__dirname, "migrations");

for (const engine of ["sqlite", "mariadb"] as const) {
  it(`recommendation reads on ${engine}: neighbour lists and a user's purchases equal the plain queries; migrations up, down, up`, async () => {
    const config = testConfig({ db: engine });
    await ensureDatabase(config, "recommendation");
    const db = createKnex(config, "recommendation");
    try {
      await migrateLatest(db, MIGRATIONS);
      await migrateDown(db, MIGRATIONS);
      assert.ok((await pendingMigrations(db, MIGRATIONS)) > 0);
      await migrateLatest(db, MIGRATIONS);

      let seed = 7;
      // mulberry32: a small seeded generator whose low bits are usable (an LCG's are not).
      const rnd = (n: number) => {
        seed = (seed + 0x6d2b79f5) | 0;
        let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) % n;
      };
      const products = Array.from({ length: 60 }, (_, i) => `p-${String(i).padStart(3, "0")}-${rnd(1000)}`);
      // Pairs with many ties in co (1–4), so the id tie-breaker decides often.
      const pairs = new Map<string, { product_id: string; other_id: string; co: number }>();
      for (let k = 0; k < 900; k++) {
        const [a, b] = [products[rnd(products.length)], products[rnd(products.length)]];
        if (a !== b) pairs.set(`${a}|${b}`, { product_id: a, other_id: b, co: 1 + rnd(4) });
      }
      const pairRows = [...pairs.values()];
      for (let i = 0; i < pairRows.length; i += 100) await db("rec_pairs").insert(pairRows.slice(i, i + 100));
      const users = ["u-1", "u-2", "u-3"];
      for (const u of users) {
        const bought = [...new Set(Array.from({ length: 5 + rnd(30) }, () => products[rnd(products.length)]))];
        // Times with ties (the id decides among equal times).
        await db("rec_user_items").insert(bought.map((p) => ({ user_id: u, product_id: p, at: 1000 + rnd(5) })));
        await db("rec_purchases").insert(
          bought.flatMap((p, i) => [
            { order_id: `${u}-o${i}`, product_id: p, user_id: u, at: 1, created_at: 1 },
            ...(i % 3 ? [] : [{ order_id: `${u}-again${i}`, product_id: p, user_id: u, at: 2, created_at: 2 }]),
          ]),
        );
      }

      for (const perItem of [1, 5, 50]) {
        const got = await repo.neighbourLists(db, [...products.slice(0, 40), "no-such-product"], perItem);
        for (const p of [...products.slice(0, 40), "no-such-product"]) {
          const plain = await db("rec_pairs")
            .where({ product_id: p })
            .orderBy([
              { column: "co", order: "desc" },
              { column: "other_id", order: "desc" },
            ])
            .limit(perItem)
            .select<{ other_id: string; co: number }[]>("other_id", "co");
          assert.deepEqual(
            got.get(p),
            plain.map((r) => ({ productId: r.other_id, co: Number(r.co) })),
            `${p}, ${perItem} per product`,
          );
        }
      }
      assert.ok(
        [...(await repo.neighbourLists(db, products, 50)).values()].some((l) => l.length > 5),
        "the lists are long enough to prove the order",
      );

      for (const u of [...users, "nobody"]) {
        const got = await repo.userPurchases(db, u, 20);
        const recent = await db("rec_user_items")
          .where({ user_id: u })
          .orderBy([
            { column: "at", order: "desc" },
            { column: "product_id", order: "asc" },
          ])
          .limit(20)
          .select<{ product_id: string }[]>("product_id");
        const bought = await db("rec_purchases").where({ user_id: u }).distinct<{ product_id: string }[]>("product_id");
        assert.deepEqual(
          got.recent,
          recent.map((r) => r.product_id),
          u,
        );
        assert.deepEqual([...got.bought].sort(), bought.map((r) => r.product_id).sort(), u);
        assert.equal(got.stamp, await repo.userStamp(db, u), u);
      }

      // applyProduct says when the memory must forget the row: a field the ranking shows or
      // filters on changed, availability crossed zero, never for an older or repeated version.
      const fields: repo.ProductFields = {
        id: "prod-x",
        name: "Anvil",
        category: "tools",
        brand: "Forge",
        available: 5,
        deleted: false,
        version: 1,
      };
      const apply = (over: Partial<repo.ProductFields>) => db.transaction((trx) => repo.applyProduct(trx, { ...fields, ...over }, 1));
      assert.equal(await apply({}), true, "new");
      assert.equal(await apply({}), false, "the same version again");
      assert.equal(await apply({ version: 2, available: 3 }), false, "stock moving above zero");
      assert.equal(await apply({ version: 3, available: 0.4 }), true, "stock to zero (as stored: 0.4 is 0)");
      assert.equal(await apply({ version: 4, available: 0 }), false, "still zero");
      assert.equal(await apply({ version: 5, available: 2 }), true, "back in stock");
      assert.equal(await apply({ version: 4, name: "Old" }), false, "an older version");
      assert.equal(await apply({ version: 6, available: 2, name: "Anvil XL" }), true, "renamed");
      assert.equal(await apply({ version: 7, available: 2, name: "Anvil XL", brand: null }), true, "brand gone");
      assert.equal(await apply({ version: 8, available: 2, name: "Anvil XL", brand: null, deleted: true }), true, "deleted");
      const row = (await repo.findItems(db, ["prod-x"])).get("prod-x")!;
      assert.deepEqual([row.name, row.brand, row.available, row.deleted, row.version], ["Anvil XL", null, 2, true, 8]);
    } finally {
      await db.destroy();
      await dropDatabase(config, "recommendation");
    }
  });
}
