/**
 * Issue #5's kill proof: checkout through the gateway while payment nodes, then order nodes,
 * are killed with `kill -9` at chosen points of the flow (20 kills each) and restarted.
 *
 * Separate node processes from `bin/start.ts` (cluster mode, discovery over the transporter):
 * `gw` (gateway, user, product, cart, notification), `order-1`/`order-2`, `pay-1`/`pay-2`,
 * on a private RabbitMQ vhost, MariaDB and Redis under a unique namespace, with short
 * reservation TTL, payment timeout and sweep intervals. Buyers run checkout loops over HTTP
 * (create with Idempotency-Key, pay with the sandbox, complete as the buyer), retrying a
 * step that failed with the same key / the same payment. A killer waits for a flow to reach
 * a chosen point (before create, create in flight, before pay, pay in flight, between pay and
 * complete, complete in flight, right after complete), kills one replica (the other stays
 * up), restarts it and waits for it to start before the next kill.
 *
 * Then, once things settle, the invariants are read from the services' databases:
 * - no order left PENDING_PAYMENT (and the lateness of expiry during the run is measured);
 * - per order, at most one charge the platform (sandbox) kept: a PAID order exactly its
 *   paid payment, a cancelled order none (anything else refunded);
 * - conservation per product: on_hand = initial − units of PAID orders, reserved = 0, no hold
 *   left, committed reservations exactly those of PAID orders;
 * - every PAID order has exactly one `payment.succeeded` notification for its buyer, and no
 *   other order has one.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import type { Knex } from "knex";
import type { ServiceBroker } from "moleculer";
import { createBroker } from "../../lib/app";
import { loadConfig } from "../../lib/config";
import { createKnex, dropDatabase } from "../../lib/db";
import { deleteRedisKeys } from "../support/app";
import { checkCheckoutInvariants } from "../support/invariants";
import { freePort } from "../support/ports";
import { spawnTs, type ChildHandle } from "../support/proc";
import { createVhost, type RabbitVhost } from "../support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../support/servers";

const ROOT = path.resolve(__dirname, "..", "..");
const START = path.join(ROOT, "bin", "start.ts");
const DB_SERVICES = ["user", "product", "cart", "order", "payment", "notification"] as const;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)];

const KILLS_PER_PHASE = Number(process.env.CHECKOUT_KILLS ?? 20);
const WORKERS = 6;
const TTL_S = 5;
const SWEEP_MS = 300;
const PENDING_TIMEOUT_S = 3;
const RECONCILE_MS = 500;
/**
 * A step is retried (same key, same payment) for this long before the flow gives up: long
 * enough for a create's claim left by a killed node to go stale (30 s) twice over, since
 * the retry that takes it over can itself land on a node killed next.
 */
const STEP_DEADLINE_MS = 75_000;
/** After the traffic: how long the invariants may take to settle (refund retries, leases). */
const SETTLE_DEADLINE_MS = 110_000;
const INITIAL_STOCK = 100_000;
const ADDRESS = { recipient: "Kill Buyer", phone: "+86 21 5555 0001", line1: "3 Crash Road", city: "Hangzhou", postalCode: "310000", country: "CN" };

/** The points of checkout a kill is aimed at. */
const STAGES = ["before-create", "create-sent", "created", "pay-sent", "paid", "complete-sent", "completed"] as const;
type Stage = (typeof STAGES)[number];

interface HttpResult {
  status: number;
  body: any;
  text: string;
}

async function request(baseUrl: string, method: string, urlPath: string, opts: { body?: unknown; token?: string; headers?: Record<string, string> } = {}): Promise<HttpResult> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(baseUrl + urlPath, {
    method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), signal: AbortSignal.timeout(20_000),
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

describe("checkout under kill -9 of payment nodes, then order nodes (20 each)", () => {
  let vhost: RabbitVhost;
  let observer: ServiceBroker;
  let baseUrl = "";
  let env: Record<string, string> = {};
  const namespace = uniqueNamespace("kill");
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-kill-"));
  const nodes = new Map<string, ChildHandle>();
  /** Every process ever started (killed ones included), for the log summary. */
  const allChildren: ChildHandle[] = [];
  const dbs = new Map<string, Knex>();

  /** Failed starts (a start that exited, e.g. MariaDB refusing connections), retried like a restarting pod. */
  const failedStarts: string[] = [];
  const startNode = async (nodeId: string, services: string, extra: Record<string, string> = {}): Promise<ChildHandle> => {
    for (let attempt = 1; ; attempt++) {
      const child = spawnTs(START, { name: nodeId, env: { ...env, NODE_ID: nodeId, SERVICES: services, ...extra } });
      nodes.set(nodeId, child);
      allChildren.push(child);
      try {
        await child.waitForLine(/Meridian started/, 60_000);
        return child;
      } catch (err) {
        child.kill("SIGKILL");
        await child.waitExit();
        const why = child.lines.find((l) => /Start failed/.test(l)) ?? (err as Error).message.split("\n")[0];
        failedStarts.push(`${nodeId}: ${why.slice(0, 200)}`);
        if (attempt >= 3) throw err;
        await sleep(1000);
      }
    }
  };
  const db = (service: string) => {
    let k = dbs.get(service);
    if (!k) dbs.set(service, (k = createKnex(loadConfig({ ...env, NODE_ID: "checker" }), service)));
    return k;
  };
  /** Services available in the gateway node's registry, with how many nodes run each. */
  const servicesSeenByGw = async (): Promise<Map<string, number>> => {
    const list = (await observer.call("$node.services", { onlyAvailable: true, skipInternal: true }, { nodeID: "gw" })) as { name: string; nodes?: string[] }[];
    return new Map(list.map((s) => [s.name, s.nodes?.length ?? 1]));
  };
  const waitFor = async (what: string, check: () => Promise<boolean>, timeoutMs: number) => {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      if (await check().catch(() => false)) return;
      await sleep(200);
    }
    throw new Error(`${what}: not within ${timeoutMs} ms`);
  };

  before(async () => {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    vhost = await createVhost();
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    env = {
      RABBITMQ_URI: vhost.uri,
      ETCD_HOSTS: "",
      REDIS_URL,
      MYSQL_URL,
      NAMESPACE: namespace,
      JWT_SECRET: randomBytes(32).toString("hex"),
      DATA_DIR: dataDir,
      PUBLIC_URL: baseUrl,
      SANDBOX_PAY_PRIVATE_KEY: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      SANDBOX_PAY_PUBLIC_KEY: publicKey.export({ type: "spki", format: "pem" }).toString(),
      RESERVATION_TTL_SECONDS: String(TTL_S),
      RESERVATION_SWEEP_INTERVAL_MS: String(SWEEP_MS),
      PAYMENT_PENDING_TIMEOUT_S: String(PENDING_TIMEOUT_S),
      PAYMENT_RECONCILE_INTERVAL_MS: String(RECONCILE_MS),
      MIGRATE_ON_START: "false",
      DEMO_CATALOG: "false",
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
      LOG_FORMAT: "json",
      LOGIN_RATE_LIMIT: "100000",
      // Six buyers from one address place hundreds of orders, 10 % never paid: the request
      // limits and the hoarding limits (tested on their own) would refuse them.
      RATE_LIMITS: "off",
      MAX_UNPAID_ORDERS: "1000",
      MAX_UNPAID_UNITS_PER_PRODUCT: "100000",
    };
    // Cluster mode migrates as a separate step, once.
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", path.join(ROOT, "bin", "migrate.ts")], {
      env: { ...process.env, ...env, SERVICES: DB_SERVICES.join(",") },
      cwd: ROOT,
    });
    for (const s of DB_SERVICES) assert.match(stdout, new RegExp(`${s}: applied`));
    await Promise.all([
      startNode("gw", "gateway,user,product,cart,notification", { PORT: String(port) }),
      startNode("order-1", "order"),
      startNode("order-2", "order"),
      startNode("pay-1", "payment"),
      startNode("pay-2", "payment"),
    ]);
    observer = createBroker(loadConfig({ ...env, NODE_ID: "observer", LOG_LEVEL: "warn" }), []);
    await observer.start();
    await waitFor("gateway ready", async () => (await request(baseUrl, "GET", "/health/ready")).status === 200, 30_000);
    await waitFor("gw sees two order and two payment replicas", async () => {
      const seen = await servicesSeenByGw();
      return seen.get("order") === 2 && seen.get("payment") === 2;
    }, 30_000);
  });

  after(async () => {
    for (const k of dbs.values()) await k.destroy().catch(() => undefined);
    await observer?.stop().catch(() => undefined);
    for (const child of nodes.values()) child.kill("SIGKILL");
    await Promise.all([...nodes.values()].map((c) => c.waitExit()));
    await vhost?.destroy().catch(() => undefined);
    for (const s of DB_SERVICES) await dropDatabase(loadConfig({ ...env, NODE_ID: "cleanup" }), s).catch(() => undefined);
    await deleteRedisKeys(REDIS_URL, namespace);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("no order stuck, at most one kept charge per order, stock conserved, each paid order notified once", async () => {
    const t0 = Date.now();
    // ---- catalog and buyers ----
    const products: { id: string; price: number }[] = [];
    for (let i = 0; i < 3; i++) {
      const price = 1000 + i * 250;
      const p = (await observer.call("product.create", {
        sku: `KILL-${i}-${randomBytes(3).toString("hex")}`, name: `Kill test item ${i}`, description: "", category: "test",
        price: { amount: price, currency: "CNY" }, stock: INITIAL_STOCK,
      })) as { id: string };
      products.push({ id: p.id, price });
    }
    const buyers: { id: string; token: string }[] = [];
    for (let i = 0; i < WORKERS; i++) {
      const r = await request(baseUrl, "POST", "/api/auth/register", { body: { email: `kill-${i}-${randomBytes(4).toString("hex")}@example.com`, password: "kill test password", name: `Buyer ${i}` } });
      assert.equal(r.status, 201, r.text);
      buyers.push({ id: r.body.user.id, token: r.body.accessToken });
    }

    // ---- stages: flows announce where they are; the killer waits for one ----
    const waiters: { stage: Stage; resolve: () => void }[] = [];
    const reach = (stage: Stage) => {
      for (let i = waiters.length - 1; i >= 0; i--)
        if (waiters[i].stage === stage) {
          waiters[i].resolve();
          waiters.splice(i, 1);
        }
    };
    const nextAt = (stage: Stage, timeoutMs: number) =>
      new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        waiters.push({ stage, resolve: () => (clearTimeout(timer), resolve(true)) });
      });

    // ---- the buyers' loops ----
    const stats = {
      flows: 0, created: 0, completed: 0, abandoned: 0, doublePay: 0, notPayable: 0, outOfStock: 0,
      retries: 0, gaveUp: 0, statusCounts: {} as Record<string, number>,
    };
    const gaveUp: string[] = [];
    const count = (status: number) => (stats.statusCounts[status] = (stats.statusCounts[status] ?? 0) + 1);
    /** One HTTP step, retried on 5xx / network errors / timeouts with the same request. */
    const step = async (name: string, send: () => Promise<HttpResult>): Promise<HttpResult | undefined> => {
      const deadline = Date.now() + STEP_DEADLINE_MS;
      let last = "";
      for (;;) {
        try {
          const r = await send();
          count(r.status);
          if (r.status < 500) return r;
          last = `${r.status} ${r.text.slice(0, 160)}`;
        } catch (err) {
          count(0);
          last = (err as Error).message;
        }
        if (Date.now() > deadline) {
          stats.gaveUp++;
          gaveUp.push(`${name}: ${last}`);
          return undefined;
        }
        stats.retries++;
        await sleep(200 + Math.random() * 300);
      }
    };
    let running = true;
    const orderIds = new Set<string>();
    /** Each create's request, by Idempotency-Key: claims left without an order are retried at the end. */
    const creates = new Map<string, () => Promise<HttpResult>>();
    const flow = async (buyer: { id: string; token: string }) => {
      stats.flows++;
      const variant = Math.random();
      const lines = [...products].sort(() => Math.random() - 0.5).slice(0, 1 + Math.floor(Math.random() * 2));
      const items = lines.map((p) => ({ productId: p.id, quantity: 1 + Math.floor(Math.random() * 3) }));
      const key = randomUUID();
      reach("before-create");
      const sendCreate = () => {
        reach("create-sent");
        return request(baseUrl, "POST", "/api/orders", { token: buyer.token, headers: { "Idempotency-Key": key }, body: { shippingAddress: ADDRESS, items } });
      };
      creates.set(key, () => request(baseUrl, "POST", "/api/orders", { token: buyer.token, headers: { "Idempotency-Key": key }, body: { shippingAddress: ADDRESS, items } }));
      const created = await step(`create (key ${key})`, sendCreate);
      if (!created) return;
      if (created.status === 409) {
        stats.outOfStock++;
        return;
      }
      assert.equal(created.status, 201, `create: ${created.text}`);
      const orderId = created.body.id as string;
      orderIds.add(orderId);
      stats.created++;
      reach("created");
      if (variant < 0.1) {
        stats.abandoned++; // never paid: must expire
        return;
      }
      const pay = async () => {
        const r = await step(`pay ${orderId}`, () => {
          reach("pay-sent");
          return request(baseUrl, "POST", `/api/orders/${orderId}/pay`, { token: buyer.token, body: { provider: "sandbox" } });
        });
        if (!r) return undefined;
        if (r.status === 409) {
          stats.notPayable++; // expired meanwhile (or already paid by the other payment)
          return undefined;
        }
        assert.ok(r.status === 200 || r.status === 201, `pay: ${r.status} ${r.text}`);
        return { id: r.body.id as string, token: new URL(r.body.payUrl).searchParams.get("token")! };
      };
      const complete = async (payment: { id: string; token: string }) => {
        const r = await step(`complete ${payment.id}`, () => {
          reach("complete-sent");
          return request(baseUrl, "POST", `/api/payments/sandbox/${payment.id}/complete`, { body: { outcome: "success", token: payment.token } });
        });
        if (!r) return;
        assert.equal(r.status, 202, `complete: ${r.text}`);
        stats.completed++;
        reach("completed");
      };
      const first = await pay();
      if (!first) return;
      reach("paid");
      if (variant < 0.2) {
        // The buyer comes back after the first payment timed out (reconciled FAILED) and pays
        // again, then also completes the first one: two charges, one must be refunded.
        await sleep(PENDING_TIMEOUT_S * 1000 + 2 * RECONCILE_MS + 300);
        const second = await pay();
        if (second && second.id !== first.id) {
          stats.doublePay++;
          await complete(second);
          await complete(first);
          return;
        }
      }
      await complete(first);
    };
    const workers = buyers.map(async (buyer) => {
      while (running) {
        await flow(buyer).catch((err) => gaveUp.push(`flow failed: ${(err as Error).message}`));
        await sleep(Math.random() * 100);
      }
    });

    // ---- expiry lateness monitor: PENDING_PAYMENT orders past their hold's expiry ----
    let maxOverdueMs = 0;
    let maxMariaDbConnections = 0;
    let monitoring = true;
    const monitor = (async () => {
      while (monitoring) {
        const now = Date.now();
        const row = await db("order")("orders").where({ status: "PENDING_PAYMENT" }).whereNotNull("reservation_expires_at").min({ oldest: "reservation_expires_at" }).first().catch(() => undefined);
        const oldest = row?.oldest == null ? undefined : Number(row.oldest);
        if (oldest !== undefined) maxOverdueMs = Math.max(maxOverdueMs, now - oldest);
        const threads = await db("order").raw("SHOW GLOBAL STATUS LIKE 'Threads_connected'").catch(() => undefined);
        const n = Number(threads?.[0]?.[0]?.Value);
        if (n) maxMariaDbConnections = Math.max(maxMariaDbConnections, n);
        await sleep(500);
      }
    })();

    // ---- the killer ----
    const kills: { phase: string; victim: string; stage: Stage; hit: boolean; restartMs: number; cycleMs: number }[] = [];
    const killPhase = async (phase: string, victims: [string, string], services: string) => {
      for (let i = 0; i < KILLS_PER_PHASE; i++) {
        const cycleStart = Date.now();
        const victim = victims[i % 2];
        const stage = pick(STAGES);
        const hit = await nextAt(stage, 5000);
        await sleep(Math.random() * 40); // inside the handler, or just before/after it
        const child = nodes.get(victim)!;
        child.kill("SIGKILL");
        await child.waitExit();
        const killedAt = Date.now();
        // Restarted at once, as a supervisor would; the next victim is the other replica, so
        // this one must be up again first (its start announces it to the other nodes).
        await startNode(victim, services);
        const restartMs = Date.now() - killedAt;
        await sleep(300 + Math.random() * 300);
        kills.push({ phase, victim, stage, hit, restartMs, cycleMs: Date.now() - cycleStart });
      }
    };
    let trafficEnd = 0;
    try {
      await sleep(2000);
      await killPhase("payment", ["pay-1", "pay-2"], "payment");
      await sleep(3000);
      await killPhase("order", ["order-1", "order-2"], "order");
      await sleep(3000);
    } finally {
      running = false;
      await Promise.all(workers);
      trafficEnd = Date.now();
    }
    const trafficMs = trafficEnd - t0;

    // ---- settle, then the invariants ----
    const check = () => checkCheckoutInvariants(db, { products, initialStock: () => INITIAL_STOCK, knownOrderIds: orderIds, logs: allChildren });

    await sleep((TTL_S + 2) * 1000);
    let result = await check();
    const settleStart = Date.now();
    while (result.problems.length && Date.now() - settleStart < SETTLE_DEADLINE_MS) {
      await sleep(2000);
      result = await check();
    }
    const settleMs = Date.now() - settleStart;
    monitoring = false;
    await monitor;

    const logErrors = allChildren.flatMap((c) => c.lines.filter((l) => /"level":"(error|fatal)"/.test(l)).map((l) => `[${c.name}] ${l.slice(0, 300)}`));
    const autoRefundLines = allChildren.flatMap((c) => c.lines.filter((l) => /Refunding payment/.test(l)).map((l) => `[${c.name}] ${(l.match(/Refunding payment[^"]*/) ?? [l])[0].slice(0, 200)}`));
    console.log(JSON.stringify({
      summary: "checkout-kill",
      ...result.figures,
      flows: stats.flows, created: stats.created, completed: stats.completed, abandoned: stats.abandoned, doublePay: stats.doublePay,
      notPayable: stats.notPayable, outOfStock: stats.outOfStock, retries: stats.retries, gaveUp: stats.gaveUp, 
      kills: kills.length, killsAtAimedStage: kills.filter((k) => k.hit).length, restartMsMax: Math.max(...kills.map((k) => k.restartMs)), cycleMsAvg: Math.round(kills.reduce((n, k) => n + k.cycleMs, 0) / kills.length),
      killStages: Object.fromEntries(STAGES.map((st) => [st, kills.filter((k) => k.stage === st).length])),
      httpStatuses: stats.statusCounts, maxExpiryOverdueMs: maxOverdueMs, maxMariaDbConnections, failedStarts: failedStarts.length, trafficMs, settleMs, totalMs: Date.now() - t0,
      problems: result.problems.length, logErrors: logErrors.length,
    }));
    if (autoRefundLines.length) console.log(`auto refunds:\n${autoRefundLines.slice(0, 20).join("\n")}`);
    if (failedStarts.length) console.log(`failed starts:\n${failedStarts.join("\n")}`);
    if (gaveUp.length) console.log(`steps given up:\n${gaveUp.slice(0, 20).join("\n")}`);
    if (logErrors.length) console.log(`error log lines (first 15):\n${logErrors.slice(0, 15).join("\n")}`);
    if (result.problems.length) console.log(`problems (first 40):\n${result.problems.slice(0, 40).join("\n")}`);

    assert.equal(kills.length, 2 * KILLS_PER_PHASE);
    assert.ok(stats.created > 20, `enough orders were placed (${stats.created})`);
    assert.ok((result.figures.byStatus.PAID ?? 0) > 10, "enough orders were paid");
    assert.deepEqual(result.problems, [], "invariants hold after the kills");
    // A claim whose create died is taken over by a retry with its key (now long stale).
    for (const key of result.orphanClaims) {
      const again = await creates.get(key)!();
      assert.ok(again.status === 201 || again.status === 409, `a retry with the orphaned key ${key} is answered (${again.status} ${again.text.slice(0, 200)})`);
    }
  });
});
