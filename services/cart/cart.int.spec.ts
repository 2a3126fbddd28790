/**
 * The cart part of the contract through the gateway, on SQLite (embedded) and on the real
 * MariaDB + Redis, with brokers in this process: shapes, prices from the product service,
 * deleted products, validation, identity, concurrent adds, keyed adds applied once, and
 * `order.paid` applied once.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "mocha";
import type { Knex } from "knex";
import { busFor } from "../../lib/events/consumer";
import type { Envelope } from "../../lib/events/outbox";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import * as repo from "./cart.repo";

function assertError(r: { status: number; body: any; text: string }, status: number, code: string) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body?.error?.code, code, r.text);
  assert.ok(Array.isArray(r.body.error.details));
}

interface Product {
  id: string;
  name: string;
  price: { amount: number; currency: string };
}

for (const storage of ["sqlite", "mariadb"] as const) {
  describe(`cart service over the gateway (${storage})`, () => {
    let app: TestApp;
    const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
    const user = async () => {
      const r = await call("POST", "/api/auth/register", {
        body: { email: `u-${randomUUID()}@example.com`, password: "customer password", name: "U" },
      });
      assert.equal(r.status, 201, r.text);
      return { token: r.body.accessToken as string, id: r.body.user.id as string };
    };
    const product = async (over: Record<string, unknown> = {}): Promise<Product> =>
      app.broker.call("product.create", {
        sku: `SKU-${randomUUID().slice(0, 8)}`,
        name: "Phone",
        description: "A phone",
        category: "phones",
        price: { amount: 1999, currency: "EUR" },
        stock: 3,
        ...over,
      });
    const add = (token: string, productId: string, quantity: number) =>
      call("POST", "/api/cart/items", { token, body: { productId, quantity } });
    const cartDb = () => (app.broker.getLocalService("cart") as unknown as { db: Knex }).db;

    before(async () => {
      app = await startTestApp({ db: storage, redis: storage === "mariadb", services: ["gateway", "user", "product", "cart"] });
    });
    after(async () => app?.stop());

    it("the contract's shapes: empty cart, add (adds to the line), patch, 0 removes, delete, clear 204", async () => {
      const u = await user();
      const p1 = await product({ name: "One", price: { amount: 1999, currency: "EUR" } });
      const p2 = await product({ name: "Two", price: { amount: 250, currency: "EUR" } });
      const empty = await call("GET", "/api/cart", { token: u.token });
      assert.equal(empty.status, 200, empty.text);
      assert.deepEqual(empty.body, { items: [], subtotal: { amount: 0, currency: null } });

      let r = await add(u.token, p1.id, 2);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, {
        items: [
          {
            productId: p1.id,
            name: "One",
            unitPrice: { amount: 1999, currency: "EUR" },
            quantity: 2,
            lineTotal: { amount: 3998, currency: "EUR" },
          },
        ],
        subtotal: { amount: 3998, currency: "EUR" },
      });
      r = await add(u.token, p1.id, 3);
      assert.equal(r.body.items[0].quantity, 5);
      // More than the 3 in stock is allowed: stock is checked when the order reserves it.
      r = await add(u.token, p2.id, 4);
      assert.deepEqual(
        r.body.items.map((i: any) => [i.productId, i.quantity, i.lineTotal.amount]),
        [
          [p1.id, 5, 9995],
          [p2.id, 4, 1000],
        ],
      );
      assert.deepEqual(r.body.subtotal, { amount: 10995, currency: "EUR" });

      r = await call("PATCH", `/api/cart/items/${p1.id}`, { token: u.token, body: { quantity: 1 } });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body.subtotal, { amount: 1999 + 1000, currency: "EUR" });
      r = await call("PATCH", `/api/cart/items/${p2.id}`, { token: u.token, body: { quantity: 0 } });
      assert.deepEqual(
        r.body.items.map((i: any) => i.productId),
        [p1.id],
      );
      // Setting the quantity of a line the cart does not have: 404; removing it again: nothing to do.
      assertError(await call("PATCH", `/api/cart/items/${p2.id}`, { token: u.token, body: { quantity: 2 } }), 404, "NOT_FOUND");
      assert.equal((await call("PATCH", `/api/cart/items/${p2.id}`, { token: u.token, body: { quantity: 0 } })).status, 200);
      assert.equal((await call("DELETE", `/api/cart/items/${p2.id}`, { token: u.token })).status, 200);

      r = await call("DELETE", `/api/cart/items/${p1.id}`, { token: u.token });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, { items: [], subtotal: { amount: 0, currency: null } });

      await add(u.token, p1.id, 1);
      await add(u.token, p2.id, 1);
      const cleared = await call("DELETE", "/api/cart", { token: u.token });
      assert.equal(cleared.status, 204, cleared.text);
      assert.equal(cleared.text, "");
      assert.deepEqual((await call("GET", "/api/cart", { token: u.token })).body.items, []);
    });

    it("prices come from the product service at read time; a price change shows; client prices are refused", async () => {
      const u = await user();
      const p = await product({ price: { amount: 1000, currency: "EUR" } });
      await add(u.token, p.id, 2);
      // Warm the product cache, then change the price: the cart follows.
      assert.equal((await call("GET", "/api/cart", { token: u.token })).body.subtotal.amount, 2000);
      await app.broker.call("product.update", { id: p.id, price: { amount: 1250, currency: "EUR" }, name: "Renamed" });
      const r = await call("GET", "/api/cart", { token: u.token });
      assert.deepEqual(r.body.items[0], {
        productId: p.id,
        name: "Renamed",
        unitPrice: { amount: 1250, currency: "EUR" },
        quantity: 2,
        lineTotal: { amount: 2500, currency: "EUR" },
      });
      assert.deepEqual(r.body.subtotal, { amount: 2500, currency: "EUR" });
      for (const extra of [{ unitPrice: { amount: 1, currency: "EUR" } }, { price: 1 }, { lineTotal: 1 }, { name: "x" }])
        assertError(
          await call("POST", "/api/cart/items", { token: u.token, body: { productId: p.id, quantity: 1, ...extra } }),
          422,
          "VALIDATION_ERROR",
        );
      // Nothing stores a price: the table has no such column.
      assert.deepEqual(Object.keys((await cartDb()("cart_items").where({ user_id: u.id }))[0]).sort(), [
        "added_at",
        "product_id",
        "quantity",
        "updated_at",
        "user_id",
      ]);
    });

    it("unknown or deleted product: 404 on add; a line whose product is deleted later leaves the cart and the storage", async () => {
      const u = await user();
      assertError(await add(u.token, "no-such-product", 1), 404, "NOT_FOUND");
      const keep = await product();
      const gone = await product();
      await add(u.token, keep.id, 1);
      await add(u.token, gone.id, 2);
      await app.broker.call("product.remove", { id: gone.id });
      assertError(await add(u.token, gone.id, 1), 404, "NOT_FOUND");
      const r = await call("GET", "/api/cart", { token: u.token });
      assert.deepEqual(
        r.body.items.map((i: any) => i.productId),
        [keep.id],
      );
      assert.deepEqual(r.body.subtotal, { amount: 1999, currency: "EUR" });
      assert.deepEqual(await app.broker.call("cart.lines", { userId: u.id }), [{ productId: keep.id, quantity: 1 }]);
    });

    it("validation: quantities, unknown fields, 99 per line, 100 lines, one currency: 422, nothing changes", async () => {
      const u = await user();
      const p = await product();
      for (const body of [
        { productId: p.id, quantity: 0 },
        { productId: p.id, quantity: 100 },
        { productId: p.id, quantity: -1 },
        { productId: p.id, quantity: 1.5 },
        { productId: p.id, quantity: "2" },
        { productId: p.id },
        { quantity: 1 },
        { productId: "", quantity: 1 },
        { productId: "x".repeat(65), quantity: 1 },
        { productId: p.id, quantity: 1, role: "admin" },
      ])
        assertError(await call("POST", "/api/cart/items", { token: u.token, body }), 422, "VALIDATION_ERROR");
      await add(u.token, p.id, 60);
      for (const body of [{ quantity: -1 }, { quantity: 100 }, { quantity: 2.5 }, {}])
        assertError(await call("PATCH", `/api/cart/items/${p.id}`, { token: u.token, body }), 422, "VALIDATION_ERROR");
      // 60 + 40 > 99: refused whole, the line keeps 60; 60 + 39 fits.
      const over = await add(u.token, p.id, 40);
      assertError(over, 422, "VALIDATION_ERROR");
      assert.equal(over.body.error.details[0].inCart, 60);
      assert.equal((await add(u.token, p.id, 39)).body.items[0].quantity, 99);
      assertError(await add(u.token, p.id, 1), 422, "VALIDATION_ERROR");
      // A line's PATCH drops unknown fields (so an injected userId cannot pick another cart).
      const extra = await call("PATCH", `/api/cart/items/${p.id}`, { token: u.token, body: { quantity: 99, extra: true } });
      assert.equal(extra.status, 200, extra.text);
      assert.equal(extra.body.items[0].quantity, 99);

      // One currency per cart.
      const cny = await product({ price: { amount: 100, currency: "CNY" } });
      const mixed = await add(u.token, cny.id, 1);
      assertError(mixed, 422, "VALIDATION_ERROR");
      assert.equal(mixed.body.error.details[0].cartCurrency, "EUR");
      // An emptied cart takes the next product's currency.
      await call("DELETE", "/api/cart", { token: u.token });
      assert.deepEqual((await add(u.token, cny.id, 1)).body.subtotal, { amount: 100, currency: "CNY" });

      // 100 lines at most (seeded directly: 99 lines of products that do not exist, and one real).
      const v = await user();
      const now = Date.now();
      await cartDb()("carts").insert({ user_id: v.id, currency: "EUR", created_at: now, updated_at: now });
      await cartDb()("cart_items").insert([
        ...Array.from({ length: 99 }, (_, i) => ({ user_id: v.id, product_id: `ghost-${i}`, quantity: 1, added_at: now, updated_at: now })),
        { user_id: v.id, product_id: p.id, quantity: 1, added_at: now + 1, updated_at: now },
      ]);
      const full = await add(v.token, (await product()).id, 1);
      assertError(full, 422, "VALIDATION_ERROR");
      assert.equal(full.body.error.details[0].field, "productId");
      assert.equal(
        await cartDb()("cart_items")
          .where({ user_id: v.id })
          .count({ n: "*" })
          .first()
          .then((r: any) => Number(r.n)),
        100,
      );
      // More of a line already there is fine; the ghosts (unknown products) leave with that read.
      assert.deepEqual(
        (await add(v.token, p.id, 1)).body.items.map((i: any) => [i.productId, i.quantity]),
        [[p.id, 2]],
      );
      assert.deepEqual(await app.broker.call("cart.lines", { userId: v.id }), [{ productId: p.id, quantity: 2 }]);
    });

    it("anonymous: 401 on every route, with WWW-Authenticate", async () => {
      for (const [method, path, body] of [
        ["GET", "/api/cart", undefined],
        ["POST", "/api/cart/items", { productId: "x", quantity: 1 }],
        ["PATCH", "/api/cart/items/x", { quantity: 1 }],
        ["DELETE", "/api/cart/items/x", undefined],
        ["DELETE", "/api/cart", undefined],
      ] as const) {
        const r = await call(method, path, { body });
        assertError(r, 401, "UNAUTHORIZED");
        assert.equal(r.headers.get("www-authenticate"), 'Bearer realm="meridian"');
        assertError(await call(method, path, { body, token: "not.a.token" }), 401, "UNAUTHORIZED");
      }
    });

    it("another user's cart is never visible nor changed: identity from the token only", async () => {
      const a = await user();
      const b = await user();
      const p = await product();
      await add(a.token, p.id, 3);
      const aCart = (await call("GET", "/api/cart", { token: a.token })).body;
      assert.deepEqual((await call("GET", "/api/cart", { token: b.token })).body.items, []);
      // A userId in the query of GET / DELETE /api/cart is ignored: B's own cart.
      const q = `?userId=${a.id}&user[id]=${a.id}&id=${a.id}`;
      const peek = await call("GET", `/api/cart${q}`, { token: b.token, headers: { "x-user-id": a.id } });
      assert.equal(peek.status, 200);
      assert.deepEqual(peek.body.items, []);
      assert.equal((await call("DELETE", `/api/cart${q}`, { token: b.token })).status, 204);
      // In an add's body it is an unknown field: 422. On a line's routes it is dropped: the
      // line is looked up in B's own cart, where it is not (404), and removing it is a no-op.
      assertError(
        await call("POST", "/api/cart/items", { token: b.token, body: { productId: p.id, quantity: 1, userId: a.id } }),
        422,
        "VALIDATION_ERROR",
      );
      assertError(
        await call("PATCH", `/api/cart/items/${p.id}?userId=${a.id}`, { token: b.token, body: { quantity: 9, userId: a.id } }),
        404,
        "NOT_FOUND",
      );
      assert.deepEqual((await call("DELETE", `/api/cart/items/${p.id}?userId=${a.id}`, { token: b.token })).body.items, []);
      // B's own routes on A's line: B has no such line.
      assertError(await call("PATCH", `/api/cart/items/${p.id}`, { token: b.token, body: { quantity: 9 } }), 404, "NOT_FOUND");
      assert.deepEqual((await call("DELETE", `/api/cart/items/${p.id}`, { token: b.token })).body.items, []);
      assert.deepEqual((await call("GET", "/api/cart", { token: a.token })).body, aCart);
      assert.deepEqual(await app.broker.call("cart.lines", { userId: b.id }), []);
    });

    it("50 concurrent adds of 1 to the same line: quantity 50, nothing lost; concurrent new lines all land", async () => {
      const u = await user();
      const p = await product({ price: { amount: 7, currency: "EUR" } });
      const results = await Promise.all(Array.from({ length: 50 }, () => add(u.token, p.id, 1)));
      assert.deepEqual([...new Set(results.map((r) => r.status))], [200], results.find((r) => r.status !== 200)?.text);
      const r = await call("GET", "/api/cart", { token: u.token });
      assert.equal(r.body.items[0].quantity, 50);
      assert.deepEqual(r.body.subtotal, { amount: 350, currency: "EUR" });

      const others = await Promise.all(Array.from({ length: 10 }, () => product()));
      await Promise.all(others.map((o) => add(u.token, o.id, 2)));
      const lines = await app.broker.call<{ productId: string; quantity: number }[], unknown>("cart.lines", { userId: u.id });
      assert.equal(lines.length, 11);
      assert.deepEqual(
        lines.filter((l) => l.productId !== p.id).map((l) => l.quantity),
        Array(10).fill(2),
      );
    });

    it("Idempotency-Key on an add: a repeat adds nothing (also 20 at once), another body is a 409, a refused add keeps no key, keys are per user", async () => {
      const u = await user();
      const other = await user();
      const p = await product({ price: { amount: 10, currency: "EUR" } });
      const q = await product({ price: { amount: 10, currency: "EUR" } });
      const keyed = (token: string, productId: string, quantity: number, key: string) =>
        call("POST", "/api/cart/items", { token, body: { productId, quantity }, headers: { "idempotency-key": key } });
      const first = await keyed(u.token, p.id, 2, "add-1");
      assert.equal(first.status, 200, first.text);
      assert.equal(first.body.items[0].quantity, 2);
      const again = await keyed(u.token, p.id, 2, "add-1");
      assert.equal(again.status, 200, again.text);
      assert.deepEqual(again.body, first.body);
      // 20 requests with one new key at once, from one user: one add.
      const burst = await Promise.all(Array.from({ length: 20 }, () => keyed(u.token, p.id, 3, "add-2")));
      assert.deepEqual([...new Set(burst.map((r) => r.status))], [200], burst.find((r) => r.status !== 200)?.text);
      assert.equal((await call("GET", "/api/cart", { token: u.token })).body.items[0].quantity, 5);
      // The key with another body (quantity, or product): 409 in the contract's shape, nothing added.
      assertError(await keyed(u.token, p.id, 4, "add-1"), 409, "CONFLICT");
      assertError(await keyed(u.token, q.id, 2, "add-1"), 409, "CONFLICT");
      // Refused (over 99 on the line): the key is not kept, so a corrected request may use it.
      assertError(await keyed(u.token, p.id, 95, "add-3"), 422, "VALIDATION_ERROR");
      const corrected = await keyed(u.token, q.id, 1, "add-3");
      assert.equal(corrected.status, 200, corrected.text);
      assert.deepEqual(
        corrected.body.items.map((i: any) => [i.productId, i.quantity]),
        [
          [p.id, 5],
          [q.id, 1],
        ],
      );
      // Another user's same key is theirs: it adds.
      const theirs = await keyed(other.token, p.id, 2, "add-1");
      assert.deepEqual(
        theirs.body.items.map((i: any) => i.quantity),
        [2],
      );
      // Without a key, every add adds.
      assert.equal((await add(u.token, q.id, 1)).body.items[1].quantity, 2);
      // A key past its 24 h no longer counts (the same key adds again) and is deleted at the
      // user's next keyed add; another user's expired key waits for theirs.
      const db = cartDb();
      const expire = (userId: string, key: string) =>
        db("cart_add_keys")
          .where({ user_id: userId, idem_key: key })
          .update({ created_at: Date.now() - repo.ADD_KEY_TTL_MS - 1 });
      await expire(u.id, "add-1");
      await expire(other.id, "add-1");
      await keyed(u.token, q.id, 1, "add-4");
      assert.deepEqual(
        (await db("cart_add_keys").where({ user_id: u.id }).orderBy("idem_key")).map((r: { idem_key: string }) => r.idem_key),
        ["add-2", "add-3", "add-4"],
      );
      assert.equal((await db("cart_add_keys").where({ user_id: other.id })).length, 1);
      const afresh = await keyed(other.token, p.id, 2, "add-1");
      assert.deepEqual(
        afresh.body.items.map((i: any) => i.quantity),
        [4],
        "an expired key adds again",
      );
    });

    it("the add statement alone (no cart lock) is atomic and bounded: 50 concurrent upserts, then 60 more against the 99 limit", async () => {
      const userId = randomUUID();
      const db = cartDb();
      // Each upsert in its own autocommit statement, none taking the cart lock.
      const upsert = () => repo.addToLine(db as Knex.Transaction, userId, "p", 1, Date.now());
      await Promise.all(Array.from({ length: 50 }, upsert));
      assert.deepEqual(await repo.findLine(db, userId, "p").then((l) => l?.quantity), 50);
      const outcomes = await Promise.allSettled(Array.from({ length: 60 }, upsert));
      const refused = outcomes.filter((o) => o.status === "rejected");
      assert.equal(outcomes.length - refused.length, 49);
      assert.ok(refused.every((o) => repo.isCheckViolation(o.reason)));
      assert.equal(await repo.findLine(db, userId, "p").then((l) => l?.quantity), 99);
    });

    it("order.paid takes the order's lines out of the cart, once, also when delivered twice", async () => {
      const u = await user();
      const bystander = await user();
      const [p1, p2, p3] = await Promise.all([product(), product(), product()]);
      await add(u.token, p1.id, 5);
      await add(u.token, p2.id, 2);
      await add(u.token, p3.id, 1);
      await add(bystander.token, p1.id, 5);
      const envelope: Envelope = {
        id: randomUUID(),
        name: "order.paid",
        source: "order",
        occurredAt: new Date().toISOString(),
        payload: {
          orderId: randomUUID(),
          userId: u.id,
          lines: [
            { productId: p1.id, quantity: 3 },
            { productId: p2.id, quantity: 2 },
            { productId: "not-in-cart", quantity: 1 },
          ],
          total: { amount: 1, currency: "EUR" },
        },
      };
      const [sub] = busFor(app.broker)
        .subscribers("order.paid")
        .filter((s) => s.service === "cart");
      assert.ok(sub, "the cart service consumes order.paid");
      // Delivered three times, two of them at once: applied once.
      await sub.deliver(envelope);
      await Promise.all([sub.deliver(envelope), sub.deliver(envelope)]);
      assert.deepEqual(await app.broker.call("cart.lines", { userId: u.id }), [
        { productId: p1.id, quantity: 2 },
        { productId: p3.id, quantity: 1 },
      ]);
      assert.deepEqual(await app.broker.call("cart.lines", { userId: bystander.id }), [{ productId: p1.id, quantity: 5 }]);
      const stats = (app.broker.getLocalService("cart") as unknown as EventsServiceThis).eventStats();
      assert.equal(stats.applied, 1);
      assert.equal(stats.duplicates, 2);
      // Another order: everything left goes, more than the cart holds is fine.
      await sub.deliver({
        ...envelope,
        id: randomUUID(),
        payload: {
          orderId: randomUUID(),
          userId: u.id,
          lines: [
            { productId: p1.id, quantity: 9 },
            { productId: p3.id, quantity: 1 },
          ],
        },
      });
      assert.deepEqual((await call("GET", "/api/cart", { token: u.token })).body.items, []);
      // A user who never had a cart: nothing to do, no failure.
      await sub.deliver({
        ...envelope,
        id: randomUUID(),
        payload: { orderId: randomUUID(), userId: randomUUID(), lines: [{ productId: p1.id, quantity: 1 }] },
      });
    });

    it("the routes are in the OpenAPI document", async () => {
      const doc = (await call("GET", "/api/openapi.json")).body;
      assert.ok(doc.paths["/api/cart"].get && doc.paths["/api/cart"].delete);
      assert.ok(doc.paths["/api/cart/items"].post);
      assert.ok(doc.paths["/api/cart/items/{productId}"].patch && doc.paths["/api/cart/items/{productId}"].delete);
      // The keyed add documents its header (from the contract's idempotency_key); the others have none.
      const header = (op: { parameters?: { in: string; name: string }[] }) =>
        (op.parameters ?? []).filter((p) => p.in === "header").map((p) => p.name);
      assert.deepEqual(header(doc.paths["/api/cart/items"].post), ["Idempotency-Key"]);
      assert.deepEqual(header(doc.paths["/api/cart/items/{productId}"].patch), []);
      assert.ok(doc.paths["/api/cart/items"].post.responses["409"], "409 when the key was used with another request");
    });
  });
}
