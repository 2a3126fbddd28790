/**
 * The recommendation model and its ranking rules, as pure functions (no knex, no Moleculer).
 *
 * The model is a function of one thing only: for each user, the set of products they bought
 * in orders that are paid and not fully refunded. From that set:
 * - a user's CONTRIBUTING set is their `CONTRIBUTING_ITEMS` most recently bought products
 *   (by first purchase; ties by id). Capping it bounds the work of one purchase (at most
 *   2 × cap pair updates) and lets heavy buyers' old tastes fade; it is deterministic, so an
 *   incremental update and a rebuild give the same model;
 * - `buyers(p)` = the number of users whose contributing set holds p (popularity);
 * - `co(p, q)` = the number of users whose contributing set holds both (item-to-item
 *   co-purchase, "customers who bought p also bought q"), stored in both directions.
 * Every change to a user's set is applied as the difference between the old and the new
 * contributing set (`modelDelta`), so paying, refunding, a replayed event and a rebuild all
 * meet in the same counts.
 *
 * Similarity is cosine over users, shrunk for small supports:
 *   sim(p, q) = co / sqrt(buyers(p) · buyers(q)) · co / (co + SHRINKAGE)
 * (the cosine alone rates two items with one shared buyer as similar as two with a hundred).
 */

/** Most recent distinct products of a user that count towards the model. */
export const CONTRIBUTING_ITEMS = 100;
/** Most recent products of a user whose neighbours are looked at for their recommendations. */
export const HISTORY_FOR_SCORING = 20;
/** Neighbours read per history item (the highest co-purchase counts). */
export const NEIGHBOURS_PER_ITEM = 50;
/** Shrinks the similarity of pairs with little support. */
export const SHRINKAGE = 2;
/** Recency: the k-th most recent history item weighs RECENCY_DECAY^k. */
export const RECENCY_DECAY = 0.9;
/** A stated preference multiplies a candidate's score by (1 + boost). */
export const CATEGORY_BOOST = 0.5;
export const BRAND_BOOST = 0.25;
/** Popularity fallback scores stay below any co-purchase score. */
const FALLBACK_SCALE = 0.001;

export const DEFAULT_LIMIT = 10;

export interface Purchase {
  productId: string;
  /** When the product was first bought (epoch ms). */
  at: number;
}

export interface CatalogItem {
  productId: string;
  name: string;
  category: string;
  brand: string | null;
  available: number;
  deleted: boolean;
}

export interface Preferences {
  categories: string[];
  brands: string[];
}

export interface Recommendation {
  productId: string;
  score: number;
  reason: string;
}

/** Recent first; ties by product id, so the order is the same wherever it is computed. */
export function byRecency(a: Purchase, b: Purchase): number {
  return b.at - a.at || (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0);
}

/** The distinct products of a user's purchases, each at its first purchase, recent first. */
export function distinctPurchases(rows: Purchase[]): Purchase[] {
  const first = new Map<string, number>();
  for (const r of rows) first.set(r.productId, Math.min(first.get(r.productId) ?? Infinity, r.at));
  return [...first].map(([productId, at]) => ({ productId, at })).sort(byRecency);
}

/** The products of a user that count towards the model (see the header). */
export function contributingSet(rows: Purchase[], cap = CONTRIBUTING_ITEMS): string[] {
  return distinctPurchases(rows)
    .slice(0, cap)
    .map((p) => p.productId);
}

export interface ModelDelta {
  /** product → change of its buyer count. */
  buyers: Map<string, number>;
  /** [p, q, change of co(p, q)], both directions, sorted by (p, q): the lock order of the writes. */
  pairs: [string, string, number][];
}

/**
 * How the counts change when one user's contributing set goes from `before` to `after`:
 * pairs(after) − pairs(before), computed from the difference only (O(|changed| · |set|)).
 */
export function modelDelta(before: Iterable<string>, after: Iterable<string>): ModelDelta {
  const b = new Set(before);
  const a = new Set(after);
  const added = [...a].filter((p) => !b.has(p)).sort();
  const removed = [...b].filter((p) => !a.has(p)).sort();
  const kept = [...a].filter((p) => b.has(p)).sort();
  const buyers = new Map<string, number>();
  for (const p of added) buyers.set(p, 1);
  for (const p of removed) buyers.set(p, -1);
  const pairs = new Map<string, [string, string, number]>();
  const bump = (p: string, q: string, d: number) => {
    for (const [x, y] of [
      [p, q],
      [q, p],
    ] as const) {
      const key = `${x}\u0000${y}`;
      const cur = pairs.get(key);
      if (cur) cur[2] += d;
      else pairs.set(key, [x, y, d]);
    }
  };
  for (const [i, p] of added.entries()) {
    for (const k of kept) bump(p, k, 1);
    for (const q of added.slice(i + 1)) bump(p, q, 1);
  }
  for (const [i, p] of removed.entries()) {
    for (const k of kept) bump(p, k, -1);
    for (const q of removed.slice(i + 1)) bump(p, q, -1);
  }
  return { buyers, pairs: [...pairs.values()].filter((x) => x[2] !== 0).sort(pairOrder) };
}

function pairOrder(x: [string, string, number], y: [string, string, number]): number {
  return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
}

/**
 * The whole model from every user's purchases (the rebuild): the same counts as the sum of
 * `modelDelta`s from empty sets, plus each user's contributing set (with first-purchase times).
 */
export function buildModel(
  users: Map<string, Purchase[]>,
  cap = CONTRIBUTING_ITEMS,
): { buyers: Map<string, number>; pairs: Map<string, Map<string, number>>; sets: Map<string, Purchase[]>; pairRows: number } {
  const buyers = new Map<string, number>();
  const pairs = new Map<string, Map<string, number>>();
  const sets = new Map<string, Purchase[]>();
  let pairRows = 0;
  for (const [userId, rows] of users) {
    const contributing = distinctPurchases(rows).slice(0, cap);
    if (!contributing.length) continue;
    sets.set(userId, contributing);
    const set = contributing.map((p) => p.productId);
    for (const p of set) {
      buyers.set(p, (buyers.get(p) ?? 0) + 1);
      let row = pairs.get(p);
      if (!row) pairs.set(p, (row = new Map<string, number>()));
      for (const q of set) {
        if (q === p) continue;
        const c = row.get(q);
        if (c === undefined) pairRows++;
        row.set(q, (c ?? 0) + 1);
      }
    }
  }
  return { buyers, pairs, sets, pairRows };
}

export function similarity(co: number, buyersA: number, buyersB: number, shrinkage = SHRINKAGE): number {
  if (co <= 0 || buyersA <= 0 || buyersB <= 0) return 0;
  return (co / Math.sqrt(buyersA * buyersB)) * (co / (co + shrinkage));
}

/** A candidate may be shown: known to the catalog copy, not deleted, in stock. */
export function recommendable(item: CatalogItem | undefined): item is CatalogItem {
  return Boolean(item && !item.deleted && item.available > 0 && item.category !== "");
}

export function preferenceBoost(item: CatalogItem, prefs: Preferences): number {
  return boostOf(prefs)(item);
}

/** `preferenceBoost` for one set of preferences, lower-cased once (a ranking asks for hundreds of items). */
function boostOf(prefs: Preferences): (item: CatalogItem) => number {
  const cats = new Set(prefs.categories.map(lowerCase));
  const brands = new Set(prefs.brands.map(lowerCase));
  return (item) =>
    1 +
    (cats.has(item.category.toLowerCase()) ? CATEGORY_BOOST : 0) +
    (item.brand !== null && brands.has(item.brand.toLowerCase()) ? BRAND_BOOST : 0);
}

function lowerCase(x: string): string {
  return x.toLowerCase();
}

const round = (x: number) => Math.round(x * 1e6) / 1e6;

/** Highest score first; ties by product id (every replica answers the same). */
function byScore(a: { productId: string; score: number }, b: { productId: string; score: number }): number {
  return b.score - a.score || (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0);
}

export interface RankInput {
  /** The user's recent products (at most HISTORY_FOR_SCORING, distinct), recent first. */
  history: string[];
  /** Everything the user bought (paid, not fully refunded): never recommended. */
  bought: Set<string>;
  /** Each history item's co-purchase neighbours, highest count first (the first `perItem` count). */
  neighbours: Map<string, readonly { productId: string; co: number }[]>;
  perItem: number;
  /** The catalog copy, with each product's number of buyers. */
  catalog: Map<string, CatalogItem & { buyers: number }>;
  preferences: Preferences;
  /**
   * Fallback candidates, most bought first (preferred categories and brands first, then any);
   * asked for only when the similar products do not fill the list.
   */
  popular: () => PopularCandidate[];
  limit: number;
}

/** A fallback candidate: a product and how many bought it. */
export interface PopularCandidate {
  productId: string;
  buyers: number;
}

/**
 * A user's recommendations: products similar to what they bought (summed similarity,
 * recent purchases weighing more), times their preference boost; then, to fill the list,
 * popular products (preferred categories and brands first). Never a product they bought,
 * never one that is deleted or out of stock (as the catalog copy knows it).
 */
export function rankForUser(input: RankInput): Recommendation[] {
  const { catalog, bought } = input;
  const boost = boostOf(input.preferences);
  // Plain loops over the lists as the memory keeps them (no copies): this runs over up to
  // HISTORY_FOR_SCORING × NEIGHBOURS_PER_ITEM neighbours per request.
  const scores = new Map<string, { score: number; best: number; because: string }>();
  for (let i = 0; i < input.history.length; i++) {
    const source = input.history[i];
    const list = input.neighbours.get(source);
    if (!list) continue;
    const w = RECENCY_DECAY ** i;
    const sourceBuyers = catalog.get(source)?.buyers ?? 0;
    for (let j = 0; j < list.length && j < input.perItem; j++) {
      const n = list[j];
      if (bought.has(n.productId)) continue;
      const item = catalog.get(n.productId);
      if (!item) continue;
      const sim = similarity(n.co, sourceBuyers, item.buyers) * w;
      if (sim <= 0) continue;
      const cur = scores.get(n.productId);
      if (!cur) {
        scores.set(n.productId, { score: sim, best: sim, because: source });
        continue;
      }
      cur.score += sim;
      if (sim > cur.best || (sim === cur.best && source < cur.because)) {
        cur.best = sim;
        cur.because = source;
      }
    }
  }
  // Only the first `limit` are kept (and given a reason): a ranking scores hundreds of products
  // to show ten, and sorting them all was a third of its time (#16).
  const top = new TopK<{ productId: string; score: number; because: string }>(input.limit);
  for (const [productId, s] of scores) {
    const item = catalog.get(productId);
    if (!recommendable(item)) continue;
    const score = round(s.score * boost(item));
    top.offer(score, productId, () => ({ productId, score, because: s.because }));
  }
  const out: Recommendation[] = top.sorted().map(({ productId, score, because }) => {
    const source = catalog.get(because);
    return {
      productId,
      score,
      reason: source?.name
        ? `Customers who bought ${source.name} also bought this`
        : "Customers who bought what you bought also bought this",
    };
  });
  if (out.length < input.limit)
    out.push(
      ...popularFallback({ ...input, popular: input.popular() }, new Set(out.map((r) => r.productId))).slice(0, input.limit - out.length),
    );
  return out;
}

/**
 * The `k` first of what it is offered in `byScore` order, kept sorted as they come: one
 * comparison for most offers instead of sorting them all. An offer builds its entry only when
 * it gets in.
 */
export class TopK<T extends { productId: string; score: number }> {
  private readonly kept: T[] = [];

  constructor(private readonly k: number) {}

  offer(score: number, productId: string, entry: () => T): void {
    const kept = this.kept;
    if (kept.length === this.k) {
      const last = kept[kept.length - 1];
      if (!last || byScore({ productId, score }, last) >= 0) return;
    }
    const e = entry();
    let lo = 0;
    let hi = kept.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (byScore(kept[mid], e) <= 0) lo = mid + 1;
      else hi = mid;
    }
    kept.splice(lo, 0, e);
    if (kept.length > this.k) kept.pop();
  }

  sorted(): T[] {
    return this.kept;
  }
}

/**
 * Popular products for the rest of the list (and for users with no history at all): those
 * in a preferred category first, then a preferred brand, then any; most bought first.
 */
export function popularFallback(
  input: Pick<RankInput, "catalog" | "preferences" | "bought"> & { popular: PopularCandidate[] },
  taken: Set<string> = new Set(),
): Recommendation[] {
  const max = Math.max(1, ...input.popular.map((p) => p.buyers));
  const prefCats = new Set(input.preferences.categories.map(lowerCase));
  const prefBrands = new Set(input.preferences.brands.map(lowerCase));
  const boost = boostOf(input.preferences);
  const out: Recommendation[] = [];
  const seen = new Set(taken);
  for (const p of input.popular) {
    const item = input.catalog.get(p.productId);
    if (seen.has(p.productId) || input.bought.has(p.productId) || !recommendable(item)) continue;
    seen.add(p.productId);
    const inCat = prefCats.has(item.category.toLowerCase());
    const inBrand = item.brand !== null && prefBrands.has(item.brand.toLowerCase());
    const reason = inCat
      ? `Popular in ${item.category}, a category you like`
      : inBrand
        ? `Popular from ${item.brand}, a brand you like`
        : p.buyers > 0
          ? "Popular with other shoppers"
          : "From our catalog";
    // Tiers: a preferred category, then a preferred brand, then the rest; popularity within
    // a tier (its share stays below the smallest tier step, 0.25).
    const tier = boost(item) - 1;
    out.push({ productId: p.productId, score: round(FALLBACK_SCALE * (tier + 0.2 * ((p.buyers + 1) / (max + 1)))), reason });
  }
  return out.sort(byScore);
}

/** "Customers who bought this also bought": neighbours of one product by similarity. */
export function rankAlsoBought(input: {
  productId: string;
  neighbours: { productId: string; co: number }[];
  buyers: Map<string, number>;
  catalog: Map<string, CatalogItem>;
  limit: number;
}): { productId: string; score: number }[] {
  const own = input.buyers.get(input.productId) ?? 0;
  return input.neighbours
    .filter((n) => n.productId !== input.productId && recommendable(input.catalog.get(n.productId)))
    .map((n) => ({ productId: n.productId, score: round(similarity(n.co, own, input.buyers.get(n.productId) ?? 0)) }))
    .filter((n) => n.score > 0)
    .sort((a, b) => b.score - a.score || (a.productId < b.productId ? -1 : 1))
    .slice(0, input.limit);
}

/** What the popularity order needs of a catalog row. */
export interface PopularEntry {
  productId: string;
  buyers: number;
  category: string;
  brand: string | null;
}

/** Most bought first; ties: the higher product id first (every replica answers the same). */
function byPopularity(a: PopularEntry, b: PopularEntry): number {
  return b.buyers - a.buyers || (a.productId < b.productId ? 1 : a.productId > b.productId ? -1 : 0);
}

/** First index whose entry does not sort before `e` (the list is in `byPopularity` order). */
function lowerBound(list: PopularEntry[], e: PopularEntry): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (byPopularity(list[mid], e) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The products a popularity fallback may offer (not deleted, in stock, with a category), most
 * bought first, overall and per category and per brand (letter case ignored, as
 * `preferenceBoost` compares). `put` re-files one row when it changes: a binary search and a
 * splice per list it is in (a purchase moves a few rows; a list of 10,000 moves in
 * microseconds), so a ranking reads the top of a list instead of querying for it.
 */
export class PopularIndex {
  private readonly filed = new Map<string, PopularEntry>();
  private readonly all: PopularEntry[] = [];
  private readonly byCategory = new Map<string, PopularEntry[]>();
  private readonly byBrand = new Map<string, PopularEntry[]>();

  /** Files the row as it is now (`item` undefined: the row is gone). */
  put(productId: string, item: (CatalogItem & { buyers: number }) | undefined): void {
    const old = this.filed.get(productId);
    if (old) {
      for (const list of this.listsOf(old, false)) list.splice(lowerBound(list, old), 1);
      this.filed.delete(productId);
    }
    if (!item || !recommendable(item)) return;
    const e: PopularEntry = { productId, buyers: item.buyers, category: item.category, brand: item.brand };
    for (const list of this.listsOf(e, true)) list.splice(lowerBound(list, e), 0, e);
    this.filed.set(productId, e);
  }

  /**
   * The `limit` most bought, within the preferred categories or brands when given (a product
   * in both comes once), else of all.
   */
  top(prefs: Preferences, limit: number): PopularEntry[] {
    if (!prefs.categories.length && !prefs.brands.length) return this.all.slice(0, limit);
    const lists = [...new Set(prefs.categories.map((c) => c.toLowerCase()))]
      .map((c) => this.byCategory.get(c))
      .concat([...new Set(prefs.brands.map((b) => b.toLowerCase()))].map((b) => this.byBrand.get(b)));
    const merged = new Map<string, PopularEntry>();
    for (const list of lists) for (const e of list?.slice(0, limit) ?? []) merged.set(e.productId, e);
    return [...merged.values()].sort(byPopularity).slice(0, limit);
  }

  get size(): number {
    return this.filed.size;
  }

  private listsOf(e: PopularEntry, create: boolean): PopularEntry[][] {
    const lists = [this.all];
    const keyed = (m: Map<string, PopularEntry[]>, key: string) => {
      let list = m.get(key);
      if (!list && create) m.set(key, (list = []));
      if (list) lists.push(list);
    };
    keyed(this.byCategory, e.category.toLowerCase());
    if (e.brand !== null) keyed(this.byBrand, e.brand.toLowerCase());
    return lists;
  }
}

/** A user's stated preferences, read defensively from the user service's answer. */
export function preferencesOf(user: unknown): Preferences {
  const prefs = (user as { preferences?: { categories?: unknown; brands?: unknown } } | undefined)?.preferences ?? {};
  const strings = (v: unknown) =>
    Array.isArray(v) ? v.filter((x): x is string => typeof x === "string" && x.length > 0).slice(0, 50) : [];
  return { categories: strings(prefs.categories), brands: strings(prefs.brands) };
}

/** What `order.paid` and `order.refunded` carry that the model needs. */
export interface PaidOrder {
  orderId: string;
  userId: string;
  at: number;
  productIds: string[];
}

export function paidOrderOf(payload: unknown): PaidOrder | undefined {
  const p = payload as { orderId?: unknown; userId?: unknown; occurredAt?: unknown; lines?: unknown };
  if (typeof p?.orderId !== "string" || typeof p.userId !== "string" || !Array.isArray(p.lines)) return undefined;
  const productIds = [
    ...new Set(
      p.lines.map((l) => (l as { productId?: unknown })?.productId).filter((x): x is string => typeof x === "string" && x.length > 0),
    ),
  ];
  const at = typeof p.occurredAt === "string" ? Date.parse(p.occurredAt) : NaN;
  return { orderId: p.orderId, userId: p.userId, at: Number.isFinite(at) ? at : Date.now(), productIds };
}

/** Only a full refund takes an order's products out of the model (a partial one names no lines). */
export function isFullRefund(payload: unknown): payload is { orderId: string; userId: string } {
  const p = payload as { orderId?: unknown; userId?: unknown; status?: unknown };
  return typeof p?.orderId === "string" && typeof p.userId === "string" && p.status === "REFUNDED";
}

// ---- offline evaluation metrics (bench/recs.eval.ts) ----

/** 1 when any held-out product is in the first k recommendations. */
export function hitAtK(recommended: string[], heldOut: Set<string>, k = 10): number {
  return recommended.slice(0, k).some((p) => heldOut.has(p)) ? 1 : 0;
}

/** Binary-relevance NDCG@k: DCG of the list over the DCG of a perfect one. */
export function ndcgAtK(recommended: string[], heldOut: Set<string>, k = 10): number {
  let dcg = 0;
  recommended.slice(0, k).forEach((p, i) => {
    if (heldOut.has(p)) dcg += 1 / Math.log2(i + 2);
  });
  let ideal = 0;
  for (let i = 0; i < Math.min(k, heldOut.size); i++) ideal += 1 / Math.log2(i + 2);
  return ideal === 0 ? 0 : dcg / ideal;
}
