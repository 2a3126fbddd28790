/**
 * `npm run bench:search`: the in-process search engine at catalog scale. 100,000 synthetic
 * products (lib/demo-catalog.ts, deterministic), then:
 * - index build, docs/s, of OUR engine (`MiniSearchEngine.index()`), alone in the heap: the
 *   median of 3 builds;
 * - the memory retained after a forced GC (JS heap + ArrayBuffers: the postings are typed
 *   arrays), the products included;
 * - query latency p50/p99 for single-word, multi-word, typo and filtered queries through
 *   `search()` (matching + filters + facets over all matches + sort + page), our index
 *   alone in the heap;
 * - upserts/s on the built index: a changed name (new words), and a stock-only change;
 * - for reference (BENCH_REFERENCE=0 skips it): the raw MiniSearch 7.2 library with the
 *   options of the engine before #16 (fuzzy AUTO:4,6 on every term, prefix on the last, AND
 *   then OR; filters as a `filter` callback over stored fields, no facets), built and queried
 *   after ours was dropped, so that one run shows before and after on the same machine state.
 * BENCH_DOCS (default 100000), BENCH_QUERIES per class (default 300).
 * Appends a section to bench/RESULTS.md (BENCH_RECORD=0: print only).
 */
import os from "node:os";
import v8 from "node:v8";
import vm from "node:vm";
import MiniSearch from "minisearch";
import { autoFuzziness, parseSearchQuery, type ProductDoc, type RawSearchQuery } from "../services/search/engines/engine";
import { MiniSearchEngine, SEARCH_FIELDS, BOOST } from "../services/search/engines/minisearch-engine";
import { syntheticProducts } from "../lib/demo-catalog";
import { appendResults, summaryFigure } from "./support";

const N = Number(process.env.BENCH_DOCS ?? 100_000);
const PER_CLASS = Number(process.env.BENCH_QUERIES ?? 300);
const REFERENCE = process.env.BENCH_REFERENCE !== "0";

/** The query classes (also run by bench/search-candidates.ts). */
export const CLASSES: Record<string, RawSearchQuery[]> = {
  "single word": ["laptop", "sneakers", "galaxy", "blender", "watch", "camera", "chair", "lego", "headphones", "console"].map((q) => ({
    q,
  })),
  "multi-word": [
    "sony wireless headphones",
    "apple macbook pro",
    "running shoes blue",
    "espresso machine black",
    "lenovo thinkpad 14",
    "garmin smartwatch sport",
    "lego building set",
    "canon mirrorless camera",
  ].map((q) => ({ q })),
  typo: ["iphnoe", "hedphones", "labtop", "sneekers", "mirorless", "smartwach", "blendr", "macbok pro", "samsumg galaxy", "playstaton"].map(
    (q) => ({ q }),
  ),
  filtered: [
    { q: "headphones", category: "Headphones", inStock: "true", sort: "price_asc" },
    { q: "pro", brand: "Apple", minPrice: "50000", maxPrice: "200000" },
    { q: "camera", category: "Cameras", brand: "Sony", inStock: "true" },
    { q: "", category: "Laptops", minPrice: "100000", sort: "price_desc" },
    { q: "shoes", inStock: "true", sort: "newest", page: "3" },
    { q: "wireless black", category: "Gaming", maxPrice: "20000" },
  ],
};

/** The MiniSearch options of the engine before #16 (the reference, and a candidate in search-candidates.ts). */
export function miniSearchOptions() {
  return {
    idField: "id",
    fields: [...SEARCH_FIELDS],
    storeFields: [] as string[],
    extractField: (doc: ProductDoc, field: string): string => {
      const v = (doc as unknown as Record<string, unknown>)[field];
      return Array.isArray(v) ? v.join(" ") : typeof v === "string" ? v : v == null ? "" : JSON.stringify(v);
    },
  };
}
export const miniSearchQuery = (combineWith: "AND" | "OR") => ({
  boost: BOOST,
  fuzzy: (term: string) => autoFuzziness(term),
  prefix: (_term: string, i: number, terms: string[]) => i === terms.length - 1,
  combineWith,
});

export function pct(samples: number[]): { p50: number; p99: number; mean: number } {
  const s = samples.slice().sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
  return { p50: at(0.5), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const fmt = (n: number, d = 2) => n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const progress = (s: string) => process.stderr.write(s);
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
/** Retained memory after a forced GC, MB: the JS heap plus ArrayBuffer backing stores (our postings are typed arrays, outside the heap). */
export const memoryMb = () => {
  gc();
  const m = process.memoryUsage();
  return (m.heapUsed + m.arrayBuffers) / 1048576;
};

interface ClassResult {
  name: string;
  p50: number;
  p99: number;
  mean: number;
  matches: number;
}

/** Runs every class (a warm-up round, then PER_CLASS queries) through `run`, which returns the match count. */
async function runClasses(label: string, run: (q: RawSearchQuery) => Promise<number> | number): Promise<ClassResult[]> {
  const out: ClassResult[] = [];
  for (const [name, queries] of Object.entries(CLASSES)) {
    progress(`${label}: ${name} (${PER_CLASS})… `);
    for (const q of queries) await run(q);
    const times: number[] = [];
    let matches = 0;
    for (let i = 0; i < PER_CLASS; i++) {
      const t = process.hrtime.bigint();
      matches += await run(queries[i % queries.length]);
      times.push(ms(t));
    }
    const r = { name, ...pct(times), matches: matches / PER_CLASS };
    progress(`p50 ${fmt(r.p50)} ms p99 ${fmt(r.p99)} ms\n`);
    out.push(r);
  }
  return out;
}

async function main() {
  const load0 = os.loadavg()[0];
  progress(`generating ${N.toLocaleString("en-US")} synthetic products… `);
  let t = process.hrtime.bigint();
  const products = syntheticProducts(N);
  progress(`${fmt(ms(t), 0)} ms\n`);
  const memProducts = memoryMb();

  // Three builds, each into a fresh engine alone in the heap: the median is reported (a build
  // lasts about a second, short enough for one burst of another process to halve it).
  progress("our engine index(), 3 builds… ");
  const timeIndex = async (e: MiniSearchEngine) => {
    memoryMb();
    const t0 = process.hrtime.bigint();
    await e.index(products);
    return ms(t0);
  };
  const buildMs = [await timeIndex(new MiniSearchEngine()), await timeIndex(new MiniSearchEngine())]; // dropped at once
  let engine: MiniSearchEngine | undefined = new MiniSearchEngine();
  buildMs.push(await timeIndex(engine));
  const ourIndexMs = buildMs.slice().sort((a, b) => a - b)[1];
  const ourMem = memoryMb();
  progress(`${fmt(ourIndexMs, 0)} ms (${await engine.count()} docs), memory ${fmt(ourMem, 0)} MB\n`);

  const ours = await runClasses("ours", async (q) => (await engine!.search(parseSearchQuery(q))).total);

  // sanity: the typo query finds the word
  const typo = await engine.search(parseSearchQuery({ q: "iphnoe", pageSize: "1" }));
  if (!typo.items[0]?.name.includes("iPhone")) throw new Error("iphnoe did not find an iPhone");

  const U = Math.min(5000, N);
  const upserts = async (copies: ProductDoc[]) => {
    const t0 = process.hrtime.bigint();
    for (const p of copies) await engine!.upsert(p);
    return (U / ms(t0)) * 1000;
  };
  progress("upserts… ");
  const renamed = Array.from({ length: U }, (_, i) => products[(i * 7919) % N]).map((p) => ({
    ...p,
    name: `${p.name} v2`,
    version: p.version + 1,
  }));
  const upsertText = await upserts(renamed);
  const upsertStock = await upserts(renamed.map((p) => ({ ...p, stock: { ...p.stock, available: 0 }, version: p.version + 1 })));
  progress(`new words ${fmt(upsertText, 0)}/s, stock only ${fmt(upsertStock, 0)}/s\n`);
  engine = undefined;

  // ---- reference: raw MiniSearch with the options of the engine before #16 ----
  let ref: { indexMs: number; mem: number; classes: ClassResult[] } | undefined;
  if (REFERENCE) {
    memoryMb();
    progress("reference: raw MiniSearch addAll… ");
    const raw = new MiniSearch<ProductDoc>({ ...miniSearchOptions(), storeFields: ["category", "brand", "price", "stock"] });
    t = process.hrtime.bigint();
    raw.addAll(products);
    const indexMs = ms(t);
    const mem = memoryMb();
    progress(`${fmt(indexMs, 0)} ms, memory ${fmt(mem, 0)} MB\n`);
    type Stored = { category?: string; brand?: string; price?: { amount: number }; stock?: { available: number } };
    const classes = await runClasses("raw MiniSearch", (raw0) => {
      const q = parseSearchQuery(raw0);
      const filter = (r: Stored) =>
        (q.category === undefined || r.category === q.category) &&
        (q.brand === undefined || r.brand === q.brand) &&
        (q.minPrice === undefined || r.price!.amount >= q.minPrice) &&
        (q.maxPrice === undefined || r.price!.amount <= q.maxPrice) &&
        (!q.inStock || r.stock!.available > 0);
      if (!q.q) return raw.search(MiniSearch.wildcard, { filter: filter as never }).length;
      let res = raw.search(q.q, { ...miniSearchQuery("AND"), filter: filter as never });
      if (!res.length) res = raw.search(q.q, { ...miniSearchQuery("OR"), filter: filter as never });
      return res.length;
    });
    ref = { indexMs, mem, classes };
  }

  const docsPerS = (msx: number) => (N / msx) * 1000;
  const rows = ours.map((o, i) => {
    const r = ref?.classes[i];
    return `| ${o.name} | ${fmt(o.matches, 0)} | ${fmt(o.p50)} | ${fmt(o.p99)} | ${r ? `${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.mean / o.mean, 0)}×` : "– | – | –"} |`;
  });
  const section = [
    "",
    "## Search (`npm run bench:search`)",
    "",
    `**Run of ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC**, ${N.toLocaleString("en-US")} synthetic products (12 categories, 8 brands each, deterministic seed),`,
    `${PER_CLASS} queries per class, one process. Machine: ${os.cpus().length} vCPUs, Node ${process.version}, load average ${load0.toFixed(1)} → ${os.loadavg()[0].toFixed(1)}.`,
    `Memory retained (after a forced GC: JS heap + ArrayBuffers), the products included: products alone ${fmt(memProducts, 0)} MB, with our index ${fmt(ourMem, 0)} MB` +
      (ref ? `; with raw MiniSearch instead ${fmt(ref.mem, 0)} MB.` : "."),
    "",
    "| index build | ms | docs/s |",
    "|---|---:|---:|",
    `| our \`MiniSearchEngine.index\` (yields every 1,000; alone in the heap): median of 3 builds (${buildMs.map((x) => fmt(x, 0)).join(", ")} ms) | ${fmt(ourIndexMs, 0)} | ${fmt(docsPerS(ourIndexMs), 0)} |`,
    ...(ref
      ? [`| reference: raw MiniSearch 7.2 \`addAll\` (alone in the heap) | ${fmt(ref.indexMs, 0)} | ${fmt(docsPerS(ref.indexMs), 0)} |`]
      : []),
    "",
    "| queries | avg matches (ours) | ours p50 ms | ours p99 ms | raw MiniSearch p50 ms | raw MiniSearch p99 ms | raw/ours (mean) |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    `Upserts on the built index: ${fmt(upsertText, 0)}/s with new words in the name, ${fmt(upsertStock, 0)}/s for a stock-only change (columns updated in place).`,
    "Ours = matching (fuzzy AUTO:4,6 for a term the vocabulary lacks, prefix on the last term, AND then OR) + filters + category/brand facets counted over every match + sort + page;",
    "raw MiniSearch = the library's `search` with the options of the engine before #16 (fuzzy on every term) and a `filter` callback over stored fields (no facets, no sort beyond score, no paging).",
    "",
  ].join("\n");
  process.stdout.write(`${section}\n`);
  // Headline figures for `npm run bench` (BENCH_SUMMARY).
  const size = `${N.toLocaleString("en-US")} docs`;
  for (const x of ours)
    summaryFigure(
      "search",
      `${x.name} queries p50 / p99 (${size})`,
      `${fmt(x.p50)} / ${fmt(x.p99)} ms`,
      "p50 <= 5, p99 <= 25 ms",
      x.p50 <= 5 && x.p99 <= 25,
    );
  summaryFigure("search", `index build, docs/s (${size})`, fmt(docsPerS(ourIndexMs), 0), ">= 60,000", docsPerS(ourIndexMs) >= 60_000);
  summaryFigure("search", `heap + ArrayBuffers, products and our index (${size})`, `${fmt(ourMem, 0)} MB`, "<= 300 MB", ourMem <= 300);
  summaryFigure("search", "check", "OK (typo query 'iphnoe' finds an iPhone)", undefined, true);
  if (process.env.BENCH_RECORD !== "0") appendResults(section);
}

if (require.main === module)
  main().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`${(err as Error).stack}\n`);
      process.exit(1);
    },
  );
