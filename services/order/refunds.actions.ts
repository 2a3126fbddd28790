/**
 * Refunds: a buyer (before shipping, all that is left) or an admin asks; the refund is recorded
 * PENDING with the order row locked (never more than the kept payment captured), then sent to
 * the payment service after the commit (`payment.refund`, idempotent by refund id). A send that
 * failed is sent again by the order sweep. Bound into the `order` service by order.service.ts.
 */
import type { Knex } from "knex";
import { inTransaction } from "../../lib/db";
import { conflict, validationError } from "../../lib/errors";
import { callAction } from "../../lib/call";
import { REFUNDABLE, refundRequestVerdict, refundable, toPublicRefund, type Money } from "./order.domain";
import * as repo from "./order.repo";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { Params } from "../../proto/gen/params";
import type { TypedActions } from "../../lib/service-schema";
import { isAdmin, newRefundId, type Ctx, type NewRefund, type OrderThis } from "./order.this";

/** A PENDING refund not confirmed after this long is sent again (same id: the platform call is idempotent). */
const REFUND_RETRY_AFTER_MS = 30_000;

export function refundActions(): TypedActions<OrderThis> {
  return {
    refund: {
      auth: "user",
      rateLimit: "refunds",
      params: Params["order.refund"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.refund">>): Promise<ActionResponse<"order.refund">> {
        const order = await this.ownOrder(ctx, ctx.params.id);
        const { amount, reason } = ctx.params;
        const refund = await this.withKey(
          ctx,
          { op: "order.refund", orderId: order.id, body: { amount, reason } },
          newRefundId(),
          (id) => this.requestRefund(order.id, id, { requested: amount, reason, byAdmin: isAdmin(ctx) }),
          async (id) => {
            const r = await repo.findRefund(this.db, id);
            return r && toPublicRefund(r);
          },
        );
        ctx.meta.$statusCode = 202;
        return refund;
      },
    },
  };
}

export const refundMethods = {
  /** Records a refund (id given: an Idempotency-Key's claim names it), then sends it after the commit. */
  async requestRefund(this: OrderThis, orderId: string, refundId: string, r: { requested?: number; reason: string; byAdmin: boolean }) {
    const refund = await inTransaction(this.db, async (trx) => {
      const o = (await repo.findOrderForUpdate(trx, orderId))!;
      if (!REFUNDABLE.includes(o.status) || !o.paidPaymentId)
        throw conflict(`An order in status ${o.status} cannot be refunded`, [{ status: o.status }]);
      const left = refundable(o.paidAmount, o.paidPaymentId, await repo.refundsOf(trx, o.id));
      const verdict = refundRequestVerdict({ byAdmin: r.byAdmin, shipped: o.shipped, left, requested: r.requested });
      if ("conflict" in verdict) throw conflict(`Refund refused: ${verdict.conflict}`, [{ status: o.status }]);
      if ("problem" in verdict) throw validationError(`Refund refused: ${verdict.problem}`, [{ field: "amount", refundable: left }]);
      const now = Date.now();
      const row: NewRefund = {
        id: refundId,
        orderId: o.id,
        paymentId: o.paidPaymentId,
        amount: { amount: verdict.amount, currency: o.total.currency },
        status: "PENDING",
        reason: r.reason,
        createdAt: now,
        updatedAt: now,
      };
      await repo.insertRefund(trx, row);
      return row;
    });
    // After the commit: the platform call (idempotent by refund id); a failure leaves it PENDING for the sweep.
    await this.sendRefund(refund).catch((err: Error) =>
      this.logger.warn(`Refund ${refund.id} not sent yet (the sweep retries): ${err.message}`),
    );
    return toPublicRefund((await repo.findRefund(this.db, refund.id))!);
  },

  async sendRefund(this: OrderThis, r: { id: string; orderId: string; paymentId: string; amount: Money; reason: string }) {
    await callAction(this.broker, "payment.refund", {
      refundId: r.id,
      orderId: r.orderId,
      paymentId: r.paymentId,
      amount: r.amount,
      reason: r.reason,
    });
  },

  /** Sends a refund recorded in `trx` once that commits (the sweep covers a failed send). */
  sendAfterCommit(this: OrderThis, trx: Knex.Transaction, r: NewRefund) {
    trx.executionPromise.then(
      () => this.sendRefund(r).catch((err: Error) => this.logger.warn(`Refund ${r.id} not sent yet (the sweep retries): ${err.message}`)),
      () => undefined,
    );
  },
  /** Refunds whose platform call failed are sent again (same id). */
  async retryPendingRefunds(this: OrderThis) {
    for (const r of await repo.stalePendingRefunds(this.db, Date.now() - REFUND_RETRY_AFTER_MS, 50)) {
      await repo.touchRefund(this.db, r.id, Date.now());
      await this.sendRefund(r).catch((err: Error) => this.logger.warn(`Refund ${r.id} retry failed: ${err.message}`));
    }
  },
};
