/**
 * The in-process search engine, on MiniSearch (chosen by measurement: DESIGN.md's probe
 * and `npm run bench:search`, bench/RESULTS.md). The product documents are kept in a Map
 * beside the inverted index; MiniSearch only returns ids and scores.
 *
 * Matching: fields name (boost 3), brand (2), sku (2), category (1.5), tags (1.5),
 * description (1); every term fuzzy by `autoFuzziness` (up to 3 letters exact, 4-5 one
 * edit, longer two: "iphnoe" finds "iphone"), the last term also as a prefix (search as
 * you type); all terms must match (AND), and when that finds nothing, any term (OR).
 * An empty q browses every product. Filters and facets are applied over the matches in
 * one pass (see engine.ts for the facet convention).
 *
 * Upsert = MiniSearch `replace` (discard + add). `discard` only marks the old postings as
 * dirty (they are skipped at query time and still take memory); the default auto-vacuum
 * cleans them in the background once 1,000 discards have accumulated and are ≥ 10 % of the
 * documents, so a stream of product updates does not grow the index without bound.
 * `clear()` starts a fresh index; `index()` of a large batch adds in chunks of 1,000
 * (addAllAsync) so that a full reindex at start does not stall the event loop.
 */
import MiniSearch from "minisearch";
import {
  FACET_SIZE,
  MAX_SUGGEST_LIMIT,
  autoFuzziness,
  sortFacet,
  type ProductDoc,
  type SearchEngine,
  type SearchQuery,
  type SearchResult,
} from "./engine";

export const SEARCH_FIELDS = ["name", "brand", "category", "tags", "description", "sku"] as const;
export const BOOST = { name: 3, brand: 2, sku: 2, category: 1.5, tags: 1.5, description: 1 };

/** The options both our engine and the bench's "raw MiniSearch" use, so the comparison is fair. */
export function miniSearchOptions() {
  return {
    idField: "id",
    fields: [...SEARCH_FIELDS],
    storeFields: [] as string[],
    extractField: (doc: ProductDoc, field: string): string => {
      const v = (doc as unknown as Record<string, unknown>)[field];
      return Array.isArray(v) ? v.join(" ") : typeof v === "string" ? v : v == null ? "" : String(v);
    },
  };
}

export const queryOptions = (combineWith: "AND" | "OR") => ({
  boost: BOOST,
  fuzzy: (term: string) => autoFuzziness(term),
  prefix: (_term: string, i: number, terms: string[]) => i === terms.length - 1,
  combineWith,
});

const BULK_CHUNK = 1000;

interface Hit {
  doc: ProductDoc;
  score: number;
}

export class MiniSearchEngine implements SearchEngine {
  readonly kind = "minisearch";
  private ms = new MiniSearch<ProductDoc>(miniSearchOptions());
  private docs = new Map<string, ProductDoc>();
  /** Versions of removed documents (tombstones): an older copy arriving later stays out. */
  private removed = new Map<string, number>();

  /** False when the engine already holds (or removed) this or a newer version of the product. */
  private isNewer(p: ProductDoc): boolean {
    if (p.version === undefined) return true;
    const held = this.docs.get(p.id)?.version ?? this.removed.get(p.id);
    return held === undefined || held < p.version;
  }

  async index(products: readonly ProductDoc[]): Promise<void> {
    const fresh: ProductDoc[] = [];
    const seen = new Set<string>();
    // The last copy of an id in the batch wins (or the highest version, when they carry one).
    for (let i = products.length - 1; i >= 0; i--) {
      const p = products[i];
      if (seen.has(p.id)) continue;
      seen.add(p.id);
      if (!this.isNewer(p)) continue;
      this.removed.delete(p.id);
      if (this.docs.has(p.id)) this.ms.replace(p);
      else fresh.push(p);
      this.docs.set(p.id, p);
    }
    fresh.reverse();
    if (fresh.length > BULK_CHUNK) await this.ms.addAllAsync(fresh, { chunkSize: BULK_CHUNK });
    else this.ms.addAll(fresh);
  }

  async upsert(product: ProductDoc): Promise<void> {
    if (!this.isNewer(product)) return;
    this.removed.delete(product.id);
    if (this.docs.has(product.id)) this.ms.replace(product);
    else this.ms.add(product);
    this.docs.set(product.id, product);
  }

  async remove(id: string, version?: number): Promise<void> {
    const held = this.docs.get(id);
    if (version !== undefined) {
      if (held?.version !== undefined && held.version > version) return;
      this.removed.set(id, Math.max(version, this.removed.get(id) ?? 0));
    }
    if (!held) return;
    this.ms.discard(id);
    this.docs.delete(id);
  }

  async clear(): Promise<void> {
    this.ms = new MiniSearch<ProductDoc>(miniSearchOptions());
    this.docs = new Map();
    this.removed = new Map();
  }

  async count(): Promise<number> {
    return this.docs.size;
  }

  /** The matches of q (every product when q is empty), with scores, unfiltered. */
  private match(q: string): Hit[] {
    if (!q.trim()) {
      const all: Hit[] = [];
      for (const doc of this.docs.values()) all.push({ doc, score: 0 });
      return all;
    }
    let results = this.ms.search(q, queryOptions("AND"));
    if (!results.length) results = this.ms.search(q, queryOptions("OR"));
    const hits: Hit[] = [];
    for (const r of results) {
      const doc = this.docs.get(r.id as string);
      if (doc) hits.push({ doc, score: r.score });
    }
    return hits;
  }

  async search(query: SearchQuery): Promise<SearchResult> {
    const { category, brand, minPrice, maxPrice, inStock } = query;
    const items: Hit[] = [];
    const categoryCounts = new Map<string, number>();
    const brandCounts = new Map<string, number>();
    for (const hit of this.match(query.q)) {
      const d = hit.doc;
      // Filters other than category/brand apply to everything, facets included.
      if (minPrice !== undefined && d.price.amount < minPrice) continue;
      if (maxPrice !== undefined && d.price.amount > maxPrice) continue;
      if (inStock && !(d.stock.available > 0)) continue;
      const okCategory = category === undefined || d.category === category;
      const okBrand = brand === undefined || d.brand === brand;
      // A facet ignores its own filter.
      if (okBrand) categoryCounts.set(d.category, (categoryCounts.get(d.category) ?? 0) + 1);
      // A product without a brand has no brand bucket (as Elasticsearch's terms aggregation).
      if (okCategory && d.brand !== null) brandCounts.set(d.brand, (brandCounts.get(d.brand) ?? 0) + 1);
      if (okCategory && okBrand) items.push(hit);
    }
    const sort = query.sort === "relevance" && !query.q.trim() ? "newest" : query.sort;
    const byId = (a: Hit, b: Hit) => (a.doc.id < b.doc.id ? -1 : a.doc.id > b.doc.id ? 1 : 0);
    const byNewest = (a: Hit, b: Hit) => (a.doc.createdAt < b.doc.createdAt ? 1 : a.doc.createdAt > b.doc.createdAt ? -1 : 0);
    const compare: (a: Hit, b: Hit) => number =
      sort === "price_asc"
        ? (a, b) => a.doc.price.amount - b.doc.price.amount || b.score - a.score || byId(a, b)
        : sort === "price_desc"
          ? (a, b) => b.doc.price.amount - a.doc.price.amount || b.score - a.score || byId(a, b)
          : sort === "newest"
            ? (a, b) => byNewest(a, b) || b.score - a.score || byId(a, b)
            : (a, b) => b.score - a.score || byId(a, b);
    const from = (query.page - 1) * query.pageSize;
    return {
      items: topK(items, from + query.pageSize, compare).slice(from).map((h) => h.doc),
      total: items.length,
      page: query.page,
      pageSize: query.pageSize,
      facets: { category: sortFacet(categoryCounts, FACET_SIZE), brand: sortFacet(brandCounts, FACET_SIZE) },
    };
  }

  async suggest(prefix: string, limit: number): Promise<string[]> {
    const q = prefix.trim();
    if (!q) return [];
    const n = Math.max(1, Math.min(limit, MAX_SUGGEST_LIMIT));
    // Completion: no typo tolerance, every term a prefix, all must match within name or brand.
    const results = this.ms.search(q, { fields: ["name", "brand"], boost: { name: 2 }, prefix: true, fuzzy: false, combineWith: "AND" });
    const out: string[] = [];
    const seen = new Set<string>();
    for (const r of results) {
      const name = this.docs.get(r.id as string)?.name;
      if (!name || seen.has(name.toLowerCase())) continue;
      seen.add(name.toLowerCase());
      out.push(name);
      if (out.length >= n) break;
    }
    return out;
  }
}

/**
 * The first k elements of `arr` in `compare` order: a full sort when k is a large part of
 * the array, otherwise a bounded insertion buffer (O(n log k)-ish; pages are small).
 */
export function topK<T>(arr: T[], k: number, compare: (a: T, b: T) => number): T[] {
  if (k <= 0) return [];
  if (k * 8 >= arr.length) return arr.slice().sort(compare).slice(0, k);
  const top: T[] = [];
  for (const x of arr) {
    if (top.length === k && compare(x, top[k - 1]) >= 0) continue;
    // binary search for the insertion point (after equal elements: stable)
    let lo = 0;
    let hi = top.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compare(x, top[mid]) < 0) hi = mid;
      else lo = mid + 1;
    }
    top.splice(lo, 0, x);
    if (top.length > k) top.pop();
  }
  return top;
}
