/**
 * The Elasticsearch engine against `@elastic/elasticsearch-mock`: the requests it sends
 * (mapping, bulk lines, query DSL, aggregations) and how it maps the documented response
 * shapes (fixtures/es-responses.ts). Not a conformance run: no live server here.
 */
import assert from "node:assert/strict";
import { beforeEach, describe, it } from "mocha";
import { Client, errors } from "@elastic/elasticsearch";
import Mock from "@elastic/elasticsearch-mock";
import { parseSearchQuery, type RawSearchQuery } from "./engine";
import { ElasticsearchEngine, INDEX_MAPPINGS, INDEX_SETTINGS, toIndexed } from "./elasticsearch-engine";
import { testCatalog } from "./fixtures/catalog";
import * as fx from "./fixtures/es-responses";

interface Req {
  method: string;
  path: string;
  querystring?: Record<string, string>;
  body?: unknown;
}

const respError = <T extends { status: number }>(body: T) =>
  new errors.ResponseError({ body, statusCode: body.status, headers: {}, warnings: null, meta: {} as never });

describe("ElasticsearchEngine (mocked client)", () => {
  let mock: Mock;
  let engine: ElasticsearchEngine;
  let log: Req[];
  let indexExists: boolean;

  /** Adds a route that records each request and answers with `reply(req)`. */
  const route = (method: string | string[], path: string, reply: (req: Req) => unknown) =>
    mock.add({ method, path }, (params) => {
      const req = params as unknown as Req;
      log.push({ method: req.method, path: req.path, querystring: req.querystring, body: req.body });
      return reply(req) as Record<string, unknown>;
    });
  const requests = (method: string, path: string) => log.filter((r) => r.method === method && r.path === path);
  const search = (raw: RawSearchQuery) => engine.search(parseSearchQuery(raw));

  beforeEach(() => {
    mock = new Mock();
    log = [];
    indexExists = true;
    const client = new Client({ node: "http://localhost:9200", Connection: mock.getConnection(), maxRetries: 0 });
    engine = new ElasticsearchEngine({ client });
    route("HEAD", "/products", () => (indexExists ? "" : respError({ status: 404 })));
    route("PUT", "/products", () => {
      indexExists = true;
      return fx.createIndexResponse;
    });
  });

  it("creates the index with the explicit mapping when it does not exist", async () => {
    indexExists = false;
    route("POST", "/_bulk", () => fx.bulkResponse(["p01"]));
    await engine.index(testCatalog().slice(0, 1));
    const [create] = requests("PUT", "/products");
    assert.deepEqual(create.body, { settings: INDEX_SETTINGS, mappings: INDEX_MAPPINGS });
    const m = INDEX_MAPPINGS.properties;
    assert.equal(m.name.type, "text");
    assert.equal(m.category.fields.keyword.type, "keyword");
    assert.equal(m.brand.fields.keyword.type, "keyword");
    assert.equal(m.price.properties.amount.type, "long");
    assert.equal(m.inStock.type, "boolean");
    assert.equal(m.suggest.type, "completion");
    assert.equal(INDEX_MAPPINGS.dynamic, false);
  });

  it("tolerates another node creating the index first", async () => {
    indexExists = false;
    mock.clear({ method: "PUT", path: "/products" });
    route("PUT", "/products", () => respError(fx.alreadyExistsError));
    route("POST", "/_bulk", () => fx.bulkResponse(["p01"]));
    await engine.index(testCatalog().slice(0, 1));
    assert.equal(requests("POST", "/_bulk").length, 1);
  });

  it("bulk-indexes in chunks of 1,000 with action + document lines", async () => {
    const products = Array.from({ length: 2500 }, (_, i) => ({ ...testCatalog()[i % 30], id: `b${i}` }));
    route("POST", "/_bulk", (req) =>
      fx.bulkResponse((req.body as Array<{ index?: { _id: string } }>).filter((l) => l.index).map((l) => l.index!._id)),
    );
    await engine.index(products);
    const bulks = requests("POST", "/_bulk");
    assert.deepEqual(
      bulks.map((b) => (b.body as unknown[]).length),
      [2000, 2000, 1000],
    );
    const lines = bulks[0].body as unknown[];
    assert.deepEqual(lines[0], { index: { _index: "products", _id: "b0", version: 1, version_type: "external" } });
    assert.deepEqual(lines[1], JSON.parse(JSON.stringify(toIndexed(products[0]))));
    assert.equal(bulks[0].querystring?.refresh, "false");
    assert.equal(requests("HEAD", "/products").length, 1, "the index is checked once");
  });

  it("indexes the derived fields: inStock and the completion inputs", () => {
    const p = testCatalog()[0];
    const d = toIndexed(p);
    assert.equal(d.inStock, true);
    assert.deepEqual(d.suggest.input, ["iPhone 15 Pro", "15 Pro", "Pro"]);
    assert.equal(toIndexed({ ...p, stock: { onHand: 1, reserved: 1, available: 0 } }).inStock, false);
  });

  it("throws on a bulk answer with item errors, naming the failed ids", async () => {
    route("POST", "/_bulk", () =>
      fx.bulkResponse(["p01", "p02"], {
        p02: { status: 400, type: "mapper_parsing_exception", reason: "failed to parse field [price.amount]" },
      }),
    );
    await assert.rejects(engine.index(testCatalog().slice(0, 2)), /1 of 2 products.*p02.*mapper_parsing_exception/);
  });

  it("bulk items rejected with 429 become SERVICE_UNAVAILABLE", async () => {
    route("POST", "/_bulk", () =>
      fx.bulkResponse(["p01"], { p01: { status: 429, type: "es_rejected_execution_exception", reason: "queue full" } }),
    );
    await assert.rejects(
      engine.index(testCatalog().slice(0, 1)),
      (e: { type?: string; code?: number }) => e.type === "SERVICE_UNAVAILABLE" && e.code === 503,
    );
  });

  it("upserts one document with PUT _doc/:id, creating a missing index and retrying", async () => {
    let first = true;
    route("PUT", "/products/_doc/:id", () => {
      if (first) {
        first = false;
        indexExists = false;
        return respError(fx.indexNotFoundError);
      }
      return fx.indexDocResponse("p01");
    });
    const p = testCatalog()[0];
    await engine.upsert(p);
    const puts = requests("PUT", "/products/_doc/p01");
    assert.equal(puts.length, 2);
    assert.deepEqual(puts[1].body, JSON.parse(JSON.stringify(toIndexed(p))));
    assert.equal(requests("PUT", "/products").length, 1, "the index was created between the tries");
  });

  it("versioned writes use external versioning; a 409 version conflict (a newer copy is indexed) is not an error", async () => {
    const p = { ...testCatalog()[0], version: 4 };
    route("PUT", "/products/_doc/:id", () => respError(fx.versionConflictError("p01", 5, 4)));
    await engine.upsert(p);
    const put = requests("PUT", "/products/_doc/p01")[0];
    assert.equal(put.querystring?.version, "4");
    assert.equal(put.querystring?.version_type, "external");
    route("DELETE", "/products/_doc/:id", () => respError(fx.versionConflictError("p01", 9, 6)));
    await engine.remove("p01", 6);
    const del = requests("DELETE", "/products/_doc/p01")[0];
    assert.deepEqual([del.querystring?.version, del.querystring?.version_type], ["6", "external"]);
    // Bulk: the version goes on each action line; 409 items are skipped, other errors still throw.
    route("POST", "/_bulk", () =>
      fx.bulkResponse(["p01", "p02"], {
        p01: {
          status: 409,
          type: "version_conflict_engine_exception",
          reason: "[p01]: version conflict, current version [7] is higher or equal to the one provided [4]",
        },
      }),
    );
    await engine.index([p, { ...testCatalog()[1], version: 2 }]);
    const lines = requests("POST", "/_bulk")[0].body as Array<{ index?: { _id: string; version?: number; version_type?: string } }>;
    assert.deepEqual(lines[0], { index: { _index: "products", _id: "p01", version: 4, version_type: "external" } });
  });

  it("removes with DELETE _doc/:id; a 404 not_found or a missing index is not an error", async () => {
    route("DELETE", "/products/_doc/:id", (req) =>
      req.path.endsWith("gone")
        ? respError({ ...fx.deleteNotFoundResponse("gone"), status: 404 })
        : { ...fx.deleteNotFoundResponse("p01"), result: "deleted" },
    );
    await engine.remove("p01");
    await engine.remove("gone");
    assert.equal(requests("DELETE", "/products/_doc/p01").length, 1);
  });

  it("clear deletes and recreates the index", async () => {
    route("DELETE", "/products", () => {
      indexExists = false;
      return { acknowledged: true };
    });
    await engine.clear();
    assert.deepEqual(
      log.map((r) => `${r.method} ${r.path}`),
      ["DELETE /products", "HEAD /products", "PUT /products"],
    );
    assert.equal(requests("DELETE", "/products")[0].querystring?.ignore_unavailable, "true");
  });

  it("counts with _count; a missing index counts 0", async () => {
    route(["GET", "POST"], "/products/_count", () => fx.countResponse(30));
    assert.equal(await engine.count(), 30);
    mock.clear({ method: ["GET", "POST"], path: "/products/_count" });
    route(["GET", "POST"], "/products/_count", () => respError(fx.indexNotFoundError));
    assert.equal(await engine.count(), 0);
  });

  it("sends the query DSL: fuzzy AND on search_text, boosted fields, filters, post_filter, facet aggs, sort, paging", async () => {
    route("POST", "/products/_search", () =>
      fx.searchResponse(["p01", "p02"], 2, {
        category: [
          ["Phones", 4],
          ["Laptops", 2],
        ],
        brand: [
          ["Apple", 4],
          ["Samsung", 3],
        ],
      }),
    );
    await search({
      q: "iphnoe pro",
      category: "Phones",
      brand: "Apple",
      minPrice: "1000",
      maxPrice: "200000",
      inStock: "true",
      sort: "price_asc",
      page: "2",
      pageSize: "10",
    });
    const [req] = requests("POST", "/products/_search");
    assert.deepEqual(req.body, {
      from: 10,
      size: 10,
      track_total_hits: true,
      query: {
        bool: {
          must: [
            {
              bool: {
                should: [
                  { match: { search_text: { query: "iphnoe pro", operator: "and", fuzziness: "AUTO:4,6" } } },
                  { match_bool_prefix: { search_text: { query: "iphnoe pro", operator: "and", fuzziness: "AUTO:4,6" } } },
                ],
                minimum_should_match: 1,
              },
            },
          ],
          should: [
            {
              multi_match: {
                query: "iphnoe pro",
                fields: ["name^3", "brand^2", "sku.text^2", "category^1.5", "tags^1.5", "description"],
                type: "best_fields",
                fuzziness: "AUTO:4,6",
              },
            },
          ],
          filter: [{ range: { "price.amount": { gte: 1000, lte: 200000 } } }, { term: { inStock: true } }],
        },
      },
      post_filter: { bool: { filter: [{ term: { "category.keyword": "Phones" } }, { term: { "brand.keyword": "Apple" } }] } },
      aggs: {
        // a facet applies the other facet's filter, never its own
        category: {
          filter: { term: { "brand.keyword": "Apple" } },
          aggs: { values: { terms: { field: "category.keyword", size: 50, order: [{ _count: "desc" }, { _key: "asc" }] } } },
        },
        brand: {
          filter: { term: { "category.keyword": "Phones" } },
          aggs: { values: { terms: { field: "brand.keyword", size: 50, order: [{ _count: "desc" }, { _key: "asc" }] } } },
        },
      },
      sort: [{ "price.amount": { order: "asc" } }, { _score: { order: "desc" } }, { id: { order: "asc" } }],
      _source: { excludes: ["suggest", "inStock"] },
    });
  });

  it("browses with match_all, newest first, and no post_filter when no category/brand", async () => {
    route("POST", "/products/_search", () => fx.searchResponse([], 0, { category: [], brand: [] }));
    await search({ q: "" });
    const body = requests("POST", "/products/_search")[0].body as Record<string, unknown>;
    assert.deepEqual(body.query, { bool: { must: [{ match_all: {} }], should: [], filter: [] } });
    assert.equal(body.post_filter, undefined);
    assert.deepEqual(body.sort, [{ createdAt: { order: "desc" } }, { _score: { order: "desc" } }, { id: { order: "asc" } }]);
    assert.deepEqual((body.aggs as { category: { filter: unknown } }).category.filter, { match_all: {} });
    assert.equal(requests("POST", "/products/_search").length, 1, "no OR retry for an empty q");
  });

  it("maps hits, total.value and the aggregation buckets; strips the index-only fields", async () => {
    route("POST", "/products/_search", () =>
      fx.searchResponse(["p01", "p02", "p04"], 42, {
        category: [
          ["Phones", 40],
          ["Laptops", 2],
        ],
        brand: [
          ["Apple", 30],
          ["Samsung", 12],
        ],
      }),
    );
    const r = await search({ q: "iphone", pageSize: "3" });
    const cat = new Map(testCatalog().map((p) => [p.id, p]));
    assert.deepEqual(r, {
      items: [cat.get("p01"), cat.get("p02"), cat.get("p04")],
      total: 42,
      page: 1,
      pageSize: 3,
      facets: {
        category: [
          { value: "Phones", count: 40 },
          { value: "Laptops", count: 2 },
        ],
        brand: [
          { value: "Apple", count: 30 },
          { value: "Samsung", count: 12 },
        ],
      },
    });
  });

  it("falls back to OR when all-words finds nothing at all", async () => {
    const ops: string[] = [];
    route("POST", "/products/_search", (req) => {
      const b = req.body as {
        query: { bool: { must: Array<{ bool: { should: Array<{ match?: { search_text: { operator: string } } }> } }> } };
      };
      const op = b.query.bool.must[0].bool.should[0].match!.search_text.operator;
      ops.push(op);
      return op === "and"
        ? fx.searchResponse([], 0, { category: [], brand: [] })
        : fx.searchResponse(["p09", "p29"], 2, {
            category: [
              ["Laptops", 1],
              ["Kitchen", 1],
            ],
            brand: [
              ["Apple", 1],
              ["Bosch", 1],
            ],
          });
    });
    const r = await search({ q: "macbook dishwasher" });
    assert.deepEqual(ops, ["and", "or"]);
    assert.deepEqual(
      r.items.map((p) => p.id),
      ["p09", "p29"],
    );
    assert.equal(r.total, 2);
  });

  it("does not fall back to OR when q matched but the category/brand filter emptied the page", async () => {
    route("POST", "/products/_search", () => fx.searchResponse([], 0, { category: [["Phones", 4]], brand: [["Apple", 4]] }));
    const r = await search({ q: "iphone", category: "Shoes" });
    assert.equal(requests("POST", "/products/_search").length, 1);
    assert.equal(r.total, 0);
    assert.deepEqual(r.facets.category, [{ value: "Phones", count: 4 }]);
  });

  it("a search on a missing index answers empty (and the index is re-checked on the next write)", async () => {
    route("POST", "/products/_search", () => respError(fx.indexNotFoundError));
    assert.deepEqual(await search({ q: "iphone" }), { items: [], total: 0, page: 1, pageSize: 20, facets: { category: [], brand: [] } });
  });

  for (const [status, body] of [
    [429, fx.rejectedExecutionError],
    [503, fx.unavailableError],
  ] as const) {
    it(`${status} from Elasticsearch becomes a clean SERVICE_UNAVAILABLE (search and bulk)`, async () => {
      route("POST", "/products/_search", () => respError(body));
      route("POST", "/_bulk", () => respError(body));
      const isClean = (e: unknown) => {
        const err = e as { type?: string; code?: number; message?: string };
        assert.equal(err.type, "SERVICE_UNAVAILABLE");
        assert.equal(err.code, 503);
        assert.equal(err.message, "Search is temporarily unavailable");
        return true;
      };
      await assert.rejects(search({ q: "iphone" }), isClean);
      await assert.rejects(engine.index(testCatalog().slice(0, 1)), isClean);
    });
  }

  it("other errors (a 400 bad query) pass through as the client's ResponseError", async () => {
    route("POST", "/products/_search", () =>
      respError({ ...fx.alreadyExistsError, error: { ...fx.alreadyExistsError.error, type: "parsing_exception" } }),
    );
    await assert.rejects(search({ q: "x" }), (e: unknown) => e instanceof errors.ResponseError && e.statusCode === 400);
  });

  it("suggests names from the completion suggester, deduplicated", async () => {
    route("POST", "/products/_search", () =>
      fx.completionResponse("pro", [
        ["Pro", "iPhone 15 Pro"],
        ["Pro 16", "MacBook Pro 16"],
        ["Pro 2", "AirPods Pro 2"],
        ["Pro", "iPhone 15 Pro"],
      ]),
    );
    assert.deepEqual(await engine.suggest(" pro ", 10), ["iPhone 15 Pro", "MacBook Pro 16", "AirPods Pro 2"]);
    const [req] = requests("POST", "/products/_search");
    assert.deepEqual(req.body, {
      _source: ["name"],
      suggest: { names: { prefix: "pro", completion: { field: "suggest", size: 30, skip_duplicates: true } } },
    });
    assert.deepEqual(await engine.suggest("pro", 2), ["iPhone 15 Pro", "MacBook Pro 16"]);
    assert.deepEqual(await engine.suggest("  ", 5), []);
  });
});
