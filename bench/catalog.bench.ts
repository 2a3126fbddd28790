/**
 * `npm run bench:catalog`: the catalog's two hot paths, each as a ratio against a bare
 * baseline measured in the same run (see bench/README.md).
 *
 * Part 1, HTTP: `GET /api/products/:id` through the gateway, with autocannon, against a bare
 * `node:http` server answering the same product JSON. Every server runs in a child process
 * (this file, started again with BENCH_CATALOG_ROLE set), autocannon in this one; one case at
 * a time:
 *   bare      node:http answering a prebuilt product JSON (the same demo product, same shape)
 *   memory    the embedded system (every service in one process, product and user storage on
 *             MariaDB), product.get cached by the broker's memory cacher (the embedded default)
 *   redis     the same with REDIS_URL: the Redis cacher (the cluster default)
 *   uncached  the same as memory, with the cache option of product.get removed in that node:
 *             every request reads the row from MariaDB
 * Part 2, contended reserve on MariaDB: BENCH_RESERVE_WORKERS concurrent callers on ONE hot
 * product (large stock), for a fixed time, each case on its own fresh product in the product
 * service's database, every pool as large as the service's knex pool:
 *   raw-update   each caller in a loop: BEGIN; the conditional
 *                `UPDATE products SET reserved = reserved + 1 WHERE id = ? AND on_hand - reserved >= 1`;
 *                COMMIT, on one connection of a mysql2 pool (the baseline)
 *   knex-update  the same statement in knex's own transaction (`db.transaction`), on a knex
 *                pool built like the service's
 *   db-update    the same statement as a `Statement` in `inTransaction` (lib/db.ts), what the
 *                services run, on a knex pool built like the service's
 *   reserve      each caller in a loop: `product.reserve` through the broker (quantity 1, a new
 *                orderId each time), the product service in this process
 * Then checks that `reserved` equals the successful calls (and, for reserve, the held rows).
 *
 * Environment: BENCH_DURATION_S (10), BENCH_WARMUP_S (2), BENCH_CONNECTIONS (50),
 * BENCH_RESERVE_WORKERS (50), BENCH_CASES (a comma list of bare, memory, redis, uncached,
 * raw-update, knex-update, db-update, reserve; all by default), BENCH_PRODUCT_DB (mariadb | sqlite, part 1),
 * BENCH_RESERVE_CACHER (memory | redis, part 2), BENCH_SERVICES (SERVICES of the HTTP cases' node:
 * gateway,user,product), BENCH_LOG_LEVEL (info), BENCH_CPU_PROF (a directory: the HTTP cases' nodes
 * write V8 CPU profiles there), BENCH_RECORD (0:
 * print without appending to RESULTS.md), BENCH_CHILD_OUTPUT (1: echo the servers' output).
 * Exit 1 if any run had errors, non-2xx responses or a failed check.
 */
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { Knex } from "knex";
import type { ServiceBroker } from "moleculer";
import mysql from "mysql2/promise";
import { installShutdown, loadConfigOrExit } from "../bin/start";
import { startHealthServer } from "../lib/health-server";
import { createBroker, SERVICE_FACTORIES } from "../app";
import { loadConfig, type AppConfig } from "../lib/config";
import { syntheticProducts } from "../lib/demo-catalog";
import { createKnex, databaseName, dropDatabase, inTransaction, param, Statement } from "../lib/db";
import { deleteRedisKeys } from "../test/support/app";
import { freePort } from "../test/support/ports";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../test/support/servers";
import {
  aborting,
  appendResults,
  cleanupAll,
  cpuSeconds,
  installSignalCleanup,
  load,
  markdownTable,
  onCleanup,
  pidOf,
  scoped,
  profileArgs,
  startChild,
  summaryFigure,
  waitForStatus,
  type BenchChild,
  type Measured,
  rawConditionalUpdate,
} from "./support";

function intEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`${name}: expected an integer >= ${min}, got '${raw}'\n`);
    process.exit(2);
  }
  return n;
}

function enumEnv<T extends string>(name: string, values: readonly T[]): T {
  const raw = process.env[name] || values[0];
  if (!(values as readonly string[]).includes(raw)) {
    process.stderr.write(`${name}: expected ${values.join(" or ")}, got '${raw}'\n`);
    process.exit(2);
  }
  return raw as T;
}

// ======================= child roles (this file started again) =======================

/** The bare baseline: node:http answering one path with a prebuilt JSON, nothing else. */
function serveBare(): void {
  const JSON_TYPE = "application/json; charset=utf-8";
  const productPath = process.env.BENCH_PRODUCT_PATH!;
  const body = process.env.BENCH_PRODUCT_JSON!;
  const notFound = JSON.stringify({ error: { code: "NOT_FOUND", message: "Not found" } });
  const send = (res: http.ServerResponse, status: number, text: string) => {
    res.statusCode = status;
    res.setHeader("Content-Type", JSON_TYPE);
    res.setHeader("Content-Length", Buffer.byteLength(text));
    res.end(text);
  };
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === productPath) return send(res, 200, body);
    send(res, 404, notFound);
  });
  server.listen(0, "127.0.0.1", () => process.stdout.write(`bare listening on ${(server.address() as AddressInfo).port}\n`));
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.on(signal, () => {
      server.close(() => process.exit(0));
      server.closeAllConnections();
    });
}

/**
 * A Meridian node exactly as bin/start.ts starts it (configuration from the environment,
 * every service), except with BENCH_PRODUCT_GET_CACHE=off: product.get loses its `cache`
 * option in this process, so the broker's cacher middleware does not wrap it at all (no key,
 * no lookup, no store) and every read goes to the database. Nothing else changes.
 */
async function serveMeridian(): Promise<void> {
  const config = loadConfigOrExit();
  if (process.env.BENCH_PRODUCT_GET_CACHE === "off") {
    const factory = SERVICE_FACTORIES.product;
    SERVICE_FACTORIES.product = (c: AppConfig) => {
      const schema = factory(c);
      const get = (schema.actions as Record<string, { cache?: unknown }> | undefined)?.get;
      if (!get || !get.cache) throw new Error("product.get has no cache option any more: update bench/catalog.bench.ts");
      return { ...schema, actions: { ...schema.actions, get: { ...get, cache: false } } };
    };
  }
  const broker = createBroker(config);
  // The internal listener, as bin/start.ts runs it: the cache counters are read from its /metrics.
  const metrics = config.metricsPort ? await startHealthServer(broker, config.metricsPort) : undefined;
  installShutdown(() => broker.stop().finally(() => metrics?.close()));
  try {
    await broker.start();
  } catch (err) {
    broker.logger.fatal("Start failed:", err instanceof Error ? err.message : err);
    await broker.stop().catch(() => undefined);
    process.exit(1);
  }
  process.stdout.write(`Meridian started (bench), product.get cache ${process.env.BENCH_PRODUCT_GET_CACHE === "off" ? "off" : "on"}\n`);
}

// ======================= the benchmark =======================

const DURATION_S = intEnv("BENCH_DURATION_S", 10, 1);
const WARMUP_S = intEnv("BENCH_WARMUP_S", 2, 0);
const CONNECTIONS = intEnv("BENCH_CONNECTIONS", 50, 1);
const WORKERS = intEnv("BENCH_RESERVE_WORKERS", 50, 1);
const PRODUCT_DB = enumEnv("BENCH_PRODUCT_DB", ["mariadb", "sqlite"] as const);
const RESERVE_CACHER = enumEnv("BENCH_RESERVE_CACHER", ["memory", "redis"] as const);
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL || "info";
/** SERVICES of the HTTP cases' node: the ones a product read involves (and the user service, as embedded runs it). */
const SERVICES = process.env.BENCH_SERVICES || "gateway,user,product";
const RECORD = process.env.BENCH_RECORD !== "0";
const SELF = __filename;
/** The demo product every HTTP case reads (deterministic catalog, lib/demo-catalog.ts). */
const DEMO_INDEX = 0;
const HOT_STOCK = 1_000_000_000;
/** What the product repo's reserveStock does for one unit, less its `deleted_at IS NULL`, `updated_at` and `version`. */
const CONDITIONAL_UPDATE = "UPDATE products SET reserved = reserved + 1 WHERE id = ? AND on_hand - reserved >= 1";
const conditionalUpdate = new Statement<{ id: string }>((db) => db.raw(CONDITIONAL_UPDATE, [param("id")]));

// Looked up by main() only (the child roles have no use for them).
let mariadbPid: number | undefined;
let redisPid: number | undefined;

const notes: string[] = [];
let failed = false;

function tempDir(label: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `meridian-bench-${label}-`));
  onCleanup(`remove ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Config of a namespace as this process sees it (database names, Redis prefix). */
function configFor(env: Record<string, string>): AppConfig {
  return loadConfig({ JWT_SECRET: "x".repeat(32), ...env });
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const pct = (n: number) => `${Math.round(n * 100)} %`;
const cores = (cpuS: number | undefined, wallS: number) => (cpuS === undefined ? "?" : (cpuS / wallS).toFixed(2));

// ---------------- part 1: GET /api/products/:id ----------------

interface HttpCase {
  name: string;
  start(): Promise<HttpTarget>;
}

interface HttpTarget {
  baseUrl: string;
  productId: string;
  child: BenchChild;
  /** The node's internal listener (Meridian cases), whose /metrics count cache hits. */
  metricsUrl?: string;
}

interface HttpRow {
  caseName: string;
  result?: Measured;
  warmup?: Measured;
  serverCpuS?: number;
  wallS?: number;
  shared?: Record<string, number | undefined>;
  cache?: { gets: number; found: number };
  failure?: string;
}

const httpRows: HttpRow[] = [];

// Every variable Meridian reads, blanked (empty = unset), so the caller's shell cannot turn a
// case into something else (e.g. an exported RABBITMQ_URI or REDIS_URL).
const MERIDIAN_ENV_BLANK: Record<string, string> = Object.fromEntries(
  [
    "PORT",
    "DATA_DIR",
    "SERVICES",
    "NODE_ID",
    "NAMESPACE",
    "RABBITMQ_URI",
    "ETCD_HOSTS",
    "ETCD_USERNAME",
    "ETCD_PASSWORD",
    "REDIS_URL",
    "MYSQL_URL",
    "SERIALIZER",
    "JWT_SECRET",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "PUBLIC_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "TRUST_PROXY",
    "MIGRATE_ON_START",
    "DEMO_CATALOG",
    "DEMO_CATALOG_SIZE",
    "ELASTIC_SEARCH_NODE",
    "BENCH_PRODUCT_GET_CACHE",
    "NODE_ENV",
    "SANDBOX_PAY",
  ].map((k) => [k, ""]),
);

/** The bare case's JSON: demo product DEMO_INDEX as the API shows it (the real answer's shape is compared later). */
function bareProduct(): { id: string; json: string } {
  const p = syntheticProducts(DEMO_INDEX + 1)[DEMO_INDEX];
  const now = new Date().toISOString();
  const id = randomUUID();
  return { id, json: JSON.stringify({ ...p, id, createdAt: now, updatedAt: now, version: 1 }) };
}
let bareBody: { keys: string; bytes: number } | undefined;

async function startBare(): Promise<HttpTarget> {
  const { id, json } = bareProduct();
  const productPath = `/api/products/${id}`;
  const child = startChild(SELF, "bare", { BENCH_CATALOG_ROLE: "bare", BENCH_PRODUCT_PATH: productPath, BENCH_PRODUCT_JSON: json });
  const m = await child.waitForLine(/bare listening on (\d+)/);
  bareBody = { keys: Object.keys(JSON.parse(json)).sort().join(), bytes: Buffer.byteLength(json) };
  return { baseUrl: `http://127.0.0.1:${m[1]}`, productId: id, child };
}

/** The embedded system with its product and user storage, a fresh namespace, the demo catalog loaded. */
async function startMeridian(caseName: string, extra: Record<string, string>): Promise<HttpTarget> {
  const namespace = uniqueNamespace("bench");
  const dataDir = tempDir(caseName);
  const storage: Record<string, string> = {
    DATA_DIR: dataDir,
    ...(PRODUCT_DB === "mariadb" ? { MYSQL_URL, MIGRATE_ON_START: "true" } : {}),
  };
  const config = configFor({ ...storage, NAMESPACE: namespace, SERVICES, ...extra });
  if (PRODUCT_DB === "mariadb")
    onCleanup(`drop MariaDB databases of namespace ${namespace}`, async () => {
      for (const s of config.services) if (s !== "gateway") await dropDatabase(config, s);
    });
  if (extra.REDIS_URL) onCleanup(`delete Redis keys of namespace ${namespace}`, () => deleteRedisKeys(extra.REDIS_URL, namespace));
  const port = await freePort();
  const metricsPort = await freePort();
  const child = startChild(
    SELF,
    caseName,
    {
      ...MERIDIAN_ENV_BLANK,
      LOG_LEVEL,
      LOG_FORMAT: "text",
      BENCH_CATALOG_ROLE: "meridian",
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      // One load generator is one client address: the request budgets would measure 429s.
      RATE_LIMITS: "off",
      NAMESPACE: namespace,
      NODE_ID: `bench-${caseName}`,
      SERVICES,
      DEMO_CATALOG: "true",
      ...storage,
      ...extra,
    },
    profileArgs(caseName, caseName),
  );
  const baseUrl = `http://127.0.0.1:${port}`;
  await waitForStatus(`${baseUrl}/health/ready`, 200, [child], 120_000);
  // The demo product the bare case serves, by its sku.
  const sku = syntheticProducts(DEMO_INDEX + 1)[DEMO_INDEX].sku;
  const db = createKnex(config, "product");
  let productId: string | undefined;
  try {
    productId = ((await db("products").where({ sku }).select("id").first()) as { id: string } | undefined)?.id;
  } finally {
    await db.destroy();
  }
  if (!productId) throw new Error(`demo product ${sku} not found in the product database`);
  // Start-up work still running after readiness (the demo catalog's events through the relay,
  // the search index build) would be measured with the load: wait for the node to go idle.
  const t0 = Date.now();
  const idle = await waitIdle(child.pid, 30_000);
  process.stderr.write(`    ${idle ? "idle" : "still busy (measuring anyway)"} ${((Date.now() - t0) / 1000).toFixed(1)} s after ready\n`);
  if (!idle) notes.push(`${caseName}: the node was still using CPU 30 s after it was ready (start-up work measured with the load?)`);
  return { baseUrl, productId, child, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics` };
}

/** Waits until `pid` uses under 5 % of a core over two successive 500 ms windows; false on timeout. */
async function waitIdle(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let quiet = 0;
  let last = cpuSeconds(pid);
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    const now = cpuSeconds(pid);
    if (now === undefined || last === undefined) return true;
    quiet = now - last < 0.025 ? quiet + 1 : 0;
    last = now;
    if (quiet >= 2) return true;
  }
  return false;
}

/** Sum of a Prometheus counter over its label sets. */
function counter(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split("\n"))
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
  return sum;
}

async function cacheCounters(target: HttpTarget): Promise<{ gets: number; found: number } | undefined> {
  if (!target.metricsUrl) return undefined;
  const text = await (await fetch(target.metricsUrl)).text();
  return { gets: counter(text, "moleculer_cacher_get_total"), found: counter(text, "moleculer_cacher_found_total") };
}

/** One request before and after the load: 200 with the product. */
async function sanityCheck(caseName: string, target: HttpTarget): Promise<void> {
  const res = await fetch(`${target.baseUrl}/api/products/${target.productId}`);
  const text = await res.text();
  let body: { id?: string } | undefined;
  try {
    body = JSON.parse(text) as { id?: string };
  } catch {
    body = undefined;
  }
  if (res.status !== 200 || body?.id !== target.productId)
    throw new Error(`GET /api/products/:id answered ${res.status} ${text.slice(0, 300)}`);
  if (caseName !== "bare" && bareBody) {
    const keys = Object.keys(body).sort().join();
    const bytes = Buffer.byteLength(text);
    if (keys !== bareBody.keys)
      notes.push(`${caseName}: the real product JSON has keys ${keys}, the bare one ${bareBody.keys}: update bareProduct().`);
    if (Math.abs(bytes - bareBody.bytes) > 16)
      notes.push(`${caseName}: the real product JSON is ${bytes} bytes, the bare one ${bareBody.bytes}.`);
  }
}

async function runHttpCase(def: HttpCase, index: number, total: number): Promise<void> {
  process.stderr.write(`\n[${index}/${total}] ${def.name}: starting...\n`);
  const t0 = Date.now();
  await scoped(async () => {
    const row: HttpRow = { caseName: def.name };
    httpRows.push(row);
    let target: HttpTarget;
    try {
      target = await def.start();
    } catch (err) {
      if (aborting()) return;
      row.failure = `did not start: ${(err instanceof Error ? err.message : String(err)).split("\n")[0]}`;
      process.stderr.write(`  ${def.name} ${row.failure}\n${err instanceof Error ? err.message : ""}\n`);
      return;
    }
    process.stderr.write(`  ready in ${((Date.now() - t0) / 1000).toFixed(1)} s at ${target.baseUrl}\n`);
    const startupLines = target.child.lines.length;
    try {
      await sanityCheck(def.name, target);
      const opts = { url: `${target.baseUrl}/api/products/${target.productId}`, connections: CONNECTIONS };
      process.stderr.write(`  GET /api/products/:id\n`);
      if (WARMUP_S > 0) row.warmup = await load({ ...opts, duration: WARMUP_S }, "warm-up (not counted)");
      const bytesBefore = target.child.bytes;
      const cacheBefore = await cacheCounters(target);
      const cpuBefore = cpuSeconds(target.child.pid);
      const sharedBefore = { MariaDB: mariadbPid && cpuSeconds(mariadbPid), Redis: redisPid && cpuSeconds(redisPid) };
      const selfBefore = process.cpuUsage();
      const t1 = process.hrtime.bigint();
      row.result = await load({ ...opts, duration: DURATION_S }, "measuring");
      row.wallS = Number(process.hrtime.bigint() - t1) / 1e9;
      const cpuAfter = cpuSeconds(target.child.pid);
      const self = process.cpuUsage(selfBefore);
      if (cpuBefore !== undefined && cpuAfter !== undefined) row.serverCpuS = cpuAfter - cpuBefore;
      const delta = (before: number | undefined, pid: number | undefined) => {
        const after = pid ? cpuSeconds(pid) : undefined;
        return before !== undefined && before !== 0 && after !== undefined ? after - before : undefined;
      };
      row.shared = {
        "autocannon (this process)": (self.user + self.system) / 1e6,
        "MariaDB server (shared)": delta(sharedBefore.MariaDB, mariadbPid),
        ...(def.name === "redis" ? { "Redis server (shared)": delta(sharedBefore.Redis, redisPid) } : {}),
      };
      const cacheAfter = await cacheCounters(target);
      if (cacheBefore && cacheAfter) row.cache = { gets: cacheAfter.gets - cacheBefore.gets, found: cacheAfter.found - cacheBefore.found };
      const logged = target.child.bytes - bytesBefore;
      if (logged > 0) notes.push(`${def.name}: the node wrote ${logged} bytes of output during the measured run (per-request logging?)`);
      await sanityCheck(def.name, target);
    } catch (err) {
      if (aborting()) return;
      row.failure = err instanceof Error ? err.message.split("\n")[0] : String(err);
      process.stderr.write(`  ${def.name} failed: ${row.failure}\n`);
    }
    const bad = target.child.lines.slice(startupLines).filter((l) => /\b(WARN|ERROR|FATAL)\b/.test(l));
    if (bad.length) notes.push(`${def.name}: the node logged ${bad.length} warning/error line(s), e.g. ${bad[0].slice(0, 200)}`);
    process.stderr.write(`  stopping ${def.name}...\n`);
  });
}

function httpTable(): string {
  const bare = httpRows.find((r) => r.caseName === "bare" && r.result)?.result;
  const rows = httpRows.map((r) => {
    if (!r.result) {
      failed = true;
      return [r.caseName, "-", "-", "-", "-", "-", "-", "-", `FAILED: ${r.failure}`];
    }
    const { result: res, latency } = r.result;
    const errors = res.errors + (r.warmup?.result.errors ?? 0);
    const non2xx = res.non2xx + (r.warmup?.result.non2xx ?? 0);
    if (errors || non2xx) {
      failed = true;
      const codes = Object.entries(res.statusCodeStats)
        .map(([code, s]) => `${code}×${s.count}`)
        .join(", ");
      notes.push(
        `${r.caseName}: ${res.errors} errors (${res.timeouts} timeouts), ${res.non2xx} non-2xx [${codes}]` +
          (r.warmup ? `; warm-up: ${r.warmup.result.errors} errors, ${r.warmup.result.non2xx} non-2xx` : ""),
      );
    }
    return [
      r.caseName,
      fmt(res.requests.average),
      bare ? pct(res.requests.average / bare.result.requests.average) : "-",
      fmt(latency.p50, 2),
      fmt(latency.p99, 2),
      bare ? `${fmt(latency.p99 / bare.latency.p99, 1)}×` : "-",
      r.serverCpuS !== undefined && res.requests.total ? fmt((r.serverCpuS * 1e6) / res.requests.total) : "-",
      r.cache ? (r.cache.gets ? `${fmt((100 * r.cache.found) / r.cache.gets, 1)} % of ${fmt(r.cache.gets)}` : "no lookups") : "-",
      `${errors} / ${non2xx}`,
    ];
  });
  for (const r of httpRows) {
    if (r.wallS && r.shared)
      notes.push(
        `CPU during ${r.caseName} (${r.wallS.toFixed(1)} s wall, in cores): node ${cores(r.serverCpuS, r.wallS)}, ` +
          Object.entries(r.shared)
            .map(([name, s]) => `${name} ${cores(s, r.wallS!)}`)
            .join(", "),
      );
    // A cached case whose reads were not answered by the cache measures the wrong thing, and so does an uncached one that was.
    if (r.cache && r.result) {
      const hitRate = r.cache.gets ? r.cache.found / r.cache.gets : 0;
      if ((r.caseName === "uncached" && r.cache.gets > 0) || (r.caseName !== "uncached" && hitRate < 0.99)) {
        failed = true;
        notes.push(
          `${r.caseName}: cacher lookups ${r.cache.gets}, hits ${r.cache.found} during the measured run: not the case it claims to be.`,
        );
      }
    }
  }
  return markdownTable(
    [
      "Case",
      "req/s",
      "req/s vs bare",
      "p50 ms",
      "p99 ms",
      "p99 vs bare",
      "server CPU µs/req",
      "cache hits (measured)",
      "errors / non-2xx (incl. warm-up)",
    ],
    rows,
    [false, true, true, true, true, true, true, true, true],
  );
}

// ---------------- part 2: contended reserve on one hot product ----------------

interface LoopResult {
  /** Operations that succeeded / failed their condition (no stock) / threw, warm-up included. */
  ok: number;
  refused: number;
  errors: number;
  firstError?: string;
  /** Measured window only. */
  measuredOps: number;
  perSecond: number;
  p50: number;
  p99: number;
  wallS: number;
  nodeCpuS: number;
  mariadbCpuS?: number;
}

interface ReserveRow {
  caseName: string;
  result?: LoopResult;
  check?: { ok: boolean; text: string };
  failure?: string;
}

const reserveRows: ReserveRow[] = [];

/**
 * `workers` callers, each running `op` after the previous one finished, for WARMUP_S (not
 * counted) then DURATION_S. Counts operations completed in the measured window; latency of
 * every operation started in it. A countdown on stderr, as autocannon's runs.
 */
async function closedLoop(label: string, workers: number, op: (worker: number, n: number) => Promise<boolean>): Promise<LoopResult> {
  process.stderr.write(`    ${label}: ${WARMUP_S}s warm-up + ${DURATION_S}s measured:`);
  const start = performance.now();
  const measureFrom = start + WARMUP_S * 1000;
  const measureTo = measureFrom + DURATION_S * 1000;
  let ticks = WARMUP_S + DURATION_S;
  const ticker = setInterval(() => ticks > 0 && process.stderr.write(` ${--ticks}`), 1000);
  let latencies = new Float64Array(1 << 16);
  let n = 0;
  const r = { ok: 0, refused: 0, errors: 0, firstError: undefined as string | undefined, measuredOps: 0 };
  let cpuFrom: NodeJS.CpuUsage | undefined;
  let dbFrom: number | undefined;
  let cpu: NodeJS.CpuUsage | undefined;
  let dbTo: number | undefined;
  const measureStart = setTimeout(
    () => {
      cpuFrom = process.cpuUsage();
      dbFrom = mariadbPid ? cpuSeconds(mariadbPid) : undefined;
    },
    Math.max(0, measureFrom - performance.now()),
  );
  const measureEnd = setTimeout(
    () => {
      cpu = process.cpuUsage(cpuFrom);
      dbTo = mariadbPid ? cpuSeconds(mariadbPid) : undefined;
    },
    Math.max(0, measureTo - performance.now()),
  );
  try {
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        for (let i = 0; !aborting(); i++) {
          const t0 = performance.now();
          if (t0 >= measureTo) return;
          try {
            const good = await op(w, i);
            if (good) r.ok++;
            else r.refused++;
          } catch (err) {
            r.errors++;
            r.firstError ??= err instanceof Error ? `${err.name}: ${err.message}` : String(err);
          }
          const t1 = performance.now();
          if (t1 >= measureFrom && t1 < measureTo) r.measuredOps++;
          if (t0 >= measureFrom) {
            if (n === latencies.length) {
              const bigger = new Float64Array(latencies.length * 2);
              bigger.set(latencies);
              latencies = bigger;
            }
            latencies[n++] = t1 - t0;
          }
        }
      }),
    );
  } finally {
    clearInterval(ticker);
    clearTimeout(measureStart);
    clearTimeout(measureEnd);
    process.stderr.write(" done\n");
  }
  const sorted = latencies.subarray(0, n).sort();
  const at = (q: number) => (n ? sorted[Math.min(n - 1, Math.ceil(q * n) - 1)] : NaN);
  const wallS = DURATION_S;
  return {
    ...r,
    perSecond: r.measuredOps / wallS,
    p50: at(0.5),
    p99: at(0.99),
    wallS,
    nodeCpuS: cpu ? (cpu.user + cpu.system) / 1e6 : NaN,
    mariadbCpuS: dbFrom !== undefined && dbTo !== undefined ? dbTo - dbFrom : undefined,
  };
}

interface ReserveSystem {
  broker: ServiceBroker;
  config: AppConfig;
  /** The product service's own knex (for reading the figures back). */
  db: Knex;
}

/** The product service alone in this process, on its own MariaDB database (MariaDB is the point here). */
async function startProductService(): Promise<ReserveSystem> {
  const namespace = uniqueNamespace("bench");
  const env: Record<string, string> = {
    NAMESPACE: namespace,
    NODE_ID: "bench-reserve",
    DATA_DIR: tempDir("reserve"),
    MYSQL_URL,
    MIGRATE_ON_START: "true",
    DEMO_CATALOG: "false",
    JWT_SECRET: randomBytes(32).toString("hex"),
    // Warnings only: this process's stdout is the report.
    LOG_LEVEL: "warn",
    ...(RESERVE_CACHER === "redis" ? { REDIS_URL } : {}),
  };
  const config = loadConfig(env);
  onCleanup(`drop MariaDB database of namespace ${namespace}`, () => dropDatabase(config, "product"));
  if (RESERVE_CACHER === "redis") onCleanup(`delete Redis keys of namespace ${namespace}`, () => deleteRedisKeys(REDIS_URL, namespace));
  const broker = createBroker(config, ["product"]);
  onCleanup("stop the product broker", () => broker.stop());
  await broker.start();
  const db = (broker.getLocalService("product") as unknown as { db: Knex }).db;
  return { broker, config, db };
}

async function createHotProduct(sys: ReserveSystem, label: string): Promise<string> {
  const p = await sys.broker.call<{ id: string }, unknown>("product.create", {
    sku: `BENCH-HOT-${label}-${randomBytes(4).toString("hex")}`,
    name: `Bench hot product (${label})`,
    description: "One product every caller reserves",
    category: "Bench",
    price: { amount: 1000, currency: "EUR" },
    stock: HOT_STOCK,
  });
  return p.id;
}

async function reservedOf(db: Knex, id: string): Promise<number> {
  const row = (await db("products").where({ id }).select("reserved").first()) as { reserved: number | string };
  return Number(row.reserved);
}

async function runReserveCases(selected: string[]): Promise<void> {
  const total = selected.length;
  process.stderr.write(`\n[reserve] product service on MariaDB (${RESERVE_CACHER} cacher), ${WORKERS} concurrent callers: starting...\n`);
  await scoped(async () => {
    let sys: ReserveSystem;
    try {
      sys = await startProductService();
    } catch (err) {
      if (aborting()) return;
      const why = (err instanceof Error ? err.message : String(err)).split("\n")[0];
      for (const name of selected) reserveRows.push({ caseName: name, failure: `did not start: ${why}` });
      return;
    }
    // The knex loop's pool: built by the same function as the service's, so the same size and driver options.
    const viaKnex = createKnex(sys.config, "product");
    onCleanup("close the knex-update and db-update pool", () => viaKnex.destroy());
    const poolMax = (viaKnex.client.config as { pool?: { max?: number } }).pool?.max ?? 10;
    // The raw loop's pool: mysql2 itself, the same size and connection options as knex's.
    const u = new URL(sys.config.mysqlUrl!);
    const rawPool = mysql.createPool({
      host: u.hostname,
      port: u.port ? Number(u.port) : 3306,
      user: decodeURIComponent(u.username || "root"),
      password: decodeURIComponent(u.password),
      database: databaseName(sys.config, "product"),
      supportBigNumbers: true,
      charset: "utf8mb4",
      connectionLimit: poolMax,
    });
    onCleanup("close the raw mysql2 pool", () => rawPool.end());
    notes.push(
      `reserve cases: ${WORKERS} concurrent callers; pools of ${poolMax} connections (the product service's knex pool, and the same size for the raw mysql2 and knex loops).`,
    );
    let index = 0;
    for (const name of selected) {
      if (aborting()) return;
      index++;
      const row: ReserveRow = { caseName: name };
      reserveRows.push(row);
      try {
        const productId = await createHotProduct(sys, name);
        process.stderr.write(`  [${index}/${total}] ${name} on product ${productId}\n`);
        const runId = randomBytes(3).toString("hex");
        if (name === "raw-update") {
          row.result = await closedLoop("raw UPDATE loop (mysql2)", WORKERS, () =>
            rawConditionalUpdate(rawPool, CONDITIONAL_UPDATE, [productId]),
          );
        } else if (name === "knex-update") {
          row.result = await closedLoop("UPDATE in a knex transaction", WORKERS, async () =>
            viaKnex.transaction(async (trx) => {
              const [res] = (await trx.raw(CONDITIONAL_UPDATE, [productId])) as [{ affectedRows: number }];
              return res.affectedRows === 1;
            }),
          );
        } else if (name === "db-update") {
          row.result = await closedLoop("UPDATE in inTransaction", WORKERS, async () =>
            inTransaction(viaKnex, async (trx) => (await conditionalUpdate.run(trx, { id: productId })).changes === 1),
          );
        } else {
          row.result = await closedLoop("product.reserve", WORKERS, async (w, n) => {
            const res = await sys.broker.call<{ lines?: { status?: string }[] }, unknown>("product.reserve", {
              orderId: `bench-${runId}-${w}-${n}`,
              lines: [{ productId, quantity: 1 }],
            });
            return res.lines?.[0]?.status === "held";
          });
        }
        // Correctness: every success, and nothing else, is in `reserved` (and, for reserve, in the held rows).
        const reserved = await reservedOf(sys.db, productId);
        let ok = reserved === row.result.ok;
        let text = `reserved = ${fmt(reserved)}, successful calls = ${fmt(row.result.ok)}`;
        if (name === "reserve") {
          const held = (await sys
            .db("reservations")
            .where({ product_id: productId, status: "held" })
            .count({ n: "*" })
            .sum({ q: "quantity" })
            .first()) as {
            n: number | string;
            q: number | string | null;
          };
          ok &&= Number(held.n) === row.result.ok && Number(held.q ?? 0) === reserved;
          text += `, held reservation rows = ${fmt(Number(held.n))} (quantity ${fmt(Number(held.q ?? 0))})`;
        }
        row.check = { ok, text };
        if (!ok) failed = true;
        if (row.result.errors) {
          failed = true;
          notes.push(`${name}: ${row.result.errors} call(s) threw, e.g. ${row.result.firstError?.slice(0, 200)}`);
        }
        if (row.result.refused) notes.push(`${name}: ${row.result.refused} call(s) found no stock (the hot product has ${fmt(HOT_STOCK)})`);
      } catch (err) {
        if (aborting()) return;
        row.failure = err instanceof Error ? err.message.split("\n")[0] : String(err);
        process.stderr.write(`  ${name} failed: ${row.failure}\n`);
      }
    }
    process.stderr.write("  stopping the product service...\n");
  });
}

function reserveTable(): string {
  const raw = reserveRows.find((r) => r.caseName === "raw-update" && r.result)?.result;
  const rows = reserveRows.map((r) => {
    if (!r.result) {
      failed = true;
      return [r.caseName, "-", "-", "-", "-", "-", "-", "-", "-", `FAILED: ${r.failure}`];
    }
    const x = r.result;
    return [
      r.caseName,
      fmt(x.perSecond),
      raw ? pct(x.perSecond / raw.perSecond) : "-",
      fmt(x.p50, 2),
      fmt(x.p99, 2),
      raw ? `${fmt(x.p99 / raw.p99, 1)}×` : "-",
      x.measuredOps ? fmt((x.nodeCpuS * 1e6) / x.measuredOps) : "-",
      x.mariadbCpuS !== undefined && x.measuredOps ? fmt((x.mariadbCpuS * 1e6) / x.measuredOps) : "-",
      `${fmt(x.ok)} / ${fmt(x.refused)} / ${fmt(x.errors)}`,
      r.check ? `${r.check.ok ? "OK" : "MISMATCH"}: ${r.check.text}` : "-",
    ];
  });
  for (const r of reserveRows)
    if (r.result)
      notes.push(
        `CPU during ${r.caseName} (${r.result.wallS} s, in cores): this process ${cores(r.result.nodeCpuS, r.result.wallS)}, MariaDB server ${cores(r.result.mariadbCpuS, r.result.wallS)}`,
      );
  return markdownTable(
    [
      "Case",
      "ops/s",
      "ops/s vs raw",
      "p50 ms",
      "p99 ms",
      "p99 vs raw",
      "Node CPU µs/op",
      "MariaDB CPU µs/op",
      "ok / no stock / errors (incl. warm-up)",
      "check",
    ],
    rows,
    [false, true, true, true, true, true, true, true, true, false],
  );
}

/** Headline figures for `npm run bench` (BENCH_SUMMARY): the cached product read as a share of bare; after the tables. */
function summarize(): void {
  const bare = httpRows.find((r) => r.caseName === "bare" && r.result)?.result;
  for (const r of httpRows.filter((x) => x.caseName === "memory" || x.caseName === "redis")) {
    const what = `cached GET /api/products/:id (${r.caseName} cacher)`;
    if (!r.result || !bare) {
      summaryFigure("catalog", `${what}, req/s vs bare`, r.failure ? `FAILED: ${r.failure.slice(0, 60)}` : "no bare run", ">= 50 %", false);
      continue;
    }
    const ratio = r.result.result.requests.average / bare.result.requests.average;
    const p99 = r.result.latency.p99 / bare.latency.p99;
    summaryFigure("catalog", `${what}, req/s vs bare`, pct(ratio), ">= 50 %", ratio >= 0.5);
    summaryFigure("catalog", `${what}, p99 vs bare`, `${fmt(p99, 1)}× (${fmt(r.result.latency.p99, 2)} ms)`, "<= 3×", p99 <= 3);
  }
  summaryFigure("catalog", "check", failed ? "FAILED (errors, non-2xx, cache hits or reserve mismatch)" : "OK", undefined, !failed);
}

// ---------------- main ----------------

async function main(): Promise<void> {
  installSignalCleanup();
  mariadbPid = pidOf("mariadbd", "mysqld");
  redisPid = pidOf("redis-server");
  const httpCases: HttpCase[] = [
    { name: "bare", start: startBare },
    { name: "memory", start: () => startMeridian("memory", {}) },
    { name: "redis", start: () => startMeridian("redis", { REDIS_URL }) },
    { name: "uncached", start: () => startMeridian("uncached", { BENCH_PRODUCT_GET_CACHE: "off" }) },
  ];
  const reserveCases = ["raw-update", "knex-update", "db-update", "reserve"];
  const known = [...httpCases.map((c) => c.name), ...reserveCases];
  const only = (process.env.BENCH_CASES ?? "")
    .split(",")
    .map((c) => c.trim())
    .filter(Boolean);
  const unknown = only.filter((c) => !known.includes(c));
  if (unknown.length) throw new Error(`BENCH_CASES: unknown case(s) ${unknown.join(", ")}; known: ${known.join(", ")}`);
  const wanted = (name: string) => !only.length || only.includes(name);
  const selectedHttp = httpCases.filter((c) => wanted(c.name));
  const selectedReserve = reserveCases.filter(wanted);

  const started = new Date();
  const load0 = os.loadavg()[0];
  const header =
    `Catalog benchmark, ${started.toISOString()}: Node ${process.version}, ${os.cpus().length} CPU(s) (${os.cpus()[0]?.model.trim()}), ` +
    `${DURATION_S} s measured + ${WARMUP_S} s warm-up per case; HTTP: ${CONNECTIONS} connections, product storage ${PRODUCT_DB}, ` +
    `services ${SERVICES}, Meridian LOG_LEVEL=${LOG_LEVEL}; reserve: ${WORKERS} callers, ${RESERVE_CACHER} cacher; load average at start ${load0.toFixed(2)}`;
  process.stderr.write(`${header}\n`);

  for (const [i, def] of selectedHttp.entries()) if (!aborting()) await runHttpCase(def, i + 1, selectedHttp.length);
  if (selectedReserve.length && !aborting()) await runReserveCases(selectedReserve);
  if (aborting()) return new Promise<never>(() => undefined); // the signal handler cleans up and exits

  const load1 = os.loadavg()[0];
  const parts: string[] = [];
  if (httpRows.length) parts.push("`GET /api/products/:id`, one demo product, through the gateway (embedded system):", "", httpTable());
  if (reserveRows.length)
    parts.push(
      "",
      `Contended reserve: ${WORKERS} concurrent callers on one product (stock ${fmt(HOT_STOCK)}), MariaDB:`,
      "",
      reserveTable(),
    );
  summarize();
  const report = `${header}, at end ${load1.toFixed(2)}\n\n${parts.join("\n")}\n`;
  process.stdout.write(`\n${report}`);
  if (notes.length) process.stdout.write(`\nNotes:\n${notes.map((n) => `- ${n}`).join("\n")}\n`);

  if (RECORD && !failed) {
    const section = [
      "",
      "## Catalog (`npm run bench:catalog`)",
      "",
      `**Run of ${started.toISOString().slice(0, 16).replace("T", " ")} UTC**, ${DURATION_S} s measured + ${WARMUP_S} s warm-up per case; ` +
        `HTTP: ${CONNECTIONS} connections, product storage ${PRODUCT_DB}, services ${SERVICES}, LOG_LEVEL=${LOG_LEVEL}; ` +
        `reserve: ${WORKERS} callers, ${RESERVE_CACHER} cacher. Machine: ${os.cpus().length} vCPUs, Node ${process.version}, ` +
        `MariaDB / Redis on the same machine; load average ${load0.toFixed(1)} → ${load1.toFixed(1)}.`,
      "",
      ...parts,
      "",
      ...(notes.length ? ["Notes:", ...notes.map((n) => `- ${n}`), ""] : []),
    ].join("\n");
    appendResults(section);
    process.stderr.write("\nAppended to bench/RESULTS.md (BENCH_RECORD=0 to skip).\n");
  } else if (RECORD) {
    process.stderr.write("\nNot appended to bench/RESULTS.md: the run failed.\n");
  }
  await cleanupAll();
  if (failed) {
    process.stderr.write("\nFAILED: some runs had errors, non-2xx responses or a failed check, or did not run (see above).\n");
    process.exit(1);
  }
  process.exit(0);
}

const role = process.env.BENCH_CATALOG_ROLE;
if (role === "bare") serveBare();
else if (role === "meridian") void serveMeridian();
else
  main().catch(async (err) => {
    process.stderr.write(`\n${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanupAll();
    process.exit(1);
  });
