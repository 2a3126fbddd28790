/**
 * The in-process search engine (embedded mode, small clusters), chosen by measurement at
 * 100,000 products (bench/search-candidates.ts, `npm run bench:search`, bench/RESULTS.md):
 * its own compact inverted index, with MiniSearch's radix tree (`minisearch/SearchableMap`)
 * as the vocabulary for the typo-tolerant and prefix lookups. (The MiniSearch class itself
 * was dropped: it scores every expansion of every term over every field into Maps before
 * the AND, and its index is ~2× larger. `kind` stays "minisearch", the name search.status
 * has always reported for the in-process engine.)
 *
 * Matching (as before, and as the Elasticsearch engine): fields name (boost 3), brand (2),
 * sku (2), category (1.5), tags (1.5), description (1), split on spaces and punctuation and
 * lowercased; typos by `autoFuzziness` (up to 3 letters exact, 4-5 one edit, longer two,
 * Levenshtein: "iphnoe" finds "iphone"), the last term also as a prefix (search as you type);
 * all terms must match, in any fields (AND), and when no product has them all, any term (OR).
 * Scoring: BM25+ per field (k 1.2, b 0.7, d 0.5, as MiniSearch) times the field's boost,
 * summed over the query's terms; a fuzzy match weighs 0.45·len/(len+edits), a prefix match
 * 0.375·len/(len+0.3·extra letters) of an exact one (MiniSearch's weights).
 * One rule differs from MiniSearch's: a term's fuzzy expansions are looked up only when the
 * vocabulary holds no exact match for it (nor, for the last term, a longer word it starts).
 * A correctly spelled word therefore no longer also matches its 1-2-edit neighbours
 * ("iphone" no longer finds "phone"); a misspelled one still finds them. (Elasticsearch
 * still expands every term; the conformance suite holds for both.)
 *
 * How a query runs: the terms' expansions (exact, prefix, fuzzy) are resolved on the
 * vocabulary; their postings are walked rarest term first, counting for each product how
 * many terms it matched and summing scores in flat arrays reused by every query (no
 * per-match objects); filters, the two facets, and a bounded top-k for the page then take
 * one pass over the matches, reading typed-array columns (category, brand, price, stock,
 * createdAt). An empty q browses every product.
 *
 * Storage: each product has a slot; a term's postings are [slot, packed tf, …], the packed
 * tf holding 4 bits per field (a term's count in a field is capped at 15). Per term and field
 * the number of live products holding it (for idf), per field and slot the token count
 * (for BM25's length norm, capped at 65,535). Remove = the slot is freed from the columns
 * and counters at once and its postings are skipped; once 1,000 dead slots make ≥ 10 % of
 * them, a compaction (one pass over every posting, ~tens of ms at 100k products) renumbers
 * the live slots and drops the dead postings and the terms left without any. An upsert whose
 * searchable fields are unchanged (a price or stock change, the usual product event)
 * updates the columns in place and keeps the slot.
 *
 * Limits: one process, one thread; everything in memory (~110 MB of heap and ArrayBuffers at 100k products beside
 * the documents themselves). `index()` yields to the event loop every 1,000 products.
 */
import type SearchableMapType from "minisearch/dist/es/SearchableMap";
import {
  FACET_SIZE,
  MAX_SUGGEST_LIMIT,
  autoFuzziness,
  type FacetValue,
  type ProductDoc,
  type SearchEngine,
  type SearchQuery,
  type SearchResult,
} from "./engine";

// The package's "minisearch/SearchableMap" export; its types are reached by file path
// (tsconfig's node10 resolution does not read package "exports").
// eslint-disable-next-line @typescript-eslint/no-require-imports -- see above: the subpath has no import its resolution can type
const SearchableMap = require("minisearch/SearchableMap") as typeof SearchableMapType;

export const SEARCH_FIELDS = ["name", "brand", "category", "tags", "description", "sku"] as const;
export const BOOST = { name: 3, brand: 2, sku: 2, category: 1.5, tags: 1.5, description: 1 };
/** Suggest completes within these fields, with these boosts (as before: name 2, brand 1). */
const SUGGEST_BOOST = { name: 2, brand: 1 };
const F = SEARCH_FIELDS.length;
const TF_BITS = 4;
const TF_MAX = (1 << TF_BITS) - 1;
const BM25 = { k: 1.2, b: 0.7, d: 0.5 };
const FUZZY_WEIGHT = 0.45;
const PREFIX_WEIGHT = 0.375;
/** A separator: a space or punctuation, as in MiniSearch's default tokenizer (`/[\n\r\p{Z}\p{P}]+/u`). */
const SEPARATOR = /^[\n\r\p{Z}\p{P}]$/u;
const ASCII_SEPARATOR = Uint8Array.from({ length: 128 }, (_, c) => (SEPARATOR.test(String.fromCharCode(c)) ? 1 : 0));
const YIELD_EVERY = 1000;
/**
 * Distinct terms a query matches with at most (the last one kept: it is matched as a prefix).
 * Every term walks its postings once; 100 repeated common words took ~0.4 s at 100k products.
 * Also keeps a term count below the 256 of the per-product hit counters (Uint8).
 */
export const MAX_QUERY_TERMS = 32;
const COMPACT_MIN_DEAD = 1000;
const COMPACT_DEAD_RATIO = 0.1;

/** A query's terms: distinct, in order, at most MAX_QUERY_TERMS, the last one always kept. */
export function queryTerms(text: string): string[] {
  const all = tokenize(text);
  if (!all.length) return [];
  const last = all[all.length - 1];
  const rest = [...new Set(all.slice(0, -1))].filter((t) => t !== last).slice(0, MAX_QUERY_TERMS - 1);
  return [...rest, last];
}

/**
 * Lowercased words: the same as `text.toLowerCase().split(/[\n\r\p{Z}\p{P}]+/u)` without the
 * empty strings (a unit test holds them equal), by a scan with an ASCII table: ~2.5× faster,
 * which is most of an index build.
 */
export function tokenize(text: string): string[] {
  const s = text.toLowerCase();
  const out: string[] = [];
  let start = -1;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A surrogate pair is one code point (a few astral ones are punctuation).
    const width = c >= 0xd800 && c < 0xdc00 && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
    const separator = c < 128 ? ASCII_SEPARATOR[c] === 1 : SEPARATOR.test(s.slice(i, i + width));
    if (!separator) {
      if (start < 0) start = i;
    } else if (start >= 0) {
      out.push(s.slice(start, i));
      start = -1;
    }
    i += width - 1;
  }
  if (start >= 0) out.push(s.slice(start));
  return out;
}

const fieldText = (doc: ProductDoc, f: number): string => {
  const v = doc[SEARCH_FIELDS[f]];
  return Array.isArray(v) ? v.join(" ") : (v ?? "");
};

/** One expansion of a query term: a vocabulary term and its weight (1 exact, less for prefix/fuzzy). */
interface Expansion {
  termId: number;
  weight: number;
}

interface MatchOptions {
  boost: Record<string, number>;
  /** Which expansions a query term gets. */
  prefix: (i: number, n: number) => boolean;
  fuzzy: boolean;
  combineWith: "AND" | "OR";
}

const SEARCH_MATCH = (combineWith: "AND" | "OR"): MatchOptions => ({
  boost: BOOST,
  prefix: (i, n) => i === n - 1,
  fuzzy: true,
  combineWith,
});
const SUGGEST_MATCH: MatchOptions = { boost: SUGGEST_BOOST, prefix: () => true, fuzzy: false, combineWith: "AND" };

/** A growable typed array. */
function grow<T extends Float64Array | Int32Array | Uint32Array | Uint16Array | Uint8Array>(a: T, size: number): T {
  if (a.length >= size) return a;
  const b = new (a.constructor as new (n: number) => T)(Math.max(size, a.length * 2, 1024));
  b.set(a);
  return b;
}

export class MiniSearchEngine implements SearchEngine {
  readonly kind = "minisearch";

  // ---- documents (by slot) and their columns
  private docs: (ProductDoc | undefined)[] = [];
  private slotOf = new Map<string, number>();
  private live = 0;
  // 32-bit codes: codes are never reused, so 65,536 names ever seen would wrap 16-bit ones.
  private category = new Uint32Array(0);
  private brand = new Uint32Array(0); // 0: no brand
  private price = new Float64Array(0);
  private inStock = new Uint8Array(0);
  private created = new Float64Array(0);
  private categoryNames: string[] = [];
  private brandNames: string[] = [""];
  private categoryCode = new Map<string, number>();
  private brandCode = new Map<string, number>();
  /** Versions of removed documents (tombstones): an older copy arriving later stays out. */
  private removed = new Map<string, number>();

  // ---- inverted index
  private termId = new Map<string, number>();
  private vocab: SearchableMapType<number> = new SearchableMap<number>();
  private terms: string[] = [];
  /** [termId]: [slot, packed tf, …] up to postingEnd[termId] (typed: the collector never scans or copies them). */
  private postings: Int32Array[] = [];
  private postingEnd = new Int32Array(0);
  private freeTermIds: number[] = [];
  /** [termId * F + field]: live products holding the term in the field. */
  private df = new Int32Array(0);
  /** [field][slot]: the field's token count (capped at 65,535), for BM25's length norm. */
  private fieldLength: Uint16Array[] = Array.from({ length: F }, () => new Uint16Array(0));
  private lengthSum = new Float64Array(F);

  // ---- per-query scratch, indexed by slot (a query runs synchronously: one at a time)
  private stamp = new Uint32Array(0);
  private hits = new Uint8Array(0);
  private score = new Float64Array(0);
  private matched = new Int32Array(0);
  private epoch = 0;

  async index(products: readonly ProductDoc[]): Promise<void> {
    // One copy per id: the highest version (the last one among equals, or when they carry none).
    const pick = new Map<string, ProductDoc>();
    for (const p of products) {
      const held = pick.get(p.id)?.version;
      if (held === undefined || p.version === undefined || p.version >= held) pick.set(p.id, p);
    }
    const batch = [...pick.values()];
    for (let i = 0; i < batch.length; i++) {
      // Versions are checked as each product is added: an upsert may arrive between chunks.
      this.apply(batch[i]);
      if (i % YIELD_EVERY === YIELD_EVERY - 1 && i < batch.length - 1) await new Promise((r) => setImmediate(r));
    }
    this.maybeCompact();
  }

  async upsert(product: ProductDoc): Promise<void> {
    this.apply(product);
    this.maybeCompact();
  }

  async remove(id: string, version?: number): Promise<void> {
    const slot = this.slotOf.get(id);
    const held = slot === undefined ? undefined : this.docs[slot];
    if (version !== undefined) {
      if (held?.version !== undefined && held.version > version) return;
      this.removed.set(id, Math.max(version, this.removed.get(id) ?? 0));
    }
    if (slot === undefined) return;
    this.unlink(slot);
    this.slotOf.delete(id);
    this.maybeCompact();
  }

  async clear(): Promise<void> {
    Object.assign(this, new MiniSearchEngine());
  }

  async count(): Promise<number> {
    return this.live;
  }

  /** False when the engine already holds (or removed) this or a newer version of the product. */
  private isNewer(p: ProductDoc): boolean {
    if (p.version === undefined) return true;
    const slot = this.slotOf.get(p.id);
    const held = (slot === undefined ? undefined : this.docs[slot]?.version) ?? this.removed.get(p.id);
    return held === undefined || held < p.version;
  }

  private apply(p: ProductDoc): void {
    if (!this.isNewer(p)) return;
    this.removed.delete(p.id);
    const slot = this.slotOf.get(p.id);
    if (slot !== undefined) {
      const old = this.docs[slot]!;
      if (SEARCH_FIELDS.every((_, f) => fieldText(old, f) === fieldText(p, f))) {
        this.docs[slot] = p; // same words: only the columns change
        this.setColumns(slot, p);
        return;
      }
      this.unlink(slot);
    }
    this.link(p);
  }

  private setColumns(slot: number, p: ProductDoc): void {
    this.category[slot] = this.code(this.categoryCode, this.categoryNames, p.category);
    this.brand[slot] = p.brand === null ? 0 : this.code(this.brandCode, this.brandNames, p.brand);
    this.price[slot] = p.price.amount;
    this.inStock[slot] = p.stock.available > 0 ? 1 : 0;
    this.created[slot] = Date.parse(p.createdAt) || 0;
  }

  private code(codes: Map<string, number>, names: string[], value: string): number {
    let c = codes.get(value);
    if (c === undefined) {
      c = names.length;
      names.push(value);
      codes.set(value, c);
    }
    return c;
  }

  /** Scratch of `analyze`: packed counts by term id, and the ids touched. */
  private docTf = new Int32Array(0);
  private touched: number[] = [];

  /**
   * The product's term ids (new words get one) in `this.touched`, their packed per-field
   * counts in `this.docTf` (the caller zeroes them), its field lengths in `lengths`.
   */
  private analyze(p: ProductDoc, lengths: Uint16Array | number[]): void {
    this.touched.length = 0;
    for (let f = 0; f < F; f++) {
      const tokens = tokenize(fieldText(p, f));
      lengths[f] = Math.min(tokens.length, 0xffff);
      const shift = f * TF_BITS;
      for (const t of tokens) {
        const id = this.termId.get(t) ?? this.newTerm(t);
        const packed = this.docTf[id];
        if (packed === 0) this.touched.push(id);
        if (((packed >> shift) & TF_MAX) < TF_MAX) this.docTf[id] = packed + (1 << shift);
      }
    }
  }

  /** Adds the product in a new slot. */
  private link(p: ProductDoc): void {
    const slot = this.docs.length;
    this.docs.push(p);
    this.slotOf.set(p.id, slot);
    this.live++;
    this.ensureSlots(slot + 1);
    this.setColumns(slot, p);
    const lengths: number[] = [];
    this.analyze(p, lengths);
    for (let f = 0; f < F; f++) {
      this.fieldLength[f][slot] = lengths[f];
      this.lengthSum[f] += lengths[f];
    }
    const { touched, docTf, df } = this;
    for (const id of touched) {
      const packed = docTf[id];
      docTf[id] = 0;
      this.append(id, slot, packed);
      for (let bits = packed, i = id * F; bits; bits >>= TF_BITS, i++) if (bits & TF_MAX) df[i]++;
    }
  }

  /** Takes the product in the slot out of the counters at once; its postings stay until a compaction. */
  private unlink(slot: number): void {
    this.analyze(this.docs[slot]!, []);
    const { touched, docTf, df } = this;
    for (const id of touched) {
      const packed = docTf[id];
      docTf[id] = 0;
      for (let bits = packed, i = id * F; bits; bits >>= TF_BITS, i++) if (bits & TF_MAX) df[i]--;
    }
    for (let f = 0; f < F; f++) this.lengthSum[f] -= this.fieldLength[f][slot];
    this.docs[slot] = undefined;
    this.live--;
  }

  private newTerm(term: string): number {
    const id = this.freeTermIds.pop() ?? this.terms.length;
    this.terms[id] = term;
    this.postings[id] = new Int32Array(2);
    this.postingEnd = grow(this.postingEnd, id + 1);
    this.postingEnd[id] = 0;
    this.df = grow(this.df, (id + 1) * F);
    this.df.fill(0, id * F, (id + 1) * F);
    this.docTf = grow(this.docTf, id + 1);
    this.termId.set(term, id);
    this.vocab.set(term, id);
    return id;
  }

  private append(id: number, slot: number, packed: number): void {
    const end = this.postingEnd[id];
    let list = this.postings[id];
    if (end + 2 > list.length) {
      const bigger = new Int32Array(Math.max(4, list.length * 2));
      bigger.set(list);
      this.postings[id] = list = bigger;
    }
    list[end] = slot;
    list[end + 1] = packed;
    this.postingEnd[id] = end + 2;
  }

  private ensureSlots(n: number): void {
    if (this.category.length >= n) return;
    this.category = grow(this.category, n);
    this.brand = grow(this.brand, n);
    this.price = grow(this.price, n);
    this.inStock = grow(this.inStock, n);
    this.created = grow(this.created, n);
    for (let f = 0; f < F; f++) this.fieldLength[f] = grow(this.fieldLength[f], n);
    this.stamp = grow(this.stamp, n);
    this.hits = grow(this.hits, n);
    this.score = grow(this.score, n);
    this.matched = grow(this.matched, n);
  }

  /** Renumbers the live slots and drops dead postings, when dead slots are ≥ 1,000 and ≥ 10 %. */
  private maybeCompact(): void {
    const dead = this.docs.length - this.live;
    if (dead < COMPACT_MIN_DEAD || dead < this.docs.length * COMPACT_DEAD_RATIO) return;
    this.compact();
  }

  /** Exposed for the tests: compacts now. */
  compact(): void {
    const n = this.docs.length;
    const to = new Int32Array(n).fill(-1);
    let next = 0;
    for (let s = 0; s < n; s++) {
      const p = this.docs[s];
      if (!p) continue;
      to[s] = next;
      this.docs[next] = p;
      this.slotOf.set(p.id, next);
      this.category[next] = this.category[s];
      this.brand[next] = this.brand[s];
      this.price[next] = this.price[s];
      this.inStock[next] = this.inStock[s];
      this.created[next] = this.created[s];
      for (let f = 0; f < F; f++) this.fieldLength[f][next] = this.fieldLength[f][s];
      next++;
    }
    this.docs.length = next;
    for (let id = 0; id < this.postings.length; id++) {
      const list = this.postings[id];
      if (this.terms[id] === undefined) continue;
      let w = 0;
      for (let r = 0; r < this.postingEnd[id]; r += 2) {
        const s = to[list[r]];
        if (s < 0) continue;
        list[w++] = s;
        list[w++] = list[r + 1];
      }
      this.postingEnd[id] = w;
      if (w === 0) {
        this.termId.delete(this.terms[id]);
        this.vocab.delete(this.terms[id]);
        this.terms[id] = undefined as unknown as string;
        this.postings[id] = new Int32Array(0);
        this.freeTermIds.push(id);
      } else if (w * 4 < list.length) this.postings[id] = list.slice(0, w);
    }
  }

  // ------------------------------------------------------------------ queries

  /** The query term's expansions: exact, prefix (longer words it starts), fuzzy (only when neither exists). */
  private expand(term: string, prefix: boolean, fuzzy: boolean): Expansion[] {
    const out: Expansion[] = [];
    // A term only dead products held (until the next compaction) is not in the vocabulary.
    const held = (id: number) => {
      for (let i = id * F; i < id * F + F; i++) if (this.df[i] > 0) return true;
      return false;
    };
    const exact = this.termId.get(term);
    if (exact !== undefined && held(exact)) out.push({ termId: exact, weight: 1 });
    if (prefix)
      for (const [t, id] of this.vocab.atPrefix(term))
        if (t !== term && held(id))
          out.push({ termId: id, weight: (PREFIX_WEIGHT * t.length) / (t.length + 0.3 * (t.length - term.length)) });
    const edits = fuzzy && !out.length ? autoFuzziness(term) : false;
    if (edits)
      for (const [t, [id, distance]] of this.vocab.fuzzyGet(term, edits))
        if (distance > 0 && held(id)) out.push({ termId: id, weight: (FUZZY_WEIGHT * t.length) / (t.length + distance) });
    return out;
  }

  /**
   * Scores the products matching the query's terms into `this.score`, marks them in
   * `this.matched[0..n)` and returns n. A product counts for a term when one of the term's
   * expansions occurs in a field of `opts.boost`.
   */
  private match(terms: string[], opts: MatchOptions): number {
    if (++this.epoch === 0xffffffff) {
      this.stamp.fill(0);
      this.epoch = 1;
    }
    const epoch = this.epoch;
    const { stamp, hits, score, matched, fieldLength } = this;
    const fieldBoost = SEARCH_FIELDS.map((f) => opts.boost[f] ?? 0);
    let fieldMask = 0;
    for (let f = 0; f < F; f++) if (fieldBoost[f]) fieldMask |= TF_MAX << (f * TF_BITS);
    const live = Math.max(this.live, 1);
    const avgLength = fieldBoost.map((_, f) => Math.max(this.lengthSum[f] / live, 1));
    // Rarest term first (for AND, the candidates are the first term's products).
    const expansions = terms.map((t, i) => this.expand(t, opts.prefix(i, terms.length), opts.fuzzy));
    const size = (e: Expansion[]) => e.reduce((n, x) => n + this.postingEnd[x.termId], 0);
    const order = expansions
      .map((e, i) => [size(e), i])
      .sort((a, b) => a[0] - b[0])
      .map(([, i]) => expansions[i]);
    const and = opts.combineWith === "AND" && terms.length > 1;
    let n = 0;
    const weights = new Float64Array(F);
    for (let j = 0; j < order.length; j++) {
      if (and && j > 0 && n === 0) break;
      for (const { termId, weight } of order[j]) {
        const list = this.postings[termId];
        const end = this.postingEnd[termId];
        let weighed = false; // the expansion's field weights, computed at its first match (many never match)
        for (let r = 0; r < end; r += 2) {
          const packed = list[r + 1];
          if (!(packed & fieldMask)) continue;
          const s = list[r];
          if (stamp[s] !== epoch) {
            if (and && j > 0) continue; // missed an earlier term
            stamp[s] = epoch;
            hits[s] = 0;
            score[s] = 0;
            matched[n++] = s;
          }
          if (and && hits[s] < j) continue; // missed an earlier term
          hits[s] = j + 1;
          if (!weighed) {
            for (let f = 0; f < F; f++) {
              const df = this.df[termId * F + f];
              weights[f] = fieldBoost[f] && df > 0 ? weight * fieldBoost[f] * Math.log(1 + (live - df + 0.5) / (df + 0.5)) : 0;
            }
            weighed = true;
          }
          let sc = 0;
          for (let f = 0; f < F; f++) {
            const tf = (packed >> (f * TF_BITS)) & TF_MAX;
            if (!tf || !weights[f]) continue;
            const norm = 1 - BM25.b + (BM25.b * fieldLength[f][s]) / avgLength[f];
            sc += weights[f] * (BM25.d + (tf * (BM25.k + 1)) / (tf + BM25.k * norm));
          }
          score[s] += sc;
        }
      }
    }
    // Keep live products that matched every term (AND) or any (OR).
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const s = matched[i];
      if (this.docs[s] && (!and || hits[s] === order.length)) matched[kept++] = s;
    }
    return kept;
  }

  async search(query: SearchQuery): Promise<SearchResult> {
    const { minPrice, maxPrice, inStock } = query;
    const browse = !query.q.trim();
    const terms = queryTerms(query.q);
    let n = 0;
    if (browse) {
      for (let s = 0; s < this.docs.length; s++) if (this.docs[s]) this.matched[n++] = s;
    } else if (terms.length) {
      // (a q of punctuation alone has no terms, and matches nothing)
      n = this.match(terms, SEARCH_MATCH("AND"));
      if (!n) n = this.match(terms, SEARCH_MATCH("OR"));
    }
    const wantCategory = query.category === undefined ? -1 : (this.categoryCode.get(query.category) ?? -2);
    const wantBrand = query.brand === undefined ? -1 : (this.brandCode.get(query.brand) ?? -2);
    const categoryCounts = new Int32Array(this.categoryNames.length);
    const brandCounts = new Int32Array(this.brandNames.length);
    const { matched, category, brand, price } = this;
    // Filters other than category/brand apply to everything, facets included; a facet ignores its own filter.
    let items = 0;
    for (let i = 0; i < n; i++) {
      const s = matched[i];
      if (minPrice !== undefined && price[s] < minPrice) continue;
      if (maxPrice !== undefined && price[s] > maxPrice) continue;
      if (inStock && !this.inStock[s]) continue;
      const okCategory = wantCategory === -1 || category[s] === wantCategory;
      const okBrand = wantBrand === -1 || brand[s] === wantBrand;
      if (okBrand) categoryCounts[category[s]]++;
      if (okCategory) brandCounts[brand[s]]++;
      if (okCategory && okBrand) matched[items++] = s; // in place: items trail the reading index
    }
    brandCounts[0] = 0; // a product without a brand has no brand bucket (as Elasticsearch's terms aggregation)
    const sort = query.sort === "relevance" && browse ? "newest" : query.sort;
    const { score, created, docs } = this;
    const byId = (a: number, b: number) => (docs[a]!.id < docs[b]!.id ? -1 : docs[a]!.id > docs[b]!.id ? 1 : 0);
    const compare: (a: number, b: number) => number =
      sort === "price_asc"
        ? (a, b) => price[a] - price[b] || score[b] - score[a] || byId(a, b)
        : sort === "price_desc"
          ? (a, b) => price[b] - price[a] || score[b] - score[a] || byId(a, b)
          : sort === "newest"
            ? (a, b) => created[b] - created[a] || score[b] - score[a] || byId(a, b)
            : (a, b) => score[b] - score[a] || byId(a, b);
    // Browsing has no scores: they are zeroed for the comparators.
    if (browse) for (let i = 0; i < items; i++) score[matched[i]] = 0;
    const from = (query.page - 1) * query.pageSize;
    return {
      items: topK(matched.subarray(0, items), from + query.pageSize, compare)
        .slice(from)
        .map((s) => docs[s]!),
      total: items,
      page: query.page,
      pageSize: query.pageSize,
      facets: { category: facet(categoryCounts, this.categoryNames), brand: facet(brandCounts, this.brandNames) },
    };
  }

  async suggest(prefix: string, limit: number): Promise<string[]> {
    const terms = queryTerms(prefix);
    if (!terms.length) return [];
    const want = Math.max(1, Math.min(limit, MAX_SUGGEST_LIMIT));
    // Completion: no typo tolerance, every term a prefix, all must match within name or brand.
    const n = this.match(terms, SUGGEST_MATCH);
    const { score, docs } = this;
    const compare = (a: number, b: number) => score[b] - score[a] || (docs[a]!.id < docs[b]!.id ? -1 : 1);
    // Distinct names (case-insensitive) in score order: take a few more than asked, more if duplicates ate them.
    for (let k = want * 4; ; k *= 4) {
      const out: string[] = [];
      const seen = new Set<string>();
      for (const s of topK(this.matched.subarray(0, n), k, compare)) {
        const name = docs[s]!.name;
        if (seen.has(name.toLowerCase())) continue;
        seen.add(name.toLowerCase());
        out.push(name);
        if (out.length >= want) return out;
      }
      if (k >= n) return out;
    }
  }
}

function facet(counts: Int32Array, names: string[]): FacetValue[] {
  const out: FacetValue[] = [];
  for (let c = 0; c < counts.length; c++) if (counts[c] > 0) out.push({ value: names[c], count: counts[c] });
  return out.sort((a, b) => b.count - a.count || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0)).slice(0, FACET_SIZE);
}

/**
 * The first k elements of `arr` in `compare` order: a full sort when k is large (or a large
 * part of the array), otherwise a bounded insertion buffer (O(n log k); pages are small).
 */
export function topK<T>(arr: ArrayLike<T>, k: number, compare: (a: T, b: T) => number): T[] {
  if (k <= 0) return [];
  if (k > 256 || k * 8 >= arr.length) return Array.from(arr).sort(compare).slice(0, k);
  const top: T[] = [];
  for (let i = 0; i < arr.length; i++) {
    const x = arr[i];
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
