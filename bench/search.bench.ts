/**
 * `npm run bench:search`: the in-process search engine at catalog scale. 100,000 synthetic
 * products (services/search/engines/synthetic.ts, deterministic), then:
 * - index build, docs/s: OUR MiniSearchEngine.index() vs the raw MiniSearch library's
 *   addAll() with the same field options, in the same run (ratio);
 * - query latency p50/p99 for a mix of single-word, multi-word, typo and filtered queries:
 *   OUR engine's search() (matching + filters + facets over all matches + sort + page)
 *   vs raw MiniSearch's search() (matching only, AND then OR; filters as MiniSearch's
 *   `filter` callback over stored fields), same queries, same process;
 * - upserts/s (replace) on the built index.
 * BENCH_DOCS (default 100000), BENCH_QUERIES per class (default 300).
 * Appends a section to bench/RESULTS.md (BENCH_RECORD=0: print only).
 */
import os from "node:os";
import MiniSearch from "minisearch";
import { parseSearchQuery, type ProductDoc, type RawSearchQuery } from "../services/search/engines/engine";
import { MiniSearchEngine, miniSearchOptions, queryOptions } from "../services/search/engines/minisearch-engine";
import { syntheticProducts } from "../lib/demo-catalog";
import { appendResults, summaryFigure } from "./support";

const N = Number(process.env.BENCH_DOCS ?? 100_000);
const PER_CLASS = Number(process.env.BENCH_QUERIES ?? 300);

const CLASSES: Record<string, RawSearchQuery[]> = {
  "single word": ["laptop", "sneakers", "galaxy", "blender", "watch", "camera", "chair", "lego", "headphones", "console"].map((q) => ({ q })),
  "multi-word": ["sony wireless headphones", "apple macbook pro", "running shoes blue", "espresso machine black", "lenovo thinkpad 14", "garmin smartwatch sport", "lego building set", "canon mirrorless camera"].map((q) => ({ q })),
  typo: ["iphnoe", "hedphones", "labtop", "sneekers", "mirorless", "smartwach", "blendr", "macbok pro", "samsumg galaxy", "playstaton"].map((q) => ({ q })),
  filtered: [
    { q: "headphones", category: "Headphones", inStock: "true", sort: "price_asc" },
    { q: "pro", brand: "Apple", minPrice: "50000", maxPrice: "200000" },
    { q: "camera", category: "Cameras", brand: "Sony", inStock: "true" },
    { q: "", category: "Laptops", minPrice: "100000", sort: "price_desc" },
    { q: "shoes", inStock: "true", sort: "newest", page: "3" },
    { q: "wireless black", category: "Gaming", maxPrice: "20000" },
  ],
};

function pct(samples: number[]): { p50: number; p99: number; mean: number } {
  const s = samples.slice().sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
  return { p50: at(0.5), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const fmt = (n: number, d = 2) => n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const progress = (s: string) => process.stderr.write(s);

async function main() {
  const load0 = os.loadavg()[0];
  progress(`generating ${N.toLocaleString("en-US")} synthetic products… `);
  let t = process.hrtime.bigint();
  const products = syntheticProducts(N);
  progress(`${fmt(ms(t), 0)} ms\n`);

  // ---- raw MiniSearch: addAll with the same fields, plus the stored fields its filter needs ----
  progress("raw MiniSearch addAll… ");
  const rawOpts = { ...miniSearchOptions(), storeFields: ["category", "brand", "price", "stock"] };
  let raw: MiniSearch<ProductDoc> | undefined = new MiniSearch<ProductDoc>(rawOpts);
  t = process.hrtime.bigint();
  raw.addAll(products);
  const rawIndexMs = ms(t);
  progress(`${fmt(rawIndexMs, 0)} ms\n`);
  // Each build is timed with only itself in the heap: the raw index is dropped, and rebuilt
  // (untimed) after ours for the query comparison.
  raw = undefined;
  await new Promise((r) => setTimeout(r, 500));

  progress("our engine index()… ");
  const engine = new MiniSearchEngine();
  t = process.hrtime.bigint();
  await engine.index(products);
  const ourIndexMs = ms(t);
  progress(`${fmt(ourIndexMs, 0)} ms (${await engine.count()} docs)\n`);
  progress("raw MiniSearch rebuilt for the queries (untimed)… ");
  const rawIdx = new MiniSearch<ProductDoc>(rawOpts);
  rawIdx.addAll(products);
  progress("done\n");
  const heapMb = process.memoryUsage().heapUsed / 1048576;

  type RawFilter = (r: { category?: string; brand?: string; price?: { amount: number }; stock?: { available: number } }) => boolean;
  const rawSearch = (raw0: RawSearchQuery) => {
    const q = parseSearchQuery(raw0);
    const filter: RawFilter = (r) =>
      (q.category === undefined || r.category === q.category) &&
      (q.brand === undefined || r.brand === q.brand) &&
      (q.minPrice === undefined || r.price!.amount >= q.minPrice) &&
      (q.maxPrice === undefined || r.price!.amount <= q.maxPrice) &&
      (!q.inStock || r.stock!.available > 0);
    if (!q.q) return rawIdx.search(MiniSearch.wildcard, { filter: filter as never });
    let res = rawIdx.search(q.q, { ...queryOptions("AND"), filter: filter as never });
    if (!res.length) res = rawIdx.search(q.q, { ...queryOptions("OR"), filter: filter as never });
    return res;
  };

  const rows: string[] = [];
  const allOurs: number[] = [];
  const allRaw: number[] = [];
  const perClass: [string, { p50: number; p99: number }][] = [];
  for (const [name, queries] of Object.entries(CLASSES)) {
    progress(`queries: ${name} (${PER_CLASS} each side)… `);
    // warm-up
    for (const q of queries) {
      await engine.search(parseSearchQuery(q));
      rawSearch(q);
    }
    const ours: number[] = [];
    const rawT: number[] = [];
    let totalHits = 0;
    for (let i = 0; i < PER_CLASS; i++) {
      const q = queries[i % queries.length];
      // alternate which side goes first, so neither always gets the warmer cache
      if (i % 2) {
        t = process.hrtime.bigint();
        rawSearch(q);
        rawT.push(ms(t));
      }
      t = process.hrtime.bigint();
      const r = await engine.search(parseSearchQuery(q));
      ours.push(ms(t));
      totalHits += r.total;
      if (!(i % 2)) {
        t = process.hrtime.bigint();
        rawSearch(q);
        rawT.push(ms(t));
      }
    }
    allOurs.push(...ours);
    allRaw.push(...rawT);
    const o = pct(ours);
    const r = pct(rawT);
    perClass.push([name, o]);
    progress(`ours p50 ${fmt(o.p50)} ms p99 ${fmt(o.p99)} ms; raw p50 ${fmt(r.p50)} ms p99 ${fmt(r.p99)} ms\n`);
    rows.push(`| ${name} | ${fmt(totalHits / PER_CLASS, 0)} | ${fmt(o.p50)} | ${fmt(o.p99)} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(o.mean / r.mean, 1)}× |`);
  }
  const o = pct(allOurs);
  const r = pct(allRaw);
  rows.push(`| **all** | | ${fmt(o.p50)} | ${fmt(o.p99)} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(o.mean / r.mean, 1)}× |`);

  // sanity: the typo query finds the word
  const typo = await engine.search(parseSearchQuery({ q: "iphnoe", pageSize: "1" }));
  if (!typo.items[0]?.name.includes("iPhone")) throw new Error("iphnoe did not find an iPhone");

  progress("upserts (replace)… ");
  const U = 5000;
  t = process.hrtime.bigint();
  for (let i = 0; i < U; i++) {
    const p = products[(i * 7919) % N];
    await engine.upsert({ ...p, name: `${p.name} v2`, updatedAt: new Date().toISOString() });
  }
  const upsertMs = ms(t);
  progress(`${fmt((U / upsertMs) * 1000, 0)}/s\n`);

  const docsPerS = (msx: number) => (N / msx) * 1000;
  const section = [
    "",
    "## Search (`npm run bench:search`)",
    "",
    `**Run of ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC**, ${N.toLocaleString("en-US")} synthetic products (12 categories, 8 brands each, deterministic seed),`,
    `${PER_CLASS} queries per class, one process. Machine: ${os.cpus().length} vCPUs, Node ${process.version}, load average ${load0.toFixed(1)} → ${os.loadavg()[0].toFixed(1)};`,
    `heap with both indexes (for the queries): ${fmt(heapMb, 0)} MB.`,
    "",
    "| index build | ms | docs/s | vs raw |",
    "|---|---:|---:|---:|",
    `| raw MiniSearch \`addAll\` (alone in the heap) | ${fmt(rawIndexMs, 0)} | ${fmt(docsPerS(rawIndexMs), 0)} | 100 % |`,
    `| our \`MiniSearchEngine.index\` (addAllAsync, chunks of 1,000; alone in the heap) | ${fmt(ourIndexMs, 0)} | ${fmt(docsPerS(ourIndexMs), 0)} | ${fmt((rawIndexMs / ourIndexMs) * 100, 0)} % |`,
    "",
    "| queries | avg matches | ours p50 ms | ours p99 ms | raw p50 ms | raw p99 ms | ours/raw (mean) |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    `Upserts (MiniSearch \`replace\`) on the built index: ${fmt((U / upsertMs) * 1000, 0)}/s.`,
    "Ours = matching (fuzzy AUTO:4,6, prefix on the last term, AND then OR) + filters + category/brand facets counted over every match + sort + page;",
    "raw = the library's `search` with the same matching options and a `filter` callback over stored fields (no facets, no sort beyond score, no paging).",
    "",
  ].join("\n");
  process.stdout.write(`${section}\n`);
  // Headline figures for `npm run bench` (BENCH_SUMMARY).
  const size = `${N.toLocaleString("en-US")} docs`;
  for (const [name, x] of perClass)
    summaryFigure("search", `${name} queries p50 / p99 (${size})`, `${fmt(x.p50)} / ${fmt(x.p99)} ms`, "p50 <= 5, p99 <= 25 ms", x.p50 <= 5 && x.p99 <= 25);
  summaryFigure("search", `index build, docs/s (${size})`, fmt(docsPerS(ourIndexMs), 0), ">= 60,000", docsPerS(ourIndexMs) >= 60_000);
  summaryFigure("search", `heap with both indexes (${size})`, `${fmt(heapMb, 0)} MB`, "<= 300 MB", heapMb <= 300);
  summaryFigure("search", "check", "OK (typo query 'iphnoe' finds an iPhone)", undefined, true);
  if (process.env.BENCH_RECORD !== "0") {
    appendResults(section);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(1);
  },
);
