/**
 * The one interface of the search engines (docs/catalog.md, "Search"): the
 * in-process MiniSearch engine (embedded mode, small clusters) and Elasticsearch (when
 * ELASTIC_SEARCH_NODE is set) both implement `SearchEngine`. Pure types + the validation
 * of a query's values (from the gateway's query string: strings, or already numbers).
 *
 * Facet convention (the usual e-commerce one, same in both engines): facet counts are
 * computed over ALL matches of `q` and of every filter EXCEPT the facet's own one. So the
 * `category` facet ignores the `category` filter (the shopper sees the other categories
 * and how many items each would give), and honours brand, price range and inStock; the
 * `brand` facet ignores the `brand` filter and honours the others. The items and `total`
 * honour every filter.
 *
 * Category and brand filters match the facet values exactly (case-sensitive), as the facets
 * return them. Prices are compared on `price.amount` (integer minor units) alone: one
 * catalog currency is assumed.
 */
import { validationError } from "../../../lib/errors";
import type { Product } from "../../../proto/gen/meridian/product/v1/product";

export type { Money } from "../../../proto/gen/meridian/common/v1/common";

/**
 * The product document of API.md, as the product service publishes it: its contract, with
 * the version (raised by every change) by which a copy only ever moves to a newer one.
 */
export type ProductDoc = Product;

export const SORTS = ["relevance", "price_asc", "price_desc", "newest"] as const;
export type SearchSort = (typeof SORTS)[number];

/** A validated query (see `parseSearchQuery`). */
export interface SearchQuery {
  /** Free text; "" = browse every product (with the filters). */
  q: string;
  category?: string;
  brand?: string;
  /** Inclusive bounds on price.amount (minor units). */
  minPrice?: number;
  maxPrice?: number;
  /** true: only stock.available > 0. false/undefined: no stock filter. */
  inStock?: boolean;
  /** relevance with an empty q sorts as newest. */
  sort: SearchSort;
  page: number;
  pageSize: number;
}

export interface FacetValue {
  value: string;
  count: number;
}

export interface SearchResult {
  items: ProductDoc[];
  total: number;
  page: number;
  pageSize: number;
  facets: { category: FacetValue[]; brand: FacetValue[] };
}

export interface SearchEngine {
  /** A name for logs and metrics: "minisearch" | "elasticsearch". */
  readonly kind: string;
  /** Bulk upsert. */
  index(products: readonly ProductDoc[]): Promise<void>;
  upsert(product: ProductDoc): Promise<void>;
  /**
   * Removing an unknown id is not an error. With `version`, an engine shared by several
   * writers (Elasticsearch) ignores the removal when it holds a newer copy.
   */
  remove(id: string, version?: number): Promise<void>;
  clear(): Promise<void>;
  search(query: SearchQuery): Promise<SearchResult>;
  /** Up to `limit` distinct product names with a word starting with the prefix's terms. */
  suggest(prefix: string, limit: number): Promise<string[]>;
  count(): Promise<number>;
}

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;
/** Elasticsearch's default index.max_result_window: from + size may not exceed it. */
export const MAX_RESULT_WINDOW = 10_000;
export const MAX_QUERY_LENGTH = 200;
/** Facet values returned per facet (most frequent first, then by value). */
export const FACET_SIZE = 50;
export const FUZZINESS = "AUTO:4,6";
export const DEFAULT_SUGGEST_LIMIT = 10;
export const MAX_SUGGEST_LIMIT = 20;

export interface RawSearchQuery {
  q?: unknown;
  category?: unknown;
  brand?: unknown;
  minPrice?: unknown;
  maxPrice?: unknown;
  inStock?: unknown;
  sort?: unknown;
  page?: unknown;
  pageSize?: unknown;
}

interface Problem {
  field: string;
  message: string;
}

const isBlank = (v: unknown) => v === undefined || v === null || v === "";

function int(raw: unknown, field: string, problems: Problem[], min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (isBlank(raw)) return undefined;
  const n = typeof raw === "number" ? raw : typeof raw === "string" && /^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    problems.push({ field, message: `must be an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? "" : ` to ${max}`}` });
    return undefined;
  }
  return n;
}

function text(raw: unknown, field: string, problems: Problem[], maxLength: number): string | undefined {
  if (isBlank(raw)) return undefined;
  if (typeof raw !== "string") {
    problems.push({ field, message: "must be a string" });
    return undefined;
  }
  const s = raw.trim();
  if (s.length > maxLength) {
    problems.push({ field, message: `must be at most ${maxLength} characters` });
    return undefined;
  }
  return s || undefined;
}

/**
 * Validates and normalizes a query (query-string values are strings). Throws the
 * catalog's VALIDATION_ERROR (422) listing every bad field.
 */
export function parseSearchQuery(raw: RawSearchQuery): SearchQuery {
  const problems: Problem[] = [];
  const q = text(raw.q, "q", problems, MAX_QUERY_LENGTH) ?? "";
  const category = text(raw.category, "category", problems, 200);
  const brand = text(raw.brand, "brand", problems, 200);
  const minPrice = int(raw.minPrice, "minPrice", problems, 0);
  const maxPrice = int(raw.maxPrice, "maxPrice", problems, 0);
  if (minPrice !== undefined && maxPrice !== undefined && minPrice > maxPrice)
    problems.push({ field: "maxPrice", message: "must be at least minPrice" });
  let inStock: boolean | undefined;
  if (!isBlank(raw.inStock)) {
    if (raw.inStock === true || raw.inStock === "true" || raw.inStock === "1") inStock = true;
    else if (raw.inStock === false || raw.inStock === "false" || raw.inStock === "0") inStock = false;
    else problems.push({ field: "inStock", message: "must be true or false" });
  }
  let sort: SearchSort = "relevance";
  if (!isBlank(raw.sort)) {
    if (typeof raw.sort === "string" && (SORTS as readonly string[]).includes(raw.sort)) sort = raw.sort as SearchSort;
    else problems.push({ field: "sort", message: `must be one of ${SORTS.join(", ")}` });
  }
  const page = int(raw.page, "page", problems, 1) ?? 1;
  const pageSize = int(raw.pageSize, "pageSize", problems, 1, MAX_PAGE_SIZE) ?? DEFAULT_PAGE_SIZE;
  if (!problems.some((p) => p.field === "page" || p.field === "pageSize") && page * pageSize > MAX_RESULT_WINDOW)
    problems.push({ field: "page", message: `page * pageSize must be at most ${MAX_RESULT_WINDOW}` });
  if (problems.length) throw validationError("Invalid search query", problems);
  const query: SearchQuery = { q, sort, page, pageSize };
  if (category !== undefined) query.category = category;
  if (brand !== undefined) query.brand = brand;
  if (minPrice !== undefined) query.minPrice = minPrice;
  if (maxPrice !== undefined) query.maxPrice = maxPrice;
  if (inStock !== undefined) query.inStock = inStock;
  return query;
}

/** Validates the suggest limit (default 10, 1..20) and trims the prefix. */
export function parseSuggest(rawQ: unknown, rawLimit?: unknown): { prefix: string; limit: number } {
  const problems: Problem[] = [];
  const prefix = text(rawQ, "q", problems, MAX_QUERY_LENGTH) ?? "";
  const limit = int(rawLimit, "limit", problems, 1, MAX_SUGGEST_LIMIT) ?? DEFAULT_SUGGEST_LIMIT;
  if (problems.length) throw validationError("Invalid suggest query", problems);
  return { prefix, limit };
}

/** Facet buckets in the one order both engines return: count desc, then value asc. */
export function sortFacet(counts: Map<string, number>, size = FACET_SIZE): FacetValue[] {
  return [...counts]
    .map(([value, count]) => ({ value, count }))
    .sort((a, b) => b.count - a.count || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0))
    .slice(0, size);
}

/**
 * The edit distance allowed for a term: up to 3 characters exact, 4-5 one edit, longer two.
 * Elasticsearch's `fuzziness: "AUTO:4,6"` is the same rule (plain AUTO would give 3-letter
 * terms one edit, which makes "pro" match "bro", "pre"...). Note: Elasticsearch counts a
 * transposition as one edit, MiniSearch's Levenshtein as two ("iphnoe" -> "iphone" is 2).
 */
export function autoFuzziness(term: string): number | false {
  return term.length <= 3 ? false : term.length <= 5 ? 1 : 2;
}
