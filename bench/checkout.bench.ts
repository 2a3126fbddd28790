/**
 * `npm run bench:checkout`: the whole checkout in cluster mode, every node on this machine
 * (issue 5, see bench/README.md).
 *
 * The cluster: `bin/start.ts` in child processes over a private RabbitMQ vhost, MariaDB and
 * Redis, a fresh namespace: one node `gateway,user,product,cart,notification` (the gateway on
 * a free port, PUBLIC_URL pointing at it, so the sandbox platform calls it back over HTTP),
 * BENCH_ORDER_REPLICAS order nodes and BENCH_PAYMENT_REPLICAS payment nodes (2 and 2), all
 * with the same JWT secret and the same generated SANDBOX_PAY_* key pair. This process joins
 * the cluster with a broker of no services (readiness: every replica discovered; setup:
 * `product.create`) and reads the databases directly for the checks.
 *
 *   buyers     BENCH_BUYERS (1,000) users registered through `POST /api/auth/register`
 *              (argon2id, as a real sign-up), used by both parts below
 *   raw        the baseline: BENCH_CONCURRENCY callers, each in a loop: BEGIN; the conditional
 *              `UPDATE products SET on_hand = on_hand - 1 WHERE id = ? AND on_hand >= 1`;
 *              COMMIT, on a mysql2 pool as large as the product service's knex pool, in the
 *              product service's database, over BENCH_PRODUCTS products (and then on ONE hot
 *              product); the cluster is idle meanwhile
 *   checkout   BENCH_CONCURRENCY buyers in flight, each in a loop: POST /api/orders (Idempotency-Key,
 *              one unit of a random product of BENCH_PRODUCTS) → POST /api/orders/:id/pay
 *              {provider: sandbox} → POST /api/payments/sandbox/:paymentId/complete (success, the
 *              payUrl's token) → the order PAID and the buyer's payment.succeeded notification for
 *              it, seen on the live feeds the API offers for that (BENCH_WATCH=sse, the default:
 *              GET /api/orders/:id/events and GET /api/notifications/stream, opened after the order
 *              and before paying) or by polling GET /api/orders/:id, then GET /api/notifications,
 *              every BENCH_POLL_MS (BENCH_WATCH=poll); completed checkouts/s, start →
 *              paid-and-notified p50/p99, and the CPU per checkout of the servers and of all
 *              processes (this one, the shoppers' side, included)
 *   flash      BENCH_FLASH_BUYERS (1,000) buyers POST /api/orders at once for one product with
 *              BENCH_FLASH_UNITS (100) units; each winner pays at once through the sandbox; wall time
 *              until every buyer had an answer, and until every winner's order is PAID
 * After each part the databases are checked (see the README); a mismatch fails the run.
 *
 * BENCH_MODE=embedded runs the same checkout and flash parts against ONE node with every
 * service (`bin/start.ts`, SQLite in a temp DATA_DIR, no RabbitMQ, MariaDB or Redis): the
 * embedded default a laptop runs. Products are created over HTTP by the bootstrapped admin;
 * `raw` (a MariaDB loop) does not apply there.
 *
 * Environment: BENCH_DURATION_S (30, checkout), BENCH_WARMUP_S (5, checkout), BENCH_RAW_S (10, each
 * raw case, after 2 s of warm-up), BENCH_CONCURRENCY (20), BENCH_PRODUCTS (100), BENCH_BUYERS (1000),
 * BENCH_FLASH_BUYERS (1000, at most BENCH_BUYERS), BENCH_FLASH_UNITS (100), BENCH_ORDER_REPLICAS (2),
 * BENCH_PAYMENT_REPLICAS (2), BENCH_WATCH (sse | poll), BENCH_POLL_MS (25, poll), BENCH_PARTS (raw,checkout,flash; checkout,flash
 * embedded), BENCH_MODE (cluster | embedded), BENCH_LOG_LEVEL
 * (warn), BENCH_CPU_PROF (a directory: V8 CPU profiles of the nodes, see bench/support.ts), BENCH_NODE_ARGS (flags for the nodes, profileArgs in bench/support.ts), BENCH_RECORD (0: print without appending to RESULTS.md), BENCH_CHILD_OUTPUT (1: echo the
 * nodes' output). Exit 1 if a part had errors or a failed check.
 */
import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { Knex } from "knex";
import type { ServiceBroker } from "moleculer";
import mysql from "mysql2/promise";
import { createBroker } from "../app";
import { loadConfig, type AppConfig } from "../lib/config";
import { createKnex, databaseName, dropDatabase } from "../lib/db";
import { deleteRedisKeys } from "../test/support/app";
import { mapBounded, range } from "../lib/bounded";
import { freePort } from "../test/support/ports";
import { sseReader } from "../test/support/sse";
import { createVhost } from "../test/support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../test/support/servers";
import {
  aborting,
  appendResults,
  cleanupAll,
  cpuSeconds,
  installSignalCleanup,
  markdownTable,
  onCleanup,
  pidOf,
  profileArgs,
  startChild,
  summaryFigure,
  waitForStatus,
  type BenchChild,
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

const DURATION_S = intEnv("BENCH_DURATION_S", 30, 1);
const WARMUP_S = intEnv("BENCH_WARMUP_S", 5, 0);
const RAW_S = intEnv("BENCH_RAW_S", 10, 1);
const RAW_WARMUP_S = 2;
const CONCURRENCY = intEnv("BENCH_CONCURRENCY", 20, 1);
const PRODUCTS = intEnv("BENCH_PRODUCTS", 100, 1);
const BUYERS = intEnv("BENCH_BUYERS", 1000, 1);
const FLASH_BUYERS = intEnv("BENCH_FLASH_BUYERS", 1000, 1);
const FLASH_UNITS = intEnv("BENCH_FLASH_UNITS", 100, 1);
const ORDER_REPLICAS = intEnv("BENCH_ORDER_REPLICAS", 2, 1);
const PAYMENT_REPLICAS = intEnv("BENCH_PAYMENT_REPLICAS", 2, 1);
const POLL_MS = intEnv("BENCH_POLL_MS", 25, 1);
/**
 * How a shopper learns that its order is PAID and notified: `sse` watches the live feeds the
 * API offers for it (GET /api/orders/:id/events and GET /api/notifications/stream, opened
 * before paying); `poll` asks GET /api/orders/:id, then GET /api/notifications, every
 * BENCH_POLL_MS. Polling every 25 ms charges each checkout for the poll loop's requests.
 */
const WATCH = process.env.BENCH_WATCH || "sse";
if (WATCH !== "sse" && WATCH !== "poll") {
  process.stderr.write(`BENCH_WATCH: expected sse or poll, got '${WATCH}'\n`);
  process.exit(2);
}
const watching = WATCH === "sse" ? "watched on the live feeds, SSE" : `polling every ${POLL_MS} ms`;
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL || "warn";
const RECORD = process.env.BENCH_RECORD !== "0";
const MODE = process.env.BENCH_MODE || "cluster";
if (MODE !== "cluster" && MODE !== "embedded") {
  process.stderr.write(`BENCH_MODE: expected cluster or embedded, got '${MODE}'\n`);
  process.exit(2);
}
const EMBEDDED = MODE === "embedded";
/** The benchmark's name in `npm run bench`'s table (bench/all.ts runs both modes). */
const SUMMARY_NAME = EMBEDDED ? "checkout-embedded" : "checkout";
const PARTS = (process.env.BENCH_PARTS || (EMBEDDED ? "checkout,flash" : "raw,checkout,flash"))
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);
if (EMBEDDED && PARTS.includes("raw")) {
  process.stderr.write("BENCH_PARTS: raw (a MariaDB loop) does not apply to BENCH_MODE=embedded\n");
  process.exit(2);
}
for (const p of PARTS)
  if (!["raw", "checkout", "flash"].includes(p)) {
    process.stderr.write(`BENCH_PARTS: unknown part '${p}' (raw, checkout, flash)\n`);
    process.exit(2);
  }
if (PARTS.includes("flash") && FLASH_BUYERS > BUYERS) {
  process.stderr.write(`BENCH_FLASH_BUYERS (${FLASH_BUYERS}) must not exceed BENCH_BUYERS (${BUYERS})\n`);
  process.exit(2);
}

/** Stock of each checkout product and raw-baseline product: never the limit. */
const BIG_STOCK = 1_000_000_000;
const RAW_UPDATE = "UPDATE products SET on_hand = on_hand - 1 WHERE id = ? AND on_hand >= 1";
const ADDRESS = {
  recipient: "Bench Buyer",
  phone: "+86 21 5555 0000",
  line1: "1 Bench Road",
  city: "Hangzhou",
  postalCode: "310000",
  country: "CN",
};
const PASSWORD = "correct horse battery staple";
/** One checkout (or one flash-sale buyer) gives up after this long. */
const CHECKOUT_TIMEOUT_MS = 60_000;

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "-";
const pct = (n: number) => `${fmt(n * 100, 1)} %`;
const say = (s: string) => process.stderr.write(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const notes: string[] = [];
let failed = false;
function fail(what: string): void {
  failed = true;
  notes.push(`FAILED: ${what}`);
  say(`  FAILED: ${what}\n`);
}

function percentile(sorted: Float64Array | number[], q: number): number {
  const n = sorted.length;
  return n ? sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))] : NaN;
}
const sortedOf = (xs: number[]) => Float64Array.from(xs).sort();

// ---------------- CPU of every process involved, over a window ----------------

interface CpuWindow {
  stop(): { wallS: number; cores: [string, number | undefined][]; stall?: number };
}

/**
 * Linux pressure stall information: microseconds during which at least one runnable task
 * waited for a CPU (/proc/pressure/cpu "some total"); undefined without PSI. Over a window, the
 * share of time the machine had more work than CPUs: ours or anyone else's.
 */
function cpuStallUs(): number | undefined {
  try {
    const m = fs.readFileSync("/proc/pressure/cpu", "utf8").match(/^some .*total=(\d+)/m);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function cpuWindow(procs: { name: string; pid: number | undefined }[]): CpuWindow {
  const t0 = performance.now();
  const self0 = process.cpuUsage();
  const before = procs.map((p) => (p.pid ? cpuSeconds(p.pid) : undefined));
  const stall0 = cpuStallUs();
  return {
    stop() {
      const wallS = (performance.now() - t0) / 1000;
      const stall1 = cpuStallUs();
      const stall = stall0 !== undefined && stall1 !== undefined ? (stall1 - stall0) / 1e6 / wallS : undefined;
      const self = process.cpuUsage(self0);
      const cores: [string, number | undefined][] = procs.map((p, i) => {
        const after = p.pid ? cpuSeconds(p.pid) : undefined;
        const b = before[i];
        return [p.name, after !== undefined && b !== undefined ? (after - b) / wallS : undefined];
      });
      cores.push([LOAD_GENERATOR, (self.user + self.system) / 1e6 / wallS]);
      return { wallS, cores, stall };
    },
  };
}
const coresText = (c: [string, number | undefined][]) => c.map(([n, v]) => `${n} ${v === undefined ? "?" : v.toFixed(2)}`).join(", ");
const coresSum = (c: [string, number | undefined][]) => c.reduce((s, [, v]) => s + (v ?? 0), 0);
/** The name `cpuWindow` gives this process's own share. */
const LOAD_GENERATOR = "bench process (load generator)";
/** The system's own CPU: every process but the load generator (the shoppers' side). */
const serversOnly = (c: [string, number | undefined][]) => c.filter(([n]) => n !== LOAD_GENERATOR);
/** CPU ms per operation completed in the measured window: the servers', or all processes' (NaN without operations). */
const cpuMsPerOp = (x: { cores: [string, number | undefined][]; durationS: number; measuredOps: number }, servers: boolean) =>
  x.measuredOps ? (coresSum(servers ? serversOnly(x.cores) : x.cores) * x.durationS * 1000) / x.measuredOps : NaN;

// ---------------- HTTP ----------------

interface Answer {
  status: number;
  body: any;
  text: string;
}

let baseUrl = "";

async function api(
  method: string,
  route: string,
  opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${baseUrl}${route}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: AbortSignal.timeout(CHECKOUT_TIMEOUT_MS),
  });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text };
}

class StepError extends Error {}
function expectStatus(a: Answer, status: number, what: string): void {
  if (a.status !== status) throw new StepError(`${what}: ${a.status} ${a.text.slice(0, 200)}`);
}

// ---------------- the cluster ----------------

// Every variable Meridian reads, blanked in the children (empty = unset), so the caller's shell
// cannot turn the run into something else (an exported ETCD_HOSTS, SMTP_URL, RESERVATION_TTL_SECONDS…).
const MERIDIAN_VAR =
  /^(PORT|DATA_DIR|SERVICES|NODE_ID|NAMESPACE|RABBITMQ_|ETCD_|REDIS_|MYSQL_|SERIALIZER|JWT_|ADMIN_|PUBLIC_URL|LOG_|TRUST_PROXY|MIGRATE_|DEMO_|ELASTIC|SMTP_|MAIL_|RESERVATION_|PAYMENT_|SANDBOX_|ALIPAY_|WECHAT|EVENTS_|BODY_|REQUEST_|HEARTBEAT_|ACCESS_TOKEN|REFRESH_TOKEN|LOGIN_)/;
const BLANK = Object.fromEntries(
  Object.keys(process.env)
    .filter((k) => MERIDIAN_VAR.test(k))
    .map((k) => [k, ""]),
);

interface Cluster {
  env: Record<string, string>;
  config: AppConfig;
  nodes: BenchChild[];
  /** Cluster: this process's broker in the cluster (creates products). Embedded: none (products over HTTP). */
  observer?: ServiceBroker;
  /** Embedded: the bootstrapped admin's token. */
  adminToken?: string;
  /** The product and other services' databases, read directly for the checks. */
  db: Record<"product" | "order" | "payment" | "notification", Knex>;
  layout: string;
}

const DB_SERVICES = ["user", "product", "cart", "order", "payment", "notification"] as const;

/**
 * What every mode's nodes share: a temp DATA_DIR, one JWT secret, a generated SANDBOX_PAY_* key
 * pair, the gateway's free port (PUBLIC_URL, so the sandbox platform calls it back over HTTP).
 */
async function nodeEnv(): Promise<{ env: Record<string, string>; port: number }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-bench-checkout-"));
  onCleanup(`remove ${dataDir}`, () => fs.rmSync(dataDir, { recursive: true, force: true }));
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  const env = {
    ...BLANK,
    JWT_SECRET: randomBytes(32).toString("hex"),
    SANDBOX_PAY_PRIVATE_KEY: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    SANDBOX_PAY_PUBLIC_KEY: publicKey.export({ type: "spki", format: "pem" }).toString(),
    PUBLIC_URL: baseUrl,
    DEMO_CATALOG: "false",
    LOG_LEVEL,
    LOG_FORMAT: "text",
    // A flash sale queues a thousand calls at once: the 5 s default would time some out.
    REQUEST_TIMEOUT_MS: "30000",
    // A thousand buyers from one address: the request budgets (sign-ups per address) would refuse them.
    RATE_LIMITS: "off",
    DATA_DIR: dataDir,
  };
  return { env, port };
}

/** The databases the checks read directly (MariaDB in a cluster, the node's SQLite files embedded). */
function checkDatabases(config: AppConfig): Cluster["db"] {
  const db = {
    product: createKnex(config, "product"),
    order: createKnex(config, "order"),
    payment: createKnex(config, "payment"),
    notification: createKnex(config, "notification"),
  };
  onCleanup("close the check connections", () => Promise.all(Object.values(db).map((k) => k.destroy())));
  return db;
}

async function startCluster(): Promise<Cluster> {
  const t0 = Date.now();
  say("[cluster] creating a RabbitMQ vhost...\n");
  const vhost = await createVhost();
  onCleanup(`delete RabbitMQ vhost ${vhost.vhost}`, () => vhost.destroy());
  const namespace = uniqueNamespace("bench");
  const { env: common, port } = await nodeEnv();
  const env: Record<string, string> = {
    ...common,
    NAMESPACE: namespace,
    RABBITMQ_URI: vhost.uri,
    REDIS_URL,
    MYSQL_URL,
    MIGRATE_ON_START: "true",
  };
  const config = loadConfig({ ...env, SERVICES: "all" });
  onCleanup(`drop MariaDB databases and Redis keys of namespace ${namespace}`, async () => {
    for (const s of DB_SERVICES) await dropDatabase(config, s).catch(() => undefined);
    await deleteRedisKeys(REDIS_URL, namespace);
  });
  const bin = path.join(__dirname, "..", "bin", "start.ts");
  const started = /Meridian started/;
  const node = (id: string, services: string, extra: Record<string, string> = {}) =>
    startChild(
      bin,
      id,
      { ...env, NODE_ID: `${namespace}-${id}`, SERVICES: services, PORT: String(port), ...extra },
      profileArgs("cluster", id),
    );

  // The front node first: it migrates user, product, cart and notification; then the replicas
  // (one of each first, so no two migrate the same database at once, though that would be safe).
  const front = node("front", "gateway,user,product,cart,notification");
  const nodes = [front];
  say(`[cluster] starting front (gateway,user,product,cart,notification) at ${baseUrl}...\n`);
  await front.waitForLine(started, 120_000);
  await waitForStatus(`${baseUrl}/health/ready`, 200, [front], 60_000);
  const firsts = [node("order-1", "order"), node("payment-1", "payment")];
  nodes.push(...firsts);
  say("[cluster] starting order-1, payment-1...\n");
  await Promise.all(firsts.map((c) => c.waitForLine(started, 120_000)));
  const rest: BenchChild[] = [];
  for (let i = 2; i <= ORDER_REPLICAS; i++) rest.push(node(`order-${i}`, "order"));
  for (let i = 2; i <= PAYMENT_REPLICAS; i++) rest.push(node(`payment-${i}`, "payment"));
  nodes.push(...rest);
  if (rest.length) {
    say(`[cluster] starting ${rest.map((c) => c.name).join(", ")}...\n`);
    await Promise.all(rest.map((c) => c.waitForLine(started, 120_000)));
  }

  // This process joins (no services): to see every replica discovered, and to create products.
  const observer = createBroker(loadConfig({ ...env, NODE_ID: `${namespace}-bench`, SERVICES: "gateway", LOG_LEVEL: "warn" }), []);
  onCleanup("stop the observer broker", () => observer.stop());
  await observer.start();
  const want: Record<string, number> = {
    api: 1,
    user: 1,
    product: 1,
    cart: 1,
    notification: 1,
    order: ORDER_REPLICAS,
    payment: PAYMENT_REPLICAS,
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    const list = observer.registry.getServiceList({ onlyAvailable: true }) as { name: string }[];
    const have = (s: string) => list.filter((x) => x.name === s).length;
    if (Object.entries(want).every(([s, n]) => have(s) >= n)) break;
    if (Date.now() > deadline)
      throw new Error(
        `not every replica was discovered within 60 s: ${Object.keys(want)
          .map((s) => `${s} ${have(s)}/${want[s]}`)
          .join(", ")}`,
      );
    await sleep(200);
  }
  const db = checkDatabases(config);
  const layout = `front (gateway,user,product,cart,notification) + ${ORDER_REPLICAS} × order + ${PAYMENT_REPLICAS} × payment`;
  say(`[cluster] ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${layout}, every replica discovered\n`);
  return { env, config, nodes, observer, db, layout };
}

/** BENCH_MODE=embedded: one node with every service on SQLite, the laptop default. */
async function startEmbedded(): Promise<Cluster> {
  const t0 = Date.now();
  const { env: common, port } = await nodeEnv();
  const admin = { email: "bench-admin@example.com", password: randomBytes(12).toString("hex") };
  const env: Record<string, string> = {
    ...common,
    PORT: String(port),
    GRPC_PORT: String(await freePort()),
    METRICS_PORT: "0",
    ADMIN_EMAIL: admin.email,
    ADMIN_PASSWORD: admin.password,
  };
  const config = loadConfig(env);
  say(`[embedded] starting one node (every service, SQLite) at ${baseUrl}...\n`);
  const node = startChild(path.join(__dirname, "..", "bin", "start.ts"), "embedded", env, profileArgs("embedded", "node"));
  await node.waitForLine(/Meridian started/, 120_000);
  await waitForStatus(`${baseUrl}/health/ready`, 200, [node], 60_000);
  const login = await api("POST", "/api/auth/login", { body: admin });
  expectStatus(login, 200, "admin login");
  const db = checkDatabases(config);
  const layout = "embedded: one node with every service, SQLite";
  say(`[embedded] ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  return { env, config, nodes: [node], db, layout, adminToken: (login.body as { accessToken: string }).accessToken };
}

async function createProduct(c: Cluster, label: string, stock: number): Promise<string> {
  const product = {
    sku: `BENCH-${label}-${randomBytes(4).toString("hex")}`,
    name: `Bench product ${label}`,
    description: "checkout benchmark",
    category: "Bench",
    price: { amount: 1999, currency: "EUR" },
    stock,
  };
  if (c.observer) return (await c.observer.call<{ id: string }, unknown>("product.create", product)).id;
  const a = await api("POST", "/api/products", { token: c.adminToken, body: product });
  expectStatus(a, 201, "POST /api/products (admin)");
  return (a.body as { id: string }).id;
}

async function createProducts(c: Cluster, label: string, n: number, stock: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 10)
    ids.push(...(await Promise.all(Array.from({ length: Math.min(10, n - i) }, (_, j) => createProduct(c, `${label}-${i + j}`, stock)))));
  return ids;
}

// ---------------- buyers ----------------

interface Buyer {
  id: string;
  token: string;
}

async function registerBuyers(n: number): Promise<{ buyers: Buyer[]; seconds: number }> {
  const runId = randomBytes(3).toString("hex");
  const t0 = performance.now();
  let done = 0;
  say(`[buyers] registering ${n} users through POST /api/auth/register (argon2id), 8 at a time:`);
  const buyers = await mapBounded(
    range(n),
    8,
    async (i): Promise<Buyer> => {
      const a = await api("POST", "/api/auth/register", {
        body: { email: `buyer-${runId}-${i}@bench.example`, password: PASSWORD, name: `Buyer ${i}` },
      });
      expectStatus(a, 201, "register");
      if (++done % 100 === 0 || done === n) say(` ${done}`);
      return { id: a.body.user.id, token: a.body.accessToken };
    },
    { stop: aborting },
  );
  const seconds = (performance.now() - t0) / 1000;
  say(` done in ${seconds.toFixed(1)} s\n`);
  return { buyers, seconds };
}

// ---------------- closed loop (raw baseline and checkout) ----------------

interface LoopResult {
  ok: number;
  refused: number;
  errors: number;
  firstError?: string;
  /** Operations completed in the measured window. */
  measuredOps: number;
  perSecond: number;
  /** Latency of every operation started in the measured window. */
  p50: number;
  p99: number;
  max: number;
  samples: number;
  cores: [string, number | undefined][];
  /** Share of the measured window with a task waiting for a CPU (PSI), if known. */
  stall?: number;
  /** MariaDB's statements and commits during the measured window (cluster), from every client. */
  sql?: SqlCounts;
  durationS: number;
}

/**
 * `workers` callers, each running `op` after its previous one finished: `warmupS` not counted,
 * then `durationS` measured; operations running at the end finish (and count in ok/errors).
 */
interface SqlCounts {
  statements: number;
  commits: number;
}

/**
 * MariaDB's own counters (cluster): `Questions` (statements sent by clients) and `Com_commit`,
 * server-wide. Counts, not timings: what a checkout asks of the database, which moves far less
 * than a timing (a little with timing: polls, sweeps per checkout; and every client counts). Set by main() on a connection of its own; undefined embedded.
 */
let sqlCounts: () => Promise<SqlCounts | undefined> = async () => undefined;

async function closedLoop(
  label: string,
  workers: number,
  warmupS: number,
  durationS: number,
  procs: { name: string; pid: number | undefined }[],
  op: (worker: number, n: number) => Promise<boolean>,
): Promise<LoopResult> {
  say(`    ${label}: ${warmupS}s warm-up + ${durationS}s measured:`);
  const start = performance.now();
  const measureFrom = start + warmupS * 1000;
  const measureTo = measureFrom + durationS * 1000;
  let ticks = warmupS + durationS;
  const ticker = setInterval(() => ticks > 0 && say(` ${--ticks}`), 1000);
  const latencies: number[] = [];
  const r = { ok: 0, refused: 0, errors: 0, firstError: undefined as string | undefined, measuredOps: 0 };
  let window: CpuWindow | undefined;
  let cores: [string, number | undefined][] = [];
  let stall: number | undefined;
  let sql0: Promise<SqlCounts | undefined> | undefined;
  let sql1: Promise<SqlCounts | undefined> | undefined;
  const t1 = setTimeout(
    () => {
      window = cpuWindow(procs);
      // A failed read leaves the counts unknown (not printed), never an unhandled rejection.
      sql0 = sqlCounts().catch(() => undefined);
    },
    Math.max(0, measureFrom - performance.now()),
  );
  const t2 = setTimeout(
    () => {
      sql1 = sqlCounts().catch(() => undefined);
      const w = window?.stop();
      cores = w?.cores ?? [];
      stall = w?.stall;
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
            if (await op(w, i)) r.ok++;
            else r.refused++;
          } catch (err) {
            r.errors++;
            r.firstError ??= err instanceof Error ? err.message : String(err);
          }
          const t = performance.now();
          if (t >= measureFrom && t < measureTo) r.measuredOps++;
          if (t0 >= measureFrom) latencies.push(t - t0);
        }
      }),
    );
  } finally {
    clearInterval(ticker);
    clearTimeout(t1);
    clearTimeout(t2);
    say(" done\n");
  }
  const sorted = sortedOf(latencies);
  const [a, b] = await Promise.all([sql0, sql1]);
  return {
    ...r,
    sql: a && b ? { statements: b.statements - a.statements, commits: b.commits - a.commits } : undefined,
    perSecond: r.measuredOps / durationS,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: percentile(sorted, 1),
    samples: sorted.length,
    cores,
    stall,
    durationS,
  };
}

// ---------------- part 1: the raw MariaDB ceiling ----------------

interface RawRow {
  name: string;
  result: LoopResult;
  check: string;
}

async function runRaw(c: Cluster, procs: { name: string; pid: number | undefined }[]): Promise<RawRow[]> {
  say(`\n[raw] the MariaDB ceiling: ${CONCURRENCY} callers, BEGIN; ${RAW_UPDATE}; COMMIT\n`);
  const ids = await createProducts(c, "raw", PRODUCTS, BIG_STOCK);
  const hot = await createProduct(c, "raw-hot", BIG_STOCK);
  const poolMax = (c.db.product.client.config as { pool?: { max?: number } }).pool?.max ?? 10;
  const u = new URL(c.config.mysqlUrl!);
  const pool = mysql.createPool({
    host: u.hostname,
    port: u.port ? Number(u.port) : 3306,
    user: decodeURIComponent(u.username || "root"),
    password: decodeURIComponent(u.password),
    database: databaseName(c.config, "product"),
    supportBigNumbers: true,
    charset: "utf8mb4",
    connectionLimit: poolMax,
  });
  let ended = false;
  onCleanup("close the raw mysql2 pool", () => (ended ? undefined : pool.end()));
  notes.push(
    `raw: a mysql2 pool of ${poolMax} connections (the size of the product service's knex pool), ${CONCURRENCY} callers, ${RAW_WARMUP_S} s warm-up + ${RAW_S} s per case, while the cluster is idle.`,
  );
  const once = (id: string) => rawConditionalUpdate(pool, RAW_UPDATE, [id]);
  const rows: RawRow[] = [];
  const cases: [string, (w: number, n: number) => string, string[]][] = [
    [`raw UPDATE, ${PRODUCTS} products`, () => ids[Math.floor(Math.random() * ids.length)], ids],
    ["raw UPDATE, 1 hot product", () => hot, [hot]],
  ];
  for (const [name, pick, set] of cases) {
    if (aborting()) break;
    const result = await closedLoop(name, CONCURRENCY, RAW_WARMUP_S, RAW_S, procs, (w, n) => once(pick(w, n)));
    const sold = (await c.db
      .product("products")
      .whereIn("id", set)
      .select(c.db.product.raw("SUM(? - on_hand) AS sold", [BIG_STOCK]))
      .first()) as { sold: number | string };
    const ok = Number(sold.sold) === result.ok && result.errors === 0 && result.refused === 0;
    const check = `${ok ? "OK" : "MISMATCH"}: on_hand down by ${fmt(Number(sold.sold))}, successful UPDATEs ${fmt(result.ok)}, no stock ${result.refused}, errors ${result.errors}`;
    if (!ok) fail(`${name}: ${check}${result.firstError ? ` (${result.firstError})` : ""}`);
    say(`    ${fmt(result.perSecond)} ops/s, p50 ${fmt(result.p50, 2)} ms, p99 ${fmt(result.p99, 2)} ms; ${check}\n`);
    rows.push({ name, result, check });
  }
  // Its connections would count against MariaDB's max_connections (shared) during the checkout.
  ended = true;
  await pool.end();
  return rows;
}

// ---------------- part 2: checkouts ----------------

interface Steps {
  create: number[];
  /** Opening the two feeds (BENCH_WATCH=sse). */
  open: number[];
  pay: number[];
  complete: number[];
  paid: number[];
  notified: number[];
  /** GETs (poll) or events received on the two feeds (sse), summed over the checkouts. */
  observed: number;
}

/** How a shopper sees its order PAID and its payment.succeeded notification (BENCH_WATCH). */
interface Watch {
  paid(): Promise<void>;
  notified(): Promise<void>;
  /** Events received (sse) or GETs sent (poll) so far. */
  observed(): number;
  close(): Promise<unknown>;
}

/** The buyer's two live feeds, opened before paying so that neither change can come before its stream. */
async function openFeeds(token: string, orderId: string, deadline: number): Promise<Watch> {
  const open = async (route: string) => {
    const res = await fetch(`${baseUrl}${route}`, {
      headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
      signal: AbortSignal.timeout(Math.max(1, Math.ceil(deadline - performance.now()))),
    });
    if (res.status !== 200) throw new StepError(`GET ${route}: ${res.status} ${(await res.text()).slice(0, 200)}`);
    return sseReader(res);
  };
  const both = await Promise.allSettled([open(`/api/orders/${orderId}/events`), open("/api/notifications/stream")]);
  const readers = both.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failed = both.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    // The other one may be open: closed, so no stream outlives its checkout.
    await Promise.all(readers.map((r) => r.close()));
    throw failed.reason;
  }
  const [order, notes] = readers;
  const left = () => Math.max(1, Math.ceil(deadline - performance.now()));
  return {
    async paid(): Promise<void> {
      const e = await order.until(`order ${orderId} PAID`, (x) => x.event !== "order" || x.data.order.status !== "PENDING_PAYMENT", left());
      if (e.event !== "order") throw new StepError(`order ${orderId}'s feed: ${JSON.stringify(e.data).slice(0, 200)}`);
      if (e.data.order.status !== "PAID") throw new StepError(`order ${orderId} is ${e.data.order.status}`);
    },
    async notified(): Promise<void> {
      const e = await notes.until(
        `payment.succeeded for ${orderId}`,
        (x) => x.event !== "notification" || (x.data.type === "payment.succeeded" && x.data.data?.orderId === orderId),
        left(),
      );
      if (e.event !== "notification") throw new StepError(`the notification feed: ${JSON.stringify(e.data).slice(0, 200)}`);
    },
    observed: () => order.events.length + notes.events.length,
    close: () => Promise.all([order.close(), notes.close()]),
  };
}

/** BENCH_WATCH=poll: GET /api/orders/:id, then GET /api/notifications, every BENCH_POLL_MS. */
function pollWatch(token: string, orderId: string, deadline: number): Watch {
  let polls = 0;
  const until = async (route: string, what: string, seen: (body: any) => boolean) => {
    for (;;) {
      polls++;
      const a = await api("GET", route, { token });
      expectStatus(a, 200, `GET ${route}`);
      if (seen(a.body)) return;
      if (performance.now() > deadline) throw new StepError(`${what} not within ${CHECKOUT_TIMEOUT_MS} ms`);
      await sleep(POLL_MS);
    }
  };
  return {
    paid: () =>
      until(`/api/orders/${orderId}`, `order ${orderId} PAID`, (o: { status: string }) => {
        if (o.status !== "PAID" && o.status !== "PENDING_PAYMENT") throw new StepError(`order ${orderId} is ${o.status}`);
        return o.status === "PAID";
      }),
    notified: () =>
      until(
        "/api/notifications?pageSize=10",
        `a payment.succeeded notification for ${orderId}`,
        (n: { items: { type: string; data?: { orderId?: string } }[] }) =>
          n.items.some((x) => x.type === "payment.succeeded" && x.data?.orderId === orderId),
      ),
    observed: () => polls,
    close: async () => undefined,
  };
}

async function oneCheckout(buyer: Buyer, productId: string, steps?: Steps): Promise<string> {
  const t0 = performance.now();
  const deadline = t0 + CHECKOUT_TIMEOUT_MS;
  const created = await api("POST", "/api/orders", {
    token: buyer.token,
    headers: { "Idempotency-Key": randomUUID() },
    body: { shippingAddress: ADDRESS, items: [{ productId, quantity: 1 }] },
  });
  expectStatus(created, 201, "POST /api/orders");
  const orderId: string = created.body.id;
  const t1 = performance.now();
  const watch = WATCH === "sse" ? await openFeeds(buyer.token, orderId, deadline) : pollWatch(buyer.token, orderId, deadline);
  try {
    const t1b = performance.now();
    const pay = await api("POST", `/api/orders/${orderId}/pay`, { token: buyer.token, body: { provider: "sandbox" } });
    if (pay.status !== 200 && pay.status !== 201) throw new StepError(`POST /api/orders/:id/pay: ${pay.status} ${pay.text.slice(0, 200)}`);
    const token = new URL(pay.body.payUrl).searchParams.get("token");
    const t2 = performance.now();
    const complete = await api("POST", `/api/payments/sandbox/${pay.body.id}/complete`, { body: { outcome: "success", token } });
    expectStatus(complete, 202, "POST /api/payments/sandbox/:id/complete");
    const t3 = performance.now();
    await watch.paid();
    const t4 = performance.now();
    await watch.notified();
    const t5 = performance.now();
    if (steps) {
      steps.create.push(t1 - t0);
      if (WATCH === "sse") steps.open.push(t1b - t1);
      steps.pay.push(t2 - t1b);
      steps.complete.push(t3 - t2);
      steps.paid.push(t4 - t3);
      steps.notified.push(t5 - t4);
      steps.observed += watch.observed();
    }
  } finally {
    await watch.close();
  }
  return orderId;
}

interface CheckoutResult {
  result: LoopResult;
  steps: Steps;
  check: string;
}

/** Polls `probe` until it answers true or `timeoutMs` passes; false then. */
async function settle(probe: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(200);
  }
}

async function runCheckout(c: Cluster, buyers: Buyer[], procs: { name: string; pid: number | undefined }[]): Promise<CheckoutResult> {
  say(`\n[checkout] ${CONCURRENCY} checkouts in flight over ${PRODUCTS} products, POST /api/orders → PAID and notified (${watching})\n`);
  const ids = await createProducts(c, "shop", PRODUCTS, BIG_STOCK);
  const steps: Steps = { create: [], open: [], pay: [], complete: [], paid: [], notified: [], observed: 0 };
  const orderIds: string[] = [];
  // A few checkouts first: the first calls pay for connections, caches and JIT.
  say("    first checkout...");
  const first = await oneCheckout(buyers[0], ids[0]);
  orderIds.push(first);
  say(" ok\n");
  const result = await closedLoop("checkout", CONCURRENCY, WARMUP_S, DURATION_S, procs, async (w, n) => {
    // Worker w uses buyers w, w + CONCURRENCY, …: no buyer has two checkouts at once.
    const buyer = buyers[(w + n * CONCURRENCY) % buyers.length];
    orderIds.push(await oneCheckout(buyer, ids[Math.floor(Math.random() * ids.length)], steps));
    return true;
  });
  if (result.errors) fail(`checkout: ${result.errors} checkout(s) failed, e.g. ${result.firstError?.slice(0, 300)}`);
  // Checks: every order the run created is PAID, one SUCCEEDED payment each, the stock sold is
  // exactly those units with nothing left reserved, one payment.succeeded notification each.
  say("    checking the databases...");
  const paidOrders = orderIds.length;
  const sold = async () =>
    (await c.db
      .product("products")
      .whereIn("id", ids)
      .select(c.db.product.raw("SUM(? - on_hand) AS sold, SUM(reserved) AS reserved", [BIG_STOCK]))
      .first()) as { sold: number | string; reserved: number | string };
  const settled = await settle(async () => {
    const s = await sold();
    return Number(s.sold) === paidOrders && Number(s.reserved) === 0;
  }, 30_000);
  const s = await sold();
  const orders = await c.db.order("orders").select("status").count({ n: "*" }).groupBy<
    {
      status: string;
      n: number | string;
    }[]
  >("status");
  const byStatus = Object.fromEntries(orders.map((o) => [o.status, Number(o.n)]));
  const payments = (await c.db.payment("payments").where({ status: "SUCCEEDED" }).count({ n: "*" }).first()) as { n: number | string };
  const notified = (await c.db.notification("notifications").where({ type: "payment.succeeded" }).count({ n: "*" }).first()) as {
    n: number | string;
  };
  const ok =
    settled &&
    byStatus.PAID === paidOrders &&
    Object.keys(byStatus).length === 1 &&
    Number(payments.n) === paidOrders &&
    Number(notified.n) === paidOrders &&
    result.errors === 0;
  const check =
    `${ok ? "OK" : "MISMATCH"}: ${fmt(paidOrders)} checkouts completed (warm-up and first one included); orders ${Object.entries(byStatus)
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join(", ")}; ` +
    `SUCCEEDED payments ${fmt(Number(payments.n))}; units sold ${fmt(Number(s.sold))}, reserved ${fmt(Number(s.reserved))}; payment.succeeded notifications ${fmt(Number(notified.n))}`;
  say(` ${check}\n`);
  if (!ok) fail(`checkout: ${check}`);
  say(`    ${fmt(result.perSecond, 1)} checkouts/s, p50 ${fmt(result.p50)} ms, p99 ${fmt(result.p99)} ms\n`);
  return { result, steps, check };
}

// ---------------- part 3: the flash sale ----------------

interface FlashResult {
  answersS: number;
  paidS: number;
  created: number;
  outOfStock: number;
  other: number;
  firstOther?: string;
  createP50: number;
  createP99: number;
  check: string;
  cores: [string, number | undefined][];
  stall?: number;
}

async function runFlash(c: Cluster, buyers: Buyer[], procs: { name: string; pid: number | undefined }[]): Promise<FlashResult> {
  say(`\n[flash] ${FLASH_BUYERS} buyers at once for ${FLASH_UNITS} units; each winner pays at once through the sandbox\n`);
  const productId = await createProduct(c, "flash", FLASH_UNITS);
  const window = cpuWindow(procs);
  const t0 = performance.now();
  let answered = 0;
  let created = 0;
  let outOfStock = 0;
  let other = 0;
  let firstOther: string | undefined;
  const createTimes: number[] = [];
  const winners: { buyer: Buyer; orderId: string }[] = [];
  const payErrors: string[] = [];
  let lastAnswerAt = 0;
  const ticker = setInterval(() => say(` [${answered} answered, ${created} orders]`), 1000);
  say("   ");
  const pays: Promise<void>[] = [];
  await Promise.all(
    buyers.slice(0, FLASH_BUYERS).map(async (buyer) => {
      const s = performance.now();
      let a: Answer;
      try {
        a = await api("POST", "/api/orders", {
          token: buyer.token,
          headers: { "Idempotency-Key": randomUUID() },
          body: { shippingAddress: ADDRESS, items: [{ productId, quantity: 1 }] },
        });
      } catch (err) {
        a = { status: 0, body: undefined, text: err instanceof Error ? err.message : String(err) };
      }
      createTimes.push(performance.now() - s);
      answered++;
      lastAnswerAt = performance.now();
      if (a.status === 201) {
        created++;
        const orderId = a.body.id as string;
        winners.push({ buyer, orderId });
        pays.push(
          (async () => {
            const pay = await api("POST", `/api/orders/${orderId}/pay`, { token: buyer.token, body: { provider: "sandbox" } });
            if (pay.status !== 200 && pay.status !== 201) throw new StepError(`pay: ${pay.status} ${pay.text.slice(0, 200)}`);
            const token = new URL(pay.body.payUrl).searchParams.get("token");
            const done = await api("POST", `/api/payments/sandbox/${pay.body.id}/complete`, { body: { outcome: "success", token } });
            expectStatus(done, 202, "complete");
          })().catch((err) => void payErrors.push(err instanceof Error ? err.message : String(err))),
        );
      } else if (a.status === 409 && a.body?.error?.code === "OUT_OF_STOCK") outOfStock++;
      else {
        other++;
        firstOther ??= `${a.status} ${a.text.slice(0, 200)}`;
      }
    }),
  );
  const answersS = (lastAnswerAt - t0) / 1000;
  clearInterval(ticker);
  say(
    `\n    all ${FLASH_BUYERS} answered in ${answersS.toFixed(2)} s: ${created} orders, ${outOfStock} OUT_OF_STOCK, ${other} other; waiting for PAID:`,
  );
  await Promise.all(pays);
  const ids = winners.map((w) => w.orderId);
  const paidCount = async () =>
    ids.length
      ? Number(
          ((await c.db.order("orders").whereIn("id", ids).where({ status: "PAID" }).count({ n: "*" }).first()) as { n: number | string }).n,
        )
      : 0;
  let paidAt = NaN;
  const deadline = performance.now() + 120_000;
  let shown = -1;
  for (;;) {
    const n = await paidCount();
    if (n !== shown && (n % 10 === 0 || n === ids.length)) say(` ${(shown = n)}`);
    if (n === ids.length) {
      paidAt = performance.now();
      break;
    }
    if (performance.now() > deadline) break;
    await sleep(50);
  }
  const { cores, stall } = window.stop();
  const paidS = (paidAt - t0) / 1000;
  say(Number.isFinite(paidS) ? ` PAID ${paidS.toFixed(2)} s after the start\n` : " NOT all PAID within 120 s\n");
  // Checks: exactly FLASH_UNITS orders, all PAID, stock 0, nothing held, every other buyer
  // refused with OUT_OF_STOCK, each winner notified exactly once.
  say("    checking the databases...");
  const stockOk = await settle(async () => {
    const p = await c.db.product("products").where({ id: productId }).first<{
      on_hand: number;
      reserved: number;
    }>("on_hand", "reserved");
    return Number(p.on_hand) === 0 && Number(p.reserved) === 0;
  }, 30_000);
  const p = await c.db.product("products").where({ id: productId }).first<{ on_hand: number; reserved: number }>("on_hand", "reserved");
  const held = (await c.db.product("reservations").where({ product_id: productId, status: "held" }).count({ n: "*" }).first()) as {
    n: number | string;
  };
  const ordersOfProduct = (await c.db.order("order_items").where({ product_id: productId }).countDistinct({ n: "order_id" }).first()) as {
    n: number | string;
  };
  const paid = await paidCount();
  const notifiedOnce = await settle(async () => {
    if (!ids.length) return true;
    const rows = await c.db
      .notification("notifications")
      .whereIn(
        "user_id",
        winners.map((w) => w.buyer.id),
      )
      .where({ type: "payment.succeeded" })
      .select<{ data: string }[]>("data");
    const per = new Map<string, number>();
    for (const r of rows) {
      const o = (JSON.parse(r.data) as { orderId?: string }).orderId;
      if (o && ids.includes(o)) per.set(o, (per.get(o) ?? 0) + 1);
    }
    return per.size === ids.length && [...per.values()].every((v) => v === 1);
  }, 30_000);
  const ok =
    created === FLASH_UNITS &&
    outOfStock === FLASH_BUYERS - FLASH_UNITS &&
    other === 0 &&
    payErrors.length === 0 &&
    paid === FLASH_UNITS &&
    Number(ordersOfProduct.n) === FLASH_UNITS &&
    stockOk &&
    Number(held.n) === 0 &&
    notifiedOnce;
  const check =
    `${ok ? "OK" : "MISMATCH"}: ${created} orders (${Number(ordersOfProduct.n)} in the order database), ${outOfStock} OUT_OF_STOCK, ${other} other answers, ` +
    `${paid} PAID, pay errors ${payErrors.length}; on_hand ${p.on_hand}, reserved ${p.reserved}, held reservations ${Number(held.n)}; ` +
    `each winner notified exactly once: ${notifiedOnce ? "yes" : "NO"}`;
  say(` ${check}\n`);
  if (!ok) fail(`flash sale: ${check}${firstOther ? `; e.g. ${firstOther}` : ""}${payErrors[0] ? `; pay error e.g. ${payErrors[0]}` : ""}`);
  const sorted = sortedOf(createTimes);
  return {
    answersS,
    paidS,
    created,
    outOfStock,
    other,
    firstOther,
    createP50: percentile(sorted, 0.5),
    createP99: percentile(sorted, 0.99),
    check,
    cores,
    stall,
  };
}

// ---------------- main ----------------

async function main(): Promise<void> {
  installSignalCleanup();
  const started = new Date();
  const load0 = os.loadavg();
  const header =
    `Checkout benchmark, ${started.toISOString()}: Node ${process.version}, ${os.cpus().length} CPU(s) (${os.cpus()[0]?.model.trim()}), ` +
    `${EMBEDDED ? "embedded (one node, SQLite)" : `cluster on this machine (${ORDER_REPLICAS} order, ${PAYMENT_REPLICAS} payment replicas)`}, ${CONCURRENCY} in flight; load average at start ${load0.map((l) => l.toFixed(2)).join(" ")}`;
  say(`${header}\n`);
  const c = EMBEDDED ? await startEmbedded() : await startCluster();
  if (!EMBEDDED) {
    const counters = await mysql.createConnection(MYSQL_URL);
    onCleanup("close the MariaDB counters' connection", () => counters.end());
    sqlCounts = async () => {
      const [rows] = await counters.query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_commit')");
      const v = Object.fromEntries((rows as { Variable_name: string; Value: string }[]).map((r) => [r.Variable_name, Number(r.Value)]));
      return { statements: v.Questions, commits: v.Com_commit };
    };
  }
  const shared = EMBEDDED
    ? []
    : [
        { name: "MariaDB", pid: pidOf("mariadbd", "mysqld") },
        { name: "RabbitMQ", pid: pidOf("beam.smp") },
        { name: "Redis", pid: pidOf("redis-server") },
      ];
  const procs = [...c.nodes.map((n) => ({ name: n.name, pid: n.pid })), ...shared];
  const startupLines = new Map(c.nodes.map((n) => [n.name, n.lines.length]));

  const { buyers, seconds: registerS } = await registerBuyers(Math.max(BUYERS, PARTS.includes("checkout") ? CONCURRENCY : 0));
  notes.push(
    `${buyers.length} buyers registered through POST /api/auth/register in ${registerS.toFixed(1)} s (${fmt(buyers.length / registerS, 1)}/s, 8 at a time).`,
  );

  const raw = PARTS.includes("raw") && !aborting() ? await runRaw(c, procs) : [];
  const checkout = PARTS.includes("checkout") && !aborting() ? await runCheckout(c, buyers, procs) : undefined;
  const flash = PARTS.includes("flash") && !aborting() ? await runFlash(c, buyers, procs) : undefined;
  if (aborting()) return new Promise<never>(() => undefined); // the signal handler cleans up and exits

  // Warnings and errors the nodes logged during the parts.
  for (const n of c.nodes) {
    const bad = n.lines.slice(startupLines.get(n.name)).filter((l) => /\b(WARN|ERROR|FATAL)\b/.test(l));
    if (bad.length) notes.push(`${n.name} logged ${bad.length} warning/error line(s), e.g. ${bad[0].slice(0, 240)}`);
  }

  notes.unshift(
    "CPU ms/op: CPU time (user + system) during the measured window, per operation completed in it, of the servers (the nodes, the MariaDB, RabbitMQ and Redis servers) and of all processes (those and this process, the load generator: its HTTP client and the shoppers' watching or polling). " +
      "CPU stall (PSI): share of the window during which at least one runnable task on the machine waited for a CPU (/proc/pressure/cpu, anyone's tasks): high means the figures are bounded by the shared CPU.",
  );
  const load1 = os.loadavg();
  const parts: string[] = [];
  const rawMany = raw[0]?.result;
  if (raw.length || checkout) {
    const cpuPerOp = (x: LoopResult, servers = false) => fmt(cpuMsPerOp(x, servers), 2);
    const stallOf = (x: { stall?: number }) => (x.stall === undefined ? "?" : pct(x.stall));
    const rows: string[][] = raw.map((r) => [
      r.name,
      fmt(r.result.perSecond),
      rawMany ? pct(r.result.perSecond / rawMany.perSecond) : "-",
      fmt(r.result.p50, 2),
      fmt(r.result.p99, 2),
      cpuPerOp(r.result, true),
      cpuPerOp(r.result),
      stallOf(r.result),
      fmt(r.result.ok),
      r.check.split(":")[0],
    ]);
    if (checkout) {
      const x = checkout.result;
      rows.push([
        "checkout: POST /api/orders → PAID and notified",
        fmt(x.perSecond, 1),
        rawMany ? pct(x.perSecond / rawMany.perSecond) : "-",
        fmt(x.p50, 1),
        fmt(x.p99, 1),
        cpuPerOp(x, true),
        cpuPerOp(x),
        stallOf(x),
        fmt(x.ok),
        checkout.check.split(":")[0],
      ]);
    }
    parts.push(
      `Throughput, ${CONCURRENCY} in flight (checkout: ${WARMUP_S} s warm-up + ${DURATION_S} s measured; raw: ${RAW_WARMUP_S} s + ${RAW_S} s each):`,
      "",
      markdownTable(
        [
          "Case",
          "ops/s",
          `vs raw (${PRODUCTS} products)`,
          "p50 ms",
          "p99 ms",
          "CPU ms/op (servers)",
          "CPU ms/op (all processes)",
          "CPU stall (PSI)",
          "completed (incl. warm-up)",
          "check",
        ],
        rows,
        [false, true, true, true, true, true, true, true, true, false],
      ),
    );
    if (checkout) {
      const st = checkout.steps;
      const med = (xs: number[]) => fmt(percentile(sortedOf(xs), 0.5), 1);
      const p99 = (xs: number[]) => fmt(percentile(sortedOf(xs), 0.99), 1);
      const sql = checkout.result.sql;
      const perOp = (n: number) => fmt(n / Math.max(1, checkout.result.measuredOps), 1);
      parts.push(
        "",
        ...(sql
          ? [
              `MariaDB per checkout (its server-wide counters over the measured window, counts, which move far less than timings): ${perOp(sql.statements)} statements, ${perOp(sql.commits)} commits.`,
              "",
            ]
          : []),
        "Checkout steps (every checkout, warm-up included), ms p50 / p99: " +
          `POST /api/orders ${med(st.create)} / ${p99(st.create)}; POST …/pay ${med(st.pay)} / ${p99(st.pay)}; ` +
          `sandbox complete ${med(st.complete)} / ${p99(st.complete)}; complete → order PAID ${med(st.paid)} / ${p99(st.paid)}; ` +
          `PAID → notification seen ${med(st.notified)} / ${p99(st.notified)}. ` +
          (WATCH === "sse"
            ? `Watching: opening the order's and the notification feed ${med(st.open)} / ${p99(st.open)} (after POST /api/orders, before paying); ${fmt(st.observed / Math.max(1, st.create.length), 1)} events received per checkout on the two.`
            : `Polling: ${fmt(st.observed / Math.max(1, st.create.length), 1)} GETs per checkout (every ${POLL_MS} ms).`),
        "",
        `Checks: ${checkout.check}.`,
      );
      notes.push(
        `CPU during the measured checkout run, in cores (sum ${coresSum(checkout.result.cores).toFixed(2)} of ${os.cpus().length}): ${coresText(checkout.result.cores)}.`,
      );
    }
    for (const r of raw) notes.push(`CPU during ${r.name}, in cores: ${coresText(r.result.cores)}.`);
  }
  if (flash) {
    parts.push(
      "",
      `Flash sale: ${FLASH_BUYERS} buyers at once (pre-registered, each with its own token, POST /api/orders over HTTP), ${FLASH_UNITS} units:`,
      "",
      markdownTable(
        ["all answered (s)", "all winners PAID (s)", "orders / OUT_OF_STOCK / other", "POST /api/orders p50 / p99 ms", "check"],
        [
          [
            flash.answersS.toFixed(2),
            Number.isFinite(flash.paidS) ? flash.paidS.toFixed(2) : "not all",
            `${flash.created} / ${flash.outOfStock} / ${flash.other}`,
            `${fmt(flash.createP50)} / ${fmt(flash.createP99)}`,
            flash.check,
          ],
        ],
        [true, true, true, true, false],
      ),
    );
    notes.push(
      `CPU during the flash sale (start → all PAID), in cores (sum ${coresSum(flash.cores).toFixed(2)}; CPU stall (PSI) ${flash.stall === undefined ? "?" : pct(flash.stall)}): ${coresText(flash.cores)}.`,
    );
  }
  // Headline figures for `npm run bench` (BENCH_SUMMARY).
  if (checkout) {
    const x = checkout.result;
    const cpuMs = cpuMsPerOp(x, false);
    const serversMs = cpuMsPerOp(x, true);
    // The issue's targets: embedded >= 400/s; cluster >= 150/s, <= 12 ms of CPU, p99 <= 300 ms.
    const target = EMBEDDED ? 400 : 150;
    summaryFigure(
      SUMMARY_NAME,
      `${MODE} checkouts/s (${CONCURRENCY} in flight, ${DURATION_S} s)`,
      fmt(x.perSecond, 1),
      `>= ${target}/s`,
      x.perSecond >= target,
    );
    summaryFigure(
      SUMMARY_NAME,
      `${MODE}: CPU per checkout, servers (all processes, the load generator too)`,
      `${fmt(serversMs, 2)} ms (${fmt(cpuMs, 2)} ms)`,
      EMBEDDED ? undefined : "<= 12 ms",
      EMBEDDED ? undefined : serversMs <= 12,
    );
    if (x.sql)
      summaryFigure(
        SUMMARY_NAME,
        `${MODE}: MariaDB statements / commits per checkout`,
        `${fmt(x.sql.statements / Math.max(1, x.measuredOps), 1)} / ${fmt(x.sql.commits / Math.max(1, x.measuredOps), 1)}`,
      );
    summaryFigure(
      SUMMARY_NAME,
      `${MODE}: checkout p99 (start → PAID and notified)`,
      `${fmt(x.p99, 1)} ms`,
      EMBEDDED ? undefined : "<= 300 ms",
      EMBEDDED ? undefined : x.p99 <= 300,
    );
  }
  if (flash) {
    const size = `${FLASH_BUYERS} buyers / ${FLASH_UNITS} units`;
    summaryFigure(
      SUMMARY_NAME,
      `${MODE} flash sale ${size}: all answered`,
      `${flash.answersS.toFixed(2)} s`,
      "<= 2 s",
      flash.answersS <= 2,
    );
    summaryFigure(
      SUMMARY_NAME,
      `${MODE} flash sale ${size}: all winners PAID`,
      Number.isFinite(flash.paidS) ? `${flash.paidS.toFixed(2)} s` : "not all",
      "<= 3 s",
      flash.paidS <= 3,
    );
  }
  summaryFigure(
    SUMMARY_NAME,
    "check",
    failed ? "FAILED (errors or a database check mismatch)" : "OK (databases checked after each part)",
    undefined,
    !failed,
  );
  const report = `${header}, at end ${load1.map((l) => l.toFixed(2)).join(" ")}\n\n${EMBEDDED ? "Node" : "Cluster"}: ${c.layout}${EMBEDDED ? "" : ", MariaDB, Redis, RabbitMQ vhost"}; LOG_LEVEL=${LOG_LEVEL}.\n\n${parts.join("\n")}\n`;
  process.stdout.write(`\n${report}`);
  if (notes.length) process.stdout.write(`\nNotes:\n${notes.map((n) => `- ${n}`).join("\n")}\n`);

  if (RECORD && !failed) {
    appendResults(
      [
        "",
        "## Checkout (`npm run bench:checkout`)",
        "",
        `**Run of ${started.toISOString().slice(0, 16).replace("T", " ")} UTC**: ${EMBEDDED ? c.layout : `cluster on this machine, ${c.layout}, RabbitMQ vhost, MariaDB, Redis`}, ` +
          `LOG_LEVEL=${LOG_LEVEL}; ${CONCURRENCY} in flight, ${PRODUCTS} products. Machine: ${os.cpus().length} vCPUs, ` +
          `Node ${process.version}; load average (1/5/15 min) ${load0.map((l) => l.toFixed(1)).join(" ")} at start → ${load1.map((l) => l.toFixed(1)).join(" ")} at end.`,
        "",
        ...parts,
        "",
        ...(notes.length ? ["Notes:", ...notes.map((n) => `- ${n}`), ""] : []),
      ].join("\n"),
    );
    say("\nAppended to bench/RESULTS.md (BENCH_RECORD=0 to skip).\n");
  } else if (RECORD) say("\nNot appended to bench/RESULTS.md: the run failed.\n");
  say("stopping the cluster...\n");
  await cleanupAll();
  if (failed) {
    say("\nFAILED: see above.\n");
    process.exit(1);
  }
  process.exit(0);
}

main().catch(async (err) => {
  say(`\n${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  await cleanupAll();
  process.exit(1);
});
