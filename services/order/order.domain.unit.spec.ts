import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ORDER_STATUSES,
  TRANSITIONS,
  MixedCurrencyError,
  nextStatus,
  normalizeOrderLines,
  orderTotal,
  pickAddress,
  refundAmount,
  refundEvent,
  refundable,
  requestFingerprint,
  returnsStock,
  type OrderEvent,
  type OrderStatus,
} from "./order.domain";

const EVENTS: OrderEvent[] = ["payment_succeeded", "cancel", "expire", "ship", "deliver", "refund_partial", "refund_full"];

test("state machine: exactly API.md's transitions; every other pair is refused", () => {
  const allowed = new Set([
    "PENDING_PAYMENT+payment_succeeded=PAID", "PENDING_PAYMENT+cancel=CANCELLED", "PENDING_PAYMENT+expire=CANCELLED",
    "PAID+ship=SHIPPED", "SHIPPED+deliver=DELIVERED",
    ...(["PAID", "SHIPPED", "DELIVERED", "PARTIALLY_REFUNDED"] as OrderStatus[]).flatMap((s) => [`${s}+refund_partial=PARTIALLY_REFUNDED`, `${s}+refund_full=REFUNDED`]),
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
  assert.equal(nextStatus("PARTIALLY_REFUNDED", "ship"), undefined);
});

test("lines: merged per product, sorted, bounded; empty is a problem", () => {
  const { lines, problems } = normalizeOrderLines([{ productId: "b", quantity: 2 }, { productId: "a", quantity: 1 }, { productId: "b", quantity: 3 }]);
  assert.deepEqual(lines, [{ productId: "a", quantity: 1 }, { productId: "b", quantity: 5 }]);
  assert.deepEqual(problems, []);
  assert.equal(normalizeOrderLines([]).problems[0]!.field, "items");
  assert.equal(normalizeOrderLines([{ productId: "a", quantity: 60 }, { productId: "a", quantity: 60 }]).problems.length, 1);
  assert.equal(normalizeOrderLines(Array.from({ length: 51 }, (_, i) => ({ productId: `p${i}`, quantity: 1 }))).problems.length, 1);
});

test("money: exact integer totals in one currency", () => {
  const line = (amount: number, quantity: number, currency = "EUR") => ({ productId: "p", sku: "s", name: "n", unitPrice: { amount, currency }, quantity });
  assert.deepEqual(orderTotal([line(1999, 3), line(1, 1)]), { amount: 5998, currency: "EUR" });
  // 0.1 + 0.2 style traps do not exist in minor units.
  assert.deepEqual(orderTotal([line(10, 1), line(20, 1)]), { amount: 30, currency: "EUR" });
  assert.throws(() => orderTotal([line(1, 1), line(1, 1, "CNY")]), MixedCurrencyError);
  assert.throws(() => orderTotal([line(Number.MAX_SAFE_INTEGER, 2)]), /out of range/);
});

test("refunds: never more than paid; pending ones count; failed ones free the amount", () => {
  assert.equal(refundable(10_000, []), 10_000);
  assert.equal(refundable(10_000, [{ id: "a", amount: 3000, status: "SUCCEEDED" }, { id: "b", amount: 2000, status: "PENDING" }, { id: "c", amount: 5000, status: "FAILED" }]), 5000);
  assert.deepEqual(refundAmount(undefined, 5000), { amount: 5000 });
  assert.deepEqual(refundAmount(1000, 5000), { amount: 1000 });
  assert.ok("problem" in refundAmount(5001, 5000));
  assert.ok("problem" in refundAmount(0, 5000));
  assert.ok("problem" in refundAmount(undefined, 0));
  assert.equal(refundEvent(10_000, 3000), "refund_partial");
  assert.equal(refundEvent(10_000, 10_000), "refund_full");
  assert.equal(returnsStock(false, "refund_full"), true);
  assert.equal(returnsStock(true, "refund_full"), false, "shipped goods are with the buyer");
  assert.equal(returnsStock(false, "refund_partial"), false, "a partial refund by amount names no items");
});

test("idempotency fingerprint: same body in any key order matches; another body does not", () => {
  const a = requestFingerprint({ addressId: "x", items: [{ productId: "p", quantity: 1 }] });
  const b = requestFingerprint({ items: [{ quantity: 1, productId: "p" }], addressId: "x" });
  assert.equal(a, b);
  assert.notEqual(a, requestFingerprint({ addressId: "x", items: [{ productId: "p", quantity: 2 }] }));
});

test("address: only the address fields are frozen into the order", () => {
  const a = pickAddress({ id: "addr1", userId: "u", recipient: "R", phone: "1", line1: "L", city: "C", postalCode: "P", country: "CN", createdAt: "t" });
  assert.deepEqual(Object.keys(a).sort(), ["city", "country", "line1", "phone", "postalCode", "recipient"]);
});
