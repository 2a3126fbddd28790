/**
 * What the order service does with the payment and product services' events: a payment's
 * success or failure, a reservation's expiry, a refund's settlement. Each runs inside the
 * inbox transaction that records its message (lib/events), so it applies once.
 */
import type { Knex } from "knex";
import { countBusiness } from "../../lib/metrics";
import { paymentStatusOf, refundEvent, returnsStock, type Money } from "./order.domain";
import * as repo from "./order.repo";
import { callAction } from "../../lib/call";
import { Events } from "../../proto/gen/contracts";
import type { Consumers } from "../../mixins/events.mixin";
import { errorCode } from "../../lib/errors";
import type { NewRefund, OrderThis } from "./order.this";

export const orderConsumers: Consumers = {
  async [Events.PaymentSucceeded](this: OrderThis, trx: Knex.Transaction, p: PaymentSucceeded) {
    await onPaymentSucceeded(this, trx, p);
  },
  async [Events.PaymentFailed](
    this: OrderThis,
    trx: Knex.Transaction,
    p: { paymentId: string; orderId: string; provider: string; reason?: string },
  ) {
    await onPaymentFailed(this, trx, p);
  },
  async [Events.ReservationExpired](this: OrderThis, trx: Knex.Transaction, p: { orderId: string }) {
    await onReservationExpired(this, trx, p);
  },
  async [Events.RefundSucceeded](this: OrderThis, trx: Knex.Transaction, p: { refundId: string; orderId: string }) {
    await onRefundSettled(this, trx, p, "SUCCEEDED");
  },
  async [Events.RefundFailed](this: OrderThis, trx: Knex.Transaction, p: { refundId: string; orderId: string }) {
    await onRefundSettled(this, trx, p, "FAILED");
  },
};

interface PaymentSucceeded {
  paymentId: string;
  orderId: string;
  provider: string;
  amount: Money;
}

/** kept: the order took it (now or before); refunded: given back in full (a charge it cannot take). */
export async function onPaymentSucceeded(
  svc: OrderThis,
  trx: Knex.Transaction,
  p: PaymentSucceeded,
): Promise<"kept" | "refunded" | "unknown_order"> {
  const order = await repo.findOrderForUpdate(trx, p.orderId);
  if (!order) {
    svc.logger.warn(`payment.succeeded for unknown order ${p.orderId} (payment ${p.paymentId})`);
    return "unknown_order";
  }
  const now = Date.now();
  await repo.upsertPayment(trx, order.id, { id: p.paymentId, provider: p.provider, status: "SUCCEEDED", amount: p.amount }, now);
  if (order.paidPaymentId === p.paymentId) return "kept"; // the same success again
  let refundReason: string | undefined;
  if (order.status !== "PENDING_PAYMENT")
    refundReason = order.paidPaymentId ? "duplicate payment" : `order ${order.status.toLowerCase()} before the payment arrived`;
  else if (p.amount.amount !== order.total.amount || p.amount.currency !== order.total.currency)
    refundReason = "amount does not match the order";
  else {
    try {
      await callAction(svc.broker, "product.commit", { orderId: order.id });
    } catch (err) {
      if (errorCode(err) !== "CONFLICT" && errorCode(err) !== "NOT_FOUND") throw err; // retried by the event layer
      refundReason = "the stock reservation expired before the payment arrived";
    }
  }
  if (refundReason) {
    // Money taken for an order that cannot take it: give it back in full, once (refund id
    // derived from the payment, so a redelivery, or reconciliation's hand-over, asks for the same refund).
    svc.logger.warn(`Refunding payment ${p.paymentId} of order ${order.id}: ${refundReason}`);
    const refundId = `auto${p.paymentId}`.slice(0, 64);
    const existing = await repo.findRefund(trx, refundId);
    const refund: NewRefund = existing ?? {
      id: refundId,
      orderId: order.id,
      paymentId: p.paymentId,
      amount: p.amount,
      status: "PENDING",
      reason: refundReason,
      createdAt: now,
      updatedAt: now,
    };
    if (!existing) await repo.insertRefund(trx, refund);
    if (refund.status === "PENDING") svc.sendAfterCommit(trx, refund);
    // An order that never took a payment holds no sold stock, unless an earlier run of this
    // handler committed its reservation (product.commit is remote) and then rolled back, and a
    // cancel took the order meanwhile: its release skips committed lines. Those go back on the
    // shelf here (committed → returned once per line; none committed: nothing to do).
    if (!order.paidPaymentId && order.status !== "PENDING_PAYMENT") await returnSoldStock(svc, order.id);
    return "refunded";
  }
  await svc.transition(trx, order, "payment_succeeded", {
    paid_payment_id: p.paymentId,
    paid_amount: p.amount.amount,
    reservation_expires_at: null,
  });
  await svc.publishEvent(trx, Events.OrderPaid, {
    orderId: order.id,
    userId: order.userId,
    total: order.total,
    paymentId: p.paymentId,
    provider: p.provider,
    lines: order.items.map((l) => ({ productId: l.productId, quantity: l.quantity })),
    occurredAt: new Date(now).toISOString(),
  });
  countBusiness(svc.broker, "orders_paid", { provider: p.provider }, trx);
  return "kept";
}

/** product.returnStock for an order, none held at all (a NOT_FOUND) being nothing to return. */
async function returnSoldStock(svc: OrderThis, orderId: string): Promise<void> {
  try {
    await callAction(svc.broker, "product.returnStock", { orderId });
  } catch (err) {
    if (errorCode(err) !== "NOT_FOUND") throw err; // retried by the event layer
  }
}

async function onPaymentFailed(
  svc: OrderThis,
  trx: Knex.Transaction,
  p: { paymentId: string; orderId: string; provider: string; reason?: string },
) {
  const order = await repo.findOrderForUpdate(trx, p.orderId);
  if (!order) return;
  await repo.failPayment(trx, p.paymentId, Date.now());
  // The order stays payable; the user hears of it only while it still is.
  if (order.status !== "PENDING_PAYMENT") return;
  await svc.publishEvent(trx, Events.OrderPaymentFailed, {
    orderId: order.id,
    userId: order.userId,
    paymentId: p.paymentId,
    provider: p.provider,
    reason: p.reason ?? "declined",
    occurredAt: new Date().toISOString(),
  });
}

async function onReservationExpired(svc: OrderThis, trx: Knex.Transaction, p: { orderId: string }) {
  const order = await repo.findOrderForUpdate(trx, p.orderId);
  // One event per expired line: the first cancels, the others find CANCELLED. No order:
  // a hold left by a create that crashed before its insert.
  if (!order || order.status !== "PENDING_PAYMENT") return;
  await svc.transition(trx, order, "expire", { reservation_expires_at: null });
  // The payment service closes the order's open trades at their platforms on this event.
  await svc.publishEvent(trx, Events.OrderCancelled, {
    orderId: order.id,
    userId: order.userId,
    reason: "expired",
    occurredAt: new Date().toISOString(),
  });
  countBusiness(svc.broker, "orders_cancelled", { reason: "expired" }, trx);
  // Lines of the order not yet swept go back now rather than at their own expiry
  // (idempotent: a redelivery releases nothing more).
  await callAction(svc.broker, "product.release", { orderId: order.id });
}

async function onRefundSettled(
  svc: OrderThis,
  trx: Knex.Transaction,
  p: { refundId: string; orderId: string },
  to: "SUCCEEDED" | "FAILED",
) {
  const order = await repo.findOrderForUpdate(trx, p.orderId);
  if (!order) return;
  const refund = await repo.findRefund(trx, p.refundId);
  if (!refund || !(await repo.settleRefund(trx, p.refundId, to, Date.now()))) return;
  if (to === "FAILED") {
    svc.logger.warn(`Refund ${p.refundId} of order ${order.id} failed at the platform; the amount is refundable again`);
    return;
  }
  // An automatic refund of a payment the order never took (a second charge, or one that came
  // after the order was cancelled) changes nothing on the order; the buyer is told the money
  // went back.
  if (refund.paymentId !== order.paidPaymentId) {
    await svc.publishEvent(trx, Events.OrderPaymentRefunded, {
      orderId: order.id,
      userId: order.userId,
      paymentId: refund.paymentId,
      refundId: refund.id,
      amount: refund.amount,
      reason: refund.reason,
      occurredAt: new Date().toISOString(),
    });
    return;
  }
  const now = Date.now();
  const refunded = order.refundedAmount + refund.amount.amount;
  await repo.addRefunded(trx, order.id, refund.amount.amount, now);
  order.refundedAmount = refunded;
  // Only the last of the money moves the fulfilment status (to REFUNDED); a partial refund
  // shows in the payment status, and the order still ships.
  const event = refundEvent(order.paidAmount, refunded);
  if (event) await svc.transition(trx, order, event);
  await svc.publishEvent(trx, Events.OrderRefunded, {
    orderId: order.id,
    userId: order.userId,
    refundId: refund.id,
    amount: refund.amount,
    refundedTotal: { amount: refunded, currency: order.total.currency },
    status: order.status,
    paymentStatus: paymentStatusOf(order),
    occurredAt: new Date(now).toISOString(),
  });
  // Idempotent (each line moves committed → returned once), so it runs inside the handler:
  // a failure retries the whole message, a redelivery returns nothing more.
  if (returnsStock(order.shipped, event)) await callAction(svc.broker, "product.returnStock", { orderId: order.id });
}
