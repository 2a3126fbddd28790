/**
 * The access sweep: for every route that takes an id of a user's thing (cart line, order,
 * payment, refund, return, notification), another user gets a 404 — also with `userId` injected in
 * the body and the query — and the owner's thing is unchanged. Identity comes only from the
 * verified token. Embedded app, every service, SQLite.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { eventually } from "../../test/support/eventually";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
const ADDRESS = { recipient: "Alice", phone: "+86 10 0000 0000", line1: "1 Road", city: "Beijing", postalCode: "100000", country: "CN" };

describe("access sweep: someone else's id is a 404 on every route", () => {
  let app: TestApp;
  let alice = "";
  let aliceId = "";
  let bob = "";
  const ids: Record<string, string> = {};
  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);

  before(async () => {
    app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    const admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    const a = (
      await call("POST", "/api/auth/register", { body: { email: "alice@example.com", password: "alice password", name: "Alice" } })
    ).body;
    alice = a.accessToken;
    aliceId = a.user.id;
    bob = (await call("POST", "/api/auth/register", { body: { email: "bob@example.com", password: "bob password 1", name: "Bob" } })).body
      .accessToken;
    const product = (
      await call("POST", "/api/products", {
        token: admin,
        body: {
          sku: `AC-${randomBytes(4).toString("hex")}`,
          name: "Access Lamp",
          description: "",
          category: "lamps",
          price: { amount: 4200, currency: "EUR" },
          stock: 10,
        },
      })
    ).body;
    ids.product = product.id;
    // Alice's things: a cart line, a paid order with its payment and a refund, notifications.
    await call("POST", "/api/cart/items", { token: alice, body: { productId: product.id, quantity: 3 } });
    const order = (
      await call("POST", "/api/orders", {
        token: alice,
        body: { shippingAddress: ADDRESS, items: [{ productId: product.id, quantity: 1 }] },
      })
    ).body;
    ids.order = order.id;
    const pay = (await call("POST", `/api/orders/${order.id}/pay`, { token: alice, body: { provider: "sandbox" } })).body;
    ids.payment = pay.id;
    const token = new URL(pay.payUrl).searchParams.get("token");
    await call("POST", `/api/payments/sandbox/${pay.id}/complete`, { body: { outcome: "success", token } });
    await eventually("paid", async () => (await call("GET", `/api/orders/${order.id}`, { token: alice })).body.status === "PAID");
    // Delivered, partly refunded by an admin, and a return requested by Alice.
    await call("POST", `/api/orders/${order.id}/ship`, { token: admin, body: { carrier: "SF", trackingNumber: "SF1" } });
    await call("POST", `/api/orders/${order.id}/deliver`, { token: admin });
    ids.refund = (
      await call("POST", `/api/orders/${order.id}/refunds`, { token: admin, body: { amount: 100, reason: "scratch" } })
    ).body.id;
    await eventually(
      "partly refunded",
      async () => (await call("GET", `/api/orders/${order.id}`, { token: alice })).body.paymentStatus === "partially_refunded",
    );
    ids.return = (
      await call("POST", `/api/orders/${order.id}/returns`, {
        token: alice,
        body: { items: [{ productId: product.id, quantity: 1 }], reason: "too bright" },
      })
    ).body.id;
    assert.ok(ids.return);
    const notes = await eventually("notified", async () => {
      const n = (await call("GET", "/api/notifications", { token: alice })).body;
      const list = (Array.isArray(n) ? n : n.items) as { id: string }[];
      return list.length > 0 && list;
    });
    ids.notification = notes[0].id;
    // A second, unpaid order of Alice's (cancel, pay).
    ids.unpaid = (
      await call("POST", "/api/orders", {
        token: alice,
        body: { shippingAddress: ADDRESS, items: [{ productId: product.id, quantity: 1 }] },
      })
    ).body.id;
  });
  after(async () => app?.stop());

  it("orders, payments, refunds, notifications: 404 for Bob, with or without userId injected", async () => {
    const inject = `userId=${aliceId}`;
    const routes: [string, string, Record<string, unknown> | undefined][] = [
      ["GET", `/api/orders/${ids.order}`, undefined],
      ["POST", `/api/orders/${ids.unpaid}/cancel`, {}],
      ["POST", `/api/orders/${ids.unpaid}/pay`, { provider: "sandbox" }],
      ["POST", `/api/orders/${ids.order}/refunds`, { reason: "mine now" }],
      ["POST", `/api/orders/${ids.order}/returns`, { items: [{ productId: ids.product, quantity: 1 }], reason: "mine now" }],
      ["GET", `/api/orders/${ids.order}/returns`, undefined],
      ["GET", `/api/payments/${ids.payment}`, undefined],
      ["POST", `/api/notifications/${ids.notification}/read`, {}],
    ];
    for (const [method, path, body] of routes)
      for (const variant of ["plain", "query", "body"] as const) {
        const url = variant === "query" ? `${path}?${inject}` : path;
        const b = body && variant === "body" ? { ...body, userId: aliceId } : body;
        const r = await call(method, url, { token: bob, body: b });
        assert.equal(r.status, 404, `${method} ${url} (${variant}): ${r.status} ${r.text}`);
        assert.equal(r.body.error.code, "NOT_FOUND");
        assert.ok(!r.text.includes(aliceId), "nothing of Alice's leaks");
      }
    // Alice's things are as she left them.
    const order = (await call("GET", `/api/orders/${ids.order}`, { token: alice })).body;
    assert.equal(order.status, "DELIVERED");
    assert.equal(order.paymentStatus, "partially_refunded");
    assert.equal(order.refunds.length, 1, "Bob's refund requests created nothing");
    assert.deepEqual(
      order.returns.map((r: { id: string; status: string }) => [r.id, r.status]),
      [[ids.return, "REQUESTED"]],
      "Bob's return requests created nothing",
    );
    // Deciding a return is an admin's: a customer is refused (403), whoever's it is.
    for (const action of ["approve", "reject"])
      assert.equal(
        (
          await call("POST", `/api/returns/${ids.return}/${action}`, {
            token: bob,
            body: action === "approve" ? { restock: true } : { reason: "no" },
          })
        ).status,
        403,
      );
    assert.equal((await call("GET", `/api/orders/${ids.unpaid}`, { token: alice })).body.status, "PENDING_PAYMENT");
    const n = (await call("GET", "/api/notifications?unread=true", { token: alice })).body;
    assert.ok(
      ((Array.isArray(n) ? n : n.items) as { id: string }[]).some((x) => x.id === ids.notification),
      "still unread",
    );
    // Lists are per user, whatever the query says.
    const bobsOrders = (await call("GET", `/api/orders?${inject}`, { token: bob })).body;
    assert.equal(bobsOrders.total, 0);
    // The notification list refuses unknown query fields outright (422); Bob's own list is empty.
    assert.equal((await call("GET", `/api/notifications?${inject}`, { token: bob })).status, 422);
    const bobsNotes = (await call("GET", "/api/notifications", { token: bob })).body;
    assert.equal((Array.isArray(bobsNotes) ? bobsNotes : bobsNotes.items).length, 0);
  });

  it("cart lines: Bob's requests act on Bob's cart only; Alice's line is untouched", async () => {
    const line = `/api/cart/items/${ids.product}`;
    assert.equal((await call("PATCH", line, { token: bob, body: { quantity: 7 } })).status, 404, "not in Bob's cart");
    // Cart lines are addressed by product within the caller's own cart; an injected userId
    // (query or body) is dropped, so Alice's line is not found in Bob's cart.
    assert.equal((await call("PATCH", `${line}?userId=${aliceId}`, { token: bob, body: { quantity: 7, userId: aliceId } })).status, 404);
    assert.equal((await call("DELETE", `${line}?userId=${aliceId}`, { token: bob })).status, 200);
    await call("DELETE", line, { token: bob });
    await call("DELETE", `/api/cart?userId=${aliceId}`, { token: bob });
    const cart = (await call("GET", `/api/cart?userId=${aliceId}`, { token: bob })).body;
    assert.deepEqual(cart.items, []);
    const alices = (await call("GET", "/api/cart", { token: alice })).body;
    assert.deepEqual(
      alices.items.map((i: { productId: string; quantity: number }) => [i.productId, i.quantity]),
      [[ids.product, 2]],
      "3 in the cart, 1 ordered and paid",
    );
  });

  it("anonymous: 401 on every one of those routes", async () => {
    for (const [method, path] of [
      ["GET", `/api/orders/${ids.order}`],
      ["GET", `/api/payments/${ids.payment}`],
      ["POST", `/api/notifications/${ids.notification}/read`],
      ["GET", "/api/cart"],
      ["GET", "/api/orders"],
      ["POST", `/api/orders/${ids.order}/refunds`],
    ] as const)
      assert.equal((await call(method, path, { body: method === "POST" ? {} : undefined })).status, 401, `${method} ${path}`);
  });
});
