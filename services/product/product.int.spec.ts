/**
 * The product part of the contract through the gateway, on SQLite (embedded) and on the
 * real MariaDB + Redis, with brokers in this process; and the inventory actions.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../../test/support/app";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };

function assertError(r: { status: number; body: any; text: string }, status: number, code: string) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body?.error?.code, code, r.text);
  assert.ok(Array.isArray(r.body.error.details));
}

const body = (over: Record<string, unknown> = {}) => ({
  sku: `SKU-${Math.random().toString(36).slice(2, 10)}`,
  name: "Phone",
  description: "A phone",
  category: "phones",
  brand: "Acme",
  tags: ["mobile"],
  price: { amount: 19999, currency: "EUR" },
  images: ["https://img.example.com/1.jpg"],
  stock: 10,
  ...over,
});

for (const storage of ["sqlite", "mariadb"] as const) {
  describe(`product service over the gateway (${storage})`, () => {
    let app: TestApp;
    let admin = "";
    let customer = "";
    const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
    const create = async (over: Record<string, unknown> = {}) => {
      const r = await call("POST", "/api/products", { token: admin, body: body(over) });
      assert.equal(r.status, 201, r.text);
      return r.body;
    };

    before(async () => {
      app = await startTestApp({
        db: storage,
        redis: storage === "mariadb",
        env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password },
      });
      admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
      const reg = await call("POST", "/api/auth/register", { body: { email: "c@example.com", password: "customer password", name: "C" } });
      customer = reg.body.accessToken;
      assert.ok(admin && customer);
    });
    after(async () => app?.stop());

    it("create 201 with the product shape; get; 404 for unknown", async () => {
      const p = await create({ sku: "PHONE-1" });
      assert.match(p.id, /^[0-9a-f-]{36}$/);
      assert.equal(p.sku, "PHONE-1");
      assert.deepEqual(p.price, { amount: 19999, currency: "EUR" });
      assert.deepEqual(p.stock, { onHand: 10, reserved: 0, available: 10 });
      assert.deepEqual(Object.keys(p).sort(), [
        "brand",
        "category",
        "createdAt",
        "description",
        "id",
        "images",
        "name",
        "price",
        "sku",
        "stock",
        "tags",
        "updatedAt",
        "version",
      ]);
      assert.equal(p.version, 1);
      const got = await call("GET", `/api/products/${p.id}`);
      assert.equal(got.status, 200);
      assert.deepEqual(got.body, p);
      assertError(await call("GET", "/api/products/nope"), 404, "NOT_FOUND");
    });

    it("auth: anonymous writes 401, customer writes 403, reads open to anyone", async () => {
      const p = await create();
      for (const [method, path, b] of [
        ["POST", "/api/products", body()],
        ["PATCH", `/api/products/${p.id}`, { name: "x" }],
        ["DELETE", `/api/products/${p.id}`, undefined],
        ["POST", `/api/products/${p.id}/stock`, { delta: 1 }],
      ] as const) {
        assertError(await call(method, path, { body: b }), 401, "UNAUTHORIZED");
        assertError(await call(method, path, { body: b, token: customer }), 403, "FORBIDDEN");
      }
      assert.equal((await call("GET", "/api/products", { token: customer })).status, 200);
      assert.equal((await call("GET", `/api/products/${p.id}`)).status, 200);
    });

    it("validation: floats in price, unknown currency, negative stock, unknown fields are 422", async () => {
      const bad = [
        body({ price: { amount: 19.99, currency: "EUR" } }),
        body({ price: { amount: 1999, currency: "XYZ" } }),
        body({ price: { amount: 1999, currency: "eur" } }),
        body({ price: { amount: 1999, currency: "EUR", extra: 1 } }),
        body({ price: { amount: "1999", currency: "EUR" } }),
        body({ stock: -1 }),
        body({ stock: 1.5 }),
        body({ role: "admin" }),
        body({ reserved: 5 }),
        { name: "no sku" },
      ];
      for (const b of bad) assertError(await call("POST", "/api/products", { token: admin, body: b }), 422, "VALIDATION_ERROR");
      const p = await create();
      assertError(await call("PATCH", `/api/products/${p.id}`, { token: admin, body: { sku: "OTHER" } }), 422, "VALIDATION_ERROR");
      assertError(await call("PATCH", `/api/products/${p.id}`, { token: admin, body: { stock: 99 } }), 422, "VALIDATION_ERROR");
      assertError(await call("POST", `/api/products/${p.id}/stock`, { token: admin, body: { delta: 0 } }), 422, "VALIDATION_ERROR");
      assertError(await call("POST", `/api/products/${p.id}/stock`, { token: admin, body: { delta: 1.5 } }), 422, "VALIDATION_ERROR");
      assertError(await call("GET", "/api/products?pageSize=101"), 422, "VALIDATION_ERROR");
      assertError(await call("GET", "/api/products?sort=cheapest"), 422, "VALIDATION_ERROR");
    });

    it("duplicate sku is 409 CONFLICT, also when created concurrently", async () => {
      await create({ sku: "DUP-1" });
      assertError(await call("POST", "/api/products", { token: admin, body: body({ sku: "DUP-1" }) }), 409, "CONFLICT");
      const race = await Promise.all(
        Array.from({ length: 6 }, () => call("POST", "/api/products", { token: admin, body: body({ sku: "DUP-RACE" }) })),
      );
      assert.deepEqual(race.map((r) => r.status).sort(), [201, 409, 409, 409, 409, 409]);
    });

    it("patch changes allowed fields only; delete is 204 and the product leaves every read", async () => {
      const p = await create({ category: "patchme" });
      const r = await call("PATCH", `/api/products/${p.id}`, {
        token: admin,
        body: { name: "Renamed", price: { amount: 500, currency: "CNY" }, brand: null },
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.name, "Renamed");
      assert.deepEqual(r.body.price, { amount: 500, currency: "CNY" });
      assert.equal(r.body.brand, null);
      assert.equal(r.body.sku, p.sku);
      assert.equal(r.body.version, p.version + 1, "a patch is the next version");
      assert.equal((await call("GET", `/api/products/${p.id}`)).body.name, "Renamed", "no stale cache after PATCH");
      assert.equal((await call("GET", "/api/products?category=patchme")).body.total, 1);
      const del = await call("DELETE", `/api/products/${p.id}`, { token: admin });
      assert.equal(del.status, 204);
      assertError(await call("GET", `/api/products/${p.id}`), 404, "NOT_FOUND");
      assert.equal((await call("GET", "/api/products?category=patchme")).body.total, 0);
      assertError(await call("DELETE", `/api/products/${p.id}`, { token: admin }), 404, "NOT_FOUND");
      assertError(await call("PATCH", `/api/products/${p.id}`, { token: admin, body: { name: "x" } }), 404, "NOT_FOUND");
    });

    it("pagination, sort and filters", async () => {
      const cat = `list-${storage}`;
      const prices = [500, 100, 300, 200, 400];
      const made = [];
      for (const [i, amount] of prices.entries())
        made.push(await create({ category: cat, brand: i % 2 ? "Odd" : "Even", price: { amount, currency: "EUR" } }));
      const page1 = await call("GET", `/api/products?category=${cat}&pageSize=2&page=1&sort=price_asc`);
      assert.equal(page1.status, 200, page1.text);
      assert.deepEqual(
        { total: page1.body.total, page: page1.body.page, pageSize: page1.body.pageSize },
        { total: 5, page: 1, pageSize: 2 },
      );
      assert.deepEqual(
        page1.body.items.map((p: any) => p.price.amount),
        [100, 200],
      );
      const page3 = await call("GET", `/api/products?category=${cat}&pageSize=2&page=3&sort=price_asc`);
      assert.deepEqual(
        page3.body.items.map((p: any) => p.price.amount),
        [500],
      );
      const desc = await call("GET", `/api/products?category=${cat}&sort=price_desc`);
      assert.deepEqual(
        desc.body.items.map((p: any) => p.price.amount),
        [500, 400, 300, 200, 100],
      );
      const odd = await call("GET", `/api/products?category=${cat}&brand=Odd`);
      assert.deepEqual(odd.body.items.map((p: any) => p.price.amount).sort(), [100, 200]);
      const all = await call("GET", "/api/products?pageSize=100");
      assert.equal(all.body.pageSize, 100);
      assert.ok(all.body.total >= 5);
      const newest = await call("GET", `/api/products?category=${cat}`);
      assert.equal(newest.body.items.length, 5);
      assert.equal(newest.body.pageSize, 20);
      const times = newest.body.items.map((p: any) => Date.parse(p.createdAt));
      assert.deepEqual(
        times,
        [...times].sort((a, b) => b - a),
        "newest first",
      );
    });

    it("stock: restock and remove; never below reserved (409); the answer is the product, never stale", async () => {
      const p = await create({ stock: 5 });
      await call("GET", `/api/products/${p.id}`); // warm the cache
      const up = await call("POST", `/api/products/${p.id}/stock`, { token: admin, body: { delta: 3 } });
      assert.equal(up.status, 200, up.text);
      assert.deepEqual(up.body.stock, { onHand: 8, reserved: 0, available: 8 });
      assert.deepEqual((await call("GET", `/api/products/${p.id}`)).body.stock, up.body.stock);
      await app.broker.call("product.reserve", { orderId: `o-${p.id}`, lines: [{ productId: p.id, quantity: 6 }] });
      assert.deepEqual((await call("GET", `/api/products/${p.id}`)).body.stock, { onHand: 8, reserved: 6, available: 2 });
      assertError(await call("POST", `/api/products/${p.id}/stock`, { token: admin, body: { delta: -3 } }), 409, "CONFLICT");
      const down = await call("POST", `/api/products/${p.id}/stock`, { token: admin, body: { delta: -2 } });
      assert.deepEqual(down.body.stock, { onHand: 6, reserved: 6, available: 0 });
      assertError(await call("POST", "/api/products/nope/stock", { token: admin, body: { delta: 1 } }), 404, "NOT_FOUND");
    });

    it("getMany: live products in the order asked, fresh stock, unknown and deleted ids left out; the same answer as get", async () => {
      const [a, b, gone] = [await create(), await create({ stock: 3 }), await create()];
      assert.equal((await call("DELETE", `/api/products/${gone.id}`, { token: admin })).status, 204);
      await call("GET", `/api/products/${b.id}`); // cached now
      await app.broker.call("product.reserve", { orderId: `gm-${b.id}`, lines: [{ productId: b.id, quantity: 2 }] });
      const { items } = await app.broker.call<
        {
          items: { id: string; stock: unknown }[];
        },
        unknown
      >("product.getMany", { ids: [b.id, "no-such", gone.id, a.id, b.id] });
      assert.deepEqual(
        items.map((p) => p.id),
        [b.id, a.id, b.id],
      );
      assert.deepEqual(items[0], (await call("GET", `/api/products/${b.id}`)).body);
      assert.deepEqual(items[0].stock, { onHand: 3, reserved: 2, available: 1 });
    });

    it("reserve: all or nothing, OUT_OF_STOCK names the products; idempotent per order; commit and release once", async () => {
      const a = await create({ stock: 5 });
      const b = await create({ stock: 1 });
      const call_ = (action: string, params: object) => app.broker.call<any, unknown>(`product.${action}`, params);
      await assert.rejects(
        call_("reserve", {
          orderId: "o1",
          lines: [
            { productId: a.id, quantity: 2 },
            { productId: b.id, quantity: 2 },
          ],
        }),
        (e: any) => {
          assert.equal(e.type, "OUT_OF_STOCK");
          assert.equal(e.code, 409);
          assert.deepEqual(e.data, [{ productId: b.id, requested: 2, available: 1 }]);
          return true;
        },
      );
      assert.equal((await call("GET", `/api/products/${a.id}`)).body.stock.reserved, 0, "nothing reserved");
      // Duplicate lines are merged.
      const held = await call_("reserve", {
        orderId: "o2",
        lines: [
          { productId: a.id, quantity: 1 },
          { productId: a.id, quantity: 2 },
          { productId: b.id, quantity: 1 },
        ],
      });
      assert.equal(held.status, "held");
      assert.equal(held.lines.find((l: any) => l.productId === a.id).quantity, 3);
      const again = await call_("reserve", {
        orderId: "o2",
        lines: [
          { productId: b.id, quantity: 1 },
          { productId: a.id, quantity: 3 },
        ],
      });
      assert.deepEqual(again, held, "a replay answers the same");
      await assert.rejects(
        call_("reserve", { orderId: "o2", lines: [{ productId: a.id, quantity: 1 }] }),
        (e: any) => e.type === "CONFLICT",
      );
      assert.deepEqual((await call("GET", `/api/products/${a.id}`)).body.stock, { onHand: 5, reserved: 3, available: 2 });
      const committed = await call_("commit", { orderId: "o2" });
      assert.equal(committed.status, "committed");
      assert.deepEqual(await call_("commit", { orderId: "o2" }), committed, "a second commit changes nothing");
      assert.equal((await call_("release", { orderId: "o2" })).status, "committed", "release after commit is a no-op");
      assert.deepEqual((await call("GET", `/api/products/${a.id}`)).body.stock, { onHand: 2, reserved: 0, available: 2 });
      assert.deepEqual((await call("GET", `/api/products/${b.id}`)).body.stock, { onHand: 0, reserved: 0, available: 0 });
      // Release gives the stock back, once; commit after release is refused.
      await call_("reserve", { orderId: "o3", lines: [{ productId: a.id, quantity: 2 }] });
      assert.equal((await call_("release", { orderId: "o3" })).status, "released");
      assert.equal((await call_("release", { orderId: "o3" })).status, "released");
      await assert.rejects(call_("commit", { orderId: "o3" }), (e: any) => e.type === "CONFLICT");
      assert.deepEqual((await call("GET", `/api/products/${a.id}`)).body.stock, { onHand: 2, reserved: 0, available: 2 });
      await assert.rejects(call_("commit", { orderId: "none" }), (e: any) => e.type === "NOT_FOUND");
      // A reservation that holds a product deleted since still replays, priced from its row.
      await call_("reserve", { orderId: "o5", lines: [{ productId: a.id, quantity: 1 }] });
      // A deleted (or unknown) product cannot be reserved: NOT_FOUND names it.
      await call("DELETE", `/api/products/${a.id}`, { token: admin });
      await assert.rejects(
        call_("reserve", { orderId: "o4", lines: [{ productId: a.id, quantity: 1 }] }),
        (e: any) => e.type === "NOT_FOUND" && e.data?.[0]?.productId === a.id,
      );
      const replayed = await call_("reserve", { orderId: "o5", lines: [{ productId: a.id, quantity: 1 }] });
      assert.deepEqual(
        replayed.priced.map((l: { productId: string; quantity: number }) => [l.productId, l.quantity]),
        [[a.id, 1]],
      );
    });

    it("commit is all lines or none: one line expired, the other held → 409 and nothing sold", async () => {
      const a = await create({ stock: 3 });
      const b = await create({ stock: 3 });
      const call_ = (action: string, params: object) => app.broker.call<any, unknown>(`product.${action}`, params);
      await call_("reserve", {
        orderId: "split",
        lines: [
          { productId: a.id, quantity: 1 },
          { productId: b.id, quantity: 2 },
        ],
      });
      // Only line a's hold has run out (the sweep expires lines one by one).
      const db = (app.broker.getLocalService("product") as any).db;
      await db("reservations")
        .where({ order_id: "split", product_id: a.id })
        .update({ expires_at: Date.now() - 1000 });
      await call_("sweep", {});
      await assert.rejects(call_("commit", { orderId: "split" }), (e: any) => e.type === "CONFLICT");
      assert.deepEqual(
        (await call("GET", `/api/products/${b.id}`)).body.stock,
        { onHand: 3, reserved: 2, available: 1 },
        "b not sold, still held",
      );
      assert.equal((await call_("release", { orderId: "split" })).status, "mixed");
      assert.deepEqual((await call("GET", `/api/products/${b.id}`)).body.stock, { onHand: 3, reserved: 0, available: 3 });
      assert.deepEqual((await call("GET", `/api/products/${a.id}`)).body.stock, { onHand: 3, reserved: 0, available: 3 });
    });

    it("every change leaves a business event in the outbox", async () => {
      const p = await create({ stock: 2 });
      await call("PATCH", `/api/products/${p.id}`, { token: admin, body: { name: "Evented" } });
      await call("POST", `/api/products/${p.id}/stock`, { token: admin, body: { delta: 1 } });
      await call("DELETE", `/api/products/${p.id}`, { token: admin });
      const db = (app.broker.getLocalService("product") as any).db;
      const rows = await db("outbox").select({ name: "event" }, "payload");
      const mine = rows
        .map((r: any) => ({ name: r.name, payload: typeof r.payload === "string" ? JSON.parse(r.payload) : r.payload }))
        .filter((r: any) => (r.payload.id ?? r.payload.productId) === p.id);
      assert.deepEqual(mine.map((r: any) => r.name).sort(), [
        "product.created",
        "product.deleted",
        "product.updated",
        "stock.changed",
        "stock.changed",
      ]);
      const restock = mine.find((r: any) => r.name === "stock.changed" && r.payload.reason === "restocked");
      assert.deepEqual([restock.payload.onHand, restock.payload.reserved, restock.payload.available], [3, 0, 3]);
      assert.equal(restock.payload.product.stock.available, 3, "stock.changed carries the product");
      // One version per write, in the order of the writes: created 1 (its initial stock event
      // too), patched 2, restocked 3, deleted 4 — what lets a copy keep the newest.
      const version = (name: string, reason?: string) =>
        mine.find((r: any) => r.name === name && (!reason || r.payload.reason === reason)).payload.version;
      assert.deepEqual(
        [
          version("product.created"),
          version("stock.changed", "created"),
          version("product.updated"),
          version("stock.changed", "restocked"),
          version("product.deleted"),
        ],
        [1, 1, 2, 3, 4],
      );
    });

    it("the OpenAPI document lists the product routes", async () => {
      const doc = (await call("GET", "/api/openapi.json")).body;
      for (const p of ["/api/products", "/api/products/{id}", "/api/products/{id}/stock"]) assert.ok(doc.paths[p], p);
      assert.equal(doc.paths["/api/products"].post.requestBody.content["application/json"].schema.additionalProperties, false);
    });
  });
}
