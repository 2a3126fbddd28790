/**
 * The recommendation service in the running system.
 *
 * Embedded (every service in one broker, SQLite, events in-process): purchases come from
 * real checkouts through the gateway (order → sandbox payment → PAID → `order.paid`), so
 * the whole path is exercised: also-bought, recommendations with reasons, the preference
 * boost, the cold start, exclusions (bought, deleted, out of stock), a full refund, a
 * replayed event, the rebuild (equal to the incremental model), and the access rules.
 *
 * Cluster: two recommendation replicas over a real RabbitMQ vhost, MariaDB and Redis; 300
 * `order.paid` events (plus refunds, a refund before its payment, and duplicates) through
 * the real event layer, consumed by both replicas at once: the model equals the one built
 * from the same purchases in memory, and the replicas answer identically.
 */
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import type { Knex } from "knex";
import type { ServiceBroker } from "moleculer";
import { createBroker } from "../../app";
import { loadConfig } from "../../lib/config";
import { dropDatabase } from "../../lib/db";
import { applyOnce, type EventHandler } from "../../lib/events/consumer";
import { producerService } from "../../lib/events/fixtures/services";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { spawnTs } from "../../test/support/proc";
import { eventually } from "../../test/support/eventually";
import { createVhost, type RabbitVhost } from "../../test/support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../../test/support/servers";
import { buildModel, type Purchase } from "./recommendation.domain";
import { modelSnapshot } from "./recommendation.repo";
import { SHIPPING_ADDRESS } from "../../test/support/fixtures";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
type Rec = { product: { id: string; name: string }; score: number; reason: string };

const dbOf = (broker: ServiceBroker) => (broker.getLocalService("recommendation") as unknown as { db: Knex }).db;

describe("recommendations, embedded (real checkouts through the gateway)", () => {
  let app: TestApp;
  let admin = "";
  const users = new Map<string, { token: string; id: string }>();
  const p = new Map<string, string>(); // letter → product id
  const call = (method: string, url: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, url, opts);
  const recs = async (who: string, query = "") => {
    const r = await call("GET", `/api/recommendations${query}`, { token: users.get(who)!.token });
    assert.equal(r.status, 200, r.text);
    return r.body.items as Rec[];
  };
  const ids = (items: { product: { id: string } }[]) => items.map((i) => i.product.id);
  const letter = (id: string) => [...p].find(([, v]) => v === id)?.[0] ?? id;
  const alsoBought = async (l: string) => {
    const r = await call("GET", `/api/products/${p.get(l)}/also-bought`);
    assert.equal(r.status, 200, r.text);
    return (r.body.items as Rec[]).map((i) => letter(i.product.id));
  };
  const rank = async (who: string) =>
    (await app.broker.call<{ productId: string }[], unknown>("recommendation.rank", { userId: users.get(who)!.id, limit: 20 })).map((r) =>
      letter(r.productId),
    );

  /** A real checkout: order → sandbox payment (its signed callback) → PAID. */
  const buy = async (who: string, letters: string[]) => {
    const token = users.get(who)!.token;
    const o = await call("POST", "/api/orders", {
      token,
      body: { shippingAddress: SHIPPING_ADDRESS, items: letters.map((l) => ({ productId: p.get(l), quantity: 1 })) },
    });
    assert.equal(o.status, 201, o.text);
    const pay = await call("POST", `/api/orders/${o.body.id}/pay`, { token, body: { provider: "sandbox" } });
    assert.equal(pay.status, 200, pay.text);
    const payUrl = new URL(pay.body.payUrl);
    const done = await call("POST", `/api/payments/sandbox/${pay.body.id}/complete`, {
      body: { outcome: "success", token: payUrl.searchParams.get("token") },
    });
    assert.equal(done.status, 202, done.text);
    await eventually(`${who}'s order PAID`, async () => (await call("GET", `/api/orders/${o.body.id}`, { token })).body.status === "PAID");
    return o.body.id as string;
  };
  const purchasesCounted = (n: number) =>
    eventually(
      `${n} purchases in the model`,
      async () => (await app.broker.call<{ purchases: number }>("recommendation.status")).purchases === n,
    );

  before(async () => {
    app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    for (const [l, name, category, brand] of [
      ["A", "Anvil", "tools", "Forge"],
      ["B", "Bolt Cutter", "tools", "Forge"],
      ["C", "Compost Bin", "garden", "Greenly"],
      ["D", "Dahlia Bulbs", "garden", "Greenly"],
      ["E", "Edging Shears", "garden", "Acme"],
      ["F", "File Set", "tools", "Acme"],
    ] as const) {
      const r = await call("POST", "/api/products", {
        token: admin,
        body: {
          sku: `REC-${l}-${randomBytes(3).toString("hex")}`,
          name,
          description: "",
          category,
          brand,
          price: { amount: 1000, currency: "EUR" },
          stock: 50,
        },
      });
      assert.equal(r.status, 201, r.text);
      p.set(l, r.body.id);
    }
    for (const who of ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]) {
      const r = await call("POST", "/api/auth/register", {
        body: { email: `${who}-${randomBytes(3).toString("hex")}@example.com`, password: `${who} password`, name: who },
      });
      assert.equal(r.status, 201, r.text);
      const me = await call("GET", "/api/users/me", { token: r.body.accessToken });
      users.set(who, { token: r.body.accessToken, id: me.body.id });
    }
    // co(A,B) = 2, co(A,C) = 2; B has one more buyer (u6) than C, so C is A's closer neighbour.
    await Promise.all([buy("u1", ["A", "B"]), buy("u2", ["A", "B"]), buy("u3", ["A", "C"]), buy("u5", ["A", "C"]), buy("u6", ["B"])]);
    await buy("u4", ["A"]);
    await purchasesCounted(10);
  });
  after(async () => app?.stop());

  it("also-bought: co-purchased products, closest first; unknown product 404; bad limit 422", async () => {
    assert.deepEqual(await alsoBought("A"), ["C", "B"]);
    assert.deepEqual(await alsoBought("D"), [], "nobody bought D: nothing to say");
    assert.equal((await call("GET", `/api/products/${randomUUID()}/also-bought`)).status, 404);
    for (const bad of ["0", "51", "abc"])
      assert.equal((await call("GET", `/api/products/${p.get("A")}/also-bought?limit=${bad}`)).status, 422, bad);
    const one = await call("GET", `/api/products/${p.get("A")}/also-bought?limit=1`);
    assert.equal(one.body.items.length, 1);
    assert.equal(one.body.items[0].product.name, "Compost Bin", "the product as the product service shows it");
  });

  it("recommendations: similar to what the user bought, with a reason; never what they bought; popular ones fill", async () => {
    const items = await recs("u4");
    assert.deepEqual(ids(items).slice(0, 2).map(letter), ["C", "B"]);
    assert.equal(items[0].reason, "Customers who bought Anvil also bought this");
    assert.ok(!ids(items).includes(p.get("A")!), "never a product the user bought");
    assert.deepEqual(ids(items).slice(2).map(letter).sort(), ["D", "E", "F"], "the rest of the catalog fills the list");
    assert.ok(items[1].score > items[2].score);
    assert.equal((await recs("u4", "?limit=1")).length, 1);
  });

  it("a stated preference changes the order", async () => {
    assert.equal(
      (await call("PATCH", "/api/users/me", { token: users.get("u4")!.token, body: { preferences: { categories: ["tools"] } } })).status,
      200,
    );
    assert.deepEqual(
      ids(await recs("u4"))
        .slice(0, 2)
        .map(letter),
      ["B", "C"],
      "tools: B moves above C",
    );
    await call("PATCH", "/api/users/me", { token: users.get("u4")!.token, body: { preferences: { categories: [] } } });
    assert.deepEqual(
      ids(await recs("u4"))
        .slice(0, 2)
        .map(letter),
      ["C", "B"],
    );
  });

  it("a user with no purchases gets popular products of their preferred categories first", async () => {
    await call("PATCH", "/api/users/me", { token: users.get("u7")!.token, body: { preferences: { categories: ["garden"] } } });
    const items = await recs("u7");
    assert.equal(letter(ids(items)[0]), "C", "C (2 buyers) first");
    assert.deepEqual(ids(items).slice(0, 3).map(letter).sort(), ["C", "D", "E"], "the garden products first");
    assert.equal(items[0].reason, "Popular in garden, a category you like");
    assert.equal(letter(ids(items)[3]), "A", "then the most bought of the rest");
  });

  it("identity comes from the token: an injected userId changes nothing; no token 401; bad limit 422", async () => {
    const mine = await recs("u7");
    assert.deepEqual(await recs("u7", `?userId=${users.get("u4")!.id}`), mine);
    assert.equal((await call("GET", "/api/recommendations")).status, 401);
    for (const bad of ["0", "51", "x"])
      assert.equal((await call("GET", `/api/recommendations?limit=${bad}`, { token: users.get("u7")!.token })).status, 422, bad);
  });

  it("an event delivered twice, or a copy under another message id, counts once", async () => {
    const orderDb = (app.broker.getLocalService("order") as unknown as { db: Knex }).db;
    const row = (await orderDb("outbox").where({ event: "order.paid" }).orderBy("seq").first()) as {
      id: string;
      event: string;
      payload: string;
    };
    const envelope = { id: row.id, name: row.event, payload: JSON.parse(row.payload), occurredAt: new Date().toISOString() };
    const svc = app.broker.getLocalService("recommendation") as unknown as { $events: { handlers: Record<string, EventHandler> } };
    const db = dbOf(app.broker);
    const before = await modelSnapshot(db);
    assert.equal(await applyOnce(db, envelope as never, svc.$events.handlers["order.paid"]), "duplicate", "the inbox has it");
    assert.equal(await applyOnce(db, { ...envelope, id: randomUUID() } as never, svc.$events.handlers["order.paid"]), "applied");
    assert.deepEqual(await modelSnapshot(db), before, "the purchase rows are keyed by order and product");
  });

  it("the rebuild recomputes the same model from the order history (admin only, with progress)", async () => {
    const db = dbOf(app.broker);
    const before = await modelSnapshot(db);
    assert.ok(before.pairs.length > 0);
    assert.equal((await call("POST", "/api/admin/recommendations/rebuild", { token: users.get("u1")!.token })).status, 403);
    const started = await call("POST", "/api/admin/recommendations/rebuild", { token: admin });
    assert.equal(started.status, 202, started.text);
    const done = await eventually("rebuild done", async () => {
      const s = (await call("GET", "/api/admin/recommendations/rebuild", { token: admin })).body;
      return s.status === "done" && s;
    });
    assert.equal(done.summary.orders, 6);
    assert.equal(done.summary.purchases, 10);
    assert.deepEqual(await modelSnapshot(db), before);
  });

  it("npm run recs:rebuild drives the same rebuild over HTTP as an admin, with progress, and exits 0", async () => {
    const child = spawnTs(path.join(__dirname, "..", "..", "bin", "recs-rebuild.ts"), {
      name: "recs-rebuild",
      args: ["--url", app.baseUrl],
      env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password },
    });
    const done = await child.waitForLine(/^Rebuild done: (.*)$/, 30_000);
    await child.waitExit();
    assert.equal(JSON.parse(done[1]).purchases, 10);
    const denied = spawnTs(path.join(__dirname, "..", "..", "bin", "recs-rebuild.ts"), {
      name: "recs-rebuild-denied",
      args: ["--url", app.baseUrl],
      env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: "wrong-password" },
    });
    await denied.waitForLine(/Login at .* failed: 401/, 30_000);
    await denied.waitExit();
  });

  it("a full refund takes the order's products out of the model", async () => {
    assert.ok(ids(await recs("u7")).includes(p.get("F")!), "recommended (and now cached) before buying it");
    const order = await buy("u7", ["F"]);
    await purchasesCounted(11);
    assert.ok(!ids(await recs("u7")).includes(p.get("F")!), "the user's own purchase shows at once, cache or not");
    assert.ok((await alsoBought("F")).length === 0);
    const r = await call("POST", `/api/orders/${order}/refunds`, { token: users.get("u7")!.token, body: { reason: "changed my mind" } });
    assert.equal(r.status, 202, r.text);
    await purchasesCounted(10);
    const f = (await dbOf(app.broker)("rec_items")
      .where({ product_id: p.get("F") })
      .first()) as { buyers: number };
    assert.equal(Number(f.buyers), 0);
    assert.ok((await rank("u7")).includes("F"), "no longer counted as bought");
  });

  it("deleted and out-of-stock products leave recommendations and also-bought", async () => {
    assert.equal((await call("DELETE", `/api/products/${p.get("C")}`, { token: admin })).status, 204);
    const stock = (await call("GET", `/api/products/${p.get("B")}`)).body.stock.available as number;
    assert.equal((await call("POST", `/api/products/${p.get("B")}/stock`, { token: admin, body: { delta: -stock } })).status, 200);
    // At once through the gateway (the product service is asked), and in the model's copy via the events.
    assert.deepEqual(await alsoBought("A"), []);
    assert.ok(!ids(await recs("u4")).some((id) => id === p.get("B") || id === p.get("C")));
    await eventually("the copy knows", async () => {
      const r = await rank("u4");
      return !r.includes("B") && !r.includes("C");
    });
  });

  it("the OpenAPI document lists the recommendation routes", async () => {
    const doc = (await call("GET", "/api/openapi.json")).body;
    assert.ok(doc.paths["/api/recommendations"]?.get);
    assert.ok(doc.paths["/api/products/{id}/also-bought"]?.get);
    assert.ok(doc.paths["/api/admin/recommendations/rebuild"]?.post);
  });
});

describe("recommendations, cluster: two replicas over RabbitMQ, MariaDB and Redis", () => {
  let a: ServiceBroker;
  let b: ServiceBroker;
  let vhost: RabbitVhost;
  let env: Record<string, string>;
  let dataDir: string;
  const namespace = uniqueNamespace("recs");
  const nodeA = `${namespace}-a`;
  const nodeB = `${namespace}-b`;

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-recs-"));
    vhost = await createVhost();
    env = {
      NAMESPACE: namespace,
      DATA_DIR: dataDir,
      MYSQL_URL,
      REDIS_URL,
      MIGRATE_ON_START: "true",
      RABBITMQ_URI: vhost.uri,
      JWT_SECRET: randomBytes(32).toString("hex"),
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
    };
    const configA = loadConfig({ ...env, NODE_ID: nodeA });
    a = createBroker(configA, ["product", "recommendation"]);
    a.createService(producerService(configA, "shop"));
    b = createBroker(loadConfig({ ...env, NODE_ID: nodeB }), ["recommendation"]);
    // One after the other: knex's first migration on a new database races with itself
    // (cluster mode migrates in a separate step, a Job, for that reason).
    await a.start();
    await b.start();
    await a.waitForServices(["recommendation", "product"], 20_000);
    await eventually(
      "both replicas known",
      async () => a.registry.getServiceList({ onlyAvailable: true }).filter((s) => s.name === "recommendation").length === 2,
      20_000,
    );
  });
  after(async () => {
    await b?.stop().catch(() => undefined);
    await a?.stop().catch(() => undefined);
    const config = loadConfig(env);
    for (const s of ["product", "recommendation", "shop"]) await dropDatabase(config, s);
    await vhost?.destroy().catch(() => undefined);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("concurrent purchases on two replicas: the model equals the one built from the same purchases; replicas answer identically", async () => {
    const products: string[] = [];
    for (let i = 0; i < 30; i++)
      products.push(
        (
          await a.call<{ id: string }, unknown>("product.create", {
            sku: `RC-${i}-${randomBytes(3).toString("hex")}`,
            name: `Cluster product ${i}`,
            description: "",
            category: i % 3 === 0 ? "tools" : "garden",
            brand: "Peak",
            price: { amount: 1000, currency: "EUR" },
            stock: 10,
          })
        ).id,
      );
    // 300 orders of 25 users (each buys many products, so the contributing sets overlap a lot).
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const orders = Array.from({ length: 300 }, (_, i) => ({
      orderId: `ord-${String(i).padStart(4, "0")}`,
      userId: `user-${Math.floor(random() * 25)}`,
      total: { amount: 1000, currency: "EUR" },
      paymentId: `pay-${i}`,
      provider: "sandbox",
      lines: [...new Set(Array.from({ length: 1 + Math.floor(random() * 3) }, () => products[Math.floor(random() * products.length)]))].map(
        (productId) => ({ productId, quantity: 1 }),
      ),
      occurredAt: new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString(),
    }));
    const refunded = new Set(["ord-0003", "ord-0100", "ord-0200"]);
    const early = { ...orders[0], orderId: "ord-early", userId: "user-0" };
    // Both replicas rank every user first: what they read is in their memory when the
    // purchases arrive, and must be forgotten (each replica handles only some of the events).
    // The ranking cache (Redis, shared) is off here: this is about each replica's memory.
    for (const x of [a, b]) (x.getLocalService("recommendation") as unknown as { cacheTtlS: number }).cacheTtlS = 0;
    const rankOn = (node: string, u: number) =>
      a.call(
        "recommendation.rank",
        { userId: `user-${u}`, limit: 10, preferences: { categories: u % 2 ? ["tools"] : [] } },
        { nodeID: node },
      );
    const alsoOn = (node: string) => a.call("recommendation.alsoBought", { id: products[0] }, { nodeID: node });
    for (const node of [nodeA, nodeB]) {
      for (let u = 0; u < 25; u++) await rankOn(node, u);
      await alsoOn(node);
    }
    // A refund before its payment (ord-early), then everything at once from 6 publishers.
    await a.call("shop.emit", { event: "order.refunded", payloads: [{ orderId: "ord-early", userId: "user-0", status: "REFUNDED" }] });
    await Promise.all(
      Array.from({ length: 6 }, (_, k) => a.call("shop.emit", { event: "order.paid", payloads: orders.filter((_, i) => i % 6 === k) })),
    );
    await a.call("shop.emit", { event: "order.paid", payloads: [early, orders[5], orders[6]] }); // the late one, and two copies with new message ids
    await a.call("shop.emit", {
      event: "order.refunded",
      payloads: [...refunded].map((orderId) => ({
        orderId,
        userId: orders.find((o) => o.orderId === orderId)!.userId,
        status: "REFUNDED",
      })),
    });
    await a.call("shop.emit", {
      event: "order.refunded",
      payloads: [{ orderId: "ord-0001", userId: orders[1].userId, status: "DELIVERED" }],
    });

    const db = dbOf(a);
    await eventually(
      "every event handled",
      async () =>
        Number((await db("inbox").whereIn("event", ["order.paid", "order.refunded"]).count<{ n: number }[]>({ n: "*" }))[0].n) ===
        1 + 300 + 3 + 3 + 1,
      60_000,
    );
    const stats = [a, b].map(
      (x) => (x.getLocalService("recommendation") as unknown as { eventStats(): { applied: number } }).eventStats().applied,
    );
    assert.ok(
      stats.every((n) => n > 0),
      `both replicas consumed (${stats.join(",")})`,
    );

    const users = new Map<string, Purchase[]>();
    for (const o of orders)
      if (!refunded.has(o.orderId))
        for (const l of o.lines)
          users.set(o.userId, [...(users.get(o.userId) ?? []), { productId: l.productId, at: Date.parse(o.occurredAt) }]);
    const expected = buildModel(users);
    const snap = await modelSnapshot(db);
    assert.deepEqual(
      snap.buyers,
      [...expected.buyers].sort(([x], [y]) => (x < y ? -1 : 1)),
    );
    const pairs = [...expected.pairs].flatMap(([pid, row]) => [...row].map(([q, n]) => [pid, q, n] as [string, string, number]));
    pairs.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : 1));
    assert.deepEqual(snap.pairs, pairs, "every co-purchase counted once, none lost to a race between replicas");

    // Each replica forgot the changes it applied at their commit, and the other replica's when
    // their `recommendation.model_changed` arrived: they agree, and agree with a replica that
    // reads everything afresh.
    const answers = async (node: string) => [
      ...(await Promise.all(Array.from({ length: 25 }, (_, u) => rankOn(node, u)))),
      await alsoOn(node),
    ];
    await eventually("the replicas agree", async () => isDeepStrictEqual(await answers(nodeA), await answers(nodeB)), 20_000);
    const warmB = await answers(nodeB);
    (b.getLocalService("recommendation") as unknown as { model: { clear(): void } }).model.clear();
    assert.deepEqual(warmB, await answers(nodeB), "what B kept in memory equals what it reads afresh");
    for (let u = 0; u < 25; u++) {
      const ra = await rankOn(nodeA, u);
      const bought = new Set((users.get(`user-${u}`) ?? []).map((x) => x.productId));
      const got = (ra as { productId: string }[]).map((r) => r.productId);
      assert.ok(!got.some((id) => bought.has(id)), "never a product the user bought");
      assert.equal(got.length, Math.min(10, products.length - bought.size), "every other product is recommendable");
    }
    const xa = await alsoOn(nodeA);
    assert.ok((xa as { items: unknown[] }).items.length > 0);

    // One more purchase, with both memories warm: one replica handles it, the other learns of
    // it only by its `recommendation.model_changed`.
    const buyer = "user-24";
    const fresh = products.find((id) => !(users.get(buyer) ?? []).some((x) => x.productId === id))!;
    await answers(nodeA);
    await answers(nodeB);
    const shown = async (node: string) =>
      (await a.call<{ productId: string }[], unknown>("recommendation.rank", { userId: buyer, limit: 30 }, { nodeID: node })).some(
        (r) => r.productId === fresh,
      );
    assert.ok((await shown(nodeA)) && (await shown(nodeB)), "recommended before it is bought");
    await a.call("shop.emit", {
      event: "order.paid",
      payloads: [{ ...orders[1], orderId: "ord-extra", userId: buyer, paymentId: "pay-extra", lines: [{ productId: fresh, quantity: 1 }] }],
    });
    await eventually("both replicas know the purchase", async () => !(await shown(nodeA)) && !(await shown(nodeB)), 20_000);
    const [warmA, warmB2] = [await answers(nodeA), await answers(nodeB)];
    assert.deepEqual(warmA, warmB2, "the replicas agree");
    (a.getLocalService("recommendation") as unknown as { model: { clear(): void } }).model.clear();
    assert.deepEqual(warmA, await answers(nodeA), "and agree with a fresh read");
  });
});
