/**
 * `npm run bench:recs`: the recommendation service with 100,000 orders and 10,000 products
 * loaded, each figure as a ratio against a baseline measured in the same run.
 *
 * Setup (embedded: gateway, user, product and recommendation in this process, SQLite):
 * 10,000 demo products through `product.seedDemo`; BENCH_RECS_USERS users registered through
 * the API (with stated preferences); 100,000 synthetic orders (bench/recs-data.ts, over the
 * real product ids, the registered users among the buyers) loaded through the service's own
 * rebuild path, from a stand-in `order.exportPurchases` that answers from the generated
 * orders (the offline data source; the real order service holds no such history here).
 *
 * Part 1, latency through the gateway (autocannon, BENCH_CONNECTIONS in flight, every request
 * with another user's token):
 *   baseline          GET /api/products/:id (the product service's cached read, same gateway)
 *   recommendations   GET /api/recommendations (limit 10), with the ranking cache
 *                     (RECS_CACHE_TTL_S, memory cacher) and without it (every request ranks)
 *   also-bought       GET /api/products/:id/also-bought (limit 10), the same two ways
 * Part 2, model update rate: new `order.paid` events for existing buyers, applied as the
 * consumer applies them (`applyOnce`: inbox row + the handler, one transaction each),
 * BENCH_UPDATE_WORKERS at once (the AMQP prefetch), against a baseline that applies the same
 * envelopes with an empty handler (inbox row only): SQLite here, and MariaDB (a second
 * database loaded the same way) unless BENCH_RECS_MARIADB=0.
 *
 * Environment: BENCH_DURATION_S (10), BENCH_WARMUP_S (2), BENCH_CONNECTIONS (20),
 * BENCH_RECS_ORDERS (100000), BENCH_RECS_PRODUCTS (10000), BENCH_RECS_USERS (100),
 * BENCH_UPDATE_ORDERS (3000), BENCH_UPDATE_WORKERS (20), BENCH_RECS_MARIADB (1),
 * BENCH_RECORD (1), BENCH_CPU_PROF (a directory: a V8 profile of this process per measured case). Autocannon runs in this process too (one core of two is the load
 * generator's): the ratios, not the absolute figures, are the result. Exit 1 on any error.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { Knex } from "knex";
import type { ServiceBroker } from "moleculer";
import { createBroker } from "../app";
import { loadConfig, type AppConfig } from "../lib/config";
import { dropDatabase } from "../lib/db";
import { applyOnce, type EventHandler } from "../lib/events/consumer";
import { MYSQL_URL, uniqueNamespace } from "../test/support/servers";
import { generate, prng, type Dataset } from "./recs-data";
import { datasetSources, loadModel, rebuildWithProgress } from "./recs.eval";
import { progressSteps } from "../lib/progress";
import { mapBounded } from "../lib/bounded";
import {
  appendResults,
  cleanupAll,
  installSignalCleanup,
  load,
  profiledInProcess,
  markdownTable,
  onCleanup,
  scoped,
  summaryFigure,
  type Measured,
} from "./support";

const env = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
const DURATION_S = env("BENCH_DURATION_S", 10);
const WARMUP_S = env("BENCH_WARMUP_S", 2);
const CONNECTIONS = env("BENCH_CONNECTIONS", 20);
const ORDERS = env("BENCH_RECS_ORDERS", 100_000);
const PRODUCTS = env("BENCH_RECS_PRODUCTS", 10_000);
const USERS = env("BENCH_RECS_USERS", 100);
const UPDATE_ORDERS = env("BENCH_UPDATE_ORDERS", 3000);
const UPDATE_WORKERS = env("BENCH_UPDATE_WORKERS", 20);
const WITH_MARIADB = process.env.BENCH_RECS_MARIADB !== "0";
const RECORD = process.env.BENCH_RECORD !== "0";

const steps = progressSteps();
const bar = (label: string, done: number, total: number) => steps(`  ${label}`, done, total);

async function json(url: string, init: RequestInit = {}): Promise<any> {
  const res = await fetch(url, { ...init, headers: { "content-type": "application/json", ...(init.headers ?? {}) } });
  const body = await res.json().catch(() => undefined);
  if (!res.ok) throw new Error(`${init.method ?? "GET"} ${url}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** Closed-loop load with the given paths and tokens rotating over the connections. */
function rotating(baseUrl: string, paths: string[], tokens: string[]) {
  let i = 0;
  return {
    url: baseUrl,
    connections: CONNECTIONS,
    requests: [
      {
        method: "GET",
        setupRequest: (req: { path: string; headers?: Record<string, string> }) => {
          const k = i++;
          return {
            ...req,
            path: paths[k % paths.length],
            headers: { ...req.headers, authorization: `Bearer ${tokens[k % tokens.length]}` },
          };
        },
      },
    ],
  };
}

interface Row {
  label: string;
  m: Measured;
}

/** New orders for existing buyers: 1–3 products each that the buyer does not have yet. */
function updateEnvelopes(data: Dataset, n: number): { id: string; name: string; payload: unknown; occurredAt: string }[] {
  const random = prng(99);
  const buyers = data.users.filter((u) => u.orders.length);
  return Array.from({ length: n }, (_, i) => {
    const u = buyers[Math.floor(random() * buyers.length)];
    const owned = new Set(u.orders.flatMap((o) => o.productIds));
    const lines: string[] = [];
    while (lines.length < 1 + (i % 3)) {
      const p = data.products[Math.floor(random() * data.products.length)].id;
      if (!owned.has(p) && !lines.includes(p)) lines.push(p);
    }
    const at = new Date(Date.UTC(2027, 0, 1) + i * 1000).toISOString();
    return {
      id: randomUUID(),
      name: "order.paid",
      occurredAt: at,
      payload: {
        orderId: `bench-${i}-${randomUUID()}`,
        userId: u.id,
        lines: lines.map((productId) => ({ productId, quantity: 1 })),
        occurredAt: at,
      },
    };
  });
}

async function applyRate(
  db: Knex,
  handler: EventHandler,
  envelopes: { id: string }[],
  label: string,
): Promise<{ perSecond: number; ms: number }> {
  let done = 0;
  const started = performance.now();
  await mapBounded(envelopes, UPDATE_WORKERS, async (e) => {
    if ((await applyOnce(db, e as never, handler)) !== "applied") throw new Error(`${label}: ${e.id} not applied`);
    if (++done % 250 === 0 || done === envelopes.length) bar(label, done, envelopes.length);
  });
  const ms = performance.now() - started;
  return { perSecond: (envelopes.length / ms) * 1000, ms };
}

async function updateRates(broker: ServiceBroker, data: Dataset, label: string): Promise<{ model: number; baseline: number }> {
  const svc = broker.getLocalService("recommendation") as unknown as { db: Knex; $events: { handlers: Record<string, EventHandler> } };
  const noop: EventHandler = async () => undefined;
  const baseline = await applyRate(
    svc.db,
    noop,
    updateEnvelopes(data, UPDATE_ORDERS).map((e) => ({ ...e, name: "bench.noop" })),
    `${label}: baseline (inbox only)`,
  );
  const model = await applyRate(svc.db, svc.$events.handlers["order.paid"], updateEnvelopes(data, UPDATE_ORDERS), `${label}: order.paid`);
  return { model: model.perSecond, baseline: baseline.perSecond };
}

async function main(): Promise<void> {
  installSignalCleanup();
  const loadAvg = () =>
    os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(" ");
  const startLoad = loadAvg();
  await scoped(async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-bench-recs-"));
    onCleanup(`remove ${dataDir}`, () => fs.rmSync(dataDir, { recursive: true, force: true }));
    const admin = { email: "bench-admin@example.com", password: "bench-admin-password" };
    const config: AppConfig = loadConfig({
      DATA_DIR: dataDir,
      PORT: "0",
      LOG_LEVEL: "warn",
      DEMO_CATALOG: "false",
      ADMIN_EMAIL: admin.email,
      ADMIN_PASSWORD: admin.password,
      LOGIN_RATE_LIMIT: "100000",
      RATE_LIMITS: "off",
    });
    const broker = createBroker(config, ["gateway", "user", "product", "recommendation"]);
    // The order history's source for the rebuild: `sources` is declared below, once the data exists (only the rebuild calls this,
    // and it runs after that).
    broker.createService({
      name: "order",
      actions: { exportPurchases: (ctx: { params: { after?: string; limit?: number } }) => sources.order.actions.exportPurchases(ctx) },
    } as never);
    await broker.start();
    onCleanup("stop the broker", () => broker.stop());
    const port = (broker.getLocalService("api") as unknown as { server: { address(): AddressInfo } }).server.address().port;
    const base = `http://127.0.0.1:${port}`;

    process.stderr.write(`Setup: ${PRODUCTS} products, ${USERS} users, ${ORDERS} orders\n`);
    for (let from = 0; from < PRODUCTS; from += 500) {
      await broker.call("product.seedDemo", { from, count: Math.min(500, PRODUCTS - from) });
      bar("products (product.seedDemo)", Math.min(PRODUCTS, from + 500), PRODUCTS);
    }
    const catalog: { id: string; name: string; category: string; brand: string | null }[] = [];
    for (
      let after: string | undefined, page;
      (page = await broker.call<{ items: typeof catalog; next: string | null }, unknown>("product.export", { after, limit: 1000 }));
    ) {
      catalog.push(...page.items);
      if (!page.next) break;
      after = page.next;
    }
    const data = generate({ users: 1_000_000, products: catalog.length, catalog, maxOrders: ORDERS, seed: 20261125 });
    const tokens: string[] = [];
    for (const [i, u] of data.users.slice(0, USERS).entries()) {
      const reg = await json(`${base}/api/auth/register`, {
        method: "POST",
        body: JSON.stringify({ email: `bench-${i}@example.com`, password: "bench password 1", name: `Bench ${i}` }),
      });
      const me = await json(`${base}/api/users/me`, { headers: { authorization: `Bearer ${reg.accessToken}` } });
      await json(`${base}/api/users/me`, {
        method: "PATCH",
        headers: { authorization: `Bearer ${reg.accessToken}` },
        body: JSON.stringify({ preferences: u.preferences }),
      });
      u.id = me.id; // this generated buyer's history becomes the registered user's
      tokens.push(reg.accessToken);
      bar("users (register, preferences)", i + 1, USERS);
    }
    const orders = data.users
      .flatMap((u) => u.orders.map((o) => ({ orderId: o.orderId, userId: u.id, paidAt: o.at, productIds: o.productIds })))
      .sort((a, b) => (a.orderId < b.orderId ? -1 : 1));
    const sources = datasetSources(data, orders);
    const rebuildS = (await rebuildWithProgress(broker, "  model")) / 1000;
    const status = await broker.call<{ users: number; purchases: number; pairs: number; items: number }>("recommendation.status");

    // Part 1: latency through the gateway.
    const productPaths = catalog.slice(0, 500).map((p) => `/api/products/${p.id}`);
    const boughtPaths = [...new Set(orders.slice(0, 2000).flatMap((o) => o.productIds))]
      .slice(0, 500)
      .map((id) => `/api/products/${id}/also-bought`);
    const sample = (await json(`${base}/api/recommendations`, { headers: { authorization: `Bearer ${tokens[0]}` } })) as {
      items: unknown[];
    };
    if (sample.items.length !== 10) throw new Error(`expected 10 recommendations, got ${sample.items.length}`);
    const rows: Row[] = [];
    const svc = broker.getLocalService("recommendation") as unknown as { cacheTtlS: number };
    const ttl = svc.cacheTtlS;
    for (const [label, paths, cacheTtlS] of [
      ["baseline: GET /api/products/:id", productPaths, ttl],
      [`GET /api/recommendations (cached, TTL ${ttl} s)`, ["/api/recommendations"], ttl],
      ["GET /api/recommendations (uncached)", ["/api/recommendations"], 0],
      [`GET /api/products/:id/also-bought (cached, TTL ${ttl} s)`, boughtPaths, ttl],
      ["GET /api/products/:id/also-bought (uncached)", boughtPaths, 0],
    ] as const) {
      svc.cacheTtlS = cacheTtlS;
      await broker.cacher?.clean();
      process.stderr.write(`  ${label}\n`);
      if (WARMUP_S > 0) await load({ ...rotating(base, [...paths], tokens), duration: WARMUP_S }, "warm-up (not counted)");
      const m = await profiledInProcess(label, () => load({ ...rotating(base, [...paths], tokens), duration: DURATION_S }, "measuring"));
      if (m.result.errors || m.result.non2xx || m.result.timeouts)
        throw new Error(`${label}: ${m.result.errors} errors, ${m.result.non2xx} non-2xx, ${m.result.timeouts} timeouts`);
      rows.push({ label, m });
    }

    // Part 2: model update rate.
    const rates: [string, { model: number; baseline: number }][] = [["SQLite (embedded)", await updateRates(broker, data, "SQLite")]];
    if (WITH_MARIADB) {
      const namespace = uniqueNamespace("brecs");
      const mdir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-bench-recs-m-"));
      onCleanup(`remove ${mdir}`, () => fs.rmSync(mdir, { recursive: true, force: true }));
      const mconfig = loadConfig({
        DATA_DIR: mdir,
        NAMESPACE: namespace,
        MYSQL_URL,
        MIGRATE_ON_START: "true",
        LOG_LEVEL: "warn",
        PORT: "0",
      });
      onCleanup("drop the MariaDB database", () => dropDatabase(mconfig, "recommendation"));
      const { broker: mb } = await loadModel(data, orders, "MariaDB", mconfig);
      onCleanup("stop the MariaDB broker", () => mb.stop());
      rates.push(["MariaDB (cluster's database)", await updateRates(mb, data, "MariaDB")]);
    }

    const base0 = rows[0].m;
    const latencyTable = markdownTable(
      ["case", "req/s", "vs baseline", "p50 ms", "p99 ms", "p50 vs baseline", "p99 vs baseline"],
      rows.map(({ label, m }) => [
        label,
        m.result.requests.average.toFixed(0),
        `${((m.result.requests.average / base0.result.requests.average) * 100).toFixed(1)} %`,
        m.latency.p50.toFixed(2),
        m.latency.p99.toFixed(2),
        `${(m.latency.p50 / base0.latency.p50).toFixed(2)}×`,
        `${(m.latency.p99 / base0.latency.p99).toFixed(2)}×`,
      ]),
      [false, true, true, true, true, true, true],
    );
    const rateTable = markdownTable(
      ["database", "order.paid applied/s", "baseline (inbox only)/s", "vs baseline"],
      rates.map(([label, r]) => [label, r.model.toFixed(0), r.baseline.toFixed(0), `${((r.model / r.baseline) * 100).toFixed(1)} %`]),
      [false, true, true, true],
    );
    const section = [
      "",
      `## Recommendations (\`npm run bench:recs\`), ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`,
      "",
      `Embedded (gateway, user, product, recommendation in one process, SQLite); ${catalog.length} products, ${orders.length} orders of ${data.users.length} synthetic buyers (${USERS} of them registered users with preferences); model: ${status.purchases} purchases, ${status.pairs} co-purchase rows, rebuilt in ${rebuildS.toFixed(1)} s. ${CONNECTIONS} in flight, ${WARMUP_S} s warm-up + ${DURATION_S} s per case; autocannon in the same process. Machine: ${os.cpus().length} vCPUs, Node ${process.version}; load average ${startLoad} at start → ${loadAvg()} at end.`,
      "",
      latencyTable,
      "",
      `Model update rate: ${UPDATE_ORDERS} new orders (1–3 products each, existing buyers), ${UPDATE_WORKERS} applied at once:`,
      "",
      rateTable,
      "",
    ].join("\n");
    process.stdout.write(`${section}\n`);
    // Headline figure for `npm run bench` (BENCH_SUMMARY): uncached recommendations p50 as a multiple of the cached product read.
    const uncached = rows.find((r) => r.label === "GET /api/recommendations (uncached)")!.m;
    const x = uncached.latency.p50 / base0.latency.p50;
    summaryFigure(
      "recs",
      `uncached GET /api/recommendations p50 vs cached product read (${orders.length} orders)`,
      `${x.toFixed(2)}× (${uncached.latency.p50.toFixed(2)} vs ${base0.latency.p50.toFixed(2)} ms)`,
      "<= 5×",
      x <= 5,
    );
    summaryFigure("recs", "check", "OK (10 recommendations, no errors or non-2xx)", undefined, true);
    if (RECORD) appendResults(section);
  });
  await cleanupAll();
}

main().catch(async (err) => {
  process.stderr.write(`\nbench:recs failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  await cleanupAll().catch(() => undefined);
  process.exit(1);
});
