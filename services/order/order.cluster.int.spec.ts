/**
 * The flash sale in cluster mode: two order replicas, two payment replicas and two product
 * replicas (two brokers in this process) over a real RabbitMQ vhost, MariaDB and Redis, the
 * business events on RabbitMQ work queues, the sandbox platform calling the gateway back
 * over HTTP. 200 buyers at once for 20 units: exactly 20 orders, exactly 20 PAID, stock
 * never negative and conserved, every paid buyer notified exactly once (counted again once
 * the system is quiet). One Idempotency-Key sent 20 times at once across both order
 * replicas makes one order.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import type { ServiceBroker } from "moleculer";
import { createBroker } from "../../app";
import { loadConfig, type ServiceName } from "../../lib/config";
import { dropDatabase } from "../../lib/db";
import { deleteRedisKeys, http } from "../../test/support/app";
import { freePort } from "../../test/support/ports";
import { createVhost, type RabbitVhost } from "../../test/support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../../test/support/servers";
import { eventually as poll } from "../../test/support/eventually";
import { untilQuiet, unsentOutbox, type InFlight } from "../../test/support/quiet";
import { eventQueueMessages } from "../../lib/events/support";

const ADDRESS = {
  recipient: "Flash Buyer",
  phone: "+86 21 5555 0000",
  line1: "2 Sale Road",
  city: "Hangzhou",
  postalCode: "310000",
  country: "CN",
};
const BUYERS = 200;
const UNITS = 20;
const DB_SERVICES = ["user", "product", "cart", "order", "payment", "notification"];

const eventually = <T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000) => poll(what, check, timeoutMs, 100);

/** Node A's services (B runs product, order and payment again). */
const A_SERVICES: ServiceName[] = ["gateway", "user", "product", "cart", "order", "payment", "notification"];

describe("checkout in cluster mode: two order, payment and product replicas over RabbitMQ (MariaDB, Redis)", () => {
  let a: ServiceBroker;
  let b: ServiceBroker;
  let vhost: RabbitVhost;
  let env: Record<string, string>;
  let baseUrl = "";
  const namespace = uniqueNamespace("flash");
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-flash-"));
  const nodes = { a: `${namespace}-a`, b: `${namespace}-b` };
  const as = (userId: string) => ({ meta: { user: { id: userId, role: "customer" } } });
  /** What is still under way: unsent outbox rows, messages in the event queues, sandbox callbacks being sent. */
  const inFlight = (): InFlight => {
    const checks: InFlight = {
      // Of the services running here: the relays also declared the work queue of the
      // recommendation service (the contracts name it as a consumer), which is not running
      // here and keeps its events.
      "messages in the event queues": async () => (await eventQueueMessages(vhost.uri, namespace, undefined, A_SERVICES)).total,
    };
    for (const s of DB_SERVICES)
      checks[`unsent ${s} outbox rows`] = () => unsentOutbox((a.getLocalService(s) as unknown as { db: import("knex").Knex }).db);
    for (const [name, broker] of [
      ["a", a],
      ["b", b],
    ] as const)
      checks[`sandbox callbacks being sent by payment on ${name}`] = () =>
        (broker.getLocalService("payment") as unknown as { deliveries: Set<unknown> }).deliveries.size;
    return checks;
  };

  before(async () => {
    // The sandbox platform's key, shared by every payment replica (cluster mode requires it).
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    process.env.SANDBOX_PAY_PRIVATE_KEY = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    process.env.SANDBOX_PAY_PUBLIC_KEY = publicKey.export({ type: "spki", format: "pem" }).toString();
    vhost = await createVhost();
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    env = {
      NAMESPACE: namespace,
      DATA_DIR: dataDir,
      MYSQL_URL,
      MIGRATE_ON_START: "true",
      RABBITMQ_URI: vhost.uri,
      REDIS_URL,
      JWT_SECRET: randomBytes(32).toString("hex"),
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
      PUBLIC_URL: baseUrl,
      REQUEST_TIMEOUT_MS: "30000",
      ADMIN_EMAIL: "root@example.com",
      ADMIN_PASSWORD: "admin-password-1",
    };
    a = createBroker(loadConfig({ ...env, NODE_ID: nodes.a, PORT: String(port) }), A_SERVICES);
    await a.start();
    // Started after A: both would otherwise run the same migrations at once.
    b = createBroker(loadConfig({ ...env, NODE_ID: nodes.b, PORT: "0" }), ["product", "order", "payment"]);
    await b.start();
    await eventually(
      "B's services seen from A",
      async () =>
        ["order", "payment", "product"].every(
          (s) => a.registry.getServiceList({ onlyAvailable: true }).filter((x: { name: string }) => x.name === s).length === 2,
        ),
      30_000,
    );
  });

  after(async () => {
    await b?.stop().catch(() => undefined);
    await a?.stop().catch(() => undefined);
    for (const s of DB_SERVICES) await dropDatabase(loadConfig(env), s).catch(() => undefined);
    await deleteRedisKeys(REDIS_URL, namespace);
    await vhost?.destroy().catch(() => undefined);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("exactly 20 orders reach PAID; the others are OUT_OF_STOCK; stock conserved; each paid buyer notified once", async () => {
    const product = await a.call<{ id: string }, unknown>("product.create", {
      sku: `FLASH-${randomBytes(4).toString("hex")}`,
      name: "Flash Sale Console",
      description: "",
      category: "consoles",
      price: { amount: 29900, currency: "CNY" },
      stock: UNITS,
    });

    // 200 buyers at once, alternating between the two order replicas.
    const attempts = await Promise.allSettled(
      Array.from({ length: BUYERS }, (_, i) =>
        a.call(
          "order.create",
          { shippingAddress: ADDRESS, items: [{ productId: product.id, quantity: 1 }] },
          { ...as(`buyer-${i}`), nodeID: i % 2 ? nodes.b : nodes.a },
        ),
      ),
    );
    const created = attempts.flatMap((r, i) =>
      r.status === "fulfilled" ? [{ buyer: `buyer-${i}`, order: r.value as { id: string; status: string } }] : [],
    );
    const refused = attempts.filter((r) => r.status === "rejected").map((r) => r.reason as Error & { type?: string });
    const reasons = refused.reduce<Record<string, number>>((m, e) => ((m[e.type ?? String(e)] = (m[e.type ?? String(e)] ?? 0) + 1), m), {});
    assert.equal(created.length, UNITS, `orders created: ${created.length}; refusals: ${JSON.stringify(reasons)}`);
    assert.deepEqual([...new Set(refused.map((e) => e.type))], ["OUT_OF_STOCK"]);
    const stock = async () =>
      (await a.call<{ stock: { onHand: number; reserved: number; available: number } }, unknown>("product.get", { id: product.id })).stock;
    assert.deepEqual(await stock(), { onHand: UNITS, reserved: UNITS, available: 0 });

    // Every winner pays through the sandbox, on either replica; the platform calls back over HTTP.
    for (const [i, { buyer, order }] of created.entries()) {
      const payment = await a.call<{ id: string; payUrl: string }, unknown>(
        "order.pay",
        { id: order.id, provider: "sandbox" },
        { ...as(buyer), nodeID: i % 2 ? nodes.b : nodes.a },
      );
      const token = new URL(payment.payUrl).searchParams.get("token");
      const done = await http(baseUrl, "POST", `/api/payments/sandbox/${payment.id}/complete`, { body: { outcome: "success", token } });
      assert.equal(done.status, 202, done.text);
    }
    await eventually("every order PAID", async () => {
      const statuses = await Promise.all(
        created.map(({ buyer, order }) => a.call<{ status: string }, unknown>("order.get", { id: order.id }, as(buyer))),
      );
      return statuses.every((s) => s.status === "PAID");
    });
    // Sold: on-hand down by exactly the paid units, nothing held, never negative.
    await eventually("stock settled", async () => {
      const s = await stock();
      return s.onHand === 0 && s.reserved === 0 && s;
    });
    // Each paid buyer: one payment.succeeded notification, once. Counted after the first
    // arrival AND again once the system is quiet, when a duplicate would have arrived too.
    const paymentNotices = async (buyer: string) => {
      const r = await a.call<{ items?: { type: string }[] } | { type: string }[], unknown>("notification.list", {}, as(buyer));
      return (Array.isArray(r) ? r : (r.items ?? [])).filter((n) => n.type === "payment.succeeded").length;
    };
    for (const { buyer } of created) await eventually(`${buyer} notified`, async () => (await paymentNotices(buyer)) > 0);
    await untilQuiet("checkout in cluster mode", inFlight());
    const counts = await Promise.all(created.map(async ({ buyer }) => [buyer, await paymentNotices(buyer)] as const));
    assert.deepEqual(
      counts.filter(([, n]) => n !== 1),
      [],
      "each paid buyer notified exactly once",
    );
    assert.equal(counts.length, UNITS);
  });

  it("Idempotency-Key across both order replicas on MariaDB: 20 concurrent creates with one key make one order, reserved once", async () => {
    const product = await a.call<{ id: string }, unknown>("product.create", {
      sku: `IDEM-${randomBytes(4).toString("hex")}`,
      name: "Idempotent Console",
      description: "",
      category: "consoles",
      price: { amount: 100, currency: "CNY" },
      stock: 50,
    });
    const buyer = `idem-${randomBytes(4).toString("hex")}`;
    const body = { shippingAddress: ADDRESS, items: [{ productId: product.id, quantity: 1 }] };
    // The gateway puts the Idempotency-Key header in meta; here the calls go straight to a replica, alternating.
    const meta = { user: { id: buyer, role: "customer" }, idempotencyKey: "one-key-two-replicas" };
    const answers = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        a.call<{ id: string }, unknown>("order.create", body, { meta, nodeID: i % 2 ? nodes.b : nodes.a }),
      ),
    );
    const failed = answers.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.deepEqual(
      failed.map((r) => (r.reason as Error).message),
      [],
      "every request answered",
    );
    const ids = new Set(answers.map((r) => (r as PromiseFulfilledResult<{ id: string }>).value.id));
    assert.equal(ids.size, 1, `order ids answered: ${[...ids].join(", ")}`);
    const orderDb = (a.getLocalService("order") as unknown as { db: import("knex").Knex }).db;
    assert.deepEqual(
      (await orderDb("orders").where({ user_id: buyer }).select("id")).map((r: { id: string }) => r.id),
      [...ids],
      "one order in the database",
    );
    assert.deepEqual(
      (await a.call<{ stock: unknown }, unknown>("product.get", { id: product.id })).stock,
      { onHand: 50, reserved: 1, available: 49 },
      "reserved once",
    );
  });

  it("hoarding across both order replicas on MariaDB: one user's 10 concurrent orders of 5 units against stock 50 give one order, nine UNPAID_LIMIT", async () => {
    const product = await a.call<{ id: string }, unknown>("product.create", {
      sku: `HOARD-${randomBytes(4).toString("hex")}`,
      name: "Hoarded Console",
      description: "",
      category: "consoles",
      price: { amount: 100, currency: "CNY" },
      stock: 50,
    });
    const attempts = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        a.call(
          "order.create",
          { shippingAddress: ADDRESS, items: [{ productId: product.id, quantity: 5 }] },
          { ...as("hoarder"), nodeID: i % 2 ? nodes.b : nodes.a },
        ),
      ),
    );
    assert.equal(
      attempts.filter((r) => r.status === "fulfilled").length,
      1,
      JSON.stringify(attempts.map((r) => (r.status === "rejected" ? (r.reason as { type?: string }).type : "ok"))),
    );
    assert.deepEqual(
      [...new Set(attempts.flatMap((r) => (r.status === "rejected" ? [(r.reason as { type?: string }).type] : [])))],
      ["UNPAID_LIMIT"],
    );
    assert.deepEqual((await a.call<{ stock: unknown }, unknown>("product.get", { id: product.id })).stock, {
      onHand: 50,
      reserved: 5,
      available: 45,
    });
  });

  it("the whole flow through the gateway in cluster mode: cart, order, failed then successful payment, ship, deliver, partial and full refund", async () => {
    const call = (method: string, p: string, opts: Parameters<typeof http>[3] = {}) => http(baseUrl, method, p, opts);
    const admin = (await call("POST", "/api/auth/login", { body: { email: "root@example.com", password: "admin-password-1" } })).body
      .accessToken;
    const user = (
      await call("POST", "/api/auth/register", { body: { email: "cluster-buyer@example.com", password: "cluster buyer 1", name: "Cee" } })
    ).body.accessToken;
    assert.ok(admin && user);
    const p = (
      await call("POST", "/api/products", {
        token: admin,
        body: {
          sku: `CF-${randomBytes(4).toString("hex")}`,
          name: "Cluster Kettle",
          description: "",
          category: "kitchen",
          price: { amount: 8800, currency: "CNY" },
          stock: 5,
        },
      })
    ).body;
    assert.equal((await call("POST", "/api/cart/items", { token: user, body: { productId: p.id, quantity: 2 } })).status, 200);
    const created = await call("POST", "/api/orders", {
      token: user,
      body: { shippingAddress: ADDRESS },
      headers: { "idempotency-key": "cluster-flow" },
    });
    assert.equal(created.status, 201, created.text);
    const id = created.body.id;
    const get = async () => (await call("GET", `/api/orders/${id}`, { token: user })).body;
    const pay = async (outcome: "success" | "failure") => {
      const payment = (await call("POST", `/api/orders/${id}/pay`, { token: user, body: { provider: "sandbox" } })).body;
      const token = new URL(payment.payUrl).searchParams.get("token");
      assert.equal((await call("POST", `/api/payments/sandbox/${payment.id}/complete`, { body: { outcome, token } })).status, 202);
    };
    const notified = (type: string) =>
      eventually(`${type} notified`, async () => {
        const n = (await call("GET", "/api/notifications", { token: user })).body;
        return ((Array.isArray(n) ? n : n.items) as { type: string }[]).some((x) => x.type === type);
      });
    await pay("failure");
    await notified("payment.failed");
    assert.equal((await get()).status, "PENDING_PAYMENT");
    await pay("success");
    await eventually("PAID", async () => (await get()).status === "PAID");
    await notified("payment.succeeded");
    await eventually("cart emptied", async () => (await call("GET", "/api/cart", { token: user })).body.items.length === 0);
    assert.deepEqual((await call("GET", `/api/products/${p.id}`)).body.stock, { onHand: 3, reserved: 0, available: 3 });
    assert.equal(
      (await call("POST", `/api/orders/${id}/ship`, { token: admin, body: { carrier: "SF Express", trackingNumber: "SF42" } })).body.status,
      "SHIPPED",
    );
    await notified("order.shipped");
    assert.equal((await call("POST", `/api/orders/${id}/deliver`, { token: admin })).body.status, "DELIVERED");
    await notified("order.delivered");
    assert.equal(
      (await call("POST", `/api/orders/${id}/refunds`, { token: user, body: { reason: "dented" } })).status,
      409,
      "after shipping: a return request",
    );
    assert.equal((await call("POST", `/api/orders/${id}/refunds`, { token: admin, body: { amount: 5000, reason: "dented" } })).status, 202);
    await eventually("partly refunded", async () => (await get()).paymentStatus === "partially_refunded");
    assert.equal((await call("POST", `/api/orders/${id}/refunds`, { token: admin, body: { reason: "returned" } })).status, 202);
    const done = await eventually("REFUNDED", async () => {
      const o = await get();
      return o.status === "REFUNDED" && o;
    });
    assert.deepEqual(
      done.history.map((h: { status: string }) => h.status),
      ["PENDING_PAYMENT", "PAID", "SHIPPED", "DELIVERED", "REFUNDED"],
    );
    await notified("refund.succeeded");
    // Shipped goods do not come back to the shelf.
    assert.deepEqual((await call("GET", `/api/products/${p.id}`)).body.stock, { onHand: 3, reserved: 0, available: 3 });
  });
});
