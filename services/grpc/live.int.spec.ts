/**
 * The live feeds on a real embedded app: gRPC server streams (meridian.live.v1.LiveService,
 * client from proto/ alone) and the same feeds as Server-Sent Events on REST. The order
 * stream starts with the current state and follows the status changes as they commit; the
 * notification stream delivers each new notification; a reconnect with the last id misses
 * nothing; someone else's order is NOT_FOUND on both edges.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { eventually } from "../../test/support/eventually";
import { MeridianGrpc } from "../../test/support/grpc-client";
import { sseReader } from "../../test/support/sse";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
const ADDRESS = { recipient: "Alice", phone: "+86 10 0000 0000", line1: "1 Road", city: "Beijing", postalCode: "100000", country: "CN" };
const LIVE = "meridian.live.v1.LiveService";
const O = "meridian.order.v1.OrderService";
const N = "meridian.notification.v1.NotificationService";

describe("live feeds (embedded): gRPC streams and Server-Sent Events", () => {
  let app: TestApp;
  let g: MeridianGrpc;
  let admin = "";
  let alice = "";
  let bob = "";
  let productId = "";
  const order = async (token: string) =>
    (await g.call(O, "Create", { shippingAddress: ADDRESS, items: { items: [{ productId, quantity: 1 }] } }, { token })).value as {
      id: string;
    };
  /** A new account of its own (a session: user, accessToken, refreshToken): a test may end its login. */
  const newUser = async (name: string) =>
    (
      await g.call("meridian.user.v1.UserService", "Register", {
        email: `${name.toLowerCase()}-${randomBytes(3).toString("hex")}@example.com`,
        password: `${name.toLowerCase()} password`,
        name,
      })
    ).value;
  const pay = async (orderId: string, token: string) => {
    const p = (await g.call(O, "Pay", { id: orderId, provider: "sandbox" }, { token })).value;
    await g.call("meridian.payment.v1.PaymentService", "SandboxComplete", {
      paymentId: p.id,
      outcome: "success",
      token: new URL(p.payUrl).searchParams.get("token"),
    });
  };

  before(async () => {
    app = await startTestApp({ env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    g = new MeridianGrpc(app.grpcAddress);
    admin = (await g.call("meridian.user.v1.UserService", "Login", ADMIN)).value.accessToken;
    alice = (
      await g.call("meridian.user.v1.UserService", "Register", { email: "alice@example.com", password: "alice password", name: "Alice" })
    ).value.accessToken;
    bob = (await g.call("meridian.user.v1.UserService", "Register", { email: "bob@example.com", password: "bob password 1", name: "Bob" }))
      .value.accessToken;
    productId = (
      await g.call(
        "meridian.product.v1.ProductService",
        "Create",
        {
          sku: `L-${randomBytes(4).toString("hex")}`,
          name: "Live Lamp",
          description: "",
          category: "lamps",
          price: { amount: 990, currency: "EUR" },
          stock: 50,
        },
        { token: admin },
      )
    ).value.id;
  });
  after(async () => {
    g?.close();
    await app?.stop();
  });

  it("WatchOrder: the current state first, then each status change as it commits; StreamNotifications: each new notification, live", async () => {
    const o = await order(alice);
    const watch = g.stream(LIVE, "WatchOrder", { id: o.id }, { token: alice });
    const notes = g.stream(LIVE, "StreamNotifications", {}, { token: alice });
    try {
      const first = await watch.until("the current state", () => true);
      assert.equal(first.order.status, "PENDING_PAYMENT");
      assert.equal(first.sequence, first.order.history.length);
      await pay(o.id, alice);
      const paid = await watch.until("PAID", (u) => u.order.status === "PAID");
      assert.ok(paid.sequence > first.sequence);
      const note = await notes.until("the payment's notification", (n) => n.type === "payment.succeeded" && n.data.orderId === o.id);
      assert.equal(note.title.length > 0, true);
      await g.call(O, "Ship", { id: o.id, carrier: "SF", trackingNumber: "SF1" }, { token: admin });
      await watch.until("SHIPPED", (u) => u.order.status === "SHIPPED");
      await notes.until("the shipping notification", (n) => n.type === "order.shipped" && n.data.orderId === o.id);
      // Sequences only grow, and each update's history is the whole story so far.
      const seqs = watch.received.map((u) => u.sequence);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => a - b),
      );
      assert.equal(new Set(seqs).size, seqs.length, "one update per change seen");
      // Notifications come once each, oldest first.
      const ids = notes.received.map((n) => n.id);
      assert.equal(new Set(ids).size, ids.length);
    } finally {
      watch.cancel();
      notes.cancel();
    }
  });

  it("a reconnect with the last id misses nothing: notifications created meanwhile come first, in order; the order's current state if it changed", async () => {
    const o = await order(alice);
    const notes = g.stream(LIVE, "StreamNotifications", {}, { token: alice });
    const watch = g.stream(LIVE, "WatchOrder", { id: o.id }, { token: alice });
    await watch.until("the current state", () => true);
    await pay(o.id, alice);
    const seen = await notes.until("paid", (n) => n.type === "payment.succeeded" && n.data.orderId === o.id);
    const lastUpdate = await watch.until("PAID", (u) => u.order.status === "PAID");
    notes.cancel();
    watch.cancel();
    // Disconnected: the order ships and is delivered.
    await g.call(O, "Ship", { id: o.id, carrier: "SF", trackingNumber: "SF2" }, { token: admin });
    await g.call(O, "Deliver", { id: o.id }, { token: admin });
    await eventually("two notifications more", async () => {
      const list = (await g.call(N, "List", {}, { token: alice })).value.items as { type: string; data: { orderId: string } }[];
      return list.filter((n) => n.data.orderId === o.id && (n.type === "order.shipped" || n.type === "order.delivered")).length === 2;
    });
    const again = g.stream(LIVE, "StreamNotifications", { after: seen.id }, { token: alice });
    const rewatch = g.stream(LIVE, "WatchOrder", { id: o.id, after: lastUpdate.sequence }, { token: alice });
    try {
      await again.until("delivered", (n) => n.type === "order.delivered" && n.data.orderId === o.id);
      // Exactly what was created after the last one seen, oldest first.
      const all = ((await g.call(N, "List", { pageSize: 100 }, { token: alice })).value.items as { id: string }[])
        .map((n) => n.id)
        .reverse();
      assert.deepEqual(
        again.received.map((n) => n.id),
        all.slice(all.indexOf(seen.id) + 1),
      );
      const current = await rewatch.until("the state it missed", () => true);
      assert.equal(current.order.status, "DELIVERED");
      assert.deepEqual(
        current.order.history.map((h: { status: string }) => h.status).slice(-2),
        ["SHIPPED", "DELIVERED"],
        "the history holds each change missed",
      );
    } finally {
      again.cancel();
      rewatch.cancel();
    }
    // A reconnect with the current sequence sends nothing until the next change.
    const quiet = g.stream(
      LIVE,
      "WatchOrder",
      { id: o.id, after: (await g.call(O, "Get", { id: o.id }, { token: alice })).value.history.length },
      { token: alice },
    );
    try {
      await g.call(O, "Get", { id: o.id }, { token: alice });
      const ret = (
        await g.call(O, "RequestReturn", { id: o.id, items: [{ productId, quantity: 1 }], reason: "changed my mind" }, { token: alice })
      ).value;
      await g.call(O, "ApproveReturn", { id: ret.id, restock: true }, { token: admin });
      await eventually("refunded", async () => (await g.call(O, "Get", { id: o.id }, { token: alice })).value.status === "REFUNDED");
      const refunded = await quiet.until("REFUNDED", (u) => u.order.status === "REFUNDED");
      assert.equal(quiet.received[0], refunded, "nothing before the next change");
    } finally {
      quiet.cancel();
    }
  });

  it("access: someone else's order is NOT_FOUND, no token is UNAUTHENTICATED, an unknown `after` is NOT_FOUND", async () => {
    const o = await order(alice);
    const theirs = g.stream(LIVE, "WatchOrder", { id: o.id }, { token: bob });
    const f = await theirs.ended;
    assert.ok(f !== "OK" && f.code === "NOT_FOUND" && f.reason === "NOT_FOUND", JSON.stringify(f));
    assert.equal(theirs.received.length, 0);
    const anon = await g.stream(LIVE, "StreamNotifications", {}).ended;
    assert.ok(anon !== "OK" && anon.code === "UNAUTHENTICATED");
    // Alice's notification id is not Bob's cursor.
    const aliceNote = ((await g.call(N, "List", {}, { token: alice })).value.items as { id: string }[])[0];
    const stolen = await g.stream(LIVE, "StreamNotifications", { after: aliceNote.id }, { token: bob }).ended;
    assert.ok(stolen !== "OK" && stolen.code === "NOT_FOUND");
  });

  it("Server-Sent Events: the same feeds on REST, resumed by Last-Event-ID; errors before the stream are JSON", async () => {
    const o = await order(alice);
    const res = await fetch(`${app.baseUrl}/api/orders/${o.id}/events`, { headers: { authorization: `Bearer ${alice}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
    const orderEvents = sseReader(res);
    const notesRes = await fetch(`${app.baseUrl}/api/notifications/stream`, { headers: { authorization: `Bearer ${alice}` } });
    const notes = sseReader(notesRes);
    try {
      const first = await orderEvents.until("the current state", () => true);
      assert.equal(first.event, "order");
      assert.equal(first.id, String(first.data.sequence));
      assert.equal(first.data.order.status, "PENDING_PAYMENT");
      await pay(o.id, alice);
      await orderEvents.until("PAID", (e) => e.data.order.status === "PAID");
      const note = await notes.until(
        "notified",
        (e) => e.event === "notification" && e.data.type === "payment.succeeded" && e.data.data.orderId === o.id,
      );
      assert.equal(note.id, note.data.id);
      await notes.close();
      await g.call(O, "Ship", { id: o.id, carrier: "SF", trackingNumber: "SF3" }, { token: admin });
      // EventSource's reconnect: Last-Event-ID.
      const resumed = sseReader(
        await fetch(`${app.baseUrl}/api/notifications/stream`, {
          headers: { authorization: `Bearer ${alice}`, "last-event-id": note.id! },
        }),
      );
      try {
        await resumed.until(
          "the shipping notification, missed while away",
          (e) => e.data.type === "order.shipped" && e.data.data.orderId === o.id,
        );
      } finally {
        await resumed.close();
      }
    } finally {
      await orderEvents.close();
      await notes.close();
    }
    const theirs = await http(app.baseUrl, "GET", `/api/orders/${o.id}/events`, { token: bob });
    assert.equal(theirs.status, 404);
    assert.equal(theirs.body.error.code, "NOT_FOUND");
    assert.equal((await http(app.baseUrl, "GET", "/api/notifications/stream")).status, 401);
    const bad = await http(app.baseUrl, "GET", "/api/notifications/stream", {
      token: alice,
      headers: { "last-event-id": "not a valid id!" },
    });
    assert.equal(bad.status, 422);
  });

  it("streams end when the client goes, on both edges: no watcher is left behind", async () => {
    const o = await order(bob);
    const feedsOf = (service: string) =>
      (app.broker.getLocalService(service) as unknown as { liveFeeds: { open: { orders: number; notifications: number } } }).liveFeeds;
    const grpcFeeds = feedsOf("grpc");
    const before = grpcFeeds.open;
    const s = g.stream(LIVE, "WatchOrder", { id: o.id }, { token: bob });
    await s.until("open", () => true);
    assert.equal(grpcFeeds.open.orders, before.orders + 1);
    s.cancel();
    await eventually("closed", async () => grpcFeeds.open.orders === before.orders);
    // SSE: the client closes the connection (the request's body was read long before).
    const restFeeds = feedsOf("api");
    const restBefore = restFeeds.open;
    const sse = sseReader(await fetch(`${app.baseUrl}/api/orders/${o.id}/events`, { headers: { authorization: `Bearer ${bob}` } }));
    await sse.until("open", () => true);
    assert.equal(restFeeds.open.orders, restBefore.orders + 1);
    await sse.close();
    await eventually("closed on the gateway", async () => restFeeds.open.orders === restBefore.orders);
  });

  it("a stream stops with its login: after a logout, its next read is UNAUTHENTICATED", async () => {
    const s = await newUser("Carol");
    const o = await order(s.accessToken);
    const watch = g.stream(LIVE, "WatchOrder", { id: o.id }, { token: s.accessToken });
    await watch.until("the current state", () => true);
    await g.call("meridian.user.v1.UserService", "Logout", { refreshToken: s.refreshToken }, { token: s.accessToken });
    // A change wakes the stream: it asks who the caller is before reading, and the login has ended.
    await g.call(O, "Cancel", { id: o.id }, { token: admin });
    const end = await watch.ended;
    assert.ok(end !== "OK" && end.code === "UNAUTHENTICATED", JSON.stringify(end));
    assert.ok(!watch.received.some((u) => u.order.status === "CANCELLED"), "nothing read after the logout");
  });

  it("a notification stream stops with its login too: its first read after the open waits for a wake, and asks who the caller is", async () => {
    const s = await newUser("Dave");
    const feeds = (
      app.broker.getLocalService("grpc") as unknown as {
        liveFeeds: { open: { notifications: number }; notificationCreated(userId: unknown): void };
      }
    ).liveFeeds;
    // The wakes this edge receives, seen: the order's own notification must have woken the edge
    // before the stream opens, or its late wake would spend the read this test is about.
    const wokenFor: unknown[] = [];
    const wake = feeds.notificationCreated.bind(feeds);
    feeds.notificationCreated = (userId) => {
      wokenFor.push(userId);
      wake(userId);
    };
    try {
      const o = await order(s.accessToken);
      await eventually("the order's notification woke the edge", async () => wokenFor.includes(s.user.id));
      const before = feeds.open.notifications;
      const notes = g.stream(LIVE, "StreamNotifications", {}, { token: s.accessToken });
      try {
        // Registered (its first read, the newest notification, follows at once), then waiting for a wake.
        await eventually("the stream is open", async () => feeds.open.notifications === before + 1);
        await g.call("meridian.user.v1.UserService", "Logout", { refreshToken: s.refreshToken }, { token: s.accessToken });
        // The cancellation's notification wakes the stream: the login has ended, so it reads nothing.
        await g.call(O, "Cancel", { id: o.id }, { token: admin });
        const end = await notes.ended;
        assert.ok(end !== "OK" && end.code === "UNAUTHENTICATED", JSON.stringify(end));
        assert.ok(!notes.received.some((n) => n.type === "order.cancelled"), "nothing read after the logout");
      } finally {
        notes.cancel();
      }
    } finally {
      delete (feeds as { notificationCreated?: unknown }).notificationCreated;
    }
  });
});
