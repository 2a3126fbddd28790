import assert from "node:assert/strict";
import { describe, it } from "mocha";
import { autoFuzziness, parseSearchQuery, parseSuggest, sortFacet, type RawSearchQuery } from "./engine";

const problems = (raw: RawSearchQuery): Array<{ field: string }> => {
  try {
    parseSearchQuery(raw);
  } catch (e) {
    const err = e as { type?: string; code?: number; data?: Array<{ field: string }> };
    assert.equal(err.type, "VALIDATION_ERROR");
    assert.equal(err.code, 422);
    return err.data ?? [];
  }
  assert.fail("expected a validation error");
};

describe("parseSearchQuery", () => {
  it("gives the defaults for an empty query", () => {
    assert.deepEqual(parseSearchQuery({}), { q: "", sort: "relevance", page: 1, pageSize: 20 });
  });

  it("parses query-string values (strings) and trims text", () => {
    assert.deepEqual(
      parseSearchQuery({
        q: "  iphone 15 ",
        category: "Phones",
        brand: " Apple ",
        minPrice: "1000",
        maxPrice: "5000",
        inStock: "true",
        sort: "price_desc",
        page: "3",
        pageSize: "100",
      }),
      {
        q: "iphone 15",
        category: "Phones",
        brand: "Apple",
        minPrice: 1000,
        maxPrice: 5000,
        inStock: true,
        sort: "price_desc",
        page: 3,
        pageSize: 100,
      },
    );
    assert.deepEqual(parseSearchQuery({ q: "x", inStock: false, page: 2, pageSize: 5 }), {
      q: "x",
      inStock: false,
      sort: "relevance",
      page: 2,
      pageSize: 5,
    });
    assert.deepEqual(parseSearchQuery({ category: "", brand: "  ", minPrice: "" }), { q: "", sort: "relevance", page: 1, pageSize: 20 });
  });

  it("rejects page < 1, pageSize outside 1..100, bad numbers, bad sort, bad inStock", () => {
    assert.deepEqual(
      problems({ page: "0" }).map((p) => p.field),
      ["page"],
    );
    assert.deepEqual(
      problems({ pageSize: "101" }).map((p) => p.field),
      ["pageSize"],
    );
    assert.deepEqual(
      problems({ pageSize: "0" }).map((p) => p.field),
      ["pageSize"],
    );
    assert.deepEqual(
      problems({ page: "1.5" }).map((p) => p.field),
      ["page"],
    );
    assert.deepEqual(
      problems({ minPrice: "-1" }).map((p) => p.field),
      ["minPrice"],
    );
    assert.deepEqual(
      problems({ maxPrice: "12abc" }).map((p) => p.field),
      ["maxPrice"],
    );
    assert.deepEqual(
      problems({ sort: "cheapest" }).map((p) => p.field),
      ["sort"],
    );
    assert.deepEqual(
      problems({ inStock: "yes" }).map((p) => p.field),
      ["inStock"],
    );
    assert.deepEqual(
      problems({ q: ["a", "b"] }).map((p) => p.field),
      ["q"],
    );
    assert.deepEqual(
      problems({ q: "x".repeat(201) }).map((p) => p.field),
      ["q"],
    );
  });

  it("lists every bad field at once, and checks minPrice <= maxPrice", () => {
    assert.deepEqual(
      problems({ page: "0", pageSize: "1000", sort: "x" }).map((p) => p.field),
      ["sort", "page", "pageSize"],
    );
    assert.deepEqual(
      problems({ minPrice: "500", maxPrice: "100" }).map((p) => p.field),
      ["maxPrice"],
    );
    assert.equal(parseSearchQuery({ minPrice: "100", maxPrice: "100" }).maxPrice, 100);
  });

  it("caps how deep one can page (page * pageSize <= 10,000, Elasticsearch's result window)", () => {
    assert.equal(parseSearchQuery({ page: "100", pageSize: "100" }).page, 100);
    assert.deepEqual(
      problems({ page: "101", pageSize: "100" }).map((p) => p.field),
      ["page"],
    );
  });
});

describe("parseSuggest, sortFacet, autoFuzziness", () => {
  it("suggest: limit 1..20, default 10", () => {
    assert.deepEqual(parseSuggest(" iph "), { prefix: "iph", limit: 10 });
    assert.deepEqual(parseSuggest("iph", "5"), { prefix: "iph", limit: 5 });
    assert.deepEqual(parseSuggest(undefined), { prefix: "", limit: 10 });
    assert.throws(() => parseSuggest("iph", "21"), { type: "VALIDATION_ERROR" });
  });

  it("facets: count desc, then value, capped", () => {
    const m = new Map([
      ["b", 2],
      ["a", 2],
      ["c", 5],
      ["d", 1],
    ]);
    assert.deepEqual(sortFacet(m), [
      { value: "c", count: 5 },
      { value: "a", count: 2 },
      { value: "b", count: 2 },
      { value: "d", count: 1 },
    ]);
    assert.equal(sortFacet(m, 2).length, 2);
  });

  it("fuzziness: exact up to 3 letters, 1 edit for 4-5, 2 beyond", () => {
    assert.deepEqual(["pro", "pixl", "phone", "iphnoe", "headphones"].map(autoFuzziness), [false, 1, 1, 2, 2]);
  });
});
