/**
 * The search service in the running system: embedded (gateway + user + product + search in
 * one broker, SQLite, events in-process), and a cluster of two search replicas over a real
 * RabbitMQ vhost with the product service on MariaDB. The catalog is the engine tests'
 * hand-made one (fixtures/catalog.ts), created through the product service, so the counts
 * below are known.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import type { ServiceBroker } from "moleculer";
import { createBroker } from "../../app";
import { loadConfig } from "../../lib/config";
import { dropDatabase } from "../../lib/db";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { untilQuiet, unsentOutbox } from "../../test/support/quiet";
import { createVhost, type RabbitVhost } from "../../test/support/rabbitmq";
import { MYSQL_URL, uniqueNamespace } from "../../test/support/servers";
import { testCatalog } from "./engines/fixtures/catalog";
import { createSearchService } from "./search.service";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
/** The figure for embedded mode: a change shows in results within a second. */
const EMBEDDED_DEADLINE_MS = 1000;
/** Cluster: the same path plus RabbitMQ; a looser bound on a shared CI machine. */
const CLUSTER_DEADLINE_MS = 5000;

/** Polls `check` until it returns true; returns the time it took, or fails after `deadlineMs`. */
async function within(deadlineMs: number, what: string, check: () => Promise<boolean>): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > deadlineMs) assert.fail(`${what}: not within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Creates the 30 fixture products through the product service; fixture id → real id. */
async function createCatalog(broker: ServiceBroker): Promise<Map<string, string>> {
  const ids = new Map<string, string>();
  for (const p of testCatalog()) {
    const created = await broker.call<{ id: string }, unknown>("product.create", {
      sku: `${p.sku}-${randomBytes(3).toString("hex")}`,
      name: p.name,
      description: p.description,
      category: p.category,
      brand: p.brand,
      tags: p.tags,
      price: p.price,
      images: [],
      stock: p.stock.available,
    });
    ids.set(p.id, created.id);
  }
  return ids;
}

const status = (broker: ServiceBroker, nodeID?: string) =>
  broker.call<
    {
      ready: boolean;
      documents: number;
      rebuilds: { done: number; running: boolean };
    },
    unknown
  >("search.status", {}, nodeID ? { nodeID } : {});

describe("search service, embedded (SQLite, in-process events)", () => {
  let app: TestApp;
  let admin = "";
  let id: Map<string, string>;
  const get = (q: string) => http(app.baseUrl, "GET", `/api/search?${q}`);
  const names = async (q: string) => {
    const r = await get(q);
    assert.equal(r.status, 200, r.text);
    return (r.body.items as { name: string }[]).map((p) => p.name);
  };

  before(async () => {
    app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    admin = (await http(app.baseUrl, "POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    id = await createCatalog(app.broker);
    await within(10_000, "the index is built and holds the catalog", async () => {
      const s = await status(app.broker);
      return s.ready && s.documents === 30;
    });
  });
  after(async () => app?.stop());

  it("readiness includes the index; status reports the engine", async () => {
    const s = await status(app.broker);
    assert.equal(s.ready, true);
    const ready = await http(app.baseUrl, "GET", "/health/ready");
    assert.equal(ready.status, 200, ready.text);
    assert.equal(ready.body.checks["search:index"], "up");
  });

  it("typo tolerance: iphnoe finds the iPhones", async () => {
    assert.deepEqual((await names("q=iphnoe")).sort(), ["iPhone 14", "iPhone 15", "iPhone 15 Pro", "iPhone SE"]);
  });

  it("facets with counts, filters, price range, inStock, sort and pages", async () => {
    const all = await get("q=");
    assert.equal(all.body.total, 30);
    assert.deepEqual(all.body.facets.category.slice(0, 1), [{ value: "Phones", count: 8 }]);
    const apple = await get("category=Phones&brand=Apple");
    assert.equal(apple.body.total, 4);
    assert.deepEqual(apple.body.facets.category, [
      { value: "Phones", count: 4 },
      { value: "Laptops", count: 2 },
      { value: "Headphones", count: 1 },
    ]);
    const inStock = await get("q=iphnoe&inStock=true");
    assert.deepEqual((inStock.body.items as { name: string }[]).map((p) => p.name).sort(), ["iPhone 15", "iPhone 15 Pro", "iPhone SE"]);
    const range = await get("category=Shoes&minPrice=10000&maxPrice=14000&sort=price_asc");
    assert.deepEqual(
      (range.body.items as { price: { amount: number } }[]).map((p) => p.price.amount),
      [11900, 12900, 13900],
    );
    const desc = await get("q=laptop&sort=price_desc&pageSize=2&page=2");
    assert.equal(desc.body.total, 6);
    assert.deepEqual([desc.body.page, desc.body.pageSize], [2, 2]);
    assert.deepEqual(
      (desc.body.items as { name: string }[]).map((p) => p.name),
      ["XPS 13", "MacBook Air 13"],
    );
    // Each item is the contract's product, with its stock block.
    const item = all.body.items[0];
    for (const k of ["id", "sku", "name", "category", "brand", "price", "stock", "createdAt", "updatedAt"]) assert.ok(k in item, k);
  });

  it("suggest completes product names by prefix", async () => {
    const r = await http(app.baseUrl, "GET", "/api/search/suggest?q=iph");
    assert.equal(r.status, 200, r.text);
    assert.deepEqual((r.body.suggestions as string[]).sort(), ["iPhone 14", "iPhone 15", "iPhone 15 Pro", "iPhone SE"]);
    assert.deepEqual((await http(app.baseUrl, "GET", "/api/search/suggest?q=")).body, { suggestions: [] });
  });

  it("bad queries are 422 in the contract's error shape, never 500", async () => {
    for (const q of [
      "sort=bogus",
      "pageSize=1000",
      "minPrice=-1",
      "minPrice=500&maxPrice=100",
      "inStock=maybe",
      "page=0",
      "page=200&pageSize=100",
      `q=${"x".repeat(201)}`,
    ]) {
      const r = await get(q);
      assert.equal(r.status, 422, `${q}: ${r.text}`);
      assert.equal(r.body.error.code, "VALIDATION_ERROR");
    }
    assert.equal((await http(app.baseUrl, "GET", "/api/search/suggest?limit=99&q=a")).status, 422);
    // Unknown parameters (an injected userId) change nothing.
    assert.equal((await get("q=iphnoe&userId=someone-else")).body.total, 4);
  });

  it("an update, a stock change and a delete show in results within a second", async () => {
    const patch = await http(app.baseUrl, "PATCH", `/api/products/${id.get("p08")}`, { token: admin, body: { name: "Pixel 9 Pro Fold" } });
    assert.equal(patch.status, 200, patch.text);
    await within(EMBEDDED_DEADLINE_MS, "renamed product found", async () => (await names("q=fold")).includes("Pixel 9 Pro Fold"));
    assert.ok(!(await names("q=pixel 8")).includes("Pixel 8"));

    // Sold out by an admin adjustment: leaves the inStock results (stock.changed).
    const adj = await http(app.baseUrl, "POST", `/api/products/${id.get("p04")}/stock`, { token: admin, body: { delta: -5 } });
    assert.equal(adj.status, 200, adj.text);
    await within(
      EMBEDDED_DEADLINE_MS,
      "sold-out product leaves inStock results",
      async () => !(await names("q=iphone&inStock=true")).includes("iPhone SE"),
    );
    // Reserved to the last unit by an order: the same.
    await app.broker.call("product.reserve", {
      orderId: `o-${randomBytes(4).toString("hex")}`,
      lines: [{ productId: id.get("p19"), quantity: 2 }],
    });
    await within(
      EMBEDDED_DEADLINE_MS,
      "fully reserved product leaves inStock results",
      async () => !(await names("q=quietcomfort&inStock=true")).includes("QuietComfort Earbuds II"),
    );

    const del = await http(app.baseUrl, "DELETE", `/api/products/${id.get("p27")}`, { token: admin });
    assert.equal(del.status, 204, del.text);
    await within(EMBEDDED_DEADLINE_MS, "deleted product gone", async () => !(await names("q=fryer")).includes("Air Fryer XXL"));
    const facets = (await get("q=")).body.facets.category as { value: string; count: number }[];
    assert.deepEqual(
      facets.find((f) => f.value === "Kitchen"),
      { value: "Kitchen", count: 4 },
    );
  });

  it("a new search replica rebuilds its index from the product service", async () => {
    const old = app.broker.getLocalService("search");
    await app.broker.destroyService(old);
    app.broker.createService(createSearchService(app.config));
    await within(10_000, "rebuilt", async () => {
      try {
        return (await status(app.broker)).ready;
      } catch {
        return false; // not registered yet
      }
    });
    assert.equal((await status(app.broker)).documents, 29);
    assert.ok((await names("q=fold")).includes("Pixel 9 Pro Fold"));
    assert.ok(!(await names("q=fryer")).includes("Air Fryer XXL"));
    assert.ok(!(await names("q=iphone&inStock=true")).includes("iPhone SE"));
  });

  it("events missed by a replica are repaired by a resync", async () => {
    const svc = app.broker.getLocalService("search") as unknown as { $broadcast: { embedded: { remove(): void } } };
    // Deaf from here on: these two changes never reach it as events.
    svc.$broadcast.embedded.remove();
    await http(app.baseUrl, "DELETE", `/api/products/${id.get("p26")}`, { token: admin });
    await http(app.baseUrl, "PATCH", `/api/products/${id.get("p25")}`, { token: admin, body: { name: "Stan Smith Lux Sneakers" } });
    // Polled, not slept: the relay has delivered both events to every subscriber left, so
    // whatever the replica would have been told, it would have been told by now.
    const productDb = (app.broker.getLocalService("product") as unknown as { db: import("knex").Knex }).db;
    await untilQuiet(
      "the product events delivered in-process",
      { "unsent product outbox rows": () => unsentOutbox(productDb) },
      10_000,
      20,
    );
    assert.ok((await names("q=espresso")).includes("Espresso Machine 3200"), "not told: still finds the deleted product");
    assert.ok(!(await names("q=lux")).includes("Stan Smith Lux Sneakers"), "not told: does not find the new name");
    const before = (await status(app.broker)).rebuilds.done;
    await app.broker.call("search.reindex");
    await within(10_000, "resynced", async () => {
      const s = await status(app.broker);
      return s.rebuilds.done > before && !s.rebuilds.running;
    });
    assert.ok(!(await names("q=espresso")).includes("Espresso Machine 3200"));
    assert.ok((await names("q=lux")).includes("Stan Smith Lux Sneakers"));
    assert.equal((await status(app.broker)).documents, 28);
  });

  it("the OpenAPI document lists the search routes", async () => {
    const doc = (await http(app.baseUrl, "GET", "/api/openapi.json")).body;
    assert.ok(doc.paths["/api/search"]?.get, "GET /api/search");
    assert.ok(doc.paths["/api/search/suggest"]?.get, "GET /api/search/suggest");
    const params = (doc.paths["/api/search"].get.parameters as { name: string }[]).map((p) => p.name);
    for (const p of ["q", "category", "brand", "minPrice", "maxPrice", "inStock", "sort", "page", "pageSize"])
      assert.ok(params.includes(p), p);
  });
});

describe("search service, cluster: two replicas over RabbitMQ, product on MariaDB", () => {
  let a: ServiceBroker;
  let b: ServiceBroker;
  let vhost: RabbitVhost;
  let env: Record<string, string>;
  let dataDir: string;
  const namespace = uniqueNamespace("srch");
  const nodeA = `${namespace}-a`;
  const nodeB = `${namespace}-b`;
  const on = (nodeID: string, q: Record<string, unknown>) =>
    a.call<
      {
        total: number;
        items: { id: string; name: string; stock: { available: number } }[];
      },
      unknown
    >("search.search", q, { nodeID });
  const startB = async () => {
    b = createBroker(loadConfig({ ...env, NODE_ID: nodeB }), ["search"]);
    await b.start();
    await within(20_000, "replica B discovered and built", async () => {
      try {
        return (await status(a, nodeB)).ready;
      } catch {
        return false;
      }
    });
  };

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-search-"));
    vhost = await createVhost();
    env = {
      NAMESPACE: namespace,
      DATA_DIR: dataDir,
      MYSQL_URL,
      MIGRATE_ON_START: "true",
      RABBITMQ_URI: vhost.uri,
      JWT_SECRET: randomBytes(32).toString("hex"),
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
      // Only product and search run here; the configuration's SERVICES is "all", whose gateway needs Redis.
      SERVICES: "product,search",
    };
    a = createBroker(loadConfig({ ...env, NODE_ID: nodeA }), ["product", "search"]);
    await a.start();
    await startB();
  });
  after(async () => {
    await b?.stop().catch(() => undefined);
    await a?.stop().catch(() => undefined);
    await dropDatabase(loadConfig(env), "product");
    await vhost?.destroy().catch(() => undefined);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("every replica receives every change (a queue per replica), and answers the same", async () => {
    const p = await a.call<{ id: string }, unknown>("product.create", {
      sku: `CL-${randomBytes(4).toString("hex")}`,
      name: "Trailrunner Jacket",
      description: "Waterproof",
      category: "Outdoor",
      brand: "Peak",
      price: { amount: 15900, currency: "EUR" },
      stock: 3,
    });
    for (const node of [nodeA, nodeB])
      await within(CLUSTER_DEADLINE_MS, `created on ${node}`, async () => (await on(node, { q: "trailruner" })).total === 1);
    await a.call("product.update", { id: p.id, name: "Stormrunner Jacket" });
    await a.call("product.adjustStock", { id: p.id, delta: -3 });
    for (const node of [nodeA, nodeB]) {
      await within(CLUSTER_DEADLINE_MS, `renamed on ${node}`, async () => (await on(node, { q: "stormrunner" })).total === 1);
      await within(
        CLUSTER_DEADLINE_MS,
        `sold out on ${node}`,
        async () => (await on(node, { q: "stormrunner", inStock: true })).total === 0,
      );
    }
    await a.call("product.remove", { id: p.id });
    for (const node of [nodeA, nodeB])
      await within(CLUSTER_DEADLINE_MS, `deleted on ${node}`, async () => (await on(node, { q: "stormrunner" })).total === 0);
    // Each replica has its own exclusive queue; the two answer identically.
    const [ra, rb] = await Promise.all([on(nodeA, { q: "" }), on(nodeB, { q: "" })]);
    assert.deepEqual(ra, rb);
  });

  it("a replica restarted after missing changes rebuilds to the current catalog", async () => {
    const p = await a.call<{ id: string }, unknown>("product.create", {
      sku: `CL-${randomBytes(4).toString("hex")}`,
      name: "Summit Tent",
      description: "Two person",
      category: "Outdoor",
      brand: "Peak",
      price: { amount: 29900, currency: "EUR" },
      stock: 2,
    });
    await within(CLUSTER_DEADLINE_MS, "tent on B", async () => (await on(nodeB, { q: "tent" })).total === 1);
    await b.stop();
    await a.call("product.update", { id: p.id, name: "Summit Dome Tent" });
    await startB();
    assert.equal((await on(nodeB, { q: "dome" })).total, 1);
  });

  it("a lost RabbitMQ connection rebinds the replica's queue and resyncs", async () => {
    const svc = b.getLocalService("search") as unknown as { $broadcast: { link: { connection(): Promise<{ close(): Promise<void> }> } } };
    const before = (await status(a, nodeB)).rebuilds.done;
    await (await svc.$broadcast.link.connection()).close();
    await within(20_000, "rebound and resynced", async () => (await status(a, nodeB)).rebuilds.done > before);
    const p = await a.call<{ id: string }, unknown>("product.create", {
      sku: `CL-${randomBytes(4).toString("hex")}`,
      name: "Glacier Boots",
      description: "",
      category: "Outdoor",
      brand: "Peak",
      price: { amount: 18900, currency: "EUR" },
      stock: 1,
    });
    await within(CLUSTER_DEADLINE_MS, "events flow again", async () => (await on(nodeB, { q: "glacier" })).total === 1);
    assert.ok(p.id);
  });
});
