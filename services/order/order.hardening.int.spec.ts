/**
 * The order side of the security review (API.md v1.1), through the gateway, embedded
 * (every service in one broker, SQLite, the sandbox platform calling back over HTTP):
 * - hoarding: unpaid orders and units per product per user are limited (UNPAID_LIMIT, not
 *   OUT_OF_STOCK), also under concurrency; an admin may raise the limits of one user;
 * - refunds: a customer refunds only before shipping, and all that is left (the stock
 *   returns); a partial refund changes the payment status, not the fulfilment status, and
 *   the order still ships; an Idempotency-Key makes a refund once;
 * - returns after delivery: requested by the buyer (within the window), approved (refund
 *   through the platform, goods back on the shelf when asked) or rejected by an admin, each
 *   step notified;
 * - rate limits on order creation and refund/return requests per user.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Knex } from "knex";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { eventually } from "../../test/support/eventually";
import { SHIPPING_ADDRESS } from "../../test/support/fixtures";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
type Call = (method: string, path: string, opts?: Parameters<typeof http>[3]) => ReturnType<typeof http>;

function shop(getApp: () => TestApp) {
  const call: Call = (method, path, opts = {}) => http(getApp().baseUrl, method, path, opts);
  let admin = "";
  const s = {
    call,
    admin: () => admin,
    async login() {
      admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
      assert.ok(admin);
    },
    async user(name: string) {
      const r = await call("POST", "/api/auth/register", {
        body: { email: `${name}-${randomBytes(3).toString("hex")}@example.com`, password: `${name} password 1`, name },
      });
      assert.equal(r.status, 201, r.text);
      return { token: r.body.accessToken as string, id: r.body.user.id as string };
    },
    async product(stock: number, amount = 1000) {
      const r = await call("POST", "/api/products", {
        token: admin,
        body: {
          sku: `HD-${randomBytes(4).toString("hex")}`,
          name: "Hardened Widget",
          description: "",
          category: "widgets",
          price: { amount, currency: "EUR" },
          stock,
        },
      });
      assert.equal(r.status, 201, r.text);
      return r.body as { id: string };
    },
    stockOf: async (id: string) =>
      (await call("GET", `/api/products/${id}`)).body.stock as { onHand: number; reserved: number; available: number },
    order: (token: string, items: { productId: string; quantity: number }[], key?: string) =>
      call("POST", "/api/orders", {
        token,
        body: { shippingAddress: SHIPPING_ADDRESS, items },
        headers: key ? { "idempotency-key": key } : {},
      }),
    get: async (token: string, id: string) => (await call("GET", `/api/orders/${id}`, { token })).body,
    async pay(token: string, orderId: string) {
      const pay = await call("POST", `/api/orders/${orderId}/pay`, { token, body: { provider: "sandbox" } });
      assert.equal(pay.status, 200, pay.text);
      const done = await call("POST", `/api/payments/sandbox/${pay.body.id}/complete`, {
        body: { outcome: "success", token: new URL(pay.body.payUrl).searchParams.get("token") },
      });
      assert.equal(done.status, 202, done.text);
      await eventually("PAID", async () => (await s.get(token, orderId)).status === "PAID");
    },
    async deliver(orderId: string) {
      assert.equal(
        (await call("POST", `/api/orders/${orderId}/ship`, { token: admin, body: { carrier: "SF", trackingNumber: "SF1" } })).status,
        200,
      );
      assert.equal((await call("POST", `/api/orders/${orderId}/deliver`, { token: admin })).status, 200);
    },
    notes: async (token: string) =>
      (await call("GET", "/api/notifications", { token })).body.items as { type: string; data: Record<string, unknown> }[],
  };
  return s;
}

describe("hoarding, refunds and returns (embedded)", () => {
  let app: TestApp;
  const s = shop(() => app);

  before(async () => {
    app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    await s.login();
  });
  after(async () => app?.stop());

  it("hoarding: 10 concurrent orders of 5 units against stock 50 give one order; the other nine are 409 UNPAID_LIMIT, not OUT_OF_STOCK", async () => {
    const p = await s.product(50);
    const u = await s.user("hoarder");
    const answers = await Promise.all(Array.from({ length: 10 }, () => s.order(u.token, [{ productId: p.id, quantity: 5 }])));
    const created = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status === 409);
    assert.equal(created.length, 1, answers.map((a) => `${a.status} ${a.text}`).join("\n"));
    assert.equal(refused.length, 9);
    for (const r of refused) {
      assert.equal(r.body.error.code, "UNPAID_LIMIT");
      assert.match(r.body.error.message, /MAX_UNPAID_UNITS_PER_PRODUCT/);
      assert.equal(r.body.error.details[0].limit, "MAX_UNPAID_UNITS_PER_PRODUCT");
    }
    assert.deepEqual(await s.stockOf(p.id), { onHand: 50, reserved: 5, available: 45 }, "one user holds at most 5 units");
    // Another user is not affected by the first one's limit.
    assert.equal((await s.order((await s.user("other")).token, [{ productId: p.id, quantity: 5 }])).status, 201);
  });

  it("hoarding: at most 3 unpaid orders; paying or cancelling frees a slot; an admin raises both limits for one user (a B2B buyer)", async () => {
    const u = await s.user("b2b");
    const products = await Promise.all([1, 2, 3, 4].map(() => s.product(100)));
    const orders = [];
    for (const p of products.slice(0, 3)) orders.push((await s.order(u.token, [{ productId: p.id, quantity: 1 }])).body);
    const fourth = await s.order(u.token, [{ productId: products[3].id, quantity: 1 }]);
    assert.equal(fourth.status, 409, fourth.text);
    assert.equal(fourth.body.error.code, "UNPAID_LIMIT");
    assert.deepEqual(fourth.body.error.details, [{ limit: "MAX_UNPAID_ORDERS", max: 3, unpaidOrders: 3 }]);
    // A cancelled order no longer counts; a paid one neither.
    assert.equal((await s.call("POST", `/api/orders/${orders[0].id}/cancel`, { token: u.token })).status, 200);
    await s.pay(u.token, orders[1].id);
    assert.equal((await s.order(u.token, [{ productId: products[3].id, quantity: 1 }])).status, 201);

    // Limits are admin-only to read and set.
    assert.equal((await s.call("GET", `/api/admin/users/${u.id}/order-limits`, { token: u.token })).status, 403);
    const defaults = await s.call("GET", `/api/admin/users/${u.id}/order-limits`, { token: s.admin() });
    assert.deepEqual(defaults.body, {
      userId: u.id,
      maxUnpaidOrders: 3,
      maxUnpaidUnitsPerProduct: 5,
      overridden: { maxUnpaidOrders: false, maxUnpaidUnitsPerProduct: false },
    });
    assert.equal(
      (await s.call("PUT", `/api/admin/users/${u.id}/order-limits`, { token: s.admin(), body: { maxUnpaidOrders: 0 } })).status,
      422,
    );
    const raised = await s.call("PUT", `/api/admin/users/${u.id}/order-limits`, {
      token: s.admin(),
      body: { maxUnpaidOrders: 10, maxUnpaidUnitsPerProduct: 50 },
    });
    assert.equal(raised.status, 200, raised.text);
    assert.deepEqual(raised.body.overridden, { maxUnpaidOrders: true, maxUnpaidUnitsPerProduct: true });
    const bulk = await s.order(u.token, [{ productId: products[0].id, quantity: 40 }]);
    assert.equal(bulk.status, 201, bulk.text);
    // Back to the default (null): the unpaid orders now over it block new ones again.
    await s.call("PUT", `/api/admin/users/${u.id}/order-limits`, {
      token: s.admin(),
      body: { maxUnpaidOrders: null, maxUnpaidUnitsPerProduct: null },
    });
    assert.equal((await s.order(u.token, [{ productId: products[1].id, quantity: 1 }])).body.error?.code, "UNPAID_LIMIT");
  });

  it("customer refunds: before shipping only and all that is left (the stock returns); afterwards a return request is the way (409)", async () => {
    const p = await s.product(10, 800);
    const u = await s.user("refunder");
    const o = (await s.order(u.token, [{ productId: p.id, quantity: 2 }])).body;
    await s.pay(u.token, o.id);
    const part = await s.call("POST", `/api/orders/${o.id}/refunds`, { token: u.token, body: { amount: 100, reason: "part of it" } });
    assert.equal(part.status, 422, part.text);
    assert.match(part.body.error.message, /all that is left/);
    const all = await s.call("POST", `/api/orders/${o.id}/refunds`, { token: u.token, body: { reason: "changed my mind" } });
    assert.equal(all.status, 202, all.text);
    assert.equal(all.body.amount.amount, 1600);
    await eventually("REFUNDED", async () => (await s.get(u.token, o.id)).status === "REFUNDED");
    await eventually("stock back", async () => (await s.stockOf(p.id)).onHand === 10);

    const shipped = (await s.order(u.token, [{ productId: p.id, quantity: 1 }])).body;
    await s.pay(u.token, shipped.id);
    assert.equal(
      (await s.call("POST", `/api/orders/${shipped.id}/ship`, { token: s.admin(), body: { carrier: "SF", trackingNumber: "SF9" } })).status,
      200,
    );
    const late = await s.call("POST", `/api/orders/${shipped.id}/refunds`, { token: u.token, body: { reason: "too late" } });
    assert.equal(late.status, 409, late.text);
    assert.equal((await s.get(u.token, shipped.id)).refunds.length, 0, "nothing was refunded");
  });

  it("a partial refund of a PAID order leaves it PAID (payment status partially_refunded); it still ships and is delivered", async () => {
    const p = await s.product(5, 1000);
    const u = await s.user("partial");
    const o = (await s.order(u.token, [{ productId: p.id, quantity: 1 }])).body;
    await s.pay(u.token, o.id);
    assert.equal(
      (await s.call("POST", `/api/orders/${o.id}/refunds`, { token: s.admin(), body: { amount: 1, reason: "a cent back" } })).status,
      202,
    );
    const partly = await eventually("partly refunded", async () => {
      const x = await s.get(u.token, o.id);
      return x.paymentStatus === "partially_refunded" && x;
    });
    assert.equal(partly.status, "PAID");
    assert.deepEqual(partly.refundedTotal, { amount: 1, currency: "EUR" });
    await s.deliver(o.id);
    const done = await s.get(u.token, o.id);
    assert.equal(done.status, "DELIVERED");
    assert.equal(done.paymentStatus, "partially_refunded");
    assert.deepEqual(
      done.history.map((h: { status: string }) => h.status),
      ["PENDING_PAYMENT", "PAID", "SHIPPED", "DELIVERED"],
    );
    // A filter on the payment status finds it (admins).
    const list = await s.call("GET", "/api/orders?paymentStatus=partially_refunded&pageSize=100", { token: s.admin() });
    assert.ok(list.body.items.some((x: { id: string }) => x.id === o.id));
    assert.ok(!list.body.items.some((x: { paymentStatus: string }) => x.paymentStatus !== "partially_refunded"));
  });

  it("Idempotency-Key on refunds: the same key twice (and 10 at once) makes one refund with the first answer; the same key with another body is 409", async () => {
    const p = await s.product(5, 1000);
    const u = await s.user("idem");
    const o = (await s.order(u.token, [{ productId: p.id, quantity: 2 }])).body;
    await s.pay(u.token, o.id);
    const refund = (key: string, body: unknown) =>
      s.call("POST", `/api/orders/${o.id}/refunds`, { token: s.admin(), body, headers: { "idempotency-key": key } });
    const first = await refund("refund-key-1", { amount: 300, reason: "scratch" });
    assert.equal(first.status, 202, first.text);
    const again = await refund("refund-key-1", { amount: 300, reason: "scratch" });
    assert.equal(again.status, 202, again.text);
    assert.equal(again.body.id, first.body.id);
    const burst = await Promise.all(Array.from({ length: 10 }, () => refund("refund-key-2", { amount: 200, reason: "dent" })));
    for (const b of burst) assert.equal(b.status, 202, b.text);
    assert.equal(new Set(burst.map((b) => b.body.id)).size, 1);
    const other = await refund("refund-key-1", { amount: 301, reason: "scratch" });
    assert.equal(other.status, 409, other.text);
    const done = await eventually("both settled", async () => {
      const x = await s.get(u.token, o.id);
      return x.refunds.every((r: { status: string }) => r.status === "SUCCEEDED") && x.refunds.length === 2 && x;
    });
    assert.deepEqual(done.refunds.map((r: { amount: { amount: number } }) => r.amount.amount).sort(), [200, 300]);
    assert.deepEqual(done.refundedTotal, { amount: 500, currency: "EUR" });
  });

  it("returns: the buyer asks, an admin approves with restock (refund through the platform, goods back on the shelf) or rejects; each step is notified", async () => {
    const a = await s.product(10, 1500);
    const b = await s.product(10, 500);
    const u = await s.user("returner");
    const o = (
      await s.order(u.token, [
        { productId: a.id, quantity: 2 },
        { productId: b.id, quantity: 1 },
      ])
    ).body;
    await s.pay(u.token, o.id);
    // Not delivered yet: no return.
    const early = await s.call("POST", `/api/orders/${o.id}/returns`, {
      token: u.token,
      body: { items: [{ productId: a.id, quantity: 1 }], reason: "early" },
    });
    assert.equal(early.status, 409, early.text);
    await s.deliver(o.id);
    assert.deepEqual(await s.stockOf(a.id), { onHand: 8, reserved: 0, available: 8 });

    // More than bought, or a product not in the order: 422.
    for (const items of [[{ productId: a.id, quantity: 3 }], [{ productId: (await s.product(1)).id, quantity: 1 }]]) {
      const bad = await s.call("POST", `/api/orders/${o.id}/returns`, { token: u.token, body: { items, reason: "x" } });
      assert.equal(bad.status, 422, bad.text);
    }
    const key = { "idempotency-key": "return-1" };
    const asked = await s.call("POST", `/api/orders/${o.id}/returns`, {
      token: u.token,
      body: { items: [{ productId: a.id, quantity: 2 }], reason: "too small" },
      headers: key,
    });
    assert.equal(asked.status, 201, asked.text);
    assert.equal(asked.body.status, "REQUESTED");
    const repeat = await s.call("POST", `/api/orders/${o.id}/returns`, {
      token: u.token,
      body: { items: [{ productId: a.id, quantity: 2 }], reason: "too small" },
      headers: key,
    });
    assert.equal(repeat.body.id, asked.body.id, "the same key: the first answer");
    // The two units of A are now being returned: no third.
    const more = await s.call("POST", `/api/orders/${o.id}/returns`, {
      token: u.token,
      body: { items: [{ productId: a.id, quantity: 1 }], reason: "again" },
    });
    assert.equal(more.status, 422, more.text);
    await eventually("return.requested notified", async () => (await s.notes(u.token)).some((n) => n.type === "return.requested"));
    const listed = (await s.call("GET", "/api/returns?status=REQUESTED", { token: s.admin() })).body;
    assert.ok(listed.items.some((r: { id: string }) => r.id === asked.body.id));
    assert.equal((await s.call("GET", "/api/returns", { token: u.token })).status, 403);

    const approved = await s.call("POST", `/api/returns/${asked.body.id}/approve`, {
      token: s.admin(),
      body: { restock: true },
      headers: { "idempotency-key": "approve-1" },
    });
    assert.equal(approved.status, 200, approved.text);
    assert.equal(approved.body.status, "APPROVED");
    assert.deepEqual(approved.body.amount, { amount: 3000, currency: "EUR" }, "default: the lines' prices");
    assert.ok(approved.body.refundId);
    const replay = await s.call("POST", `/api/returns/${asked.body.id}/approve`, {
      token: s.admin(),
      body: { restock: true },
      headers: { "idempotency-key": "approve-1" },
    });
    assert.equal(replay.status, 200, replay.text);
    assert.equal(replay.body.refundId, approved.body.refundId, "one refund");
    assert.equal(
      (await s.call("POST", `/api/returns/${asked.body.id}/approve`, { token: s.admin(), body: { restock: true } })).status,
      409,
      "decided once",
    );
    const refunded = await eventually("refund settled", async () => {
      const x = await s.get(u.token, o.id);
      return x.paymentStatus === "partially_refunded" && x;
    });
    assert.equal(refunded.status, "DELIVERED");
    assert.deepEqual(refunded.refundedTotal, { amount: 3000, currency: "EUR" });
    assert.equal(refunded.returns[0].status, "APPROVED");
    await eventually("goods back on the shelf", async () => (await s.stockOf(a.id)).onHand === 10);
    await eventually("return.approved notified", async () => (await s.notes(u.token)).some((n) => n.type === "return.approved"));

    // The last line: asked, then rejected (no refund, no stock), the buyer told why.
    const second = await s.call("POST", `/api/orders/${o.id}/returns`, {
      token: u.token,
      body: { items: [{ productId: b.id, quantity: 1 }], reason: "worn" },
    });
    assert.equal(second.status, 201, second.text);
    const rejected = await s.call("POST", `/api/returns/${second.body.id}/reject`, {
      token: s.admin(),
      body: { reason: "worn and washed" },
    });
    assert.equal(rejected.status, 200, rejected.text);
    assert.equal(rejected.body.status, "REJECTED");
    await eventually("return.rejected notified", async () =>
      (await s.notes(u.token)).some((n) => n.type === "return.rejected" && n.data.reason === "worn and washed"),
    );
    const final = await s.get(u.token, o.id);
    assert.deepEqual(final.refundedTotal, { amount: 3000, currency: "EUR" });
    assert.deepEqual(
      (await s.call("GET", `/api/orders/${o.id}/returns`, { token: u.token })).body.items.map((r: { status: string }) => r.status),
      ["APPROVED", "REJECTED"],
    );
    assert.deepEqual(await s.stockOf(b.id), { onHand: 9, reserved: 0, available: 9 }, "a rejected return restocks nothing");
    // Each event is told once, whatever the redeliveries.
    const notes = await s.notes(u.token);
    for (const t of ["return.requested", "return.approved", "return.rejected"])
      assert.equal(notes.filter((n) => n.type === t).length, t === "return.requested" ? 2 : 1, t);
  });

  it("returns: only within RETURN_WINDOW_DAYS of delivery (30): a day later than that is 409", async () => {
    const p = await s.product(3);
    const u = await s.user("window");
    const o = (await s.order(u.token, [{ productId: p.id, quantity: 1 }])).body;
    await s.pay(u.token, o.id);
    await s.deliver(o.id);
    // Delivered 31 days ago, as the shipment says.
    const db = (app.broker.getLocalService("order") as unknown as { db: Knex }).db;
    const row = await db("orders").where({ id: o.id }).first();
    const shipment = { ...JSON.parse(row.shipment), deliveredAt: new Date(Date.now() - 31 * 86_400_000).toISOString() };
    await db("orders")
      .where({ id: o.id })
      .update({ shipment: JSON.stringify(shipment) });
    const r = await s.call("POST", `/api/orders/${o.id}/returns`, {
      token: u.token,
      body: { items: [{ productId: p.id, quantity: 1 }], reason: "late" },
    });
    assert.equal(r.status, 409, r.text);
    assert.match(r.body.error.message, /30 days/);
  });
});

describe("rate limits on order creation and on refund and return requests (per user)", () => {
  let app: TestApp;
  const s = shop(() => app);

  before(async () => {
    app = await startTestApp({
      db: "sqlite",
      env: {
        ADMIN_EMAIL: ADMIN.email,
        ADMIN_PASSWORD: ADMIN.password,
        RATE_LIMITS: "on",
        RATE_LIMIT_ORDERS: "2/600",
        RATE_LIMIT_REFUNDS: "1/3600",
        MAX_UNPAID_ORDERS: "10",
      },
    });
    await s.login();
  });
  after(async () => app?.stop());

  it("the third order creation of a user in the window is 429 with Retry-After and RateLimit-*; another user is unaffected", async () => {
    const p = await s.product(20);
    const u = await s.user("busy");
    for (let i = 0; i < 2; i++) {
      const r = await s.order(u.token, [{ productId: p.id, quantity: 1 }]);
      assert.equal(r.status, 201, r.text);
      assert.equal(r.headers.get("ratelimit-limit"), "2");
      assert.equal(r.headers.get("ratelimit-remaining"), String(1 - i));
    }
    const third = await s.order(u.token, [{ productId: p.id, quantity: 1 }]);
    assert.equal(third.status, 429, third.text);
    assert.equal(third.body.error.code, "RATE_LIMITED");
    assert.ok(Number(third.headers.get("retry-after")) > 0);
    assert.equal(third.headers.get("ratelimit-limit"), "2");
    assert.equal(third.headers.get("ratelimit-remaining"), "0");
    assert.ok(Number(third.headers.get("ratelimit-reset")) > 0);
    assert.deepEqual(await s.stockOf(p.id), { onHand: 20, reserved: 2, available: 18 }, "the refused one reserved nothing");
    assert.equal((await s.order((await s.user("calm")).token, [{ productId: p.id, quantity: 1 }])).status, 201);
  });

  it("refund and return requests share one budget per user: the second in the window is 429", async () => {
    const p = await s.product(5);
    const u = await s.user("claims");
    const o = (await s.order(u.token, [{ productId: p.id, quantity: 2 }])).body;
    await s.pay(u.token, o.id);
    await s.deliver(o.id);
    assert.equal(
      (
        await s.call("POST", `/api/orders/${o.id}/returns`, {
          token: u.token,
          body: { items: [{ productId: p.id, quantity: 1 }], reason: "one" },
        })
      ).status,
      201,
    );
    const second = await s.call("POST", `/api/orders/${o.id}/returns`, {
      token: u.token,
      body: { items: [{ productId: p.id, quantity: 1 }], reason: "two" },
    });
    assert.equal(second.status, 429, second.text);
    const refund = await s.call("POST", `/api/orders/${o.id}/refunds`, { token: u.token, body: { reason: "three" } });
    assert.equal(refund.status, 429, refund.text);
  });
});
