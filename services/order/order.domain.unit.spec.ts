import assert from "node:assert/strict";
import { it } from "mocha";
import {
  ORDER_STATUSES,
  TRANSITIONS,
  MixedCurrencyError,
  nextStatus,
  normalizeOrderLines,
  orderTotal,
  pickAddress,
  paymentStatusOf,
  refundAmount,
  refundEvent,
  refundRequestVerdict,
  refundable,
  returnRequestVerdict,
  returnValue,
  returnsStock,
  unpaidLimitProblem,
  SoldOutHints,
  type OrderEvent,
  type OrderStatus,
  type RefundStatus,
  frozenLines,
} from "./order.domain";
import { requestFingerprint } from "../../lib/idempotency";

const EVENTS: OrderEvent[] = ["payment_succeeded", "cancel", "expire", "ship", "deliver", "refund_full"];

it("state machine: exactly API.md's transitions; every other pair is refused", () => {
  const allowed = new Set([
    "PENDING_PAYMENT+payment_succeeded=PAID",
    "PENDING_PAYMENT+cancel=CANCELLED",
    "PENDING_PAYMENT+expire=CANCELLED",
    "PAID+ship=SHIPPED",
    "SHIPPED+deliver=DELIVERED",
    ...(["PAID", "SHIPPED", "DELIVERED"] as OrderStatus[]).map((s) => `${s}+refund_full=REFUNDED`),
  ]);
  let seen = 0;
  for (const s of ORDER_STATUSES)
    for (const e of EVENTS) {
      const to = nextStatus(s, e);
      if (to) {
        assert.ok(allowed.has(`${s}+${e}=${to}`), `${s} --${e}--> ${to} is not in the contract`);
        seen++;
      }
    }
  assert.equal(seen, allowed.size);
  assert.deepEqual(TRANSITIONS.CANCELLED, {});
  assert.deepEqual(TRANSITIONS.REFUNDED, {});
  assert.equal(nextStatus("PAID", "payment_succeeded"), undefined, "paid twice is refused");
  assert.equal(nextStatus("SHIPPED", "cancel"), undefined, "no cancel after payment");
  assert.equal(nextStatus("REFUNDED", "ship"), undefined, "a fully refunded order does not ship");
  assert.ok(!(ORDER_STATUSES as readonly string[]).includes("PARTIALLY_REFUNDED"), "retired in v1.1: partial refunds are a payment status");
});

it("lines: merged per product, sorted, bounded; empty is a problem", () => {
  const { lines, problems } = normalizeOrderLines([
    { productId: "b", quantity: 2 },
    { productId: "a", quantity: 1 },
    { productId: "b", quantity: 3 },
  ]);
  assert.deepEqual(lines, [
    { productId: "a", quantity: 1 },
    { productId: "b", quantity: 5 },
  ]);
  assert.deepEqual(problems, []);
  assert.equal(normalizeOrderLines([]).problems[0].field, "items");
  assert.equal(
    normalizeOrderLines([
      { productId: "a", quantity: 60 },
      { productId: "a", quantity: 60 },
    ]).problems.length,
    1,
  );
  assert.equal(normalizeOrderLines(Array.from({ length: 51 }, (_, i) => ({ productId: `p${i}`, quantity: 1 }))).problems.length, 1);
});

it("money: exact integer totals in one currency", () => {
  const line = (amount: number, quantity: number, currency = "EUR") => ({
    productId: "p",
    sku: "s",
    name: "n",
    unitPrice: { amount, currency },
    quantity,
  });
  assert.deepEqual(orderTotal([line(1999, 3), line(1, 1)]), { amount: 5998, currency: "EUR" });
  // 0.1 + 0.2 style traps do not exist in minor units.
  assert.deepEqual(orderTotal([line(10, 1), line(20, 1)]), { amount: 30, currency: "EUR" });
  assert.throws(() => orderTotal([line(1, 1), line(1, 1, "CNY")]), MixedCurrencyError);
  assert.throws(() => orderTotal([line(Number.MAX_SAFE_INTEGER, 2)]), /out of range/);
});

const refund = (amount: number, status: RefundStatus, paymentId = "kept") => ({ paymentId, amount: { amount, currency: "EUR" }, status });

it("refunds: never more than the kept payment captured; pending ones count; failed ones free the amount", () => {
  assert.equal(refundable(10_000, "kept", []), 10_000);
  assert.equal(refundable(10_000, "kept", [refund(3000, "SUCCEEDED"), refund(2000, "PENDING"), refund(5000, "FAILED")]), 5000);
  assert.equal(refundable(10_000, null, []), 0, "nothing paid, nothing refundable");
  assert.deepEqual(refundAmount(undefined, 5000), { amount: 5000 });
  assert.deepEqual(refundAmount(1000, 5000), { amount: 1000 });
  assert.ok("problem" in refundAmount(5001, 5000));
  assert.ok("problem" in refundAmount(0, 5000));
  assert.ok("problem" in refundAmount(undefined, 0));
});

it("refunds: an auto-refunded duplicate charge does not count against the kept payment", () => {
  // The second charge (10,000) was refunded in full automatically; the kept one is untouched.
  assert.equal(refundable(10_000, "kept", [refund(10_000, "SUCCEEDED", "duplicate")]), 10_000);
  assert.equal(refundable(10_000, "kept", [refund(10_000, "SUCCEEDED", "duplicate"), refund(4000, "SUCCEEDED")]), 6000);
});

it("refund rules: the owner before shipping and all that is left; admins any amount after payment", () => {
  assert.deepEqual(refundRequestVerdict({ byAdmin: false, shipped: false, left: 5000 }), { amount: 5000 });
  assert.deepEqual(refundRequestVerdict({ byAdmin: false, shipped: false, left: 5000, requested: 5000 }), { amount: 5000 });
  assert.ok(
    "problem" in refundRequestVerdict({ byAdmin: false, shipped: false, left: 5000, requested: 1 }),
    "a customer cannot refund part",
  );
  assert.ok("conflict" in refundRequestVerdict({ byAdmin: false, shipped: true, left: 5000 }), "after shipping: a return request");
  assert.deepEqual(refundRequestVerdict({ byAdmin: true, shipped: true, left: 5000, requested: 1 }), { amount: 1 });
  assert.ok("problem" in refundRequestVerdict({ byAdmin: true, shipped: true, left: 5000, requested: 5001 }));
  assert.ok("problem" in refundRequestVerdict({ byAdmin: false, shipped: false, left: 0 }), "nothing left");
});

it("payment status is derived: unpaid, paid, partially_refunded, refunded; only the last of the money is a transition", () => {
  assert.equal(paymentStatusOf({ paidPaymentId: null, paidAmount: 0, refundedAmount: 0 }), "unpaid");
  assert.equal(paymentStatusOf({ paidPaymentId: "p", paidAmount: 100, refundedAmount: 0 }), "paid");
  assert.equal(paymentStatusOf({ paidPaymentId: "p", paidAmount: 100, refundedAmount: 1 }), "partially_refunded");
  assert.equal(paymentStatusOf({ paidPaymentId: "p", paidAmount: 100, refundedAmount: 100 }), "refunded");
  assert.equal(refundEvent(10_000, 3000), undefined, "a partial refund changes no fulfilment status");
  assert.equal(refundEvent(10_000, 10_000), "refund_full");
  assert.equal(returnsStock(false, "refund_full"), true);
  assert.equal(returnsStock(true, "refund_full"), false, "shipped goods are with the buyer");
  assert.equal(returnsStock(false, undefined), false, "a partial refund by amount names no items");
});

it("unpaid limits: orders per user, units of one product across unpaid orders", () => {
  const limits = { maxOrders: 3, maxUnitsPerProduct: 5 };
  const state = (orders: number, units: Record<string, number> = {}) => ({ orders, units: new Map(Object.entries(units)) });
  assert.equal(unpaidLimitProblem(limits, state(0), [{ productId: "p", quantity: 5 }]), undefined);
  assert.deepEqual(unpaidLimitProblem(limits, state(3), [{ productId: "p", quantity: 1 }]), {
    limit: "MAX_UNPAID_ORDERS",
    max: 3,
    unpaidOrders: 3,
  });
  assert.deepEqual(unpaidLimitProblem(limits, state(1, { p: 5 }), [{ productId: "p", quantity: 1 }]), {
    limit: "MAX_UNPAID_UNITS_PER_PRODUCT",
    max: 5,
    productId: "p",
    unpaidUnits: 5,
    requested: 1,
  });
  assert.equal(
    unpaidLimitProblem(limits, state(1, { p: 4 }), [
      { productId: "p", quantity: 1 },
      { productId: "q", quantity: 5 },
    ]),
    undefined,
  );
  assert.equal(
    unpaidLimitProblem({ maxOrders: 50, maxUnitsPerProduct: 500 }, state(3, { p: 5 }), [{ productId: "p", quantity: 99 }]),
    undefined,
    "an admin raised them",
  );
});

it("returns: delivered orders only, within the window, lines of the order, never more than bought minus open returns", () => {
  const day = 86_400_000;
  const delivered = Date.UTC(2026, 0, 10);
  const item = (productId: string, quantity: number, amount = 1000) => ({
    productId,
    sku: productId,
    name: productId,
    unitPrice: { amount, currency: "EUR" },
    quantity,
  });
  const order = {
    status: "DELIVERED" as OrderStatus,
    items: [item("a", 2), item("b", 1, 500)],
    total: { amount: 2500, currency: "EUR" },
    shipment: {
      carrier: "c",
      trackingNumber: "t",
      shippedAt: new Date(delivered - day).toISOString(),
      deliveredAt: new Date(delivered).toISOString(),
    },
  };
  assert.deepEqual(
    returnRequestVerdict(
      order,
      [
        { productId: "a", quantity: 1 },
        { productId: "a", quantity: 1 },
      ],
      [],
      delivered + day,
      30,
    ),
    { lines: [{ productId: "a", quantity: 2 }] },
  );
  assert.ok(
    "conflict" in returnRequestVerdict({ ...order, status: "SHIPPED" }, [{ productId: "a", quantity: 1 }], [], delivered, 30),
    "not delivered yet",
  );
  assert.ok("conflict" in returnRequestVerdict(order, [{ productId: "a", quantity: 1 }], [], delivered + 31 * day, 30), "window passed");
  assert.ok("problems" in returnRequestVerdict(order, [{ productId: "zz", quantity: 1 }], [], delivered, 30), "not a line");
  assert.ok("problems" in returnRequestVerdict(order, [{ productId: "a", quantity: 3 }], [], delivered, 30), "more than bought");
  const open = [
    { status: "REQUESTED" as const, items: [{ productId: "a", quantity: 1 }] },
    { status: "REJECTED" as const, items: [{ productId: "a", quantity: 2 }] },
  ];
  assert.ok(
    "problems" in returnRequestVerdict(order, [{ productId: "a", quantity: 2 }], open, delivered, 30),
    "an open request takes one back already",
  );
  assert.deepEqual(
    returnRequestVerdict(order, [{ productId: "a", quantity: 1 }], open, delivered, 30),
    { lines: [{ productId: "a", quantity: 1 }] },
    "rejected ones do not count",
  );
  assert.deepEqual(
    returnValue(order, [
      { productId: "a", quantity: 2 },
      { productId: "b", quantity: 1 },
    ]),
    { amount: 2500, currency: "EUR" },
  );
});

it("idempotency fingerprint: same body in any key order matches; another body does not", () => {
  const a = requestFingerprint({ addressId: "x", items: [{ productId: "p", quantity: 1 }] });
  const b = requestFingerprint({ items: [{ quantity: 1, productId: "p" }], addressId: "x" });
  assert.equal(a, b);
  assert.notEqual(a, requestFingerprint({ addressId: "x", items: [{ productId: "p", quantity: 2 }] }));
});

it("address: only the address fields are frozen into the order", () => {
  const saved = {
    id: "addr1",
    userId: "u",
    recipient: "R",
    phone: "1",
    line1: "L",
    city: "C",
    postalCode: "P",
    country: "CN",
    createdAt: "t",
  };
  const a = pickAddress(saved);
  assert.deepEqual(Object.keys(a).sort(), ["city", "country", "line1", "phone", "postalCode", "recipient"]);
});

it("the order freezes the reserve's prices in the order of the lines given, and refuses a line it did not price", () => {
  const priced = [
    { productId: "a", sku: "A-1", name: "Apple", unitPrice: { amount: 120, currency: "EUR" }, quantity: 2 },
    { productId: "b", sku: "B-1", name: "Bread", unitPrice: { amount: 300, currency: "EUR" }, quantity: 1 },
  ];
  const lines = [
    { productId: "b", quantity: 1 },
    { productId: "a", quantity: 2 },
  ];
  assert.deepEqual(
    frozenLines(lines, priced).map((l) => [l.productId, l.unitPrice.amount]),
    [
      ["b", 300],
      ["a", 120],
    ],
  );
  assert.throws(() => frozenLines(lines, []), /no price for b/);
  assert.throws(() => frozenLines([{ productId: "a", quantity: 3 }], priced), /no price for a x3/);
});

it("SoldOutHints: a mark lives ttl after its latest refusal, clears, and stays bounded (the oldest goes)", () => {
  const h = new SoldOutHints(1000, 3);
  assert.equal(h.anyMarked(["a"], 0), false);
  h.mark(["a"], 0);
  assert.equal(h.anyMarked(["b", "a"], 999), true);
  assert.equal(h.anyMarked(["a"], 1000), false, "expired at ttl");
  assert.equal(h.size, 0, "and forgotten when seen expired");
  h.mark(["a"], 0);
  h.mark(["a"], 900);
  assert.equal(h.anyMarked(["a"], 1500), true, "refreshed by the later refusal");
  h.clear(["a"]);
  assert.equal(h.anyMarked(["a"], 1500), false);
  h.mark(["a", "b", "c"], 0);
  h.mark(["a"], 10); // a is now the newest
  h.mark(["d"], 20);
  assert.equal(h.size, 3);
  assert.deepEqual(
    ["a", "b", "c", "d"].map((id) => h.anyMarked([id], 30)),
    [true, false, true, true],
    "b, the oldest mark, went",
  );
});
