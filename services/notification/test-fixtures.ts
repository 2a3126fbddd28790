/** Sample payloads of the consumed events (the order service's contract), for the tests. */

export const ORDER = "3f2a9c1e-0000-4000-8000-000000000001";
export const base = { orderId: ORDER, userId: "u-1", occurredAt: "2026-11-26T10:00:00.000Z" };

/** One payload per consumed event, as the order service's contract gives them. */
export const SAMPLE_EVENTS: Record<string, Record<string, unknown>> = {
  "order.created": {
    ...base,
    total: { amount: 123456, currency: "CNY" },
    items: [
      { name: "Phone <Pro>", quantity: 2 },
      { name: "Case", quantity: 1 },
    ],
  },
  "order.paid": {
    ...base,
    total: { amount: 123456, currency: "CNY" },
    lines: [{ productId: "p1", quantity: 2 }],
    paymentId: "pay-1",
    provider: "sandbox",
  },
  "order.payment_failed": { ...base, paymentId: "pay-2", provider: "alipay", reason: "card declined" },
  "order.shipped": { ...base, carrier: "SF Express", trackingNumber: "SF123456" },
  "order.delivered": { ...base },
  "order.cancelled": { ...base, reason: "expired" },
  "order.refunded": {
    ...base,
    refundId: "r-1",
    amount: { amount: 500, currency: "EUR" },
    refundedTotal: { amount: 500, currency: "EUR" },
    status: "SUCCEEDED",
  },
  "order.payment_refunded": {
    ...base,
    paymentId: "pay-3",
    refundId: "autopay-3",
    amount: { amount: 123456, currency: "CNY" },
    reason: "the order was already paid by another payment",
  },
  "return.requested": { ...base, returnId: "ret-1", items: [{ productId: "p1", quantity: 2 }], reason: "Too small" },
  "return.approved": {
    ...base,
    returnId: "ret-1",
    refundId: "r-2",
    amount: { amount: 2000, currency: "EUR" },
    restock: true,
    lines: [{ productId: "p1", quantity: 2 }],
  },
  "return.rejected": { ...base, returnId: "ret-2", reason: "Worn <b>and</b> washed" },
};
