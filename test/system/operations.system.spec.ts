/**
 * Issue #7's CI runs against the local cluster (test/support/cluster.ts: k8s/base's replica
 * counts, one process per pod; #17's bus: three private RabbitMQ nodes clustered and three
 * etcd members; a private MariaDB):
 * - gRPC (issue #15), after the chaos run for the same reason as the wire's: the acceptance flow
 *   through one of the two gRPC edges, with its order and notification streams; that edge
 *   killed (SIGKILL), the streams resumed on the other edge with their last ids, missing
 *   nothing; the edge restarted;
 * - the wire (issue #14), last because its delivered, refunded and returned order is outside
 *   the chaos run's invariants: a whole checkout (register, address, cart, order, pay, PAID,
 *   notification, ship, deliver, refund, return) while RabbitMQ's firehose captures every
 *   message; each business action's params and answer and each business event decode with
 *   protobufjs from proto/ alone, and no node counted a JSON fallback (a planted unknown
 *   field shows the counter counts);
 * - the load smoke: shoppers following Online Boutique's mix for 10 s; any error, or fewer
 *   than 50 requests, fails;
 * - the short chaos run: an order, a payment and a product node killed (one of each, the
 *   replica drawn by a seed that changes per run and is logged), each as a checkout request
 *   through its service was sent, and restarted; one RabbitMQ node killed (-9) and started
 *   again; MariaDB killed and restarted, under load; then the checkout invariants must hold,
 *   every order the shoppers were answered 201 for among them, and no business event is left
 *   undelivered (`npm run chaos` is the full run: more kills, each RabbitMQ node in turn, a
 *   rolling restart; etcd under traffic, an outage and a member's then the leader's loss, is
 *   proved in CI by lib/discovery/resilient-etcd3-discoverer.system.spec.ts, with no failed
 *   call allowed).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { CHAOS_NODE_ENV, CHECKOUT_ROUTES, formatChaosReport, runChaos } from "../support/chaos";
import { moleculerName, startLocalCluster, type LocalCluster } from "../support/cluster";
import { randomBytes } from "node:crypto";
import { http } from "../support/app";
import { eventually } from "../support/eventually";
import { runLoad } from "../support/load";
import { counterSum, readCaptured, startFirehose } from "../support/wire-capture";
import { MeridianGrpc } from "../support/grpc-client";

const ADMIN = { email: "ops-admin@example.com", password: "ops-admin-password" };
const TTL_S = 15;
const log = (line: string) => process.stderr.write(`  [ops ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

describe("operations: the local cluster under load and chaos", () => {
  let cluster: LocalCluster;

  before(async () => {
    cluster = await startLocalCluster({ ha: true, env: CHAOS_NODE_ENV(TTL_S), admin: ADMIN, log });
  });
  after(async () => {
    await cluster?.stop();
  });

  it("npm run cluster's topology: every service at k8s/base's replica count, seen from every gateway", async () => {
    for (const gw of [...cluster.nodes.values()].filter((n) => n.service === "gateway")) {
      const seen = await cluster.servicesSeenBy(gw.id);
      for (const n of cluster.nodes.values()) assert.ok((seen.get(moleculerName(n.service)) ?? 0) >= 1, `${gw.id} sees ${n.service}`);
    }
    assert.ok(cluster.gatewayUrls.length >= 2, "two gateways");
  });

  it("load smoke: 10 s of shoppers, no error, at least 50 requests, orders paid", async () => {
    const summary = await runLoad({ urls: cluster.gatewayUrls, shoppers: 4, durationS: 10, thinkMs: 100, admin: ADMIN, seed: 7 });
    log(
      `load: ${summary.requests} requests (${summary.requestsPerS.toFixed(1)}/s), ${summary.errors.total} errors, ${summary.orders.paid} orders paid`,
    );
    assert.deepEqual(summary.errors.byKind, [], "no errors");
    assert.ok(summary.requests >= 50, `${summary.requests} requests`);
    assert.ok(summary.orders.paid >= 1, "orders paid through the sandbox");
  });

  it("chaos, short: an order, a payment and a product node killed as checkout requests through them were sent, a RabbitMQ node killed, MariaDB restarted, under load; every order answered 201 exists and the invariants hold", async () => {
    const report = await runChaos({
      cluster,
      faults: ["kill", "kill", "kill", "rabbitmq-kill", "mariadb"],
      killServices: ["order", "payment", "product"],
      gapS: 3,
      etcdOutageS: 20,
      shoppers: 4,
      thinkMs: 200,
      reservationTtlS: TTL_S,
      settleTimeoutS: 150,
      log,
    });
    process.stderr.write(`${formatChaosReport(report)}\n`);
    assert.deepEqual(
      report.faults.map((f) => f.kind),
      ["kill", "kill", "kill", "rabbitmq-kill", "mariadb"],
    );
    const kills = report.faults.filter((f) => f.kind === "kill");
    assert.deepEqual(
      kills.map((f) => f.service),
      ["order", "payment", "product"],
      "one node of each checkout service",
    );
    for (const k of kills) {
      const node = cluster.nodes.get(k.target);
      assert.equal(node?.service, k.service, `${k.target} is a ${k.service} node`);
      assert.ok(
        CHECKOUT_ROUTES[k.service!]!.includes(k.during!),
        `${k.target} killed as a checkout request through ${k.service} was sent (${k.during})`,
      );
    }
    assert.ok(report.load.orders.paid > 0, "orders were paid during the run");
    assert.equal(report.load.orderIds.length, report.load.orders.created, "every order answered 201 was recorded");
    assert.ok(report.load.orderIds.length > 0, "orders were created");
    assert.equal(
      report.invariants.figures.knownOrders,
      new Set(report.load.orderIds).size,
      "the invariants looked up every order answered 201",
    );
    assert.deepEqual(report.invariants.problems, [], "invariants hold after the faults");
  });
  it("gRPC: the acceptance flow through one edge; its streams survive the edge's death by reconnecting to the other with their last ids", async () => {
    const [[idA, addrA], [, addrB]] = [...cluster.grpcAddresses.entries()] as [string, string][];
    assert.ok(addrA && addrB, "two gRPC edges (k8s/base's replicas)");
    const a = new MeridianGrpc(addrA);
    const b = new MeridianGrpc(addrB);
    const O = "meridian.order.v1.OrderService";
    const LIVE = "meridian.live.v1.LiveService";
    try {
      const admin = (await a.call("meridian.user.v1.UserService", "Login", ADMIN)).value.accessToken;
      const token = (
        await a.call("meridian.user.v1.UserService", "Register", {
          email: `grpc-${randomBytes(4).toString("hex")}@example.com`,
          password: "grpc password 1",
          name: "Grpc",
        })
      ).value.accessToken;
      const product = (
        await a.call(
          "meridian.product.v1.ProductService",
          "Create",
          {
            sku: `GRPC-${randomBytes(4).toString("hex")}`,
            name: "Grpc Cluster Lamp",
            description: "",
            category: "lamps",
            price: { amount: 4200, currency: "EUR" },
            stock: 5,
          },
          { token: admin },
        )
      ).value;
      await eventually(
        "searchable",
        async () =>
          (await a.call("meridian.search.v1.SearchService", "Search", { q: "grpc cluster lamp" })).value.items.some(
            (p: { id: string }) => p.id === product.id,
          ),
        30_000,
      );
      await a.call("meridian.cart.v1.CartService", "AddItem", { productId: product.id, quantity: 2 }, { token });
      const key = `grpc-${randomBytes(4).toString("hex")}`;
      const order = (
        await a.call(
          O,
          "Create",
          { shippingAddress: { recipient: "G", phone: "123456", line1: "1 Road", city: "Town", postalCode: "12345", country: "CN" } },
          { token, idempotencyKey: key },
        )
      ).value;
      const watch = a.stream(LIVE, "WatchOrder", { id: order.id }, { token });
      const notes = a.stream(LIVE, "StreamNotifications", {}, { token });
      await watch.until("the current state", () => true, 30_000);
      const pay = (await a.call(O, "Pay", { id: order.id, provider: "sandbox" }, { token })).value;
      await a.call("meridian.payment.v1.PaymentService", "SandboxComplete", {
        paymentId: pay.id,
        outcome: "success",
        token: new URL(pay.payUrl).searchParams.get("token"),
      });
      const paid = await watch.until("PAID on the stream", (u) => u.order.status === "PAID", 30_000);
      const note = await notes.until(
        "the payment's notification on the stream",
        (n) => n.type === "payment.succeeded" && n.data.orderId === order.id,
        30_000,
      );

      // The edge the streams were on dies; the order ships while the client is away.
      await cluster.kill(idA, "SIGKILL");
      for (const s of [watch, notes]) {
        const end = await s.ended;
        assert.ok(end !== "OK" && ["UNAVAILABLE", "CANCELLED", "INTERNAL"].includes(end.code), `the stream ended: ${JSON.stringify(end)}`);
      }
      await b.call(O, "Ship", { id: order.id, carrier: "SF", trackingNumber: "SF-GRPC" }, { token: admin });
      const rewatch = b.stream(LIVE, "WatchOrder", { id: order.id, after: paid.sequence }, { token });
      const renotes = b.stream(LIVE, "StreamNotifications", { after: note.id }, { token });
      try {
        const shipped = await rewatch.until("SHIPPED, missed while away", (u) => u.order.status === "SHIPPED", 30_000);
        assert.equal(rewatch.received[0], shipped, "the first update after the reconnect is the state missed");
        await renotes.until(
          "the shipping notification, missed while away",
          (n) => n.type === "order.shipped" && n.data.orderId === order.id,
          30_000,
        );
        assert.ok(!renotes.received.some((n) => n.id === note.id), "nothing already seen comes again");
        await b.call(O, "Deliver", { id: order.id }, { token: admin });
        await rewatch.until("DELIVERED", (u) => u.order.status === "DELIVERED", 30_000);
        const ret = (
          await b.call(
            O,
            "RequestReturn",
            { id: order.id, items: [{ productId: product.id, quantity: 1 }], reason: "too bright" },
            { token },
          )
        ).value;
        await b.call(O, "ApproveReturn", { id: ret.id, restock: true }, { token: admin });
        await eventually(
          "the return refunded",
          async () => (await b.call(O, "Get", { id: order.id }, { token })).value.refundedTotal.amount === 4200,
          30_000,
        );
        await renotes
          .until("the return's notification", (n) => n.type === "return.approved" && n.data.orderId === order.id, 30_000)
          .catch(async (err: Error) => {
            // Which link of the chain failed (seen once in CI): was the notification made (then the
            // stream was not woken: notification.created or the edge's broadcast queue), or not?
            const stored = await b.call("meridian.notification.v1.NotificationService", "List", {}, { token }).then(
              (r) => (r.value.items as { type: string }[]).map((n) => n.type),
              (e: Error) => [`(List failed: ${e.message})`],
            );
            throw new Error(`${err.message}; the user's notifications now: ${stored.join(", ")}`);
          });
      } finally {
        rewatch.cancel();
        renotes.cancel();
      }
    } finally {
      a.close();
      b.close();
    }
    await cluster.restart(idA);
    await cluster.waitHealthy();
  });

  it("the wire: a whole checkout travels as contract messages, read back from proto/ alone; no node fell back to JSON", async () => {
    const brokers = cluster.rabbitCluster?.nodes ?? [cluster.rabbit!];
    const firehose = await startFirehose(
      brokers.map((b) => b.ctl),
      brokers[0].uri,
    );
    const base = cluster.gatewayUrls[0];
    const seen: { email?: string; productId?: string; sku?: string; orderId?: string } = {};
    const step = async (name: string, method: string, path: string, opts: Parameters<typeof http>[3] = {}) => {
      const r = await http(base, method, path, opts);
      assert.ok(r.status >= 200 && r.status < 300, `${name}: ${method} ${path} answered ${r.status}: ${r.text.slice(0, 300)}`);
      return r.body;
    };
    try {
      const admin = (await step("admin login", "POST", "/api/auth/login", { body: ADMIN })).accessToken;
      const email = `wire-${randomBytes(4).toString("hex")}@example.com`;
      const me = await step("register", "POST", "/api/auth/register", { body: { email, password: "wire password 1", name: "Wire" } });
      seen.email = email;
      const token = me.accessToken;
      const product = await step("create product", "POST", "/api/products", {
        token: admin,
        body: {
          sku: `WIRE-${randomBytes(4).toString("hex")}`,
          name: "Wire Lamp",
          description: "A lamp",
          category: "lamps",
          price: { amount: 4200, currency: "EUR" },
          stock: 5,
        },
      });
      Object.assign(seen, { productId: product.id, sku: product.sku });
      await step("product page", "GET", `/api/products/${product.id}`);
      await step("catalog page 1", "GET", "/api/products?page=1&pageSize=5");
      await step("search", "GET", "/api/search?q=lamp&page=1&pageSize=5&inStock=true");
      const address = await step("address", "POST", "/api/users/me/addresses", {
        token,
        body: { recipient: "Wire", phone: "123456", line1: "1 Road", city: "Town", postalCode: "12345", country: "CN" },
      });
      await step("add to cart", "POST", "/api/cart/items", { token, body: { productId: product.id, quantity: 2 } });
      await step("cart", "GET", "/api/cart", { token });
      const order = await step("order", "POST", "/api/orders", {
        token,
        body: { addressId: address.id },
        headers: { "idempotency-key": `wire-${randomBytes(4).toString("hex")}` },
      });
      seen.orderId = order.id;
      const pay = await step("pay", "POST", `/api/orders/${order.id}/pay`, { token, body: { provider: "sandbox" } });
      const payToken = new URL(pay.payUrl).searchParams.get("token");
      await step("sandbox page", "GET", `/sandbox/pay/${pay.id}?token=${payToken}`);
      await step("sandbox complete", "POST", `/api/payments/sandbox/${pay.id}/complete`, { body: { outcome: "success", token: payToken } });
      await eventually("PAID", async () => (await http(base, "GET", `/api/orders/${order.id}`, { token })).body.status === "PAID", 30_000);
      await step("payment", "GET", `/api/payments/${pay.id}`, { token });
      await eventually(
        "notified",
        async () => {
          const b = (await http(base, "GET", "/api/notifications", { token })).body;
          return (Array.isArray(b) ? b : (b.items ?? [])).length > 0;
        },
        30_000,
      );
      await step("ship", "POST", `/api/orders/${order.id}/ship`, { token: admin, body: { carrier: "SF", trackingNumber: "SF1" } });
      await step("deliver", "POST", `/api/orders/${order.id}/deliver`, { token: admin });
      await step("refund", "POST", `/api/orders/${order.id}/refunds`, { token: admin, body: { amount: 100, reason: "scratch" } });
      await eventually(
        "partly refunded",
        async () => (await http(base, "GET", `/api/orders/${order.id}`, { token })).body.paymentStatus === "partially_refunded",
        30_000,
      );
      const ret = await step("return", "POST", `/api/orders/${order.id}/returns`, {
        token,
        body: { items: [{ productId: product.id, quantity: 1 }], reason: "too bright" },
      });
      await step("approve", "POST", `/api/returns/${ret.id}/approve`, { token: admin, body: { restock: true } });
      // The return's refund (one unit) settles on top of the partial one.
      await eventually(
        "return refunded",
        async () => (await http(base, "GET", `/api/orders/${order.id}`, { token })).body.refundedTotal?.amount === 100 + 4200,
        30_000,
      );
      await step("recommendations", "GET", "/api/recommendations?limit=5", { token });
      await step("also bought", "GET", `/api/products/${product.id}/also-bought?limit=5`);
    } finally {
      await firehose.stop();
    }

    const report = readCaptured(firehose.messages, cluster.namespace);
    log(
      `wire: ${firehose.messages.length} messages; ${report.requests.size} actions called, ${report.responses.size} answered, ${report.events.size} events, all as contract messages`,
    );
    assert.deepEqual(report.problems, [], "every business payload is its contract message");
    for (const a of [
      "user.register",
      "user.getAddress",
      "product.create",
      "product.reserve",
      "product.commit",
      "cart.addItem",
      "cart.lines",
      "order.create",
      "order.pay",
      "payment.create",
      "payment.sandboxComplete",
      "order.ship",
      "order.refund",
      "payment.refund",
      "order.requestReturn",
      "order.approveReturn",
    ])
      assert.ok(report.requests.has(a), `${a} was called over the wire (seen: ${[...report.requests.keys()].sort().join(", ")})`);
    for (const a of ["user.getAddress", "product.reserve", "cart.lines", "order.create", "payment.create"])
      assert.ok(report.responses.has(a), `${a} answered over the wire`);
    for (const e of [
      "user.registered",
      "product.created",
      "stock.changed",
      "order.created",
      "payment.succeeded",
      "order.paid",
      "order.shipped",
      "order.delivered",
      "refund.succeeded",
      "order.refunded",
      "return.requested",
      "return.approved",
    ])
      assert.ok(report.events.has(e), `${e} went over RabbitMQ (seen: ${[...report.events.keys()].sort().join(", ")})`);

    // The decoded values are the ones the client sent and got (not merely bytes that parse).
    const decoded = (key: string) => report.decoded.get(key) ?? [];
    assert.ok(
      decoded("REQ user.register").some((p) => p.email === seen.email),
      "user.register's params decode to the e-mail sent",
    );
    assert.ok(
      decoded("RES product.create").some((p) => p.id === seen.productId && p.sku === seen.sku),
      "product.create's answer decodes to the product created",
    );
    assert.ok(
      decoded("REQ product.reserve").some((p) => p.orderId === seen.orderId),
      "product.reserve's params name the order",
    );
    assert.ok(
      decoded("event order.created").some((p) => p.orderId === seen.orderId),
      "order.created's payload names the order",
    );
    assert.ok(
      decoded("event order.paid").some((p) => p.orderId === seen.orderId && (p.total as { amount: number }).amount === 8400),
      "order.paid carries the order and its total",
    );

    const scrape = async (port: number) =>
      counterSum(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), "meridian_serializer_json_fallback_total");
    for (const n of cluster.nodes.values()) assert.equal(await scrape(n.metricsPort), 0, `${n.id} sent no business payload as JSON`);
    // Planted: a field outside the contract travels as JSON (the validator answers 422), and is counted.
    const token = (await http(base, "POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    assert.equal((await http(base, "PATCH", "/api/users/me", { token, body: { role: "customer" } })).status, 422);
    let counted = 0;
    for (const n of cluster.nodes.values()) if (n.service === "gateway") counted += await scrape(n.metricsPort);
    assert.equal(counted, 1, "the gateway counted the planted fallback");
  });
});
