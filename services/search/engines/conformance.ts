/**
 * The engine conformance suite: what every `SearchEngine` must do, on the hand-made
 * catalog (fixtures/catalog.ts). Run on MiniSearch in minisearch-engine.unit.spec.ts, and on a
 * live Elasticsearch by `npm run search:conformance` (elasticsearch-engine.live.spec.ts) for
 * whoever has one; the machines this project is tested on cannot, so there the Elasticsearch
 * unit tests check request shapes against recorded responses instead.
 */
import assert from "node:assert/strict";
import { beforeEach, describe, it } from "mocha";
import { parseSearchQuery, type RawSearchQuery, type SearchEngine } from "./engine";
import { testCatalog } from "./fixtures/catalog";

export function engineConformance(name: string, make: () => Promise<SearchEngine>): void {
  describe(`${name}: SearchEngine conformance`, () => {
    let engine: SearchEngine;
    const search = (raw: RawSearchQuery) => engine.search(parseSearchQuery(raw));
    const ids = async (raw: RawSearchQuery) => (await search(raw)).items.map((p) => p.id);

    beforeEach(async () => {
      engine = await make();
      await engine.clear();
      await engine.index(testCatalog());
    });

    it("counts the indexed products", async () => {
      assert.equal(await engine.count(), 30);
    });

    it("finds iphone from the typo iphnoe", async () => {
      const r = await search({ q: "iphnoe" });
      assert.deepEqual(r.items.map((p) => p.id).sort(), ["p01", "p02", "p03", "p04"]);
      assert.equal(r.total, 4);
    });

    it("tolerates typos in other words too (headphnes, sneekers)", async () => {
      assert.deepEqual((await ids({ q: "sneekers" })).sort(), ["p21", "p23", "p25"]);
      assert.ok((await ids({ q: "headphnes" })).includes("p15"));
    });

    it("requires every word of a multi-word query, in any field", async () => {
      // "sony" is a brand, "earbuds" a tag/name word: only the Sony earbuds have both.
      assert.deepEqual(await ids({ q: "sony earbuds" }), ["p16"]);
      assert.deepEqual((await ids({ q: "noise cancelling earbuds" })).sort(), ["p16", "p19", "p20"]);
    });

    it("falls back to any word when no product has them all", async () => {
      const r = await search({ q: "macbook dishwasher" });
      assert.deepEqual(r.items.map((p) => p.id).sort(), ["p09", "p10", "p29"]);
    });

    it("ranks a name match above a description-only match", async () => {
      // Two products with a word the catalog lacks: in the name of one (among other words,
      // with a long description), the description alone of the other (short, so it would
      // win on term frequency alone): only the name's weight puts the first on top.
      const base = testCatalog()[0];
      const doc = (id: string, name: string, description: string) => ({
        ...base,
        id,
        sku: `TST-${id}`,
        name,
        description,
        tags: [],
        brand: "Trailco",
        category: "Outdoor",
      });
      await engine.index([
        doc("n1", "Trekking Poles Carbon Pro", "Adjustable carbon poles with cork grips, wrist straps, tungsten tips and a carry bag"),
        doc("d1", "Walking Sticks", "trekking"),
      ]);
      const r = await search({ q: "trekking" });
      assert.deepEqual(
        r.items.map((p) => p.id),
        ["n1", "d1"],
      );
      assert.equal(r.total, 2);
    });

    it("completes the last word as a prefix (search as you type)", async () => {
      assert.deepEqual((await ids({ q: "galaxy s2" })).sort(), ["p05", "p06"]);
      assert.deepEqual((await ids({ q: "thinkpa" })).sort(), ["p11", "p12"]);
    });

    it("returns no match for nonsense, with empty facets", async () => {
      const r = await search({ q: "zzqxv" });
      assert.deepEqual(r, { items: [], total: 0, page: 1, pageSize: 20, facets: { category: [], brand: [] } });
    });

    it("browses everything for an empty q, newest first, with exact facets", async () => {
      const r = await search({ q: "" });
      assert.equal(r.total, 30);
      assert.equal(r.items.length, 20);
      assert.equal(r.items[0].id, "p30");
      assert.deepEqual(r.facets.category, [
        { value: "Phones", count: 8 },
        { value: "Headphones", count: 6 },
        { value: "Laptops", count: 6 },
        { value: "Kitchen", count: 5 },
        { value: "Shoes", count: 5 },
      ]);
      assert.deepEqual(r.facets.brand, [
        { value: "Apple", count: 7 },
        { value: "Nike", count: 3 },
        { value: "Philips", count: 3 },
        { value: "Samsung", count: 3 },
        { value: "Sony", count: 3 },
        { value: "Adidas", count: 2 },
        { value: "Bosch", count: 2 },
        { value: "Bose", count: 2 },
        { value: "Dell", count: 2 },
        { value: "Lenovo", count: 2 },
        { value: "Google", count: 1 },
      ]);
    });

    it("filters by category and brand; a facet ignores its own filter but honours the other", async () => {
      const r = await search({ q: "", category: "Phones", brand: "Apple" });
      assert.deepEqual(r.items.map((p) => p.id).sort(), ["p01", "p02", "p03", "p04"]);
      assert.equal(r.total, 4);
      // category facet: Apple products in every category (brand filter applies, category does not)
      assert.deepEqual(r.facets.category, [
        { value: "Phones", count: 4 },
        { value: "Laptops", count: 2 },
        { value: "Headphones", count: 1 },
      ]);
      // brand facet: every brand among Phones
      assert.deepEqual(r.facets.brand, [
        { value: "Apple", count: 4 },
        { value: "Samsung", count: 3 },
        { value: "Google", count: 1 },
      ]);
    });

    it("facets count over all matches of q, not just the page", async () => {
      // "wireless" would also find "Timeless" (two edits): typo tolerance, as in Elasticsearch's AUTO.
      const r = await search({ q: "noise cancelling", pageSize: "2" });
      assert.equal(r.items.length, 2);
      assert.equal(r.total, 5);
      assert.deepEqual(r.facets.category, [{ value: "Headphones", count: 5 }]);
      assert.deepEqual(r.facets.brand, [
        { value: "Bose", count: 2 },
        { value: "Sony", count: 2 },
        { value: "Apple", count: 1 },
      ]);
    });

    it("inStock=true drops unavailable products, from items and facets", async () => {
      const r = await search({ q: "", inStock: "true", pageSize: "100" });
      assert.equal(r.total, 25);
      assert.ok(r.items.every((p) => p.stock.available > 0));
      assert.deepEqual(
        r.facets.category.find((f) => f.value === "Kitchen"),
        { value: "Kitchen", count: 4 },
      );
      assert.equal((await search({ q: "", inStock: "false" })).total, 30);
    });

    it("filters by an inclusive price range", async () => {
      const r = await search({ q: "", minPrice: "27900", maxPrice: "29900", pageSize: "100" });
      assert.deepEqual(r.items.map((p) => p.id).sort(), ["p16", "p19", "p20", "p30"]);
      assert.deepEqual(await ids({ q: "sneakers", maxPrice: "9900" }), ["p25"]);
    });

    it("sorts by price ascending and descending, and by newest", async () => {
      const asc = (await search({ q: "", category: "Shoes", sort: "price_asc" })).items.map((p) => p.price.amount);
      assert.deepEqual(asc, [9900, 11900, 12900, 13900, 17900]);
      const desc = (await search({ q: "laptop", sort: "price_desc" })).items.map((p) => p.id);
      assert.deepEqual(desc, ["p10", "p11", "p13", "p09", "p12", "p14"]);
      // ("iphone" also finds "phone" in descriptions: one edit; so filter to Apple.)
      assert.deepEqual(await ids({ q: "iphone", brand: "Apple", sort: "newest" }), ["p04", "p03", "p02", "p01"]);
    });

    it("paginates with a stable total", async () => {
      const pages = [];
      for (let page = 1; page <= 4; page++) pages.push(await search({ q: "", pageSize: "8", page: String(page) }));
      assert.deepEqual(
        pages.map((p) => p.total),
        [30, 30, 30, 30],
      );
      assert.deepEqual(
        pages.map((p) => p.items.length),
        [8, 8, 8, 6],
      );
      const all = pages.flatMap((p) => p.items.map((i) => i.id));
      assert.equal(new Set(all).size, 30);
      assert.deepEqual(pages[3].page, 4);
      assert.deepEqual((await search({ q: "", page: "5", pageSize: "8" })).items, []);
    });

    it("returns the stored product documents", async () => {
      const r = await search({ q: "XPS" });
      assert.deepEqual(
        r.items,
        testCatalog().filter((p) => p.id === "p13"),
      );
    });

    it("upsert changes what matches, and keeps one copy", async () => {
      const p = testCatalog().find((x) => x.id === "p08")!;
      await engine.upsert({
        ...p,
        name: "Pixel 9 Foldable",
        description: "A phone that folds",
        price: { amount: 179900, currency: "EUR" },
        version: p.version + 1,
      });
      assert.deepEqual(await ids({ q: "foldable" }), ["p08"]);
      assert.deepEqual(await ids({ q: "clever" }), []);
      assert.equal(await engine.count(), 30);
      assert.deepEqual(await ids({ q: "", minPrice: "170000", category: "Phones" }), ["p08"]);
      await engine.upsert({ ...p, id: "p31", name: "Pixel Tablet" });
      assert.equal(await engine.count(), 31);
      assert.deepEqual(await ids({ q: "tablet" }), ["p31"]);
    });

    it("index() of known ids replaces them", async () => {
      const cat = testCatalog();
      await engine.index(cat.slice(0, 2).map((p) => ({ ...p, name: `${p.name} Refurbished`, version: p.version + 1 })));
      assert.equal(await engine.count(), 30);
      assert.deepEqual((await ids({ q: "refurbished" })).sort(), ["p01", "p02"]);
    });

    it("remove drops a product from results and facets; unknown ids are fine", async () => {
      await engine.remove("p08");
      await engine.remove("nope");
      assert.equal(await engine.count(), 29);
      assert.deepEqual(await ids({ q: "pixel" }), []);
      const r = await search({ q: "" });
      assert.equal(
        r.facets.brand.find((f) => f.value === "Google"),
        undefined,
      );
    });

    it("versions: an older copy never replaces a newer one, and a removal keeps older copies out", async () => {
      const p = testCatalog().find((x) => x.id === "p08")!;
      const nameOfP08 = async () => (await search({ q: "", pageSize: "100" })).items.find((x) => x.id === "p08")?.name;
      await engine.upsert({ ...p, name: "Pixel Fold v5", version: 5 });
      await engine.upsert({ ...p, name: "Pixel Fold v4", version: 4 });
      await engine.index([{ ...p, name: "Pixel Fold v3", version: 3 }]);
      assert.equal(await nameOfP08(), "Pixel Fold v5");
      await engine.remove("p08", 6);
      await engine.upsert({ ...p, name: "Pixel Fold v5", version: 5 });
      await engine.index([{ ...p, name: "Pixel Fold v6", version: 6 }]);
      assert.equal(await nameOfP08(), undefined, "removed at version 6: copies up to 6 stay out");
      assert.equal(await engine.count(), 29);
      await engine.upsert({ ...p, name: "Pixel Fold v7", version: 7 });
      assert.equal(await nameOfP08(), "Pixel Fold v7");
      await engine.remove("p08", 5);
      assert.equal(await nameOfP08(), "Pixel Fold v7", "an older removal does not remove a newer copy");
    });

    it("clear empties the engine", async () => {
      await engine.clear();
      assert.equal(await engine.count(), 0);
      assert.equal((await search({ q: "" })).total, 0);
    });

    it("suggests product names by prefix", async () => {
      assert.deepEqual((await engine.suggest("iph", 10)).sort(), ["iPhone 14", "iPhone 15", "iPhone 15 Pro", "iPhone SE"]);
      assert.deepEqual(await engine.suggest("iphone 15 p", 10), ["iPhone 15 Pro"]);
      assert.deepEqual((await engine.suggest("quiet", 10)).sort(), ["QuietComfort Earbuds II", "QuietComfort Ultra Headphones"]);
      assert.equal((await engine.suggest("iph", 2)).length, 2);
      assert.deepEqual(await engine.suggest("", 10), []);
      assert.deepEqual(await engine.suggest("zzz", 10), []);
    });
  });
}
