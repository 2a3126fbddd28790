/**
 * Shared pieces of the benchmarks: autocannon runs with progress, child processes that
 * are always stopped, a cleanup list run once on success, failure or Ctrl-C, and
 * markdown tables.
 */
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import fs from "node:fs";
import inspector from "node:inspector";
import path from "node:path";
import readline from "node:readline";
import { inspect } from "node:util";
import type { ChildHandle } from "../test/support/proc";

// ---- autocannon (no bundled typings: the part of its API used here) ----

export interface Histogram {
  average: number;
  mean: number;
  stddev: number;
  min: number;
  max: number;
  total: number;
  p50: number;
  p90: number;
  p97_5: number;
  p99: number;
}

export interface LoadResult {
  requests: Histogram & { sent: number };
  latency: Histogram;
  duration: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  non2xx: number;
  statusCodeStats: Record<string, { count: number }>;
}

interface AutocannonOptions {
  url: string;
  connections: number;
  duration: number;
  headers?: Record<string, string>;
  title?: string;
}
interface AutocannonInstance extends EventEmitter {
  stop(): void;
}
type Autocannon = (opts: AutocannonOptions, cb: (err: Error | null, result: LoadResult) => void) => AutocannonInstance;
// autocannon ships no type declarations (an import of it is an implicit any, an error under strict): typed above.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- untyped package, typed by hand above
const autocannon: Autocannon = require("autocannon");

let running: AutocannonInstance | undefined;

/** Latency percentiles in ms with sub-millisecond precision (autocannon's histogram keeps whole ms). */
export interface Latency {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface Measured {
  result: LoadResult;
  latency: Latency;
}

function percentiles(samples: Float64Array): Latency {
  samples.sort();
  const at = (q: number) => (samples.length ? samples[Math.min(samples.length - 1, Math.ceil(q * samples.length) - 1)] : NaN);
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: samples.length ? samples[samples.length - 1] : NaN };
}

/**
 * One autocannon run; writes a countdown (one number per second) to stderr.
 * Rejects on a setup error; request errors are counted in the result, not thrown.
 */
export function load(opts: AutocannonOptions, label: string): Promise<Measured> {
  return new Promise((resolve, reject) => {
    process.stderr.write(`    ${label} ${opts.duration}s:`);
    let left = opts.duration;
    let samples = new Float64Array(1 << 16);
    let n = 0;
    const instance = autocannon(opts, (err, result) => {
      running = undefined;
      process.stderr.write(" done\n");
      if (err) reject(err);
      else resolve({ result, latency: percentiles(samples.subarray(0, n)) });
    });
    running = instance;
    instance.on("tick", () => left > 0 && process.stderr.write(` ${--left}`));
    // Every response, 2xx or not, as autocannon counts them (responseTime: float ms from hrtime).
    instance.on("response", (_client: unknown, _status: number, _bytes: number, responseTime: number) => {
      if (n === samples.length) {
        const bigger = new Float64Array(samples.length * 2);
        bigger.set(samples);
        samples = bigger;
      }
      samples[n++] = responseTime;
    });
  });
}

/** Stops the autocannon run in progress, if any (Ctrl-C). */
export function stopLoad(): void {
  running?.stop();
}

// ---- cleanup: LIFO, each step once, run on success, failure and signals ----

interface CleanupStep {
  what: string;
  run(): Promise<void>;
}
const cleanups: CleanupStep[] = [];

/** Registers a cleanup step; it runs once, whether through `scoped`, `cleanupAll` or both. */
export function onCleanup(what: string, fn: () => unknown): void {
  let done: Promise<void> | undefined;
  const step: CleanupStep = {
    what,
    run: () =>
      (done ??= (async () => {
        try {
          await fn();
        } catch (err) {
          process.stderr.write(`cleanup: ${what} failed: ${err instanceof Error ? err.message : String(err)}\n`);
        } finally {
          const i = cleanups.indexOf(step);
          if (i >= 0) cleanups.splice(i, 1);
        }
      })()),
  };
  cleanups.push(step);
}

async function runFrom(mark: number): Promise<void> {
  // Newest first; a step already running (e.g. started by `scoped` before a Ctrl-C) is awaited.
  for (const step of cleanups.slice(mark).reverse()) await step.run();
}

/** Runs every cleanup step still registered, newest first. */
export function cleanupAll(): Promise<void> {
  return runFrom(0);
}

/** Runs `fn`, then the cleanup steps it registered (newest first), even if it throws. */
export async function scoped<T>(fn: () => Promise<T>): Promise<T> {
  const mark = cleanups.length;
  try {
    return await fn();
  } finally {
    await runFrom(mark);
  }
}

let exiting = false;
/** Set by a crash (see installSignalCleanup): the run's figures are not recorded and it exits 1. */
let crashed = false;

/** True once Ctrl-C / SIGTERM was received, or the run crashed: the run should start nothing new. */
export function aborting(): boolean {
  return exiting;
}

/** A cleanup that has not finished by then (a step that hangs) is given up, and the process exits anyway. */
const CLEANUP_DEADLINE_MS = 90_000;

/** Stops the load and runs every cleanup step, then exits with `code`; once, whatever asks first. */
function exitAfterCleanup(why: string, code: number): void {
  if (exiting) return;
  exiting = true;
  process.stderr.write(`\n${why}: cleaning up...\n`);
  stopLoad();
  // Not unref'd: it is what ends the process if a step never settles.
  const deadline = setTimeout(() => {
    process.stderr.write(`cleanup: not finished after ${CLEANUP_DEADLINE_MS / 1000} s; exiting without it\n`);
    process.exit(code);
  }, CLEANUP_DEADLINE_MS);
  void cleanupAll().finally(() => {
    clearTimeout(deadline);
    process.exit(code);
  });
}

/**
 * Ctrl-C / SIGTERM: stop the load, clean up everything, exit 130/143. A crash too (an uncaught
 * exception, or a rejection nobody handled, e.g. in a watcher started with `void`): Node would
 * exit at once, leaving the nodes under test running, and each would skew every later
 * measurement on the machine; here the cleanup runs first. After a crash the run's main code may
 * still be going (it sees `aborting()`): whoever exits, the code is 1 (the 'exit' hook below),
 * and nothing more is appended to RESULTS.md. The limit: a SIGKILL of this process (a CI's
 * hard timeout) runs nothing.
 */
export function installSignalCleanup(): void {
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const)
    process.on(signal, () => exitAfterCleanup(signal, code));
  for (const event of ["uncaughtException", "unhandledRejection"] as const)
    process.on(event, (err: unknown) => {
      crashed = true;
      // inspect, not String(): a value without a prototype would make String() throw here, and a
      // throw in this listener would end the process at once, without the cleanup.
      process.stderr.write(`\n${event}: ${err instanceof Error ? (err.stack ?? err.message) : inspect(err)}\n`);
      exitAfterCleanup(event, 1);
    });
  process.on("exit", () => {
    if (crashed) process.exitCode = 1;
  });
}

// ---- child processes ----

export interface BenchChild extends ChildHandle {
  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/** BENCH_CPU_PROF (a directory): where profiled nodes write their V8 .cpuprofile files. */
export const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;

/**
 * Node arguments of a Meridian node under test:
 * - BENCH_NODE_ARGS (split on spaces), for trying a runtime flag on the nodes only (V8's are
 *   refused in NODE_OPTIONS, which would also reach the load generator), e.g.
 *   `BENCH_NODE_ARGS=--interrupt-budget=16384`;
 * - with BENCH_CPU_PROF, profiling: V8 writes one file per thread into
 *   BENCH_CPU_PROF/<case>/<node>/ when the node exits; the largest is the main thread (the small
 *   one is tsx's module-loader thread). Read one with `npx tsx bench/cpuprofile-top.ts`.
 */
export function profileArgs(caseName: string, name: string): string[] {
  const extra = (process.env.BENCH_NODE_ARGS ?? "").split(/\s+/).filter(Boolean);
  return [...extra, ...(CPU_PROF_DIR ? ["--cpu-prof", `--cpu-prof-dir=${path.join(CPU_PROF_DIR, caseName, name)}`] : [])];
}

/**
 * Runs `fn` under the V8 profiler of THIS process when BENCH_CPU_PROF is set, and writes
 * BENCH_CPU_PROF/<name>.cpuprofile: for benches whose system under test runs in-process
 * (recs), where --cpu-prof would mix set-up and every case into one file.
 */
export async function profiledInProcess<T>(name: string, fn: () => Promise<T>): Promise<T> {
  if (!CPU_PROF_DIR) return fn();
  const session = new inspector.Session();
  session.connect();
  const post = (method: string) =>
    new Promise<unknown>((resolve, reject) => session.post(method, (err, res) => (err ? reject(err) : resolve(res))));
  await post("Profiler.enable");
  await post("Profiler.start");
  try {
    return await fn();
  } finally {
    const { profile } = (await post("Profiler.stop")) as { profile: unknown };
    session.disconnect();
    fs.mkdirSync(CPU_PROF_DIR, { recursive: true });
    fs.writeFileSync(path.join(CPU_PROF_DIR, `${name.replace(/[^\w.-]+/g, "_")}.cpuprofile`), JSON.stringify(profile));
  }
}

/**
 * A TypeScript file in a child `node --import tsx` (as test/support/proc.ts spawnTs, plus
 * `nodeArgs` such as --cpu-prof, which NODE_OPTIONS does not accept), stopped by the cleanup.
 * Output is kept line by line; BENCH_CHILD_OUTPUT=1 also echoes it to stderr.
 */
export function startChild(file: string, name: string, env: Record<string, string>, nodeArgs: string[] = []): BenchChild {
  const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", file], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const listeners = new Set<(line: string) => void>();
  let bytes = 0;
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );
  for (const stream of [child.stdout, child.stderr]) {
    stream.on("data", (chunk: Buffer) => (bytes += chunk.length));
    readline.createInterface({ input: stream }).on("line", (line) => {
      lines.push(line);
      if (process.env.BENCH_CHILD_OUTPUT) process.stderr.write(`[${name}] ${line}\n`);
      for (const listener of listeners) listener(line);
    });
  }

  const waitForLine = (re: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> => {
    const found = lines.map((l) => l.match(re)).find((m) => m);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const onLine = (line: string) => {
        const m = line.match(re);
        if (m) done(null, m);
      };
      const done = (err: Error | null, match?: RegExpMatchArray) => {
        listeners.delete(onLine);
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(match!);
      };
      const fail = (why: string) =>
        done(new Error(`${name}: ${why} before a line matched ${re}. Last lines:\n${lines.slice(-20).join("\n")}`));
      const timer = setTimeout(() => fail(`${timeoutMs} ms passed`), timeoutMs);
      listeners.add(onLine);
      void exit.then(() => listeners.has(onLine) && fail("process exited"));
    });
  };
  const kill = (signal: NodeJS.Signals = "SIGTERM") => {
    if (!exited) child.kill(signal);
  };
  const stop = async (graceMs = 15_000) => {
    if (exited) return;
    kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      exit.then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      process.stderr.write(`${name}: no exit ${graceMs} ms after SIGTERM, sending SIGKILL\n`);
      kill("SIGKILL");
      await exit;
    }
  };
  onCleanup(`stop ${name} (pid ${child.pid})`, () => stop());
  return {
    name,
    pid: child.pid!,
    lines,
    get bytes() {
      return bytes;
    },
    waitForLine,
    kill,
    waitExit: () => exit,
    get exitCode() {
      return child.exitCode;
    },
    stop,
  };
}

/** Polls `url` until it answers `status`; fails early if one of `children` exits. */
export async function waitForStatus(url: string, status: number, children: ChildHandle[], timeoutMs = 60_000): Promise<void> {
  const dead = new Set<string>();
  for (const c of children) void c.waitExit().then(() => dead.add(c.name));
  const deadline = Date.now() + timeoutMs;
  let last: string;
  for (;;) {
    if (dead.size) {
      const c = children.find((x) => dead.has(x.name))!;
      throw new Error(`${c.name} exited while waiting for ${url}. Last lines:\n${c.lines.slice(-20).join("\n")}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
      const text = await res.text();
      if (res.status === status) return;
      last = `${res.status} ${text.slice(0, 300)}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * A shared server's pid by its /proc comm (MariaDB, RabbitMQ, Redis), to report its CPU: the
 * longest-running one, since tests elsewhere on the machine may start private servers of their own.
 */
export function pidOf(...comms: string[]): number | undefined {
  let best: { pid: number; start: number } | undefined;
  try {
    for (const entry of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (!comms.includes(fs.readFileSync(`/proc/${entry}/comm`, "utf8").trim())) continue;
        const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
        // Field 22 (starttime), counted after the command name "(...)" as field 3.
        const start = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
        if (!best || start < best.start) best = { pid: Number(entry), start };
      } catch {
        // gone meanwhile
      }
    }
  } catch {
    // no /proc
  }
  return best?.pid;
}

/**
 * CPU time (user + system, all threads) a process has used so far, in seconds, from
 * /proc/<pid>/stat; undefined where there is no /proc (not Linux) or the process is gone.
 */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name "(...)": state is field 3, utime 14, stime 15 (clock ticks).
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}
// USER_HZ: 100 on every Linux architecture Node supports.
const CLOCK_TICKS = 100;

// ---- formatting ----

export function markdownTable(header: string[], rows: string[][], alignRight: boolean[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (alignRight[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(" | ")} |`;
  const sep = `|${widths.map((w, i) => (alignRight[i] ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`;
  return [line(header), sep, ...rows.map(line)].join("\n");
}

/** Appends a benchmark's section to bench/RESULTS.md; others append too, so never rewrite it. */
export function appendResults(section: string): void {
  if (crashed) {
    process.stderr.write("Not appended to bench/RESULTS.md: the run crashed.\n");
    return;
  }
  const file = `${__dirname}/RESULTS.md`;
  const current = fs.readFileSync(file, "utf8");
  fs.appendFileSync(file, (current.endsWith("\n") ? "" : "\n") + section);
}

/** Minimal mysql2 promise pool shape, so this file needs no mysql2 import. */
interface RawPool {
  getConnection(): Promise<{ query(sql: string, values?: unknown[]): Promise<unknown>; release(): void }>;
}

/**
 * The raw baseline of the stock benches: one conditional UPDATE in its own transaction on a
 * pooled mysql2 connection; true when it changed a row (the condition held).
 */
export async function rawConditionalUpdate(pool: RawPool, sql: string, values: unknown[]): Promise<boolean> {
  const conn = await pool.getConnection();
  try {
    await conn.query("BEGIN");
    try {
      const [res] = (await conn.query(sql, values)) as [{ affectedRows: number }];
      await conn.query("COMMIT");
      return res.affectedRows === 1;
    } catch (err) {
      await conn.query("ROLLBACK").catch(() => undefined);
      throw err;
    }
  } finally {
    conn.release();
  }
}

// ---- one-run summary (`npm run bench`, bench/all.ts) ----

/** One headline figure of a benchmark, as bench/all.ts collects them (one JSON line each). */
export interface SummaryFigure {
  bench: string;
  figure: string;
  value: string;
  /** The target as text, e.g. ">= 50 %"; shown, never enforced. */
  target?: string;
  /** Whether the target was met; for a figure named "check", whether the correctness check passed. */
  ok?: boolean;
}

/**
 * Appends headline figures to the file named by BENCH_SUMMARY (JSON lines); a no-op without it.
 * A figure named "check" carries the benchmark's correctness check (value OK / FAILED).
 */
export function summaryFigure(bench: string, figure: string, value: string, target?: string, ok?: boolean): void {
  const file = process.env.BENCH_SUMMARY;
  if (!file) return;
  const row: SummaryFigure = { bench, figure, value, ...(target !== undefined ? { target } : {}), ...(ok !== undefined ? { ok } : {}) };
  fs.appendFileSync(file, `${JSON.stringify(row)}\n`);
}
