import assert from "node:assert/strict";
import { it } from "mocha";
import {
  BadEventError,
  EVENT_TYPES,
  MAX_RETRY_DELAY_MS,
  NOTIFICATION_TYPES,
  emailFor,
  escapeHtml,
  formatMoney,
  messageIdFor,
  notificationFor,
  parseListQuery,
  retryDelayMs,
  retrySchedule,
  toPublicNotification,
} from "./notification.domain";
import { ORDER, SAMPLE_EVENTS, base } from "./test-fixtures";

it("money: integer minor units with the currency's own digits, never a float", () => {
  assert.equal(formatMoney({ amount: 123456, currency: "CNY" }), "CN¥1,234.56");
  assert.equal(formatMoney({ amount: 1999, currency: "EUR" }), "€19.99");
  assert.equal(formatMoney({ amount: 5, currency: "USD" }), "$0.05");
  assert.equal(formatMoney({ amount: 0, currency: "USD" }), "$0.00");
  assert.equal(formatMoney({ amount: 1999, currency: "JPY" }), "¥1,999");
  assert.equal(formatMoney({ amount: 1234, currency: "KWD" }), "KWD 1.234");
  assert.equal(formatMoney({ amount: -250, currency: "EUR" }), "-€2.50");
  // Exact beyond float precision of a division by 100.
  assert.equal(formatMoney({ amount: 9007199254740991, currency: "USD" }), "$90,071,992,547,409.91");
  assert.equal(formatMoney({ amount: 110, currency: "USD" }), "$1.10");
  // Unknown but well-formed code: Intl shows the code; malformed: plain text.
  assert.equal(formatMoney({ amount: 1999, currency: "XYZ" }), "XYZ 19.99");
  assert.equal(formatMoney({ amount: 1999, currency: "euro" }), "19.99 euro");
});

it("every consumed event maps to a contract type, and every contract type is produced", () => {
  assert.deepEqual([...new Set(Object.values(EVENT_TYPES))].sort(), [...NOTIFICATION_TYPES].sort());
  assert.deepEqual(Object.keys(SAMPLE_EVENTS).sort(), Object.keys(EVENT_TYPES).sort());
});

it("templates: title, body, data and e-mail for every type", () => {
  const expected: Record<string, { type: string; title: RegExp; body: RegExp; subject: RegExp; data: Record<string, unknown> }> = {
    "order.created": {
      type: "order.created",
      title: /^Order 3f2a9c1e placed$/,
      body: /3 items for CN¥1,234\.56/,
      subject: /placed/,
      data: {
        orderId: ORDER,
        total: { amount: 123456, currency: "CNY" },
        items: [
          { name: "Phone <Pro>", quantity: 2 },
          { name: "Case", quantity: 1 },
        ],
      },
    },
    "order.paid": {
      type: "payment.succeeded",
      title: /^Payment received for order 3f2a9c1e$/,
      body: /of CN¥1,234\.56 was received/,
      subject: /Payment received/,
      data: { orderId: ORDER, total: { amount: 123456, currency: "CNY" }, paymentId: "pay-1", provider: "sandbox" },
    },
    "order.payment_failed": {
      type: "payment.failed",
      title: /^Payment failed for order 3f2a9c1e$/,
      body: /\(card declined\)/,
      subject: /Payment failed/,
      data: { orderId: ORDER, paymentId: "pay-2", provider: "alipay", reason: "card declined" },
    },
    "order.shipped": {
      type: "order.shipped",
      title: /^Order 3f2a9c1e shipped$/,
      body: /SF Express, tracking number SF123456/,
      subject: /shipped/,
      data: { orderId: ORDER, carrier: "SF Express", trackingNumber: "SF123456" },
    },
    "order.delivered": {
      type: "order.delivered",
      title: /^Order 3f2a9c1e delivered$/,
      body: /delivered/,
      subject: /delivered/,
      data: { orderId: ORDER },
    },
    "order.cancelled": {
      type: "order.cancelled",
      title: /^Order 3f2a9c1e cancelled$/,
      body: /not paid in time/,
      subject: /cancelled/,
      data: { orderId: ORDER, reason: "expired" },
    },
    "order.payment_refunded": {
      type: "payment.refunded",
      title: /^Payment returned for order 3f2a9c1e$/,
      body: /payment of CN¥1,234\.56 .* went back .*\(the order was already paid by another payment\)/,
      subject: /Payment returned/,
      data: {
        orderId: ORDER,
        paymentId: "pay-3",
        refundId: "autopay-3",
        amount: { amount: 123456, currency: "CNY" },
        reason: "the order was already paid by another payment",
      },
    },
    "return.requested": {
      type: "return.requested",
      title: /^Return request for order 3f2a9c1e received$/,
      body: /return 2 items/,
      subject: /Return request/,
      data: { orderId: ORDER, returnId: "ret-1", items: [{ productId: "p1", quantity: 2 }], reason: "Too small" },
    },
    "return.approved": {
      type: "return.approved",
      title: /^Return for order 3f2a9c1e approved$/,
      body: /approved: €20\.00 will be refunded/,
      subject: /approved/,
      data: {
        orderId: ORDER,
        returnId: "ret-1",
        refundId: "r-2",
        amount: { amount: 2000, currency: "EUR" },
        items: [{ productId: "p1", quantity: 2 }],
      },
    },
    "return.rejected": {
      type: "return.rejected",
      title: /^Return for order 3f2a9c1e not accepted$/,
      body: /not accepted: Worn <b>and<\/b> washed/,
      subject: /not accepted/,
      data: { orderId: ORDER, returnId: "ret-2", reason: "Worn <b>and</b> washed" },
    },
    "order.refunded": {
      type: "refund.succeeded",
      title: /^Refund for order 3f2a9c1e$/,
      body: /refund of €5\.00/,
      subject: /Refund/,
      data: {
        orderId: ORDER,
        refundId: "r-1",
        amount: { amount: 500, currency: "EUR" },
        refundedTotal: { amount: 500, currency: "EUR" },
        status: "SUCCEEDED",
      },
    },
  };
  for (const [event, payload] of Object.entries(SAMPLE_EVENTS)) {
    const n = notificationFor(event, payload);
    const x = expected[event];
    assert.equal(n.type, x.type, event);
    assert.match(n.title, x.title, event);
    assert.match(n.body, x.body, event);
    assert.deepEqual(n.data, x.data, event);
    assert.ok(!("userId" in n.data), "the recipient's id is not repeated in data");
    const mail = emailFor(n, { name: "Ada" });
    assert.match(mail.subject, x.subject, event);
    assert.equal(mail.subject, `Meridian: ${n.title}`);
    assert.match(mail.text, /^Hello Ada,/);
    assert.ok(mail.text.includes(n.body), event);
    assert.ok(mail.text.includes(`Order reference: ${ORDER}`), event);
    assert.match(mail.html, /^<!doctype html>/);
    assert.ok(mail.html.includes(escapeHtml(n.body)), event);
  }
  for (const [reason, text] of [
    ["user", /you cancelled it/],
    ["admin", /our staff/],
  ] as const)
    assert.match(notificationFor("order.cancelled", { ...base, reason }).body, text);
  assert.equal(
    notificationFor("order.created", {
      ...base,
      total: { amount: 100, currency: "EUR" },
      items: [{ name: "x", quantity: 1 }],
    }).body.includes("1 item for"),
    true,
  );
});

it("e-mail HTML escapes event values; no name gives a plain greeting", () => {
  const n = notificationFor("order.created", {
    ...SAMPLE_EVENTS["order.created"],
    items: [{ name: `<script>alert("x")</script>`, quantity: 1 }],
  });
  const mail = emailFor(n, { name: "<b>Eve</b>" });
  assert.ok(!mail.html.includes("<script>"));
  assert.ok(mail.html.includes("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
  assert.ok(mail.html.includes("Hello &lt;b&gt;Eve&lt;/b&gt;,"));
  assert.ok(mail.text.includes(`1 × <script>alert("x")</script>`), "the text part is plain text");
  assert.match(emailFor(n, { name: null }).text, /^Hello,\n/);
});

it("malformed events are refused (they go to the dead letters, not to a user)", () => {
  assert.throws(() => notificationFor("order.created", { orderId: ORDER }), BadEventError);
  assert.throws(() => notificationFor("order.created", { userId: "u" }), BadEventError);
  assert.throws(() => notificationFor("order.unknown", base), BadEventError);
});

it("Message-ID is stable per notification, on MAIL_FROM's domain", () => {
  assert.equal(messageIdFor("n-1", "Meridian <no-reply@shop.example>"), "<notification-n-1@shop.example>");
  assert.equal(messageIdFor("n-1", "mail@shop.example"), "<notification-n-1@shop.example>");
  assert.equal(messageIdFor("n-1", "Meridian <no-reply@shop.example>"), messageIdFor("n-1", "Meridian <no-reply@shop.example>"));
});

it("retry backoff: doubles from the base, capped at an hour, jitter at most 10 %", () => {
  assert.deepEqual(retrySchedule(8, 30_000), [30_000, 60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000]);
  assert.deepEqual(retrySchedule(1, 30_000), []);
  assert.equal(retryDelayMs(20, 30_000), MAX_RETRY_DELAY_MS);
  assert.equal(retryDelayMs(1000, 30_000), MAX_RETRY_DELAY_MS);
  assert.equal(retryDelayMs(1, 100, 0.999), 110);
  assert.equal(retryDelayMs(3, 100, 0.5), 420);
});

it("list query and public shape", () => {
  assert.deepEqual(parseListQuery({}), { unread: false, page: 1, pageSize: 20 });
  assert.deepEqual(parseListQuery({ unread: true, page: 3, pageSize: 500 }), { unread: true, page: 3, pageSize: 100 });
  const p = toPublicNotification({
    id: "n",
    userId: "u",
    type: "order.delivered",
    title: "t",
    body: "b",
    data: { orderId: "o" },
    readAt: null,
    createdAt: Date.UTC(2026, 0, 2),
  });
  assert.deepEqual(p, {
    id: "n",
    type: "order.delivered",
    title: "t",
    body: "b",
    read: false,
    createdAt: "2026-01-02T00:00:00.000Z",
    data: { orderId: "o" },
  });
  assert.equal(
    toPublicNotification({
      id: "n",
      userId: "u",
      type: "order.delivered",
      title: "t",
      body: "b",
      data: { orderId: "o" },
      readAt: 5,
      createdAt: 0,
    }).read,
    true,
  );
});
