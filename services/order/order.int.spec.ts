/**
 * The checkout flow through the gateway, embedded (every service in one broker, SQLite,
 * business events in-process, the sandbox platform calling back over HTTP): cart → order
 * (Idempotency-Key) → pay → PAID, cart emptied of the order's lines, stock decremented,
 *  notified; failure; cancel; expiry; ship, deliver, admin partial and full refund; and the
 * access sweep (another user's order is a 404 everywhere).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "mocha";
import { READINESS_QUERY } from "../../mixins/db.mixin";
import { requestMetricsOf } from "../../lib/request-metrics";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { eventually } from "../../test/support/eventually";
import { SHIPPING_ADDRESS } from "../../test/support/fixtures";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
describe("checkout, embedded (SQLite, sandbox platform over HTTP)", () => {
  let app: TestApp;
  let admin = "";
  let alice = "";
  let bob = "";
  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
  const product = async (stock: number, amount = 1000) =>
    (
      await call("POST", "/api/products", {
        token: admin,
        body: {
          sku: `CO-${randomBytes(4).toString("hex")}`,
          name: "Checkout Widget",
          description: "",
          category: "widgets",
          price: { amount, currency: "EUR" },
          stock,
        },
      })
    ).body as { id: string };
  const stockOf = async (id: string) =>
    (await call("GET", `/api/products/${id}`)).body.stock as { onHand: number; reserved: number; available: number };
  const order = (token: string, body: unknown, key?: string) =>
    call("POST", "/api/orders", { token, body, headers: key ? { "idempotency-key": key } : {} });
  const getOrder = async (token: string, id: string) => (await call("GET", `/api/orders/${id}`, { token })).body;
  /** Pays with the sandbox: the pay URL's token proves access; the platform then calls back. */
  const paySandbox = async (token: string, orderId: string, outcome: "success" | "failure") => {
    const pay = await call("POST", `/api/orders/${orderId}/pay`, { token, body: { provider: "sandbox" } });
    assert.equal(pay.status, 200, pay.text);
    const payUrl = new URL(pay.body.payUrl);
    const page = await http(app.baseUrl, "GET", payUrl.pathname + payUrl.search);
    assert.equal(page.status, 200, page.text);
    const done = await call("POST", `/api/payments/sandbox/${pay.body.id}/complete`, {
      body: { outcome, token: payUrl.searchParams.get("token") },
    });
    assert.equal(done.status, 202, done.text);
    return pay.body as { id: string };
  };

  before(async () => {
    app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    alice = (await call("POST", "/api/auth/register", { body: { email: "alice@example.com", password: "alice password", name: "Alice" } }))
      .body.accessToken;
    bob = (await call("POST", "/api/auth/register", { body: { email: "bob@example.com", password: "bob password 1", name: "Bob" } })).body
      .accessToken;
    assert.ok(admin && alice && bob);
  });
  after(async () => app?.stop());

  it("the whole flow: cart → order → pay (sandbox) → PAID, cart emptied, stock sold, notified → ship → deliver → the customer's refund refused, an admin's partial then full refund", async () => {
    const p1 = await product(5, 1250);
    const p2 = await product(3, 500);
    for (const [id, quantity] of [
      [p1.id, 2],
      [p2.id, 1],
    ] as const)
      assert.equal((await call("POST", "/api/cart/items", { token: alice, body: { productId: id, quantity } })).status, 200);

    const created = await order(alice, { shippingAddress: SHIPPING_ADDRESS }, "flow-1");
    assert.equal(created.status, 201, created.text);
    const o = created.body;
    assert.equal(o.status, "PENDING_PAYMENT");
    assert.deepEqual(o.total, { amount: 3000, currency: "EUR" });
    assert.equal(o.items.length, 2);
    assert.deepEqual(await stockOf(p1.id), { onHand: 5, reserved: 2, available: 3 });

    await paySandbox(alice, o.id, "success");
    const paid = await eventually("PAID", async () =>
      (await getOrder(alice, o.id)).status === "PAID" ? getOrder(alice, o.id) : undefined,
    );
    assert.deepEqual(
      paid.history.map((h: { status: string }) => h.status),
      ["PENDING_PAYMENT", "PAID"],
    );
    assert.equal(paid.payments[0].status, "SUCCEEDED");
    assert.deepEqual(await stockOf(p1.id), { onHand: 3, reserved: 0, available: 3 }, "the hold became a sale");
    await eventually(
      "cart emptied of the order's lines",
      async () => (await call("GET", "/api/cart", { token: alice })).body.items.length === 0,
    );
    const notes = await eventually("notified", async () => {
      const n = (await call("GET", "/api/notifications", { token: alice })).body;
      const list = (Array.isArray(n) ? n : n.items) as { type: string }[];
      return list.some((x) => x.type === "payment.succeeded") && list;
    });
    assert.equal(notes.filter((x) => x.type === "payment.succeeded").length, 1);

    // Customers cannot ship; admins can, then deliver.
    assert.equal(
      (await call("POST", `/api/orders/${o.id}/ship`, { token: alice, body: { carrier: "SF", trackingNumber: "SF1" } })).status,
      403,
    );
    const shipped = await call("POST", `/api/orders/${o.id}/ship`, {
      token: admin,
      body: { carrier: "SF Express", trackingNumber: "SF123456" },
    });
    assert.equal(shipped.status, 200, shipped.text);
    assert.equal(shipped.body.status, "SHIPPED");
    assert.equal(shipped.body.shipment.trackingNumber, "SF123456");
    assert.equal(
      (await call("POST", `/api/orders/${o.id}/ship`, { token: admin, body: { carrier: "SF", trackingNumber: "x" } })).status,
      409,
      "any other transition is 409",
    );
    assert.equal((await call("POST", `/api/orders/${o.id}/deliver`, { token: admin })).body.status, "DELIVERED");

    // After shipping a customer files a return request instead of refunding (409); admins
    // refund any amount: partial (the status stays, the payment status says it), too much
    // (422), the rest (REFUNDED). Shipped goods do not come back to stock with a refund.
    const own = await call("POST", `/api/orders/${o.id}/refunds`, { token: alice, body: { reason: "one item damaged" } });
    assert.equal(own.status, 409, own.text);
    assert.match(own.body.error.message, /return request/);
    const part = await call("POST", `/api/orders/${o.id}/refunds`, { token: admin, body: { amount: 1000, reason: "one item damaged" } });
    assert.equal(part.status, 202, part.text);
    const partly = await eventually("partly refunded", async () => {
      const x = await getOrder(alice, o.id);
      return x.paymentStatus === "partially_refunded" && x;
    });
    assert.equal(partly.status, "DELIVERED", "a partial refund changes no fulfilment status");
    assert.deepEqual(partly.refundedTotal, { amount: 1000, currency: "EUR" });
    const tooMuch = await call("POST", `/api/orders/${o.id}/refunds`, { token: admin, body: { amount: 2001, reason: "greedy" } });
    assert.equal(tooMuch.status, 422, tooMuch.text);
    assert.equal((await call("POST", `/api/orders/${o.id}/refunds`, { token: admin, body: { reason: "returned" } })).status, 202);
    const refunded = await eventually("REFUNDED", async () =>
      (await getOrder(alice, o.id)).status === "REFUNDED" ? getOrder(alice, o.id) : undefined,
    );
    assert.equal(refunded.paymentStatus, "refunded");
    assert.deepEqual(refunded.refundedTotal, { amount: 3000, currency: "EUR" });
    assert.deepEqual(
      refunded.refunds.map((r: { amount: { amount: number }; status: string }) => [r.amount.amount, r.status]),
      [
        [1000, "SUCCEEDED"],
        [2000, "SUCCEEDED"],
      ],
    );
    assert.deepEqual(
      refunded.history.map((h: { status: string }) => h.status),
      ["PENDING_PAYMENT", "PAID", "SHIPPED", "DELIVERED", "REFUNDED"],
    );
    assert.equal((await call("POST", `/api/orders/${o.id}/refunds`, { token: admin, body: { reason: "again" } })).status, 409);
    assert.deepEqual(await stockOf(p1.id), { onHand: 3, reserved: 0, available: 3 });
  });

  it("a full refund of an order that never shipped returns its stock", async () => {
    const p = await product(4);
    const o = (await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 3 }] })).body;
    await paySandbox(alice, o.id, "success");
    await eventually("PAID", async () => (await getOrder(alice, o.id)).status === "PAID");
    assert.deepEqual(await stockOf(p.id), { onHand: 1, reserved: 0, available: 1 });
    assert.equal((await call("POST", `/api/orders/${o.id}/refunds`, { token: alice, body: { reason: "changed my mind" } })).status, 202);
    await eventually("REFUNDED", async () => (await getOrder(alice, o.id)).status === "REFUNDED");
    await eventually("stock back", async () => (await stockOf(p.id)).onHand === 4);
  });

  it("a failed payment notifies and leaves the order payable; paying again succeeds", async () => {
    const p = await product(2);
    const o = (await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 1 }] })).body;
    await paySandbox(alice, o.id, "failure");
    await eventually("failure notified", async () => {
      const n = (await call("GET", "/api/notifications", { token: alice })).body;
      return ((Array.isArray(n) ? n : n.items) as { type: string; data?: { orderId?: string } }[]).some((x) => x.type === "payment.failed");
    });
    assert.equal((await getOrder(alice, o.id)).status, "PENDING_PAYMENT");
    await paySandbox(alice, o.id, "success");
    await eventually("PAID", async () => (await getOrder(alice, o.id)).status === "PAID");
  });

  it("Idempotency-Key: 20 concurrent identical requests make one order; the same key with another body is 409", async () => {
    const p = await product(50);
    const body = { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 1 }] };
    const answers = await Promise.all(Array.from({ length: 20 }, () => order(alice, body, "same-key-20")));
    for (const a of answers) assert.equal(a.status, 201, a.text);
    assert.equal(new Set(answers.map((a) => a.body.id)).size, 1);
    assert.deepEqual(await stockOf(p.id), { onHand: 50, reserved: 1, available: 49 }, "reserved once");
    const other = await order(alice, { ...body, items: [{ productId: p.id, quantity: 2 }] }, "same-key-20");
    assert.equal(other.status, 409, other.text);
    // Keys are per user: Bob's identical key is his own order.
    const bobs = await order(bob, body, "same-key-20");
    assert.equal(bobs.status, 201);
    assert.notEqual(bobs.body.id, answers[0].body.id);
  });

  it("Idempotency-Key: a claim left by a request that died before creating its order is taken over (after 6 request timeouts, at least 30 s)", async () => {
    const p = await product(5);
    const body = { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 1 }] };
    const me = (await call("GET", "/api/users/me", { token: alice })).body;
    const db = (app.broker.getLocalService("order") as unknown as { db: import("knex").Knex }).db;
    const { requestFingerprint } = await import("../../lib/idempotency");
    // As a crashed process leaves it: the key claimed, no order.
    await db("idempotency_keys").insert({
      user_id: me.id,
      idem_key: "died-key",
      fingerprint: requestFingerprint({ op: "order.create", body }),
      resource_id: "never-created",
      created_at: Date.now() - 61_000,
    });
    const r = await order(alice, body, "died-key");
    assert.equal(r.status, 201, r.text);
    assert.notEqual(r.body.id, "never-created");
    assert.equal((await order(alice, body, "died-key")).body.id, r.body.id, "and the key now names the new order");
  });

  it("not enough stock: 409 OUT_OF_STOCK and nothing reserved; an empty cart is 422", async () => {
    const plenty = await product(10);
    const scarce = await product(1);
    const r = await order(alice, {
      shippingAddress: SHIPPING_ADDRESS,
      items: [
        { productId: plenty.id, quantity: 2 },
        { productId: scarce.id, quantity: 2 },
      ],
    });
    assert.equal(r.status, 409, r.text);
    assert.equal(r.body.error.code, "OUT_OF_STOCK");
    assert.deepEqual(await stockOf(plenty.id), { onHand: 10, reserved: 0, available: 10 });
    await call("DELETE", "/api/cart", { token: bob });
    const empty = await order(bob, { shippingAddress: SHIPPING_ADDRESS });
    assert.equal(empty.status, 422, empty.text);
    assert.equal((await order(alice, { addressId: "nope" })).status, 422);
    assert.equal((await order(alice, {})).status, 422);
  });

  it("product.reserve prices the order: no product.get per line; an unknown or deleted product is 422 naming its line, and nothing is held", async () => {
    /** Requests of `action` so far on this broker (moleculer_request_total, lib/request-metrics.ts). */
    const requests = (action: string) => requestMetricsOf(app.broker)!.totalOf(action);
    // A buyer of its own: alice's earlier unpaid orders count against her limit.
    const carol = (
      await call("POST", "/api/auth/register", { body: { email: "carol@example.com", password: "carol password", name: "Carol" } })
    ).body.accessToken;
    const cheap = await product(5, 250);
    const dear = await product(5, 9900);
    const [gets, reserves] = [requests("product.get"), requests("product.reserve")];
    const r = await order(carol, {
      shippingAddress: SHIPPING_ADDRESS,
      items: [
        { productId: dear.id, quantity: 1 },
        { productId: cheap.id, quantity: 3 },
      ],
    });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual([requests("product.get") - gets, requests("product.reserve") - reserves], [0, 1]);
    // The order's lines are in productId order (normalizeOrderLines), each priced by the reserve.
    assert.deepEqual(
      r.body.items.map((i: { productId: string; unitPrice: { amount: number }; quantity: number }) => [
        i.productId,
        i.unitPrice.amount,
        i.quantity,
      ]),
      [
        [dear.id, 9900, 1],
        [cheap.id, 250, 3],
      ].sort(([a], [b]) => String(a).localeCompare(String(b))),
    );
    assert.deepEqual(r.body.total, { amount: 9900 + 3 * 250, currency: "EUR" });

    const gone = await product(5);
    assert.equal((await call("DELETE", `/api/products/${gone.id}`, { token: admin })).status, 204);
    for (const missing of [gone.id, "no-such-product"]) {
      const refused = await order(carol, {
        shippingAddress: SHIPPING_ADDRESS,
        items: [
          { productId: cheap.id, quantity: 1 },
          { productId: missing, quantity: 1 },
        ],
      });
      assert.equal(refused.status, 422, refused.text);
      assert.deepEqual(
        refused.body.error.details.map((d: { field: string }) => d.field),
        [`items.${missing}`],
      );
    }
    assert.deepEqual(await stockOf(cheap.id), { onHand: 5, reserved: 3, available: 2 }, "only the first order holds stock");
  });

  it("a create answers its order exactly as a read right after it does (built from what it committed, not read back); a replay of its key reads it", async () => {
    const p = await product(5, 700);
    const created = await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 2 }] }, "as-read-1");
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body, await getOrder(alice, created.body.id));
    const replay = await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 2 }] }, "as-read-1");
    assert.deepEqual(replay.body, created.body);
    assert.equal((await call("POST", `/api/orders/${created.body.id}/cancel`, { token: alice })).status, 200);
    const afterCancel = await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 2 }] }, "as-read-1");
    assert.equal(afterCancel.body.status, "CANCELLED", "a replay answers the order as it is now");

    // The hoarding check's lock row is written by a user's first create only, before its one
    // locked round (not after a round that found nothing).
    const db = (app.broker.getLocalService("order") as unknown as { db: import("knex").Knex }).db;
    const registered = await call("POST", "/api/auth/register", {
      body: { email: `fresh-${randomBytes(3).toString("hex")}@example.com`, password: "fresh password", name: "F" },
    });
    const fresh = registered.body.accessToken;
    const limitRowStatements = async (run: () => Promise<unknown>) => {
      const seen: string[] = [];
      const onQuery = (q: { sql: string }) => {
        if (/`order_user_limits`/.test(q.sql)) seen.push(q.sql.split(" ")[0]);
      };
      db.on("query", onQuery);
      try {
        await run();
      } finally {
        db.off("query", onQuery);
      }
      return seen;
    };
    const buy = async () =>
      assert.equal((await order(fresh, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 1 }] })).status, 201);
    assert.deepEqual(await limitRowStatements(buy), ["insert", "select"], "the first create makes the row, then locks it once");
    assert.deepEqual(await limitRowStatements(buy), ["select"], "a later create finds it");
    // Remembered but gone (a database restored under the running node): made again, once.
    await db("order_user_limits").where({ user_id: registered.body.user.id }).delete();
    assert.deepEqual(await limitRowStatements(buy), ["select", "insert", "select"], "a row gone is made again");
  });

  it("a product sold out moments ago: the next buyer is refused by product.checkStock's read with no write in the order database; a key's replay still answers its order; a restock sells at once", async () => {
    const requests = (action: string) => requestMetricsOf(app.broker)!.totalOf(action);
    const db = (app.broker.getLocalService("order") as unknown as { db: import("knex").Knex }).db;
    const register = async (name: string) =>
      (
        await call("POST", "/api/auth/register", {
          body: { email: `${name}-${randomBytes(3).toString("hex")}@example.com`, password: `${name} password`, name },
        })
      ).body.accessToken as string;
    const [dave, erin] = [await register("dave"), await register("erin")];
    const hot = await product(1);
    const body = { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: hot.id, quantity: 1 }] };
    const won = await order(dave, body, "hot-1");
    assert.equal(won.status, 201, won.text);
    const counts = () => [requests("product.reserve"), requests("product.checkStock")];

    // The first refusal is the reserve's; it marks the product on this node.
    let before = counts();
    const first = await order(erin, body, "erin-1");
    assert.equal(first.status, 409, first.text);
    assert.deepEqual(counts(), [before[0] + 1, before[1]]);

    // The next one asks the read first and writes nothing here: no key claim kept, no draft,
    // no hoarding row (the relay's outbox and inbox rows are another matter, and so is the
    // readiness probe, which the gRPC edge's health loop runs on its own clock).
    before = counts();
    const ownStatement = (sql: string) => !/outbox|inbox/.test(sql) && sql !== READINESS_QUERY;
    const statements: string[] = [];
    const onQuery = (q: { sql: string }) => {
      if (ownStatement(q.sql)) statements.push(q.sql);
    };
    db.on("query", onQuery);
    const second = await order(erin, body);
    db.off("query", onQuery);
    assert.equal(second.status, 409, second.text);
    assert.equal(second.body.error.code, "OUT_OF_STOCK");
    assert.deepEqual(second.body.error.details, [{ productId: hot.id, requested: 1, available: 0 }]);
    assert.deepEqual(counts(), [before[0], before[1] + 1]);
    assert.deepEqual(statements, [], "a refusal after the mark runs no statement in the order database");
    // With a key: a look for the key before the check and one after its refusal (it names
    // nothing), no claim and no release.
    const keyedStatements: string[] = [];
    const onKeyedQuery = (q: { sql: string }) => {
      if (ownStatement(q.sql)) keyedStatements.push(q.sql.split(" where ")[0]);
    };
    db.on("query", onKeyedQuery);
    const keyed = await order(erin, body, "erin-sold-out");
    db.off("query", onKeyedQuery);
    assert.equal(keyed.status, 409, keyed.text);
    assert.deepEqual(keyedStatements, ["select * from `idempotency_keys`", "select * from `idempotency_keys`"]);
    const unknown = await order(erin, { ...body, items: [...body.items, { productId: "no-such-product", quantity: 1 }] });
    assert.equal(unknown.status, 422, unknown.text);
    assert.deepEqual(
      unknown.body.error.details.map((d: { field: string }) => d.field),
      ["items.no-such-product"],
      "the check names an unknown product as the reserve does",
    );

    // dave's retry with his key still answers his order, without a check: it is no refusal
    // (the check would count one in oversell_refused).
    before = counts();
    const replay = await order(dave, body, "hot-1");
    assert.equal(replay.status, 201, replay.text);
    assert.equal(replay.body.id, won.body.id);
    assert.deepEqual(counts(), before, "a claimed key replays with no check and no reserve");

    // A restock while the mark lives: the read says yes, the mark goes, the reserve sells.
    assert.equal((await call("POST", `/api/products/${hot.id}/stock`, { token: admin, body: { delta: 1 } })).status, 200);
    before = counts();
    const after = await order(erin, body, "erin-2");
    assert.equal(after.status, 201, after.text);
    assert.deepEqual(counts(), [before[0] + 1, before[1] + 1]);
    before = counts();
    assert.equal((await order(erin, body, "erin-3")).status, 409, "sold out again");
    assert.deepEqual(counts(), [before[0] + 1, before[1]], "the passed check cleared the mark: the reserve refused");
    assert.deepEqual(await stockOf(hot.id), { onHand: 2, reserved: 2, available: 0 });
  });

  it("a double submit while the product is marked sold out: the retry that loses the last unit to its own first request replays that order", async () => {
    const register = async (name: string) =>
      (
        await call("POST", "/api/auth/register", {
          body: { email: `${name}-${randomBytes(3).toString("hex")}@example.com`, password: `${name} password`, name },
        })
      ).body.accessToken as string;
    const [fay, gus] = [await register("fay"), await register("gus")];
    const hot = await product(1);
    const body = { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: hot.id, quantity: 1 }] };
    assert.equal((await order(fay, body)).status, 201);
    assert.equal((await order(gus, body)).status, 409, "refused: the product is marked sold out on this node");
    assert.equal((await call("POST", `/api/products/${hot.id}/stock`, { token: admin, body: { delta: 1 } })).status, 200);
    // gus submits twice with one key. The second request looks for the key (nothing yet);
    // then, before its check answers, the first request claims the key and takes the unit.
    const svc = app.broker.getLocalService("order") as unknown as { refuseIfSoldOut: (...a: unknown[]) => Promise<void> };
    const check = svc.refuseIfSoldOut;
    let first: Awaited<ReturnType<typeof order>> | undefined;
    svc.refuseIfSoldOut = async function (this: unknown, ...a: unknown[]) {
      if (!first) {
        svc.refuseIfSoldOut = check;
        first = await order(gus, body, "gus-double");
        assert.equal(first.status, 201, first.text);
      }
      return check.apply(this, a);
    };
    try {
      const second = await order(gus, body, "gus-double");
      assert.equal(second.status, 201, second.text);
      assert.equal(second.body.id, first!.body.id, "the retry answers the order its key made");
    } finally {
      svc.refuseIfSoldOut = check;
    }
  });

  it("cancel before payment releases the stock; after that, paying is 409", async () => {
    const p = await product(3);
    const o = (await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 2 }] })).body;
    const c = await call("POST", `/api/orders/${o.id}/cancel`, { token: alice });
    assert.equal(c.status, 200, c.text);
    assert.equal(c.body.status, "CANCELLED");
    assert.deepEqual(await stockOf(p.id), { onHand: 3, reserved: 0, available: 3 });
    assert.equal((await call("POST", `/api/orders/${o.id}/pay`, { token: alice, body: { provider: "sandbox" } })).status, 409);
    assert.equal((await call("POST", `/api/orders/${o.id}/cancel`, { token: alice })).status, 409);
  });

  it("a success whose product.commit landed, then a cancel, then the success again: refunded, and the sold units back on the shelf", async () => {
    const p = await product(3);
    const o = (await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 2 }] })).body;
    // What a payment.succeeded run leaves when it rolls back after its remote product.commit.
    await app.broker.call("product.commit", { orderId: o.id });
    assert.equal((await call("POST", `/api/orders/${o.id}/cancel`, { token: alice })).status, 200);
    assert.deepEqual(await stockOf(p.id), { onHand: 1, reserved: 0, available: 1 }, "the cancel's release skips committed lines");
    const applied = await app.broker.call("order.applyPayment", {
      paymentId: "f".repeat(32),
      orderId: o.id,
      provider: "sandbox",
      amount: { amount: 2000, currency: "EUR" },
    });
    assert.deepEqual(applied, { outcome: "refunded" });
    assert.deepEqual(await stockOf(p.id), { onHand: 3, reserved: 0, available: 3 });
    // Again (a redelivery): nothing more comes back.
    await app.broker.call("order.applyPayment", {
      paymentId: "f".repeat(32),
      orderId: o.id,
      provider: "sandbox",
      amount: { amount: 2000, currency: "EUR" },
    });
    assert.deepEqual(await stockOf(p.id), { onHand: 3, reserved: 0, available: 3 });
  });

  it("access sweep: another user's order is 404 on every route, also with userId injected", async () => {
    const p = await product(5);
    const o = (await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 1 }] })).body;
    for (const [method, path, body] of [
      ["GET", `/api/orders/${o.id}`, undefined],
      ["GET", `/api/orders/${o.id}?userId=${o.userId}`, undefined],
      ["POST", `/api/orders/${o.id}/cancel`, undefined],
      ["POST", `/api/orders/${o.id}/pay`, { provider: "sandbox" }],
      ["POST", `/api/orders/${o.id}/refunds`, { reason: "mine now", userId: o.userId }],
    ] as const) {
      const r = await call(method, path, { token: bob, body });
      assert.ok(r.status === 404 || (r.status === 422 && body && "userId" in body), `${method} ${path}: ${r.status} ${r.text}`);
    }
    const list = await call("GET", `/api/orders?userId=${o.userId}`, { token: bob });
    assert.equal(list.status, 200);
    assert.ok(!list.body.items.some((x: { id: string }) => x.id === o.id), "a customer's userId filter is ignored");
    assert.equal((await call("GET", `/api/orders/${o.id}`, { token: admin })).status, 200, "admins see every order");
    assert.equal((await call("GET", `/api/orders/${o.id}`)).status, 401);
  });
});

describe("checkout: an unpaid order is cancelled when its reservation expires", () => {
  let app: TestApp;
  before(async () => {
    app = await startTestApp({
      db: "sqlite",
      env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password, RESERVATION_TTL_SECONDS: "1", RESERVATION_SWEEP_INTERVAL_MS: "200" },
    });
  });
  after(async () => app?.stop());

  it("TTL + one sweep: CANCELLED, stock back, the user notified", async () => {
    const admin = (await http(app.baseUrl, "POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    const user = (
      await http(app.baseUrl, "POST", "/api/auth/register", { body: { email: "late@example.com", password: "late payer 1", name: "Late" } })
    ).body.accessToken;
    const p = (
      await http(app.baseUrl, "POST", "/api/products", {
        token: admin,
        body: {
          sku: `EX-${randomBytes(4).toString("hex")}`,
          name: "Expiring",
          description: "",
          category: "x",
          price: { amount: 100, currency: "EUR" },
          stock: 2,
        },
      })
    ).body;
    const o = (
      await http(app.baseUrl, "POST", "/api/orders", {
        token: user,
        body: { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 2 }] },
      })
    ).body;
    assert.equal(o.status, "PENDING_PAYMENT");
    await eventually(
      "cancelled by expiry",
      async () => (await http(app.baseUrl, "GET", `/api/orders/${o.id}`, { token: user })).body.status === "CANCELLED",
    );
    assert.deepEqual((await http(app.baseUrl, "GET", `/api/products/${p.id}`)).body.stock, { onHand: 2, reserved: 0, available: 2 });
    await eventually("cancellation notified", async () => {
      const n = (await http(app.baseUrl, "GET", "/api/notifications", { token: user })).body;
      return ((Array.isArray(n) ? n : n.items) as { type: string }[]).some((x) => x.type === "order.cancelled");
    });
  });
});

describe("a second charge is refunded and the buyer told, and the kept one stays refundable (embedded, payments time out after 1 s)", () => {
  let app: TestApp;
  let buyer = "";
  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
  const complete = async (pay: { id: string; payUrl: string }) => {
    const token = new URL(pay.payUrl).searchParams.get("token");
    const r = await call("POST", `/api/payments/sandbox/${pay.id}/complete`, { body: { outcome: "success", token } });
    assert.equal(r.status, 202, r.text);
  };

  before(async () => {
    app = await startTestApp({
      db: "sqlite",
      env: {
        ADMIN_EMAIL: ADMIN.email,
        ADMIN_PASSWORD: ADMIN.password,
        PAYMENT_PENDING_TIMEOUT_S: "1",
        PAYMENT_RECONCILE_INTERVAL_MS: "200",
      },
    });
    buyer = (await call("POST", "/api/auth/register", { body: { email: "twice@example.com", password: "twice password", name: "Twice" } }))
      .body.accessToken;
  });
  after(async () => app?.stop());

  it("pay, time out, pay again and succeed, then the first one succeeds late: it is refunded in full and a payment.refunded notification says so, once", async () => {
    const admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    const p = (
      await call("POST", "/api/products", {
        token: admin,
        body: {
          sku: `TW-${randomBytes(4).toString("hex")}`,
          name: "Twice Widget",
          description: "",
          category: "widgets",
          price: { amount: 700, currency: "EUR" },
          stock: 5,
        },
      })
    ).body;
    const o = (
      await call("POST", "/api/orders", {
        token: buyer,
        body: { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 1 }] },
      })
    ).body;
    const first = (await call("POST", `/api/orders/${o.id}/pay`, { token: buyer, body: { provider: "sandbox" } })).body;
    await eventually(
      "the unanswered payment reconciled FAILED",
      async () => (await call("GET", `/api/payments/${first.id}`, { token: buyer })).body.status === "FAILED",
      15_000,
    );
    const second = (await call("POST", `/api/orders/${o.id}/pay`, { token: buyer, body: { provider: "sandbox" } })).body;
    assert.notEqual(second.id, first.id);
    await complete(second);
    await eventually(
      "PAID by the second payment",
      async () => (await call("GET", `/api/orders/${o.id}`, { token: buyer })).body.status === "PAID",
    );
    await complete(first);
    const order = await eventually(
      "the late charge refunded",
      async () => {
        const b = (await call("GET", `/api/orders/${o.id}`, { token: buyer })).body;
        return b.refunds?.some((r: { paymentId?: string; status: string }) => r.status === "SUCCEEDED") && b;
      },
      20_000,
    );
    assert.equal(order.status, "PAID", "the order keeps its own payment");
    const notes = await eventually("told", async () => {
      const list = (await call("GET", "/api/notifications", { token: buyer })).body.items as {
        type: string;
        data: { paymentId?: string; amount?: { amount: number } };
      }[];
      return list.some((n) => n.type === "payment.refunded") && list;
    });
    const refunded = notes.filter((n) => n.type === "payment.refunded");
    assert.equal(refunded.length, 1);
    assert.equal(refunded[0].data.paymentId, first.id);
    assert.equal(refunded[0].data.amount?.amount, 700);
    assert.equal(notes.filter((n) => n.type === "payment.succeeded").length, 1, "one success notification: the order's own");

    // The automatic refund of the second charge is not the order's money: the payment the
    // order kept is still refundable in full (it was "nothing left to refund" before).
    const mine = await call("POST", `/api/orders/${o.id}/refunds`, { token: buyer, body: { reason: "changed my mind" } });
    assert.equal(mine.status, 202, mine.text);
    assert.equal(mine.body.paymentId, second.id);
    assert.equal(mine.body.amount.amount, 700);
    const back = await eventually("REFUNDED", async () => {
      const b = (await call("GET", `/api/orders/${o.id}`, { token: buyer })).body;
      return b.status === "REFUNDED" && b;
    });
    assert.equal(back.paymentStatus, "refunded");
    assert.deepEqual(back.refundedTotal, { amount: 700, currency: "EUR" });
  });
});

/**
 * On MariaDB, where reads and writes run on separate pooled connections at once (on SQLite's
 * single connection the window between two reads was too narrow to hit on purpose): a view is
 * read as of one moment (one transaction, InnoDB's consistent snapshot).
 */
describe("an order read as of one moment (MariaDB)", () => {
  let app: TestApp;
  let admin = "";
  let alice = "";
  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
  const getOrder = async (token: string, id: string) => (await call("GET", `/api/orders/${id}`, { token })).body;
  before(async () => {
    app = await startTestApp({ db: "mariadb", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    alice = (await call("POST", "/api/auth/register", { body: { email: "alice@example.com", password: "alice password", name: "Alice" } }))
      .body.accessToken;
  });
  after(async () => app?.stop());
  const product = async (stock: number, amount: number) =>
    (
      await call("POST", "/api/products", {
        token: admin,
        body: {
          sku: `CO-${randomBytes(4).toString("hex")}`,
          name: "Checkout Widget",
          description: "",
          category: "widgets",
          price: { amount, currency: "EUR" },
          stock,
        },
      })
    ).body as { id: string };
  const order = (token: string, body: unknown) => call("POST", "/api/orders", { token, body });
  const paySandbox = async (token: string, orderId: string, outcome: "success") => {
    const pay = await call("POST", `/api/orders/${orderId}/pay`, { token, body: { provider: "sandbox" } });
    const payUrl = new URL(pay.body.payUrl);
    await http(app.baseUrl, "GET", payUrl.pathname + payUrl.search);
    const done = await call("POST", `/api/payments/sandbox/${pay.body.id}/complete`, {
      body: { outcome, token: payUrl.searchParams.get("token") },
    });
    assert.equal(done.status, 202, done.text);
  };

  it("reads racing ship and deliver never show a status its history does not end with", async () => {
    const p = await product(5, 700);
    const o = (await order(alice, { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity: 1 }] })).body;
    await paySandbox(alice, o.id, "success");
    await eventually("PAID", async () => (await getOrder(alice, o.id)).status === "PAID");
    // Reads through the broker (no HTTP between them): each is a findOrder and four part reads,
    // which a commit could land between before the views were one transaction.
    const read = () =>
      app.broker.call<
        {
          status: string;
          history: { status: string }[];
        },
        unknown
      >("order.get", { id: o.id }, { meta: { user: { id: o.userId, role: "customer" } } });
    // Ten readers read until both writes are done, giving the event loop a turn between reads
    // (the writes' HTTP requests are served by this same process). Without one transaction per
    // view this failed at once with views like "PAID / PENDING_PAYMENT,PAID,SHIPPED"; the check
    // on SHIPPED below makes sure the reads did overlap the writes.
    let writing = true;
    const views: { status: string; history: { status: string }[] }[] = [];
    const readers = Array.from({ length: 10 }, async () => {
      while (writing) {
        views.push(await read());
        await new Promise((r) => setImmediate(r));
      }
    });
    try {
      assert.equal(
        (await call("POST", `/api/orders/${o.id}/ship`, { token: admin, body: { carrier: "SF", trackingNumber: "T1" } })).status,
        200,
      );
      assert.equal((await call("POST", `/api/orders/${o.id}/deliver`, { token: admin })).status, 200);
    } finally {
      writing = false;
      await Promise.all(readers);
    }
    const torn = views
      .filter((v) => v.history.at(-1)?.status !== v.status)
      .map((v) => `${v.status} / ${v.history.map((h) => h.status).join(",")}`);
    assert.deepEqual(torn, []);
    assert.ok(
      views.some((v) => v.status === "SHIPPED"),
      "the reads ran between the writes",
    );
    assert.equal((await getOrder(alice, o.id)).status, "DELIVERED");
  });
});
