/**
 * The Elasticsearch engine (used when ELASTIC_SEARCH_NODE is set), on the official client
 * `@elastic/elasticsearch` 8.19.
 *
 * NOT RUN AGAINST A LIVE ELASTICSEARCH SERVER HERE: no server can be had on this machine.
 * Its requests (mapping, bulk lines, query DSL, aggregations) and its handling of responses
 * are tested with `@elastic/elasticsearch-mock` against response shapes from Elasticsearch's
 * documentation (elasticsearch-engine.unit.spec.ts, fixtures/es-responses.ts). Run the
 * conformance suite (conformance.ts) against a real cluster before relying on it.
 *
 * Index: one index (default "products") with an explicit mapping, `dynamic: false`:
 * - name, description, category, brand, tags: `text` with the `product_text` analyzer
 *   (standard tokenizer + lowercase + asciifolding); category, brand (and name, tags) also
 *   have a `keyword` subfield for facets, filters and sorting;
 * - sku: `keyword` with a `text` subfield; id: keyword (sort tie-breaker);
 * - search_text: every searchable field copied in (`copy_to`), so that "all words must
 *   match" works across fields (as in MiniSearch) despite per-field matching;
 * - price.amount: long (minor units); price.currency keyword; stock.*: long; inStock:
 *   boolean (available > 0, computed at indexing); createdAt/updatedAt: date;
 *   images: not indexed (`enabled: false`, kept in _source);
 * - suggest: a `completion` field with the name and each of its word-suffixes as inputs
 *   ("iPhone 15 Pro", "15 Pro", "Pro"), so that a prefix of any word of the name completes.
 *
 * Query: `bool.must` = all terms (AND; when nothing matches, a second request with OR) on
 * search_text, fuzzy (`fuzziness: "AUTO:4,6"`, like MiniSearch's rule) OR with the last term
 * as a prefix (`match_bool_prefix`); `bool.should` = a boosted `multi_match` on the fields
 * for scoring; price range and inStock in `bool.filter` (they narrow facets too); category
 * and brand in `post_filter`, and each facet's `filter` aggregation applies the OTHER one
 * (the convention of engine.ts: a facet ignores its own filter). One difference with
 * MiniSearch: the OR fallback is decided after the price/inStock filters (an AND query whose
 * matches are all outside the price range falls back to OR here, not in MiniSearch, which
 * decides on q alone); category/brand do not trigger it (the facet aggregations show q matched).
 *
 * Writes: `bulk` in chunks of 1,000 (a bulk answer with `errors: true` throws, listing the
 * failed ids), `index` for an upsert, `delete` for a remove (404 not_found is fine). Refresh
 * policy: `refresh` option, default false: writes show in searches after the index's
 * refresh interval (1 s by default), which is what product events need; a full rebuild or
 * a test passes "wait_for". A missing index (404 index_not_found_exception) is created
 * with the mapping and the write retried once; a search on a missing index answers empty.
 * 429 (es_rejected_execution_exception: queue full) / 502 / 503 / 504 and connection errors
 * become SERVICE_UNAVAILABLE (503) with no internals, after the client's own retries
 * (maxRetries, default 3).
 */
import { Client, errors, type ClientOptions } from "@elastic/elasticsearch";
import { AppError } from "../../../lib/errors";
import {
  FACET_SIZE,
  FUZZINESS,
  MAX_SUGGEST_LIMIT,
  type FacetValue,
  type ProductDoc,
  type SearchEngine,
  type SearchQuery,
  type SearchResult,
} from "./engine";

export const DEFAULT_INDEX = "products";
const BULK_CHUNK = 1000;

/** Settings and mappings of the index, exported for the tests and for a manual setup. */
export const INDEX_SETTINGS = {
  analysis: {
    analyzer: {
      product_text: { type: "custom", tokenizer: "standard", filter: ["lowercase", "asciifolding"] },
    },
  },
} as const;

const text = (boostCopy = true) => ({
  type: "text",
  analyzer: "product_text",
  ...(boostCopy ? { copy_to: "search_text" } : {}),
  fields: { keyword: { type: "keyword", ignore_above: 256 } },
});

export const INDEX_MAPPINGS = {
  dynamic: false,
  properties: {
    id: { type: "keyword" },
    sku: { type: "keyword", copy_to: "search_text", fields: { text: { type: "text", analyzer: "product_text" } } },
    name: text(),
    description: { type: "text", analyzer: "product_text", copy_to: "search_text" },
    category: text(),
    brand: text(),
    tags: text(),
    search_text: { type: "text", analyzer: "product_text" },
    price: { properties: { amount: { type: "long" }, currency: { type: "keyword" } } },
    stock: { properties: { onHand: { type: "long" }, reserved: { type: "long" }, available: { type: "long" } } },
    inStock: { type: "boolean" },
    images: { type: "object", enabled: false },
    createdAt: { type: "date" },
    updatedAt: { type: "date" },
    suggest: { type: "completion", analyzer: "simple", preserve_separators: true, max_input_length: 100 },
  },
} as const;

export const SEARCH_FIELDS = ["name^3", "brand^2", "sku.text^2", "category^1.5", "tags^1.5", "description"];

export interface ElasticsearchEngineOptions {
  client: Client;
  index?: string;
  refresh?: boolean | "wait_for";
}

/** The client from the environment's settings (ELASTIC_SEARCH_NODE, _USERNAME, _PASSWORD). */
export function createElasticsearchClient(node: string, username?: string, password?: string, extra: Partial<ClientOptions> = {}): Client {
  return new Client({
    node,
    ...(username ? { auth: { username, password: password ?? "" } } : {}),
    requestTimeout: 10_000,
    ...extra,
  });
}

/** The indexed form of a product: the document plus fields only the index needs. */
export function toIndexed(p: ProductDoc) {
  const words = p.name.split(/\s+/).filter(Boolean);
  const inputs = words.map((_, i) => words.slice(i).join(" ")).filter((s, i, a) => a.indexOf(s) === i);
  return { ...p, inStock: p.stock.available > 0, suggest: { input: inputs } };
}

function fromIndexed(source: unknown): ProductDoc {
  const { inStock: _inStock, suggest: _suggest, ...doc } = source as ProductDoc & { inStock?: unknown; suggest?: unknown };
  return doc;
}

const errorType = (e: errors.ResponseError): string | undefined => (e.body as { error?: { type?: string } } | undefined)?.error?.type;

/**
 * Elasticsearch's external versioning: a write carrying the product's version applies only
 * if it is higher than the indexed one (a delete's tombstone is kept for index.gc_deletes,
 * 60 s by default). Several search replicas writing the same events to one shared index,
 * in any order, therefore converge on the newest copy.
 */
const externalVersion = (version: number | undefined) => (version === undefined ? {} : { version, version_type: "external" as const }); // a removal may name none

const isVersionConflict = (status: number | undefined, type: string | undefined) =>
  status === 409 && (type === undefined || type === "version_conflict_engine_exception");

const isVersionConflictError = (e: unknown) => e instanceof errors.ResponseError && isVersionConflict(e.statusCode, errorType(e));

export const isIndexNotFound = (e: unknown) =>
  e instanceof errors.ResponseError && e.statusCode === 404 && errorType(e) === "index_not_found_exception";

/** Maps client errors to the catalog's: overload/outage → SERVICE_UNAVAILABLE; others pass through. */
export function toSearchError(e: unknown): unknown {
  if (e instanceof errors.ResponseError && [429, 502, 503, 504].includes(e.statusCode ?? 0))
    return new AppError("SERVICE_UNAVAILABLE", "Search is temporarily unavailable", [{ reason: errorType(e) ?? `status ${e.statusCode}` }]);
  if (e instanceof errors.ConnectionError || e instanceof errors.TimeoutError || e instanceof errors.NoLivingConnectionsError)
    return new AppError("SERVICE_UNAVAILABLE", "Search is temporarily unavailable", [{ reason: e.name }]);
  return e;
}

export class ElasticsearchEngine implements SearchEngine {
  readonly kind = "elasticsearch";
  readonly indexName: string;
  private readonly client: Client;
  private readonly refresh: boolean | "wait_for";
  private ensured: Promise<void> | undefined;

  constructor(opts: ElasticsearchEngineOptions) {
    this.client = opts.client;
    this.indexName = opts.index ?? DEFAULT_INDEX;
    this.refresh = opts.refresh ?? false;
  }

  /** Creates the index with its mapping if it does not exist (once per process, again after a 404). */
  ensureIndex(): Promise<void> {
    this.ensured ??= (async () => {
      if (await this.client.indices.exists({ index: this.indexName })) return;
      try {
        await this.client.indices.create({ index: this.indexName, settings: INDEX_SETTINGS, mappings: INDEX_MAPPINGS } as never);
      } catch (e) {
        // Another node created it first.
        if (!(e instanceof errors.ResponseError && errorType(e) === "resource_already_exists_exception")) throw e;
      }
    })().catch((e) => {
      this.ensured = undefined;
      throw e;
    });
    return this.ensured;
  }

  /** Runs a write; on a missing index, creates it and retries once. */
  private async write<T>(op: () => Promise<T>): Promise<T> {
    try {
      await this.ensureIndex();
      try {
        return await op();
      } catch (e) {
        if (!isIndexNotFound(e)) throw e;
        this.ensured = undefined;
        await this.ensureIndex();
        return await op();
      }
    } catch (e) {
      throw toSearchError(e);
    }
  }

  /** Runs a read; a missing index gives `empty`. */
  private async read<T>(op: () => Promise<T>, empty: T): Promise<T> {
    try {
      return await op();
    } catch (e) {
      if (isIndexNotFound(e)) {
        this.ensured = undefined;
        return empty;
      }
      throw toSearchError(e);
    }
  }

  async index(products: readonly ProductDoc[]): Promise<void> {
    for (let i = 0; i < products.length; i += BULK_CHUNK) {
      const chunk = products.slice(i, i + BULK_CHUNK);
      const operations = chunk.flatMap((p) => [
        { index: { _index: this.indexName, _id: p.id, ...externalVersion(p.version) } },
        toIndexed(p),
      ]);
      const res = await this.write(() => this.client.bulk({ operations, refresh: this.refresh }));
      if (res.errors) {
        const failed = res.items
          .map((item) => item.index ?? item.create ?? item.update ?? item.delete)
          // 409 with an external version: the index already holds this or a newer copy.
          .filter((r) => r && r.error && !isVersionConflict(r.status, r.error.type))
          .map((r) => ({ id: r!._id, status: r!.status, type: r!.error!.type, reason: r!.error!.reason }));
        if (!failed.length) continue;
        if (failed.some((f) => f.status === 429))
          throw new AppError("SERVICE_UNAVAILABLE", "Search is temporarily unavailable", [
            { reason: "es_rejected_execution_exception", failed: failed.length },
          ]);
        throw new Error(
          `Elasticsearch bulk indexing failed for ${failed.length} of ${chunk.length} products: ${JSON.stringify(failed.slice(0, 5))}`,
        );
      }
    }
  }

  async upsert(product: ProductDoc): Promise<void> {
    try {
      await this.write(() =>
        this.client.index({
          index: this.indexName,
          id: product.id,
          document: toIndexed(product),
          refresh: this.refresh,
          ...externalVersion(product.version),
        }),
      );
    } catch (e) {
      if (isVersionConflictError(e)) return; // an equal or newer copy is already indexed
      throw e;
    }
  }

  async remove(id: string, version?: number): Promise<void> {
    try {
      await this.client.delete({ index: this.indexName, id, refresh: this.refresh, ...externalVersion(version) });
    } catch (e) {
      // Not there (the document or the whole index): nothing to remove. 409: a newer copy is indexed.
      if (e instanceof errors.ResponseError && (e.statusCode === 404 || isVersionConflictError(e))) return;
      throw toSearchError(e);
    }
  }

  async clear(): Promise<void> {
    try {
      await this.client.indices.delete({ index: this.indexName, ignore_unavailable: true });
    } catch (e) {
      throw toSearchError(e);
    }
    this.ensured = undefined;
    await this.write(async () => undefined);
  }

  async count(): Promise<number> {
    return this.read(async () => (await this.client.count({ index: this.indexName })).count, 0);
  }

  /** The search request body for a query (exported for the tests). */
  buildSearch(query: SearchQuery, operator: "and" | "or" = "and") {
    const q = query.q.trim();
    const filter: object[] = [];
    if (query.minPrice !== undefined || query.maxPrice !== undefined)
      filter.push({
        range: {
          "price.amount": {
            ...(query.minPrice !== undefined ? { gte: query.minPrice } : {}),
            ...(query.maxPrice !== undefined ? { lte: query.maxPrice } : {}),
          },
        },
      });
    if (query.inStock) filter.push({ term: { inStock: true } });
    const categoryFilter = query.category !== undefined ? { term: { "category.keyword": query.category } } : undefined;
    const brandFilter = query.brand !== undefined ? { term: { "brand.keyword": query.brand } } : undefined;
    const must = q
      ? [
          {
            bool: {
              should: [
                { match: { search_text: { query: q, operator, fuzziness: FUZZINESS } } },
                { match_bool_prefix: { search_text: { query: q, operator, fuzziness: FUZZINESS } } },
              ],
              minimum_should_match: 1,
            },
          },
        ]
      : [{ match_all: {} }];
    const should = q ? [{ multi_match: { query: q, fields: SEARCH_FIELDS, type: "best_fields", fuzziness: FUZZINESS } }] : [];
    const postFilters = [categoryFilter, brandFilter].filter((f): f is NonNullable<typeof f> => f !== undefined);
    const sort = query.sort === "relevance" && !q ? "newest" : query.sort;
    const sortClause =
      sort === "price_asc"
        ? [{ "price.amount": { order: "asc" } }, { _score: { order: "desc" } }, { id: { order: "asc" } }]
        : sort === "price_desc"
          ? [{ "price.amount": { order: "desc" } }, { _score: { order: "desc" } }, { id: { order: "asc" } }]
          : sort === "newest"
            ? [{ createdAt: { order: "desc" } }, { _score: { order: "desc" } }, { id: { order: "asc" } }]
            : [{ _score: { order: "desc" } }, { id: { order: "asc" } }];
    const facetAgg = (field: string, other: object | undefined) => ({
      filter: other ?? { match_all: {} },
      aggs: { values: { terms: { field, size: FACET_SIZE, order: [{ _count: "desc" }, { _key: "asc" }] } } },
    });
    return {
      index: this.indexName,
      from: (query.page - 1) * query.pageSize,
      size: query.pageSize,
      track_total_hits: true,
      query: { bool: { must, should, filter } },
      ...(postFilters.length ? { post_filter: { bool: { filter: postFilters } } } : {}),
      aggs: {
        category: facetAgg("category.keyword", brandFilter),
        brand: facetAgg("brand.keyword", categoryFilter),
      },
      sort: sortClause,
      _source: { excludes: ["suggest", "inStock"] },
    };
  }

  async search(query: SearchQuery): Promise<SearchResult> {
    const empty: SearchResult = { items: [], total: 0, page: query.page, pageSize: query.pageSize, facets: { category: [], brand: [] } };
    return this.read(async () => {
      let res = await this.client.search<ProductDoc>(this.buildSearch(query, "and"));
      if (query.q.trim() && totalOf(res.hits.total) === 0 && !hasFacetHits(res.aggregations)) {
        res = await this.client.search<ProductDoc>(this.buildSearch(query, "or"));
      }
      return {
        items: res.hits.hits.map((h) => fromIndexed(h._source)),
        total: totalOf(res.hits.total),
        page: query.page,
        pageSize: query.pageSize,
        facets: { category: buckets(res.aggregations, "category"), brand: buckets(res.aggregations, "brand") },
      };
    }, empty);
  }

  async suggest(prefix: string, limit: number): Promise<string[]> {
    const p = prefix.trim();
    if (!p) return [];
    const n = Math.max(1, Math.min(limit, MAX_SUGGEST_LIMIT));
    return this.read(async () => {
      const res = await this.client.search({
        index: this.indexName,
        _source: ["name"],
        suggest: { names: { prefix: p, completion: { field: "suggest", size: n * 3, skip_duplicates: true } } },
      });
      const out: string[] = [];
      const seen = new Set<string>();
      const entries = (res.suggest?.names ?? []) as Array<{ options: Array<{ _source?: { name?: string } }> | object }>;
      for (const entry of entries) {
        for (const o of Array.isArray(entry.options) ? entry.options : []) {
          const name = (o as { _source?: { name?: string } })._source?.name;
          if (!name || seen.has(name.toLowerCase())) continue;
          seen.add(name.toLowerCase());
          out.push(name);
          if (out.length >= n) return out;
        }
      }
      return out;
    }, []);
  }
}

function totalOf(total: number | { value: number } | undefined): number {
  return typeof total === "number" ? total : (total?.value ?? 0);
}

/** With post_filter, total 0 may still mean q matched (other categories): only then no OR fallback. */
function hasFacetHits(aggs: unknown): boolean {
  const a = aggs as Record<string, { doc_count?: number }> | undefined;
  return !!a && ((a.category?.doc_count ?? 0) > 0 || (a.brand?.doc_count ?? 0) > 0);
}

function buckets(aggs: unknown, name: string): FacetValue[] {
  const a = (aggs as Record<string, { values?: { buckets?: Array<{ key: string | number; doc_count: number }> } }> | undefined)?.[name];
  return (a?.values?.buckets ?? []).map((b) => ({ value: String(b.key), count: b.doc_count }));
}
