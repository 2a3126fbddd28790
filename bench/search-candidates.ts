/**
 * PROBE (issue #16): the candidate in-process search engines at catalog scale, each doing
 * the whole job of `SearchEngine.search` for the query classes of search.bench.ts —
 * matching (typo-tolerant, last term as a prefix, AND then OR), filters, category/brand
 * facets over all matches, sort, one page — so that their figures compare.
 *
 *   npx tsx bench/search-candidates.ts [candidate…]
 *
 * BENCH_DOCS (default 100000), BENCH_QUERIES per class (default 200). FlexSearch and Orama
 * are not dependencies: they are loaded from PROBE_DEPS (a folder with their node_modules,
 * `npm install --prefix $PROBE_DEPS flexsearch@0.8.212 @orama/orama@3.1.18`); a candidate
 * whose library is missing is skipped. Prints one line per candidate and class.
 */
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import MiniSearch from "minisearch";
import type SearchableMap from "minisearch/dist/es/SearchableMap";
import { autoFuzziness, parseSearchQuery, type ProductDoc, type SearchQuery } from "../services/search/engines/engine";
import { MiniSearchEngine } from "../services/search/engines/minisearch-engine";
import { syntheticProducts } from "../lib/demo-catalog";
import { CLASSES, memoryMb, miniSearchOptions, miniSearchQuery, pct } from "./search.bench";

const N = Number(process.env.BENCH_DOCS ?? 100_000);
const PER_CLASS = Number(process.env.BENCH_QUERIES ?? 200);

interface Candidate {
  name: string;
  build(products: ProductDoc[]): Promise<void> | void;
  /** total matches and the page's ids */
  search(q: SearchQuery): Promise<{ total: number; ids: string[] }> | { total: number; ids: string[] };
}

/** Filters, facets, sort and page over a match list, the same for every candidate that only returns ids. */
function finisher(products: ProductDoc[]) {
  const byId = new Map(products.map((p, i) => [p.id, i]));
  return (hits: Array<{ id: string; score: number }>, q: SearchQuery) => {
    const cat = new Map<string, number>();
    const brand = new Map<string, number>();
    const items: Array<{ d: ProductDoc; score: number }> = [];
    for (const h of hits) {
      const d = products[byId.get(h.id)!];
      if (q.minPrice !== undefined && d.price.amount < q.minPrice) continue;
      if (q.maxPrice !== undefined && d.price.amount > q.maxPrice) continue;
      if (q.inStock && !(d.stock.available > 0)) continue;
      const okC = q.category === undefined || d.category === q.category;
      const okB = q.brand === undefined || d.brand === q.brand;
      if (okB) cat.set(d.category, (cat.get(d.category) ?? 0) + 1);
      if (okC && d.brand !== null) brand.set(d.brand, (brand.get(d.brand) ?? 0) + 1);
      if (okC && okB) items.push({ d, score: h.score });
    }
    const cmp =
      q.sort === "price_asc"
        ? (a: (typeof items)[0], b: (typeof items)[0]) => a.d.price.amount - b.d.price.amount
        : q.sort === "price_desc"
          ? (a: (typeof items)[0], b: (typeof items)[0]) => b.d.price.amount - a.d.price.amount
          : q.sort === "newest" || !q.q
            ? (a: (typeof items)[0], b: (typeof items)[0]) => (a.d.createdAt < b.d.createdAt ? 1 : -1)
            : (a: (typeof items)[0], b: (typeof items)[0]) => b.score - a.score;
    const from = (q.page - 1) * q.pageSize;
    return {
      total: items.length,
      ids: items
        .sort(cmp)
        .slice(from, from + q.pageSize)
        .map((x) => x.d.id),
    };
  };
}

// ---------------------------------------------------------------- MiniSearch, as configured before, and tuned
function miniSearch(
  name: string,
  fuzzy: (term: string, i: number, terms: string[], ms: MiniSearch<ProductDoc>) => number | false,
): Candidate {
  const ms = new MiniSearch<ProductDoc>(miniSearchOptions());
  let finish: ReturnType<typeof finisher>;
  let products: ProductDoc[] = [];
  const opts = (combineWith: "AND" | "OR") => ({
    ...miniSearchQuery(combineWith),
    fuzzy: (t: string, i: number, terms: string[]) => fuzzy(t, i, terms, ms),
  });
  return {
    name,
    build: (p) => {
      products = p;
      ms.addAll(p);
      finish = finisher(p);
    },
    search: (q) => {
      if (!q.q)
        return finish(
          products.map((p) => ({ id: p.id, score: 0 })),
          q,
        );
      let r = ms.search(q.q, opts("AND"));
      if (!r.length) r = ms.search(q.q, opts("OR"));
      return finish(r, q);
    },
  };
}

/** MiniSearch with fuzzy expansion only for a term its vocabulary lacks (and, for the last term, no longer word starts with). */
function miniSearchTuned(): Candidate {
  // The library's term map (private: a probe may peek).
  const vocab = (ms: MiniSearch<ProductDoc>) => (ms as unknown as { _index: SearchableMap })._index;
  return miniSearch("MiniSearch 7.2.0 tuned (fuzzy only for unknown terms)", (t, i, terms, ms) => {
    const known = i === terms.length - 1 ? vocab(ms).atPrefix(t).size > 0 : vocab(ms).has(t);
    return known ? false : autoFuzziness(t);
  });
}

function ours(): Candidate {
  const engine = new MiniSearchEngine();
  return {
    name: "ours: compact inverted index + MiniSearch's SearchableMap for fuzzy/prefix",
    build: (p) => engine.index(p),
    search: async (q) => {
      const r = await engine.search(q);
      return { total: r.total, ids: r.items.map((p) => p.id) };
    },
  };
}

// ---------------------------------------------------------------- Orama
/** The part of @orama/orama's API used here (not a dependency: no typings). */
interface OramaLib {
  create(o: { schema: Record<string, string> }): unknown;
  insertMultiple(db: unknown, docs: object[], batchSize?: number): Promise<unknown>;
  search(db: unknown, params: object): Promise<unknown>;
}
function orama(): Candidate | undefined {
  const lib = load("@orama/orama") as OramaLib | undefined;
  if (!lib) return undefined;
  let db: ReturnType<typeof lib.create>;
  let finish: ReturnType<typeof finisher>;
  let products: ProductDoc[] = [];
  const properties = ["name", "brand", "category", "tags", "description", "sku"];
  return {
    name: "Orama 3.1.18 (tolerance 2, facets in JS)",
    build: async (p) => {
      products = p;
      finish = finisher(p);
      db = lib.create({
        schema: {
          id: "string",
          name: "string",
          brand: "string",
          category: "string",
          tags: "string[]",
          description: "string",
          sku: "string",
        } as const,
      });
      await lib.insertMultiple(
        db,
        p.map((x) => ({
          id: x.id,
          name: x.name,
          brand: x.brand,
          category: x.category,
          tags: x.tags,
          description: x.description,
          sku: x.sku,
        })),
        1000,
      );
    },
    search: async (q) => {
      if (!q.q)
        return finish(
          products.map((p) => ({ id: p.id, score: 0 })),
          q,
        );
      const run = async (threshold: number) =>
        (await lib.search(db, {
          term: q.q,
          properties,
          boost: { name: 3, brand: 2, sku: 2, category: 1.5, tags: 1.5 },
          tolerance: 2,
          threshold,
          limit: N,
        })) as { hits: Array<{ id: string; score: number }> };
      let r = await run(0);
      if (!r.hits.length) r = await run(1);
      return finish(r.hits, q);
    },
  };
}

// ---------------------------------------------------------------- FlexSearch
function flexSearch(): Candidate | undefined {
  const lib = load("flexsearch") as
    { Index: new (o: object) => { add(id: number, text: string): void; search(q: string, o?: object): number[] } } | undefined;
  if (!lib) return undefined;
  // One combined text field (FlexSearch ANDs the terms within a field, not across fields),
  // a soundex-like encoder for typos ("LatinSoundex"), forward tokenization for prefixes.
  const idx = new lib.Index({ tokenize: "forward", encoder: "LatinSoundex", resolution: 9 });
  let products: ProductDoc[] = [];
  let finish: ReturnType<typeof finisher>;
  return {
    name: "FlexSearch 0.8.212 (one text field, forward, LatinSoundex)",
    build: (p) => {
      products = p;
      finish = finisher(p);
      p.forEach((x, i) => idx.add(i, [x.name, x.brand, x.category, x.tags.join(" "), x.description, x.sku].join(" ")));
    },
    search: (q) => {
      if (!q.q)
        return finish(
          products.map((p) => ({ id: p.id, score: 0 })),
          q,
        );
      let r = idx.search(q.q, { limit: N });
      if (!r.length) r = idx.search(q.q, { limit: N, suggest: true });
      return finish(
        r.map((i, rank) => ({ id: products[i].id, score: -rank })),
        q,
      );
    },
  };
}

// ---------------------------------------------------------------- SQLite FTS5
/**
 * FTS5 (unicode61) with typo tolerance from its own vocabulary (fts5vocab) loaded into a
 * SearchableMap: each term becomes an OR of its fuzzy expansions (and a prefix for the last);
 * bm25 with the field weights; filters in SQL; facets and page by GROUP BY / ORDER BY.
 */
function fts5(tokenizer: "unicode61" | "trigram"): Candidate {
  const db = new Database(":memory:");
  db.pragma("journal_mode = OFF");
  db.exec(`CREATE TABLE p (rowid INTEGER PRIMARY KEY, id TEXT, category TEXT, brand TEXT, price INTEGER, available INTEGER, created TEXT)`);
  db.exec(
    `CREATE VIRTUAL TABLE f USING fts5(name, brand, category, tags, description, sku, tokenize='${tokenizer}', content='', columnsize=1, detail=${tokenizer === "trigram" ? "full" : "column"})`,
  );
  // The package's "minisearch/SearchableMap" export; its types are reached by file path (above): tsconfig's node10
  // resolution does not read package "exports", so an import of it does not type-check.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- an "exports" subpath, untyped under node10 resolution
  const vocab: SearchableMap<number> = new (require("minisearch/SearchableMap"))();
  const quote = (t: string) => `"${t.replace(/"/g, '""')}"`;
  const matchExpr = (terms: string[], op: "AND" | "OR") =>
    terms
      .map((t, i) => {
        if (tokenizer === "trigram") return t.length >= 3 ? quote(t) : `${quote(t)}*`;
        const last = i === terms.length - 1;
        const alts = new Set<string>();
        if (vocab.has(t)) alts.add(quote(t));
        if (last) alts.add(`${quote(t)}*`);
        const d = autoFuzziness(t);
        if (d) for (const term of vocab.fuzzyGet(t, d).keys()) alts.add(quote(term));
        return alts.size ? `(${[...alts].join(" OR ")})` : quote(t);
      })
      .join(` ${op} `);
  return {
    name: `SQLite FTS5 ${tokenizer}${tokenizer === "unicode61" ? " + fuzzy expansion from fts5vocab" : " (substring, no typo tolerance)"}`,
    build: (products) => {
      const insP = db.prepare("INSERT INTO p VALUES (?, ?, ?, ?, ?, ?, ?)");
      const insF = db.prepare("INSERT INTO f (rowid, name, brand, category, tags, description, sku) VALUES (?, ?, ?, ?, ?, ?, ?)");
      db.transaction(() => {
        products.forEach((x, i) => {
          insP.run(i + 1, x.id, x.category, x.brand, x.price.amount, x.stock.available, x.createdAt);
          insF.run(i + 1, x.name, x.brand, x.category, x.tags.join(" "), x.description, x.sku);
        });
      })();
      if (tokenizer === "unicode61") {
        db.exec("CREATE VIRTUAL TABLE v USING fts5vocab(f, 'row')");
        for (const r of db.prepare("SELECT term, doc FROM v").iterate() as Iterable<{ term: string; doc: number }>)
          vocab.set(r.term, r.doc);
      }
    },
    search: (q) => {
      const terms = q.q
        .toLowerCase()
        .split(/[\n\r\p{Z}\p{P}]+/u)
        .filter(Boolean);
      const where: string[] = [];
      const args: unknown[] = [];
      if (q.minPrice !== undefined) {
        where.push("price >= ?");
        args.push(q.minPrice);
      }
      if (q.maxPrice !== undefined) {
        where.push("price <= ?");
        args.push(q.maxPrice);
      }
      if (q.inStock) where.push("available > 0");
      const run = (op: "AND" | "OR") => {
        const m = terms.length ? matchExpr(terms, op) : undefined;
        const base = m
          ? `WITH m AS (SELECT rowid, bm25(f, 3, 2, 1.5, 1.5, 1, 2) AS score FROM f WHERE f MATCH ?) SELECT p.*, m.score FROM m JOIN p USING (rowid)`
          : `SELECT p.*, 0 AS score FROM p`;
        const a = m ? [m, ...args] : args;
        const w = where.length ? ` WHERE ${where.join(" AND ")}` : "";
        db.exec("DROP TABLE IF EXISTS temp.hits");
        db.prepare(`CREATE TEMP TABLE hits AS ${base}${w}`).run(...a);
        return db.prepare("SELECT count(*) AS n FROM hits").get() as { n: number };
      };
      if (!run("AND").n && terms.length) run("OR");
      const cw = (extra: string) => (extra ? ` WHERE ${extra}` : "");
      const catF = q.category !== undefined ? "category = @category" : "";
      const brF = q.brand !== undefined ? "brand = @brand" : "";
      const params = { category: q.category, brand: q.brand };
      const bind = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
      db.prepare(`SELECT category, count(*) FROM hits${cw(brF)} GROUP BY category`).all(bind(params));
      db.prepare(`SELECT brand, count(*) FROM hits${cw(catF)} GROUP BY brand`).all(bind(params));
      const both = [catF, brF].filter(Boolean).join(" AND ");
      const order =
        q.sort === "price_asc"
          ? "price ASC"
          : q.sort === "price_desc"
            ? "price DESC"
            : q.sort === "newest" || !q.q
              ? "created DESC"
              : "score ASC";
      const total = (db.prepare(`SELECT count(*) AS n FROM hits${cw(both)}`).get(bind(params)) as { n: number }).n;
      const ids = (
        db
          .prepare(`SELECT id FROM hits${cw(both)} ORDER BY ${order}, id LIMIT ${q.pageSize} OFFSET ${(q.page - 1) * q.pageSize}`)
          .all(bind(params)) as Array<{ id: string }>
      ).map((r) => r.id);
      return { total, ids };
    },
  };
}

function load(name: string): unknown {
  const dir = process.env.PROBE_DEPS;
  if (!dir) return undefined;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- optional, from a folder known only at run time, synchronously
    return require(require.resolve(name, { paths: [path.resolve(dir)] }));
  } catch {
    return undefined;
  }
}

const MAKERS: Record<string, () => Candidate | undefined> = {
  ours,
  minisearch: () => miniSearch("MiniSearch 7.2.0 as configured before (fuzzy AUTO:4,6 on every term)", (t) => autoFuzziness(t)),
  tuned: miniSearchTuned,
  orama,
  flexsearch: flexSearch,
  fts5: () => fts5("unicode61"),
  trigram: () => fts5("trigram"),
};

async function main() {
  const wanted = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(MAKERS);
  // Flat strings, as JSON-parsed documents have (the generator's concatenated strings would
  // be flattened by the first engine that reads them, blurring its memory delta).
  const products = JSON.parse(JSON.stringify(syntheticProducts(N))) as ProductDoc[];
  for (const key of wanted) {
    const c = MAKERS[key]?.();
    if (!c) {
      console.log(`${key}: skipped (unknown, or its library is not in PROBE_DEPS)`);
      continue;
    }
    const h0 = memoryMb();
    const rss0 = process.memoryUsage().rss / 1048576;
    let t = performance.now();
    await c.build(products);
    const buildMs = performance.now() - t;
    const heap = memoryMb() - h0;
    const rss = process.memoryUsage().rss / 1048576 - rss0;
    process.stderr.write(`${c.name}: built in ${buildMs.toFixed(0)} ms\n`);
    const line: string[] = [
      `${c.name}: build ${Math.round((N / buildMs) * 1000).toLocaleString("en-US")} docs/s, +${heap.toFixed(0)} MB heap+buffers (+${rss.toFixed(0)} MB rss), load ${os.loadavg()[0].toFixed(1)}`,
    ];
    const typo = await c.search(parseSearchQuery({ q: "iphnoe" }));
    line.push(`  iphnoe: ${typo.total} matches, first ${typo.ids[0] ? products.find((p) => p.id === typo.ids[0])!.name : "-"}`);
    for (const [cls, queries] of Object.entries(CLASSES)) {
      const parsed = queries.map((q) => parseSearchQuery(q));
      for (const q of parsed) await c.search(q);
      const times: number[] = [];
      let hits = 0;
      const t0 = performance.now();
      // At most PER_CLASS queries, or 30 s per class for a slow candidate.
      for (let i = 0; i < PER_CLASS && performance.now() - t0 < 30_000; i++) {
        t = performance.now();
        hits += (await c.search(parsed[i % parsed.length])).total;
        times.push(performance.now() - t);
      }
      const { p50, p99 } = pct(times);
      line.push(
        `  ${cls.padEnd(12)} p50 ${p50.toFixed(2).padStart(7)} ms  p99 ${p99.toFixed(2).padStart(7)} ms  avg matches ${Math.round(hits / times.length)} (${times.length} queries)`,
      );
      process.stderr.write(`${line[line.length - 1]}\n`);
    }
    console.log(line.join("\n"));
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
