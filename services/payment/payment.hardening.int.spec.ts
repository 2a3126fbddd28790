/**
 * The payment side of the security review, embedded, through the gateway (the sandbox
 * platform calling back over HTTP):
 * - trades expire with the order's reservation, and a cancelled order's open trades are
 *   closed at the platform: the sandbox then refuses to complete them;
 * - the sandbox platform can be switched off (SANDBOX_PAY=false), and is off under
 *   NODE_ENV=production unless asked for: its routes answer 404;
 * - a `payment.succeeded` the order service dead-lettered is handed over again by
 *   reconciliation: the order takes it if it still can, otherwise it is refunded in full
 *   and the buyer told.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Knex } from "knex";
import { after, before, describe, it } from "mocha";
import { createProductService } from "../product/product.service";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { eventually } from "../../test/support/eventually";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
const ADDRESS = {
  recipient: "Pat Payer",
  phone: "+86 10 1234 5678",
  line1: "3 Till Road",
  city: "Beijing",
  postalCode: "100000",
  country: "CN",
};

function shop(getApp: () => TestApp) {
  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(getApp().baseUrl, method, path, opts);
  let admin = "";
  return {
    call,
    async setup() {
      admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
      const buyer = (
        await call("POST", "/api/auth/register", {
          body: { email: `pay-${randomBytes(3).toString("hex")}@example.com`, password: "payer password 1", name: "Pat" },
        })
      ).body.accessToken as string;
      const product = (
        await call("POST", "/api/products", {
          token: admin,
          body: {
            sku: `PH-${randomBytes(4).toString("hex")}`,
            name: "Paid Widget",
            description: "",
            category: "widgets",
            price: { amount: 990, currency: "EUR" },
            stock: 20,
          },
        })
      ).body as { id: string };
      assert.ok(admin && buyer && product.id);
      return { buyer, product };
    },
    async order(buyer: string, productId: string) {
      const r = await call("POST", "/api/orders", {
        token: buyer,
        body: { shippingAddress: ADDRESS, items: [{ productId, quantity: 1 }] },
      });
      assert.equal(r.status, 201, r.text);
      return r.body as { id: string };
    },
    async pay(buyer: string, orderId: string) {
      const r = await call("POST", `/api/orders/${orderId}/pay`, { token: buyer, body: { provider: "sandbox" } });
      assert.equal(r.status, 200, r.text);
      return { id: r.body.id as string, token: new URL(r.body.payUrl).searchParams.get("token")!, payUrl: new URL(r.body.payUrl) };
    },
    complete: (pay: { id: string; token: string }) =>
      call("POST", `/api/payments/sandbox/${pay.id}/complete`, { body: { outcome: "success", token: pay.token } }),
  };
}

describe("trades close and expire (embedded)", () => {
  let app: TestApp;
  const s = shop(() => app);
  before(async () => {
    app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
  });
  after(async () => app?.stop());

  it("a cancelled order's open trade is closed at the platform: the sandbox refuses to complete it (409), nothing is charged", async () => {
    const { buyer, product } = await s.setup();
    const o = await s.order(buyer, product.id);
    const pay = await s.pay(buyer, o.id);
    assert.equal((await s.call("POST", `/api/orders/${o.id}/cancel`, { token: buyer })).status, 200);
    const closed = await eventually("trade closed", async () => {
      const p = (await s.call("GET", `/api/payments/${pay.id}`, { token: buyer })).body;
      return p.status === "FAILED" && p;
    });
    assert.equal(closed.status, "FAILED");
    const db = (app.broker.getLocalService("payment") as unknown as { db: Knex }).db;
    assert.equal((await db("payments").where({ id: pay.id }).first()).failure_reason, "closed");
    assert.equal((await db("sandbox_payments").where({ payment_id: pay.id }).first()).status, "closed", "the platform's own record");
    const late = await s.complete(pay);
    assert.equal(late.status, 409, late.text);
    assert.match(late.body.error.message, /closed/);
    assert.equal(
      (await db("sandbox_payments").where({ payment_id: pay.id }).first()).status,
      "closed",
      "no payment recorded by the platform",
    );
    assert.equal((await s.call("GET", `/api/orders/${o.id}`, { token: buyer })).body.status, "CANCELLED");
  });

  it("a declined trade is closed too when the order is cancelled (the sandbox would take a success after a decline)", async () => {
    const { buyer, product } = await s.setup();
    const o = await s.order(buyer, product.id);
    const pay = await s.pay(buyer, o.id);
    assert.equal(
      (await s.call("POST", `/api/payments/sandbox/${pay.id}/complete`, { body: { outcome: "failure", token: pay.token } })).status,
      202,
    );
    await eventually("declined", async () => (await s.call("GET", `/api/payments/${pay.id}`, { token: buyer })).body.status === "FAILED");
    assert.equal((await s.call("POST", `/api/orders/${o.id}/cancel`, { token: buyer })).status, 200);
    const db = (app.broker.getLocalService("payment") as unknown as { db: Knex }).db;
    await eventually(
      "closed at the platform",
      async () => (await db("sandbox_payments").where({ payment_id: pay.id }).first())?.status === "closed",
    );
    assert.equal((await db("payments").where({ id: pay.id }).first()).failure_reason, "closed");
    const late = await s.complete(pay);
    assert.equal(late.status, 409, late.text);
  });

  it("payment.closeOrderTrades (the order's answer to a cancel that raced a pay) closes the order's open trades, once", async () => {
    const { buyer, product } = await s.setup();
    const o = await s.order(buyer, product.id);
    const pay = await s.pay(buyer, o.id);
    assert.deepEqual(await app.broker.call("payment.closeOrderTrades", { orderId: o.id }), { marked: 1 });
    await eventually("closed", async () => (await s.call("GET", `/api/payments/${pay.id}`, { token: buyer })).body.status === "FAILED");
    assert.deepEqual(
      await app.broker.call("payment.closeOrderTrades", { orderId: o.id }),
      { marked: 0 },
      "a closed trade is not marked again",
    );
    assert.equal((await s.complete(pay)).status, 409);
  });

  it("a trade carries the reservation's end as its expiry; past it the sandbox refuses to complete it (409)", async () => {
    const { buyer, product } = await s.setup();
    const o = await s.order(buyer, product.id);
    const pay = await s.pay(buyer, o.id);
    const db = (app.broker.getLocalService("payment") as unknown as { db: Knex }).db;
    const order = (await s.call("GET", `/api/orders/${o.id}`, { token: buyer })).body;
    assert.equal(
      Number((await db("payments").where({ id: pay.id }).first()).expires_at),
      Date.parse(order.payBefore),
      "the trade expires with the reservation",
    );
    // As if the buyer came back after the deadline.
    await db("payments")
      .where({ id: pay.id })
      .update({ expires_at: Date.now() - 1000 });
    const late = await s.complete(pay);
    assert.equal(late.status, 409, late.text);
    assert.match(late.body.error.message, /expired/);
    assert.equal(await db("sandbox_payments").where({ payment_id: pay.id }).first(), undefined, "no choice recorded");
  });
});

for (const [what, env] of [
  ["SANDBOX_PAY=false", { SANDBOX_PAY: "false" }],
  ["NODE_ENV=production", { NODE_ENV: "production" }],
] as const) {
  describe(`the sandbox platform is off with ${what}`, () => {
    let app: TestApp;
    const s = shop(() => app);
    before(async () => {
      app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password, ...env } });
    });
    after(async () => app?.stop());

    it("paying with it is refused (422), its routes answer 404, and no key file is made", async () => {
      const { buyer, product } = await s.setup();
      const o = await s.order(buyer, product.id);
      const pay = await s.call("POST", `/api/orders/${o.id}/pay`, { token: buyer, body: { provider: "sandbox" } });
      assert.equal(pay.status, 422, pay.text);
      assert.match(pay.body.error.message, /not enabled/);
      const complete = await s.call("POST", `/api/payments/sandbox/${"a".repeat(32)}/complete`, {
        body: { outcome: "success", token: "x".repeat(32) },
      });
      assert.equal(complete.status, 404, complete.text);
      assert.equal(complete.body.error.code, "NOT_FOUND");
      assert.equal((await s.call("GET", `/sandbox/pay/${"a".repeat(32)}?token=${"x".repeat(32)}`)).status, 404);
      // Malformed or not, the route is not there: 404, never a 422 that would show it exists.
      for (const body of [{}, { outcome: "maybe" }, { outcome: "success", token: "x".repeat(500), extra: 1 }])
        assert.equal((await s.call("POST", "/api/payments/sandbox/x/complete", { body })).status, 404, JSON.stringify(body));
      assert.equal((await s.call("GET", "/sandbox/pay/x")).status, 404);
      const fs = await import("node:fs");
      assert.equal(fs.existsSync(`${app.config.dataDir}/sandbox-pay-key.pem`), false);
    });
  });
}

describe("NODE_ENV=production with SANDBOX_PAY=true: the sandbox is on, as asked", () => {
  let app: TestApp;
  const s = shop(() => app);
  before(async () => {
    app = await startTestApp({
      db: "sqlite",
      env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password, NODE_ENV: "production", SANDBOX_PAY: "true" },
    });
  });
  after(async () => app?.stop());

  it("paying with it works", async () => {
    const { buyer, product } = await s.setup();
    const o = await s.order(buyer, product.id);
    assert.equal((await s.complete(await s.pay(buyer, o.id))).status, 202);
    await eventually("PAID", async () => (await s.call("GET", `/api/orders/${o.id}`, { token: buyer })).body.status === "PAID");
  });
});

describe("a dead-lettered payment.succeeded is handed over again by reconciliation (embedded, one attempt before the dead letters)", () => {
  let app: TestApp;
  const s = shop(() => app);
  before(async () => {
    app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password, EVENTS_MAX_ATTEMPTS: "1" } });
  });
  after(async () => app?.stop());

  /** Pays an order while the product service is away: the order's handler fails (product.commit) and the event is dead-lettered. */
  const payWhileProductIsDown = async (buyer: string, orderId: string) => {
    const pay = await s.pay(buyer, orderId);
    await app.broker.destroyService(app.broker.getLocalService("product"));
    const orderDb = (app.broker.getLocalService("order") as unknown as { db: Knex }).db;
    assert.equal((await s.complete(pay)).status, 202);
    await eventually("payment.succeeded dead-lettered by the order service", async () =>
      Boolean(
        await orderDb("dead_letters")
          .where({ event: "payment.succeeded" })
          .whereRaw("envelope LIKE ?", [`%${pay.id}%`])
          .first(),
      ),
    );
    app.broker.createService(createProductService(app.config));
    await app.broker.waitForServices(["product"]);
    return pay;
  };
  const reconcileLater = () =>
    app.broker.call<{ handedOver: number }, unknown>("payment.reconcile", {
      now: Date.now() + (app.config.payments.orderAckTimeoutS + app.config.payments.pendingTimeoutS) * 1000 + 1000,
    });
  const notes = async (buyer: string) =>
    (await s.call("GET", "/api/notifications", { token: buyer })).body.items as { type: string; data: { paymentId?: string } }[];

  it("the order can still take it: handed over, it becomes PAID (once), and the buyer is told once", async () => {
    const { buyer, product } = await s.setup();
    const o = await s.order(buyer, product.id);
    const pay = await payWhileProductIsDown(buyer, o.id);
    assert.equal(
      (await s.call("GET", `/api/orders/${o.id}`, { token: buyer })).body.status,
      "PENDING_PAYMENT",
      "the order never heard of it",
    );
    assert.equal((await reconcileLater()).handedOver, 1);
    const paid = await eventually("PAID", async () => {
      const x = (await s.call("GET", `/api/orders/${o.id}`, { token: buyer })).body;
      return x.status === "PAID" && x;
    });
    assert.equal(paid.payments.find((p: { id: string }) => p.id === pay.id).status, "SUCCEEDED");
    await eventually("payment.succeeded notified", async () => (await notes(buyer)).some((n) => n.type === "payment.succeeded"));
    assert.equal((await reconcileLater()).handedOver, 0, "acknowledged: not handed over twice");
    assert.equal((await notes(buyer)).filter((n) => n.type === "payment.succeeded").length, 1);
    assert.deepEqual((await s.call("GET", `/api/products/${product.id}`)).body.stock, { onHand: 19, reserved: 0, available: 19 });
  });

  it("the order was cancelled meanwhile: handed over, the charge is refunded in full and the buyer told", async () => {
    const { buyer, product } = await s.setup();
    const o = await s.order(buyer, product.id);
    const pay = await payWhileProductIsDown(buyer, o.id);
    assert.equal((await s.call("POST", `/api/orders/${o.id}/cancel`, { token: buyer })).status, 200);
    assert.equal((await reconcileLater()).handedOver, 1);
    const refunded = await eventually("refunded", async () => {
      const x = (await s.call("GET", `/api/orders/${o.id}`, { token: buyer })).body;
      return x.refunds.some((r: { paymentId: string; status: string }) => r.paymentId === pay.id && r.status === "SUCCEEDED") && x;
    });
    assert.equal(refunded.status, "CANCELLED");
    assert.equal(refunded.refunds[0].amount.amount, 990);
    await eventually("payment.refunded notified", async () =>
      (await notes(buyer)).some((n) => n.type === "payment.refunded" && n.data.paymentId === pay.id),
    );
    assert.equal((await reconcileLater()).handedOver, 0);
  });
});
