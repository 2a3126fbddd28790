import assert from "node:assert/strict";
import { describe, it } from "mocha";
import fc from "fast-check";
import { engineConformance } from "./conformance";
import { MAX_QUERY_TERMS, MiniSearchEngine, queryTerms, tokenize, topK } from "./minisearch-engine";
import { parseSearchQuery, type ProductDoc, type RawSearchQuery } from "./engine";
import { testCatalog } from "./fixtures/catalog";
import { syntheticProducts } from "../../../lib/demo-catalog";

engineConformance("MiniSearchEngine", async () => new MiniSearchEngine());

const ids = async (engine: MiniSearchEngine, raw: RawSearchQuery) =>
  (await engine.search(parseSearchQuery(raw))).items.map((p) => p.id).sort();

/** Products named `name`, the other searchable fields neutral (one word each, not in any name). */
function named(rows: Array<[id: string, name: string]>): ProductDoc[] {
  const base = testCatalog()[0];
  return rows.map(([id, name]) => ({ ...base, id, sku: `X-${id}`, name, description: "item", tags: [], brand: "Acme", category: "Misc" }));
}

describe("MiniSearchEngine specifics", () => {
  it("a word repeated in the query matches as once; the last word stays the prefix", async () => {
    const engine = new MiniSearchEngine();
    await engine.index(
      named([
        ["a", "Desk Lamp"],
        ["b", "Desk Fan"],
        ["c", "Lamps Set"],
      ]),
    );
    assert.deepEqual(
      await engine.search(parseSearchQuery({ q: "desk desk lamp desk lamp" })),
      await engine.search(parseSearchQuery({ q: "desk lamp" })),
    );
    assert.deepEqual(queryTerms("lamp desk lamp"), ["desk", "lamp"]);
    assert.deepEqual(queryTerms("a b a"), ["b", "a"]);
  });

  it(`a query of 300 words: all must match among its first ${MAX_QUERY_TERMS - 1} distinct and its last, never an OR by counter overflow`, async () => {
    const words = Array.from({ length: 300 }, (_, i) => `w${i}`);
    const engine = new MiniSearchEngine();
    const [a, b] = named([
      ["a", "Alpha"],
      ["b", "Beta"],
    ]);
    await engine.index([
      { ...a, description: words.join(" ") },
      { ...b, description: "w0" },
    ]);
    // Past the gateway's 200 characters: the engine's own bound is what is tested.
    const found = await engine.search({ ...parseSearchQuery({ q: "x" }), q: words.join(" ") });
    assert.deepEqual(
      found.items.map((p) => p.id),
      ["a"],
    );
    assert.equal(queryTerms(words.join(" ")).length, MAX_QUERY_TERMS);
  });

  it("category and brand codes past 65,536 names ever seen still filter and facet (32-bit codes)", async () => {
    const engine = new MiniSearchEngine();
    const [x, y] = named([
      ["x", "Renamed"],
      ["y", "Steady"],
    ]);
    // One product whose brand was renamed 65,537 times: codes are never reused.
    for (let v = 1; v <= 65_537; v++) await engine.upsert({ ...x, brand: `Brand${v}`, version: v });
    await engine.upsert({ ...y, brand: "Acme", version: 1 });
    assert.deepEqual(await ids(engine, { q: "", brand: "Brand65537" }), ["x"]);
    const browse = await engine.search(parseSearchQuery({ q: "" }));
    assert.deepEqual(browse.facets.brand.map((f) => f.value).sort(), ["Acme", "Brand65537"]);
  });

  it("topK equals a full sort's first k, for small and large k", () => {
    const arr = Array.from({ length: 500 }, (_, i) => (i * 7919) % 997);
    const cmp = (a: number, b: number) => a - b;
    for (const k of [1, 5, 20, 62, 63, 100, 500, 600]) assert.deepEqual(topK(arr, k, cmp), arr.slice().sort(cmp).slice(0, k));
    assert.deepEqual(topK(Int32Array.from(arr), 20, cmp), arr.slice().sort(cmp).slice(0, 20));
  });

  it("tokenize splits as MiniSearch's tokenizer did (lowercase, split on spaces and punctuation)", () => {
    const regexSplit = (s: string) =>
      s
        .toLowerCase()
        .split(/[\n\r\p{Z}\p{P}]+/u)
        .filter(Boolean);
    assert.deepEqual(tokenize("WH-1000XM5 Wireless, c++ $5 <tag> a_b 😀x😀 日本語\u00a0テスト"), [
      "wh",
      "1000xm5",
      "wireless",
      "c++",
      "$5",
      "<tag>",
      "a",
      "b",
      "😀x😀",
      "日本語",
      "テスト",
    ]);
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (s) => assert.deepEqual(tokenize(s), regexSplit(s))),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(..."aZ9 ,.-_!?\n\u00a0\u2014\u3000😀\ud83d\ude00é\u{1039f}") }), (s) =>
        assert.deepEqual(tokenize(s), regexSplit(s)),
      ),
      { numRuns: 2000 },
    );
  });

  it("fuzzy matches only a term the vocabulary lacks (and, last, no longer word starts with)", async () => {
    const engine = new MiniSearchEngine();
    await engine.index(
      named([
        ["a", "Desk Lamp"],
        ["b", "Camp Stove"],
        ["c", "Lamps Set"],
        ["d", "Stow Bag"],
      ]),
    );
    // "lamp" is a word: no fuzzy ("camp" is one edit away), the prefix finds "lamps".
    assert.deepEqual(await ids(engine, { q: "lamp" }), ["a", "c"]);
    // "lamq" is not: one edit finds "lamp" ("lamps" is two away).
    assert.deepEqual(await ids(engine, { q: "lamq" }), ["a"]);
    // As the last term "stov" starts "stove": no fuzzy ("stow" is one edit away)…
    assert.deepEqual(await ids(engine, { q: "stov" }), ["b"]);
    // …not as an earlier term (no prefix there): fuzzy finds "stow" and "stove", the AND keeps "stow bag".
    assert.deepEqual(await ids(engine, { q: "stov bag" }), ["d"]);
    // A word only removed products had is no longer in the vocabulary: fuzzy again.
    await engine.remove("a");
    await engine.remove("c");
    assert.deepEqual(await ids(engine, { q: "lamp" }), ["b"]);
  });

  it("a q of punctuation alone matches nothing (it is not a browse)", async () => {
    const engine = new MiniSearchEngine();
    await engine.index(testCatalog());
    const r = await engine.search(parseSearchQuery({ q: "?!" }));
    assert.equal(r.total, 0);
    assert.deepEqual(r.facets, { category: [], brand: [] });
  });

  it("an upsert that changes no searchable field updates price, stock and the facets in place", async () => {
    const engine = new MiniSearchEngine();
    await engine.index(testCatalog());
    const p = testCatalog().find((x) => x.id === "p03")!; // iPhone 14, out of stock
    assert.deepEqual(await ids(engine, { q: "iphone", inStock: "true", brand: "Apple" }), ["p01", "p02", "p04"]);
    await engine.upsert({ ...p, stock: { onHand: 5, reserved: 0, available: 5 }, price: { amount: 100, currency: "EUR" }, version: 2 });
    assert.deepEqual(await ids(engine, { q: "iphone", inStock: "true", brand: "Apple" }), ["p01", "p02", "p03", "p04"]);
    assert.deepEqual(await ids(engine, { q: "", maxPrice: "100" }), ["p03"]);
    const first = (await engine.search(parseSearchQuery({ q: "", sort: "price_asc", pageSize: "1" }))).items[0];
    assert.equal(first.id, "p03");
    assert.equal(first.version, 2, "the stored document is the new copy");
    assert.equal(await engine.count(), 30);
  });

  it("after many replaces and removals (compactions), answers exactly as an engine built fresh from the survivors", async () => {
    const products = syntheticProducts(3000, 7);
    const churned = new MiniSearchEngine();
    await churned.index(products);
    const current = new Map(products.map((p) => [p.id, p]));
    // Renames (new words, old ones dropped), stock-only changes, removals, re-adds: > 1,000 dead slots, several compactions.
    for (const [i, p] of products.entries()) {
      if (i % 2 === 0) current.set(p.id, { ...p, name: `${p.name} Renewed${i % 7}`, description: "refurbished", version: 2 });
      else if (i % 5 === 1) current.set(p.id, { ...p, stock: { ...p.stock, available: 0 }, version: 2 });
      else if (i % 5 === 3) current.delete(p.id);
      if (current.has(p.id)) await churned.upsert(current.get(p.id)!);
      else await churned.remove(p.id, 2);
    }
    for (const p of products.slice(0, 200))
      if (!current.has(p.id)) {
        await churned.upsert({ ...p, version: 3 });
        current.set(p.id, { ...p, version: 3 });
      }
    const fresh = new MiniSearchEngine();
    await fresh.index([...current.values()]);
    assert.equal(await churned.count(), current.size);
    const queries: RawSearchQuery[] = [
      { q: "renewed3" },
      { q: "refurbished", pageSize: "50" },
      { q: "laptop" },
      { q: "labtop pro" },
      { q: "sony wireless headphones" },
      { q: "", category: "Phones", inStock: "true", sort: "price_desc" },
      { q: "camera", brand: "Sony", page: "2" },
      { q: "renew" },
    ];
    for (const q of queries)
      assert.deepEqual(await churned.search(parseSearchQuery(q)), await fresh.search(parseSearchQuery(q)), JSON.stringify(q));
    assert.deepEqual(await churned.suggest("sam gal", 10), await fresh.suggest("sam gal", 10));
  });

  it("the synthetic catalog is deterministic", () => {
    assert.deepEqual(syntheticProducts(50, 3), syntheticProducts(50, 3));
    assert.notDeepEqual(syntheticProducts(50, 3), syntheticProducts(50, 4));
  });
});
