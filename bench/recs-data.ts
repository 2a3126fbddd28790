/**
 * Synthetic purchase histories for the recommendation evaluation and benchmark.
 *
 * Why synthetic: no public e-commerce purchase dataset of the size asked for (≥ 5,000 users,
 * ≥ 2,000 products, with users' stated preferences) is published on the npm registry, the
 * only package source here. So the data comes from a generator whose latent structure is
 * stated here, and the evaluation says what it can and cannot show (bench/RESULTS.md).
 *
 * The latent structure (all draws from one seeded PRNG: the same seed, the same data):
 * - Catalog: `products` products in `categories` categories (uniform); each category has 8
 *   brands of its own. Global popularity is Zipf-skewed (weight 1 / rank^1.0 over a random
 *   permutation), so a few products sell far more than most.
 * - Taste groups: `groups` groups, each with 2 favourite categories and a "core" of 40
 *   products drawn from those categories by global popularity; within a core, Zipf(0.8).
 * - Users: each in one group (group sizes Zipf(0.5)); 1 + a geometric number of orders
 *   (mean 3.5, at most 15); 1–3 products per order (60/30/10 %), never a product twice.
 *   Each product: 50 % from the group's core, 25 % from its favourite categories by global
 *   popularity, 25 % from the whole catalog by global popularity (shared taste plus noise).
 * - Stated preferences: 50 % of users state categories (each of their group's two
 *   favourites with probability 0.8, plus a random other category with probability 0.3);
 *   30 % state a brand (the brand of a random product of their first order).
 * What a method can exploit: co-purchase within groups (item-to-item), global popularity,
 * and stated categories/brands. A method that learns groups from co-purchases should beat
 * popularity; how much depends on the mixing shares above, not on anything real.
 */

export interface GenProduct {
  id: string;
  name: string;
  category: string;
  brand: string;
}

export interface GenOrder {
  orderId: string;
  at: number;
  productIds: string[];
}

export interface GenUser {
  id: string;
  group: number;
  preferences: { categories: string[]; brands: string[] };
  orders: GenOrder[];
}

export interface Dataset {
  products: GenProduct[];
  users: GenUser[];
  orders: number;
}

export interface GenOptions {
  users: number;
  products: number;
  categories?: number;
  groups?: number;
  seed?: number;
  /** Ids of existing products to use instead of generated ones (the benchmark's real catalog). */
  catalog?: { id: string; name: string; category: string; brand: string | null }[];
  /** Stop adding orders once this many exist (the benchmark's 100,000). */
  maxOrders?: number;
  /** Mean number of orders per user beyond the first. */
  extraOrdersMean?: number;
}

/** mulberry32: small, fast, and good enough for sampling. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Draws indexes by weight in O(log n) (cumulative sums + binary search). */
class Sampler {
  private readonly cum: Float64Array;
  constructor(weights: number[]) {
    this.cum = new Float64Array(weights.length);
    let s = 0;
    weights.forEach((w, i) => (this.cum[i] = s += w));
  }
  draw(random: () => number): number {
    const x = random() * this.cum[this.cum.length - 1];
    let lo = 0;
    let hi = this.cum.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cum[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

function shuffle<T>(xs: T[], random: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

const zipf = (n: number, s: number) => Array.from({ length: n }, (_, i) => 1 / (i + 1) ** s);

export function generate(opts: GenOptions): Dataset {
  const random = prng(opts.seed ?? 20261125);
  const nCat = opts.categories ?? 25;
  const nGroups = opts.groups ?? 40;
  const categories = Array.from({ length: nCat }, (_, i) => `category-${String(i).padStart(2, "0")}`);
  const products: GenProduct[] = opts.catalog
    ? opts.catalog.map((p) => ({ id: p.id, name: p.name, category: p.category, brand: p.brand ?? "" }))
    : Array.from({ length: opts.products }, (_, i) => {
        const category = categories[Math.floor(random() * nCat)];
        return {
          id: `p${String(i).padStart(6, "0")}`,
          name: `Product ${i}`,
          category,
          brand: `${category}-brand-${Math.floor(random() * 8)}`,
        };
      });
  const cats = [...new Set(products.map((p) => p.category))].sort();
  const popWeight = new Array<number>(products.length);
  const ranks = shuffle(
    products.map((_, i) => i),
    random,
  );
  ranks.forEach((productIndex, rank) => (popWeight[productIndex] = 1 / (rank + 1)));
  const global = new Sampler(popWeight);
  const byCategory = new Map<string, number[]>();
  products.forEach((p, i) => byCategory.set(p.category, [...(byCategory.get(p.category) ?? []), i]));

  const groups = Array.from({ length: nGroups }, () => {
    const favourites = shuffle([...cats], random).slice(0, 2);
    const pool = favourites.flatMap((c) => byCategory.get(c) ?? []);
    const poolSampler = new Sampler(pool.map((i) => popWeight[i]));
    const core = new Set<number>();
    for (let tries = 0; core.size < Math.min(40, pool.length) && tries < 10_000; tries++) core.add(pool[poolSampler.draw(random)]);
    const coreList = shuffle([...core], random);
    return { favourites, pool, poolSampler, core: coreList, coreSampler: new Sampler(zipf(coreList.length, 0.8)) };
  });
  const groupSampler = new Sampler(zipf(nGroups, 0.5));

  const users: GenUser[] = [];
  let orderCount = 0;
  const meanExtra = opts.extraOrdersMean ?? 2.5;
  for (let u = 0; u < opts.users; u++) {
    if (opts.maxOrders !== undefined && orderCount >= opts.maxOrders) break;
    const g = groupSampler.draw(random);
    const group = groups[g];
    let nOrders = 1;
    while (nOrders < 15 && random() < meanExtra / (meanExtra + 1)) nOrders++;
    const owned = new Set<number>();
    const orders: GenOrder[] = [];
    let at = Date.UTC(2026, 0, 1) + Math.floor(random() * 86_400_000 * 30);
    for (let o = 0; o < nOrders; o++) {
      if (opts.maxOrders !== undefined && orderCount >= opts.maxOrders) break;
      const r = random();
      const size = r < 0.6 ? 1 : r < 0.9 ? 2 : 3;
      const lines: number[] = [];
      for (let k = 0; k < size; k++) {
        for (let tries = 0; tries < 30; tries++) {
          const x = random();
          const i =
            x < 0.5
              ? group.core[group.coreSampler.draw(random)]
              : x < 0.75
                ? group.pool[group.poolSampler.draw(random)]
                : global.draw(random);
          if (!owned.has(i)) {
            owned.add(i);
            lines.push(i);
            break;
          }
        }
      }
      if (!lines.length) continue;
      at += 3_600_000 + Math.floor(random() * 86_400_000 * 20);
      orders.push({ orderId: `o${String(u).padStart(6, "0")}-${o}`, at, productIds: lines.map((i) => products[i].id) });
      orderCount++;
    }
    if (!orders.length) continue;
    const preferences = { categories: [] as string[], brands: [] as string[] };
    if (random() < 0.5) {
      for (const c of group.favourites) if (random() < 0.8) preferences.categories.push(c);
      if (random() < 0.3) preferences.categories.push(cats[Math.floor(random() * cats.length)]);
    }
    if (random() < 0.3) {
      const first = orders[0].productIds;
      const brand = products.find((p) => p.id === first[Math.floor(random() * first.length)])?.brand;
      if (brand) preferences.brands.push(brand);
    }
    users.push({
      id: `user-${String(u).padStart(6, "0")}`,
      group: g,
      preferences: { categories: [...new Set(preferences.categories)], brands: preferences.brands },
      orders,
    });
  }
  return { products, users, orders: orderCount };
}
