import assert from "node:assert/strict";
import { it } from "mocha";
import {
  PAYMENT_ID,
  formatMoney,
  fromStatesFor,
  movedAmountProblem,
  newPaymentId,
  paidAtMs,
  payloadColumns,
  pendingKey,
  reconcileOutcome,
  refundProblem,
  refundStatusOf,
  sameRefund,
  sandboxPageCsp,
  sandboxPageHtml,
  toPaymentView,
  toRefundView,
  type PaymentRecord,
  type RefundRecord,
} from "./payment.domain";

const NOW = Date.parse("2026-12-01T10:00:00Z");
const CNY = (amount: number) => ({ amount, currency: "CNY" });
const record = (over: Partial<PaymentRecord> = {}): PaymentRecord => ({
  id: "a".repeat(32),
  orderId: "o1",
  userId: "u1",
  provider: "sandbox",
  status: "PENDING",
  amount: CNY(1999),
  subject: "s",
  payUrl: "http://x/pay",
  codeUrl: null,
  form: null,
  providerTxnId: null,
  failureReason: null,
  reconcileAfter: NOW,
  paidAt: null,
  expiresAt: NOW + 900_000,
  createdAt: NOW,
  updatedAt: NOW,
  ...over,
});

it("payment ids: 32 lower-case hex, unique", () => {
  const ids = new Set(Array.from({ length: 1000 }, newPaymentId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, PAYMENT_ID);
});

it("view: optional fields only when present, ISO times, no internal columns", () => {
  assert.deepEqual(toPaymentView(record()), {
    id: "a".repeat(32),
    orderId: "o1",
    userId: "u1",
    provider: "sandbox",
    status: "PENDING",
    amount: CNY(1999),
    payUrl: "http://x/pay",
    createdAt: "2026-12-01T10:00:00.000Z",
    updatedAt: "2026-12-01T10:00:00.000Z",
  });
  const paid = toPaymentView(record({ status: "SUCCEEDED", providerTxnId: "t1", paidAt: NOW + 1000, payUrl: null, codeUrl: "weixin://x" }));
  assert.equal(paid.paidAt, "2026-12-01T10:00:01.000Z");
  assert.equal(paid.providerTxnId, "t1");
  assert.equal(paid.codeUrl, "weixin://x");
  assert.equal("payUrl" in paid, false);
  assert.deepEqual(payloadColumns({ kind: "form", html: "<form>" }), { payUrl: null, codeUrl: null, form: "<form>" });
  assert.deepEqual(payloadColumns({ kind: "qr", codeUrl: "weixin://q" }), { payUrl: null, codeUrl: "weixin://q", form: null });
});

it("pending key: order, provider and amount", () => {
  assert.equal(pendingKey("o1", "sandbox", CNY(5)), "o1|sandbox|5|CNY");
  assert.notEqual(pendingKey("o1", "sandbox", CNY(5)), pendingKey("o1", "alipay", CNY(5)));
});

it("transitions: success from PENDING or FAILED (late success), failure from PENDING only", () => {
  assert.deepEqual(fromStatesFor({ kind: "succeeded", providerTxnId: "t", paidAt: NOW }), ["PENDING", "FAILED"]);
  assert.deepEqual(fromStatesFor({ kind: "failed", reason: "declined" }), ["PENDING"]);
  assert.equal(paidAtMs("2026-12-01T10:00:05Z", NOW), NOW + 5000);
  assert.equal(paidAtMs(undefined, NOW), NOW);
  assert.equal(paidAtMs("garbage", NOW), NOW);
});

it("reconciliation: what the platform's answer settles", () => {
  assert.deepEqual(
    reconcileOutcome(
      { status: "succeeded", paymentId: "p", providerTxnId: "t", amountMinor: 1999, currency: "CNY", paidAt: "2026-12-01T10:00:05Z" },
      CNY(1999),
      NOW,
    ),
    {
      kind: "succeeded",
      providerTxnId: "t",
      paidAt: NOW + 5000,
    },
  );
  assert.equal(
    reconcileOutcome({ status: "succeeded", paymentId: "p", amountMinor: 1, currency: "CNY" }, CNY(1999), NOW),
    undefined,
    "another amount is not our payment",
  );
  assert.equal(reconcileOutcome({ status: "succeeded", paymentId: "p", amountMinor: 1999, currency: "USD" }, CNY(1999), NOW), undefined);
  assert.deepEqual(reconcileOutcome({ status: "failed", paymentId: "p" }, CNY(1999), NOW), { kind: "failed", reason: "closed" });
  assert.deepEqual(reconcileOutcome({ status: "not_found", paymentId: "p" }, CNY(1999), NOW), { kind: "failed", reason: "not_found" });
  assert.deepEqual(reconcileOutcome({ status: "pending", paymentId: "p" }, CNY(1999), NOW), { kind: "failed", reason: "timeout" });
});

it("refund rules: paid only, same order, same currency, never above the payment", () => {
  const paid = { status: "SUCCEEDED" as const, amount: CNY(1000), orderId: "o1" };
  assert.equal(refundProblem(paid, { orderId: "o1", amount: CNY(1000) }, 0), undefined);
  assert.equal(refundProblem(paid, { orderId: "o1", amount: CNY(400) }, 600), undefined);
  assert.equal(refundProblem(paid, { orderId: "o1", amount: CNY(401) }, 600)?.status, 422);
  assert.equal(refundProblem(paid, { orderId: "o1", amount: { amount: 1, currency: "USD" } }, 0)?.status, 422);
  assert.equal(refundProblem(paid, { orderId: "o2", amount: CNY(1) }, 0)?.status, 404);
  assert.equal(refundProblem({ ...paid, status: "PENDING" }, { orderId: "o1", amount: CNY(1) }, 0)?.status, 409);
  assert.equal(refundProblem({ ...paid, status: "FAILED" }, { orderId: "o1", amount: CNY(1) }, 0)?.status, 409);
  const r: RefundRecord = {
    id: "r1",
    paymentId: "p1",
    orderId: "o1",
    status: "SUCCEEDED",
    amount: CNY(5),
    reason: "x",
    providerRefundId: "pr",
    failureCode: null,
    reconcileAfter: 0,
    createdAt: 0,
    updatedAt: 0,
  };
  assert.equal(sameRefund(r, { paymentId: "p1", orderId: "o1", amount: CNY(5) }), true);
  assert.equal(sameRefund(r, { paymentId: "p1", orderId: "o1", amount: CNY(6) }), false);
  assert.deepEqual(toRefundView(r), { refundId: "r1", paymentId: "p1", status: "SUCCEEDED", amount: CNY(5), providerRefundId: "pr" });
  assert.equal(refundStatusOf({ status: "pending" }), "PENDING");
  assert.equal(refundStatusOf({ status: "failed", failureCode: "X" }), "FAILED");
});

it("sandbox page: escaped, no external assets, script and style only with the nonce", () => {
  const html = sandboxPageHtml(
    { id: "p<1>", subject: `<script>alert("x")</script>`, amount: CNY(1999), status: "PENDING" },
    "tok",
    "n0nce",
  );
  assert.ok(!html.includes(`<script>alert`));
  assert.ok(html.includes("&lt;script&gt;"));
  assert.ok(html.includes("19.99 CNY"));
  assert.doesNotMatch(html, /https?:\/\//);
  assert.equal((html.match(/<script nonce="n0nce">/g) ?? []).length, 1);
  assert.equal((html.match(/<script/g) ?? []).length, 1);
  assert.match(sandboxPageCsp("n0nce"), /default-src 'none'; script-src 'nonce-n0nce'/);
  assert.equal(formatMoney({ amount: 500, currency: "JPY" }), "500 JPY");
  assert.equal(formatMoney({ amount: 5, currency: "EUR" }), "0.05 EUR");
});

it("a payment or a refund moves at least one minor unit, though Money's contract allows 0", () => {
  assert.match(movedAmountProblem({ amount: 0, currency: "CNY" }) ?? "", /at least 1/);
  assert.equal(movedAmountProblem({ amount: 1, currency: "CNY" }), undefined);
});
