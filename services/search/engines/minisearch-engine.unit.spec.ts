import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { engineConformance } from "./conformance";
import { MiniSearchEngine, topK } from "./minisearch-engine";
import { parseSearchQuery } from "./engine";
import { syntheticProducts } from "../../../lib/demo-catalog";

engineConformance("MiniSearchEngine", async () => new MiniSearchEngine());

describe("MiniSearchEngine specifics", () => {
  it("topK equals a full sort's first k, for small and large k", () => {
    const arr = Array.from({ length: 500 }, (_, i) => (i * 7919) % 997);
    const cmp = (a: number, b: number) => a - b;
    for (const k of [1, 5, 20, 62, 63, 100, 500, 600]) assert.deepEqual(topK(arr, k, cmp), arr.slice().sort(cmp).slice(0, k));
  });

  it("bulk-indexes a large batch in chunks and survives many replaces (auto-vacuum)", async () => {
    const engine = new MiniSearchEngine();
    const products = syntheticProducts(3000, 7);
    await engine.index(products);
    assert.equal(await engine.count(), 3000);
    for (const p of products.slice(0, 1500)) await engine.upsert({ ...p, name: `${p.name} Renewed`, version: p.version + 1 });
    assert.equal(await engine.count(), 3000);
    const r = await engine.search(parseSearchQuery({ q: "renewed", pageSize: "1" }));
    assert.equal(r.total, 1500);
  });

  it("the synthetic catalog is deterministic", () => {
    assert.deepEqual(syntheticProducts(50, 3), syntheticProducts(50, 3));
    assert.notDeepEqual(syntheticProducts(50, 3), syntheticProducts(50, 4));
  });
});
