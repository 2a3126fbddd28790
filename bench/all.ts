/**
 * `npm run bench` (#16): the SHORT version of every benchmark, one after the other, each as a
 * child process (`npx tsx bench/<name>.bench.ts`) with small durations and sizes set through its
 * BENCH_* environment, BENCH_RECORD=0 (nothing appended to RESULTS.md) and BENCH_SUMMARY set to
 * a temp file where each benchmark writes its headline figures (support.ts `summaryFigure`).
 * Then ONE table: benchmark, figure, value, target, met?. Targets are shown, not enforced.
 *
 * Environment: BENCH_ONLY (a comma list of the names below, e.g. gateway,search), BENCH_CHILD_OUTPUT
 * (1: echo each benchmark's output to stderr; otherwise only its last lines on a failure).
 * Exit 1 if a benchmark failed (exit code, or no figures) or a correctness check failed.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { markdownTable, type SummaryFigure } from "./support";
import { statusLine } from "../lib/progress";
import { signalGroup } from "../test/support/proc";

interface Bench {
  name: string;
  file: string;
  /** The short settings (read each benchmark's header for the variables). */
  env: Record<string, string>;
}

const BENCHES: Bench[] = [
  {
    name: "gateway",
    file: "gateway.bench.ts",
    env: { BENCH_DURATION_S: "5", BENCH_WARMUP_S: "2", BENCH_ROUTES: "/api/users/me", BENCH_LOG_LEVEL: "warn" },
  },
  {
    name: "catalog",
    file: "catalog.bench.ts",
    env: { BENCH_DURATION_S: "5", BENCH_WARMUP_S: "2", BENCH_CASES: "bare,memory", BENCH_LOG_LEVEL: "warn" },
  },
  {
    name: "checkout",
    file: "checkout.bench.ts",
    env: {
      // No raw MariaDB baseline; the flash sale at the issue's size (1,000 buyers, 100 units).
      BENCH_PARTS: "checkout,flash",
      BENCH_DURATION_S: "8",
      BENCH_WARMUP_S: "2",
      BENCH_BUYERS: "1000",
      BENCH_FLASH_BUYERS: "1000",
      BENCH_FLASH_UNITS: "100",
    },
  },
  {
    name: "checkout-embedded",
    file: "checkout.bench.ts",
    // One node with every service on SQLite; the checkout loop only (the flash sale is a cluster figure).
    env: { BENCH_MODE: "embedded", BENCH_PARTS: "checkout", BENCH_DURATION_S: "8", BENCH_WARMUP_S: "2", BENCH_BUYERS: "20" },
  },
  { name: "events", file: "events.bench.ts", env: { BENCH_EVENTS: "2000" } },
  { name: "search", file: "search.bench.ts", env: { BENCH_DOCS: "20000", BENCH_QUERIES: "100" } },
  {
    name: "recs",
    file: "recs.bench.ts",
    env: {
      BENCH_DURATION_S: "3",
      BENCH_WARMUP_S: "1",
      BENCH_RECS_ORDERS: "20000",
      BENCH_RECS_PRODUCTS: "2000",
      BENCH_RECS_USERS: "20",
      BENCH_UPDATE_ORDERS: "300",
      BENCH_RECS_MARIADB: "0",
    },
  },
  { name: "grpc", file: "grpc.bench.ts", env: { BENCH_ROUND_MS: "1000", BENCH_STREAM_ORDERS: "10" } },
  { name: "sqlite", file: "sqlite-statements.bench.ts", env: {} },
];

/** A benchmark that takes longer than this is stopped (SIGTERM, then SIGKILL) and reported FAILED. */
const TIMEOUT_MS = 240_000;

const secs = (ms: number) => `${(ms / 1000).toFixed(0)} s`;

interface Outcome {
  bench: Bench;
  code: number | null;
  ms: number;
  tail: string[];
}

function runOne(bench: Bench, summaryFile: string, index: number, total: number): Promise<Outcome> {
  const t0 = Date.now();
  process.stderr.write(
    `\n[${index}/${total}] ${bench.name}: npx tsx bench/${bench.file} ${Object.entries(bench.env)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ")}\n`,
  );
  const child = spawn("npx", ["tsx", path.join(__dirname, bench.file)], {
    env: { ...process.env, ...bench.env, BENCH_RECORD: "0", BENCH_SUMMARY: summaryFile },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own process group: a timeout stops npx, tsx and the benchmark's children
  });
  current = child;
  const tail: string[] = [];
  const keep = (chunk: Buffer) => {
    const text = chunk.toString();
    if (process.env.BENCH_CHILD_OUTPUT) process.stderr.write(text);
    tail.push(...text.split(/\r|\n/).filter((l) => l.trim()));
    if (tail.length > 40) tail.splice(0, tail.length - 40);
  };
  child.on("error", (err) => tail.push(`could not run npx: ${err.message}`));
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  // Elapsed time: rewritten in place on a terminal, a line every 30 s otherwise (a log file).
  const elapsed = () => `  ${bench.name}: ${Math.round((Date.now() - t0) / 1000)} s elapsed, total ${secs(Date.now() - started)}`;
  const status = statusLine(elapsed(), { everyMs: 30_000 });
  const ticker = setInterval(() => status.set(elapsed()), 1000);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    tail.push(`stopped after ${secs(TIMEOUT_MS)} (timeout)`);
    signalGroup(child.pid, "SIGTERM");
    setTimeout(() => signalGroup(child.pid, "SIGKILL"), 20_000).unref();
  }, TIMEOUT_MS);
  return new Promise((resolve) => {
    child.on("close", (code) => {
      clearInterval(ticker);
      status.stop();
      clearTimeout(timer);
      current = undefined;
      const ms = Date.now() - t0;
      const result = timedOut ? null : code;
      process.stderr.write(
        `  ${bench.name}: ${result === 0 ? "done" : `FAILED (exit ${result ?? "timeout"})`} in ${secs(ms)}, total ${secs(Date.now() - started)}\n`,
      );
      if (result !== 0 && !process.env.BENCH_CHILD_OUTPUT)
        process.stderr.write(
          tail
            .slice(-15)
            .map((l) => `    | ${l}\n`)
            .join(""),
        );
      resolve({ bench, code: result, ms, tail });
    });
  });
}

let current: ReturnType<typeof spawn> | undefined;
const started = Date.now();

async function main(): Promise<void> {
  const only = (process.env.BENCH_ONLY ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = only.filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length) {
    process.stderr.write(`BENCH_ONLY: unknown benchmark(s) ${unknown.join(", ")}; known: ${BENCHES.map((b) => b.name).join(", ")}\n`);
    process.exit(2);
  }
  const selected = only.length ? BENCHES.filter((b) => only.includes(b.name)) : BENCHES;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-bench-all-"));
  const summaryFile = path.join(dir, "summary.jsonl");
  fs.writeFileSync(summaryFile, "");
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const)
    process.on(signal, () => {
      // The benchmark cleans up on SIGTERM itself (its own cleanup list).
      if (current) signalGroup(current.pid, "SIGTERM");
      process.stderr.write(`\n${signal}: stopping the running benchmark...\n`);
      setTimeout(() => process.exit(code), 20_000).unref();
      current?.on("close", () => process.exit(code));
      if (!current) process.exit(code);
    });

  const header =
    `npm run bench (short runs), ${new Date().toISOString()}: Node ${process.version}, ${os.cpus().length} CPU(s) (${os.cpus()[0]?.model.trim()}); ` +
    `load average at start ${os.loadavg()[0].toFixed(2)}`;
  process.stderr.write(`${header}\n`);
  const outcomes: Outcome[] = [];
  for (const [i, bench] of selected.entries()) outcomes.push(await runOne(bench, summaryFile, i + 1, selected.length));

  const figures = fs
    .readFileSync(summaryFile, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as SummaryFigure);
  fs.rmSync(dir, { recursive: true, force: true });
  let failed = false;
  const rows: string[][] = [];
  for (const o of outcomes) {
    const mine = figures.filter((f) => f.bench === o.bench.name);
    const checks = mine.filter((f) => f.figure === "check");
    for (const f of mine.filter((x) => x.figure !== "check"))
      rows.push([
        o.bench.name,
        f.figure,
        f.value,
        f.target ?? "-",
        f.target === undefined || f.ok === undefined ? "-" : f.ok ? "yes" : "NO",
      ]);
    let check: string;
    if (o.code !== 0) {
      failed = true;
      const why = o.code === null ? `timeout after ${secs(TIMEOUT_MS)}` : `exit ${o.code}`;
      const last = [...o.tail].reverse().find((l) => /error|fail|mismatch/i.test(l)) ?? o.tail.at(-1) ?? "";
      check = `FAILED (${why}${checks.length ? `; ${checks.map((c) => c.value).join("; ")}` : ""})${last ? `: ${last.trim().slice(0, 120)}` : ""}`;
    } else if (!checks.length) {
      failed = true;
      check = "FAILED (no check reported)";
    } else if (checks.some((c) => c.ok === false)) {
      failed = true;
      check = checks.map((c) => c.value).join("; ");
    } else check = checks.map((c) => c.value).join("; ");
    rows.push([o.bench.name, `check (${secs(o.ms)})`, check, "-", "-"]);
  }
  const table = markdownTable(["benchmark", "figure", "value", "target", "met?"], rows);
  const total = Date.now() - started;
  process.stdout.write(
    `\n${header}, at end ${os.loadavg()[0].toFixed(2)}\n\n${table}\n\n` +
      `Total wall time: ${(total / 1000).toFixed(0)} s (${(total / 60000).toFixed(1)} min). Short runs: figures are indicative; ` +
      "a figure's size differs from the target's where the label says so (targets are for the full runs, see bench/README.md).\n",
  );
  if (failed) {
    process.stderr.write("\nFAILED: a benchmark failed or a correctness check failed (see the check rows).\n");
    process.exit(1);
  }
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`\n${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  if (current) signalGroup(current.pid, "SIGTERM");
  process.exit(1);
});
