import assert from "node:assert/strict";
import { describe, it } from "mocha";
import fc from "fast-check";
import {
  CONTRIBUTING_ITEMS,
  buildModel,
  contributingSet,
  hitAtK,
  isFullRefund,
  modelDelta,
  ndcgAtK,
  paidOrderOf,
  PopularIndex,
  popularFallback,
  preferencesOf,
  rankAlsoBought,
  rankForUser,
  TopK,
  similarity,
  type CatalogItem,
  type Purchase,
  type RankInput,
} from "./recommendation.domain";

type Item = CatalogItem & { buyers: number };
const item = (productId: string, over: Partial<Item> = {}): Item => ({
  productId,
  name: `Product ${productId}`,
  category: "tools",
  brand: null,
  available: 5,
  deleted: false,
  buyers: 10,
  ...over,
});
const catalogOf = (...items: Item[]) => new Map(items.map((i) => [i.productId, i]));
/** Neighbour lists by history item, from (source, product, co) rows in order. */
const listsOf = (rows: { source: string; productId: string; co: number }[]) => {
  const lists = new Map<string, { productId: string; co: number }[]>();
  for (const { source, productId, co } of rows) lists.set(source, [...(lists.get(source) ?? []), { productId, co }]);
  return lists;
};

/** Applies deltas to plain maps, as the repository applies them to its tables. */
function applyDeltas(model: { buyers: Map<string, number>; pairs: Map<string, number> }, d: ReturnType<typeof modelDelta>) {
  for (const [p, n] of d.buyers) model.buyers.set(p, (model.buyers.get(p) ?? 0) + n);
  for (const [p, q, n] of d.pairs) model.pairs.set(`${p}|${q}`, (model.pairs.get(`${p}|${q}`) ?? 0) + n);
  for (const [k, v] of [...model.buyers]) if (v === 0) model.buyers.delete(k);
  for (const [k, v] of [...model.pairs]) if (v === 0) model.pairs.delete(k);
}

describe("the model: contributing sets and their deltas", () => {
  it("the contributing set is the most recent distinct products (first purchase), capped", () => {
    const rows: Purchase[] = [
      { productId: "a", at: 1 },
      { productId: "b", at: 5 },
      { productId: "a", at: 9 }, // bought again: still counted at its first purchase
      { productId: "c", at: 3 },
    ];
    assert.deepEqual(contributingSet(rows), ["b", "c", "a"]);
    assert.deepEqual(contributingSet(rows, 2), ["b", "c"]);
    // Ties at the same time: by id, the same everywhere.
    assert.deepEqual(
      contributingSet([
        { productId: "z", at: 1 },
        { productId: "y", at: 1 },
      ]),
      ["y", "z"],
    );
  });

  it("adding products counts each new pair once per direction, and buyers once per product", () => {
    const d = modelDelta(["a"], ["a", "b", "c"]);
    assert.deepEqual([...d.buyers].sort(), [
      ["b", 1],
      ["c", 1],
    ]);
    assert.deepEqual(d.pairs, [
      ["a", "b", 1],
      ["a", "c", 1],
      ["b", "a", 1],
      ["b", "c", 1],
      ["c", "a", 1],
      ["c", "b", 1],
    ]);
  });

  it("removing products undoes exactly what adding them did", () => {
    const up = modelDelta([], ["a", "b", "c"]);
    const down = modelDelta(["a", "b", "c"], []);
    assert.deepEqual(
      down.pairs,
      up.pairs.map(([p, q, n]) => [p, q, -n]),
    );
    assert.deepEqual(
      [...down.buyers],
      [...up.buyers].map(([p, n]) => [p, -n]),
    );
    assert.deepEqual(modelDelta(["a", "b"], ["a", "b"]), { buyers: new Map(), pairs: [] });
  });

  it("pairs come sorted by (product, other): the repository's lock order", () => {
    const d = modelDelta(["m", "c"], ["m", "c", "x", "a"]);
    const keys = d.pairs.map(([p, q]) => `${p}|${q}`);
    assert.deepEqual(keys, [...keys].sort());
  });

  it("property: any sequence of purchases and refunds, applied as deltas, equals the model built from the final state (cap included)", () => {
    const cap = 5; // small, so evictions from the contributing set happen often
    const step = fc.record({
      user: fc.integer({ min: 0, max: 7 }),
      // a purchase of 1–3 products (of 15), or a full refund of one of the user's orders
      refund: fc.boolean(),
      products: fc.array(fc.integer({ min: 0, max: 14 }), { minLength: 1, maxLength: 3 }),
      pick: fc.nat(),
    });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 300 }), (steps) => {
        const users = new Map<string, Purchase[]>();
        const incremental = { buyers: new Map<string, number>(), pairs: new Map<string, number>() };
        steps.forEach((s, at) => {
          const user = `u${s.user}`;
          const rows = users.get(user) ?? [];
          const before = contributingSet(rows, cap);
          if (s.refund && rows.length) {
            const order = rows[s.pick % rows.length].at;
            users.set(
              user,
              rows.filter((r) => r.at !== order),
            );
          } else users.set(user, [...rows, ...s.products.map((p) => ({ productId: `p${p}`, at }))]);
          applyDeltas(incremental, modelDelta(before, contributingSet(users.get(user)!, cap)));
        });
        const built = buildModel(users, cap);
        const builtPairs = new Map<string, number>();
        for (const [p, row] of built.pairs) for (const [q, n] of row) builtPairs.set(`${p}|${q}`, n);
        assert.deepEqual(new Map([...incremental.buyers].sort()), new Map([...built.buyers].sort()));
        assert.deepEqual(new Map([...incremental.pairs].sort()), new Map([...builtPairs].sort()));
        assert.equal(built.pairRows, builtPairs.size);
        for (const [, set] of built.sets) assert.ok(set.length <= cap);
      }),
      { numRuns: 200 },
    );
  });

  it("the default cap bounds one purchase's work", () => {
    const many = Array.from({ length: CONTRIBUTING_ITEMS + 20 }, (_, i) => ({ productId: `p${String(i).padStart(4, "0")}`, at: i }));
    const before = contributingSet(many);
    const after = contributingSet([...many, { productId: "new", at: 10_000 }]);
    const d = modelDelta(before, after);
    // One product in, the oldest out: at most 2 × cap pair rows per direction.
    assert.equal(d.buyers.size, 2);
    assert.ok(d.pairs.length <= 4 * CONTRIBUTING_ITEMS);
  });
});

describe("similarity and ranking", () => {
  it("cosine, shrunk for little support", () => {
    assert.equal(similarity(0, 5, 5), 0);
    assert.ok(similarity(50, 100, 100) > similarity(1, 2, 2), "50 shared buyers of 100 beat 1 of 2");
    assert.ok(Math.abs(similarity(10, 10, 10, 0) - 1) < 1e-9, "without shrinkage: plain cosine");
  });

  const base = (
    over: Partial<Omit<RankInput, "neighbours">> & { neighbours?: { source: string; productId: string; co: number }[] } = {},
  ): RankInput => ({
    history: ["h1"],
    bought: new Set(["h1"]),
    perItem: 50,
    catalog: catalogOf(
      item("h1", { name: "Hammer" }),
      item("a"),
      item("b", { category: "garden" }),
      item("c", { brand: "Acme" }),
      item("pop", { category: "garden", buyers: 50 }),
    ),
    preferences: { categories: [], brands: [] },
    popular: () => [{ productId: "pop", buyers: 50 }],
    limit: 10,
    ...over,
    neighbours: listsOf(
      over.neighbours ?? [
        { source: "h1", productId: "a", co: 8 },
        { source: "h1", productId: "b", co: 6 },
        { source: "h1", productId: "c", co: 4 },
      ],
    ),
  });

  it("similar products first, with the purchase that explains them; popular ones fill the list below them", () => {
    const r = rankForUser(base());
    assert.deepEqual(
      r.map((x) => x.productId),
      ["a", "b", "c", "pop"],
    );
    assert.equal(r[0].reason, "Customers who bought Hammer also bought this");
    assert.equal(r[3].reason, "Popular with other shoppers");
    assert.ok(r[2].score > r[3].score);
  });

  it("never what the user bought, nor a deleted, out-of-stock or not-yet-known product", () => {
    const catalog = base().catalog;
    catalog.set("a", item("a", { deleted: true }));
    catalog.set("b", item("b", { available: 0 }));
    catalog.set("c", item("c", { category: "" })); // a placeholder row: no product event yet
    const r = rankForUser(base({ catalog, bought: new Set(["h1", "pop"]) }));
    assert.deepEqual(r, []);
  });

  it("a stated preference changes the order", () => {
    const plain = rankForUser(base()).map((x) => x.productId);
    const garden = rankForUser(base({ preferences: { categories: ["Garden"], brands: [] } })).map((x) => x.productId);
    const score = (r: { productId: string; score: number }[], id: string) => r.find((x) => x.productId === id)!.score;
    const acme = rankForUser(base({ preferences: { categories: [], brands: ["acme"] } }));
    assert.deepEqual(plain.slice(0, 3), ["a", "b", "c"]);
    assert.deepEqual(garden.slice(0, 3), ["b", "a", "c"], "garden (category, case-insensitive) moves b up");
    assert.ok(score(acme, "c") > score(rankForUser(base()), "c") * 1.2, "a preferred brand raises c's score by the brand boost");
  });

  it("a user without history gets popular products, preferred categories first, each with a reason", () => {
    const r = rankForUser(
      base({
        history: [],
        bought: new Set(),
        neighbours: [],
        preferences: { categories: ["garden"], brands: [] },
        popular: () => [
          { productId: "b", buyers: 3 },
          { productId: "a", buyers: 40 },
          { productId: "pop", buyers: 50 },
        ],
      }),
    );
    assert.deepEqual(
      r.map((x) => x.productId),
      ["pop", "b", "a"],
    );
    assert.equal(r[0].reason, "Popular in garden, a category you like");
    assert.equal(r[2].reason, "Popular with other shoppers");
  });

  it("TopK keeps exactly the first k of the plain sort (score, then id), whatever the order of offers", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ productId: fc.stringMatching(/^[a-e]{1,3}$/), score: fc.constantFrom(0.5, 1, 1.25, 2, 3) }), {
          selector: (x) => x.productId,
          maxLength: 40,
        }),
        fc.integer({ min: 0, max: 12 }),
        (items, k) => {
          const top = new TopK<{ productId: string; score: number }>(k);
          const offers = items.map((x) => ({ productId: x.productId, score: x.score }));
          for (const x of offers) top.offer(x.score, x.productId, () => x);
          const plain = [...offers].sort((a, b) => b.score - a.score || (a.productId < b.productId ? -1 : 1)).slice(0, k);
          assert.deepEqual(top.sorted(), plain);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("the popular fallback is read only when the similar products do not fill the list", () => {
    let asked = 0;
    const popular = () => (asked++, [{ productId: "pop", buyers: 50 }]);
    assert.deepEqual(
      rankForUser(base({ popular, limit: 3 })).map((x) => x.productId),
      ["a", "b", "c"],
    );
    assert.equal(asked, 0, "three similar products fill a list of three");
    assert.deepEqual(
      rankForUser(base({ popular, limit: 4 })).map((x) => x.productId),
      ["a", "b", "c", "pop"],
    );
    assert.equal(asked, 1);
  });

  it("ties are broken by id, so every replica answers the same", () => {
    const input = base({
      neighbours: [
        { source: "h1", productId: "b", co: 5 },
        { source: "h1", productId: "a", co: 5 },
      ],
    });
    assert.deepEqual(
      rankForUser(input)
        .map((x) => x.productId)
        .slice(0, 2),
      ["a", "b"],
    );
    assert.deepEqual(
      popularFallback({
        ...input,
        popular: [
          { productId: "c", buyers: 1 },
          { productId: "a", buyers: 1 },
        ],
      }).map((x) => x.productId),
      ["a", "c"],
    );
  });

  it("also-bought: by similarity, in-stock only, never the product itself", () => {
    const catalog = catalogOf(item("x"), item("a"), item("b", { available: 0 }), item("c"));
    const r = rankAlsoBought({
      productId: "x",
      neighbours: [
        { productId: "a", co: 2 },
        { productId: "b", co: 9 },
        { productId: "c", co: 4 },
        { productId: "x", co: 9 },
      ],
      buyers: new Map([
        ["x", 10],
        ["a", 2],
        ["b", 9],
        ["c", 40],
      ]),
      catalog,
      limit: 10,
    });
    assert.deepEqual(
      r.map((x) => x.productId),
      ["a", "c"],
      "a: 2 of its 2 buyers; c: 4 of 40",
    );
  });
});

describe("event payloads", () => {
  it("order.paid: distinct products; a malformed payload is ignored", () => {
    const o = paidOrderOf({
      orderId: "o1",
      userId: "u1",
      occurredAt: "2026-01-01T00:00:00.000Z",
      lines: [{ productId: "a", quantity: 2 }, { productId: "a" }, { productId: "b" }, {}],
    });
    assert.deepEqual(o, { orderId: "o1", userId: "u1", at: Date.parse("2026-01-01T00:00:00.000Z"), productIds: ["a", "b"] });
    assert.equal(paidOrderOf({ orderId: "o1" }), undefined);
    assert.equal(paidOrderOf(null), undefined);
  });

  it("order.refunded counts only when it is full", () => {
    assert.equal(isFullRefund({ orderId: "o", userId: "u", status: "REFUNDED" }), true);
    assert.equal(isFullRefund({ orderId: "o", userId: "u", status: "DELIVERED" }), false);
  });

  it("preferences are read defensively", () => {
    assert.deepEqual(preferencesOf({ preferences: { categories: ["a", 3, ""], brands: "x" } }), { categories: ["a"], brands: [] });
    assert.deepEqual(preferencesOf(undefined), { categories: [], brands: [] });
  });
});

describe("offline metrics", () => {
  it("hit rate and NDCG at 10", () => {
    const held = new Set(["x"]);
    assert.equal(hitAtK(["a", "x"], held), 1);
    assert.equal(hitAtK(["a", "b"], held), 0);
    assert.equal(ndcgAtK(["x"], held), 1);
    assert.ok(Math.abs(ndcgAtK(["a", "x"], held) - 1 / Math.log2(3)) < 1e-12);
    assert.equal(hitAtK([...Array(10).fill("a"), "x"], held), 0, "only the first 10 count");
    assert.equal(ndcgAtK(["x", "y"], new Set(["x", "y"])), 1);
  });
});

describe("PopularIndex", () => {
  // The reference: a plain filter and sort of every row as it is now (letter case ignored).
  const reference = (
    rows: Map<string, CatalogItem & { buyers: number }>,
    prefs: { categories: string[]; brands: string[] },
    limit: number,
  ) => {
    const cats = new Set(prefs.categories.map((c) => c.toLowerCase()));
    const brands = new Set(prefs.brands.map((b) => b.toLowerCase()));
    const any = !cats.size && !brands.size;
    return [...rows.values()]
      .filter((i) => !i.deleted && i.available > 0 && i.category !== "")
      .filter((i) => any || cats.has(i.category.toLowerCase()) || (i.brand !== null && brands.has(i.brand.toLowerCase())))
      .sort((a, b) => b.buyers - a.buyers || (a.productId < b.productId ? 1 : -1))
      .slice(0, limit)
      .map((i) => i.productId);
  };
  const ids = ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"];
  const row = fc.record({
    id: fc.constantFrom(...ids),
    gone: fc.boolean(),
    buyers: fc.integer({ min: 0, max: 4 }),
    category: fc.constantFrom("", "tools", "Tools", "garden"),
    brand: fc.constantFrom(null, "Acme", "acme", "Forge"),
    available: fc.integer({ min: 0, max: 2 }),
    deleted: fc.boolean(),
  });

  it("after any sequence of puts, top() is the plain sort of the rows as they are (ties by id, case ignored)", () => {
    fc.assert(
      fc.property(fc.array(row, { maxLength: 60 }), fc.integer({ min: 1, max: 10 }), (puts, limit) => {
        const index = new PopularIndex();
        const rows = new Map<string, CatalogItem & { buyers: number }>();
        for (const r of puts) {
          const it = r.gone
            ? undefined
            : { ...item(r.id, { category: r.category, brand: r.brand, available: r.available, deleted: r.deleted }), buyers: r.buyers };
          if (it) rows.set(r.id, it);
          else rows.delete(r.id);
          index.put(r.id, it);
        }
        for (const prefs of [
          { categories: [], brands: [] },
          { categories: ["TOOLS"], brands: [] },
          { categories: ["garden"], brands: ["acme"] },
          { categories: [], brands: ["Forge", "ACME"] },
        ])
          assert.deepEqual(
            index.top(prefs, limit).map((e) => e.productId),
            reference(rows, prefs, limit),
            JSON.stringify(prefs),
          );
        assert.equal(index.size, reference(rows, { categories: [], brands: [] }, 1000).length);
      }),
      { numRuns: 300 },
    );
  });
});
