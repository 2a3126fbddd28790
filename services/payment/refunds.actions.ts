/**
 * Refunds at the platform: `payment.refund` (called by the order service, idempotent per
 * refundId) records the refund under the payment's row lock, with what is left to refund
 * checked, then asks the platform with refundId as its request number. An unknown answer
 * leaves it PENDING for reconciliation (reconcile.actions.ts), which asks again with the same
 * id. Bound into the `payment` service by payment.service.ts.
 */
import type { AppConfig } from "../../lib/config";
import { inTransaction, isUniqueViolation } from "../../lib/db";
import { conflict, notFound, validationError } from "../../lib/errors";
import { countBusiness } from "../../lib/metrics";
import { iso, refundProblem, refundStatusOf, sameRefund, toRefundView, type PaymentRecord, type RefundRecord } from "./payment.domain";
import * as repo from "./payment.repo";
import { assertMoves, paymentTimings, type Ctx, type PaymentServiceThis } from "./payment.this";
import { PaymentPlatformError, type RefundResult } from "./platforms";
import { Events } from "../../proto/gen/contracts";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import type { TypedActions } from "../../lib/service-schema";

export function refundActions(config: AppConfig): TypedActions<PaymentServiceThis> {
  const { leaseMs } = paymentTimings(config);
  return {
    /** For the order service: a refund through the platform that took the money (not routed). */
    refund: {
      visibility: "public",
      params: Params["payment.refund"],
      async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.refund">>): Promise<ActionResponse<"payment.refund">> {
        const { refundId, orderId, paymentId, reason } = ctx.params;
        assertMoves(ctx.params.amount);
        const amount = { amount: ctx.params.amount.amount, currency: ctx.params.amount.currency };
        const replay = (r: RefundRecord) => {
          if (!sameRefund(r, { paymentId, orderId, amount }))
            throw conflict("This refundId was used for another refund", [{ field: "refundId" }]);
          return toRefundView(r);
        };
        // The order service asked for it: it has dealt with this payment (reconciliation
        // need not hand the success over again).
        await repo.acknowledgeByOrder(this.db, paymentId, Date.now());
        const stored = await repo.findRefund(this.db, refundId);
        if (stored) return replay(stored);
        const now = Date.now();
        const refund: RefundRecord = {
          id: refundId,
          paymentId,
          orderId,
          status: "PENDING",
          amount,
          reason,
          providerRefundId: null,
          failureCode: null,
          // Left to this call; the sweep takes over only if it never settles (a crash, an unknown answer).
          reconcileAfter: now + leaseMs,
          createdAt: now,
          updatedAt: now,
        };
        let payment: PaymentRecord | RefundRecord;
        try {
          payment = await inTransaction(this.db, async (trx) => {
            // The payment's row lock serializes refunds of one payment: the sum below is current.
            const p = await repo.findPaymentForUpdate(trx, paymentId);
            if (!p) throw notFound("Payment");
            const same = await repo.findRefund(trx, refundId);
            if (same) return same;
            const problem = refundProblem(p, { orderId, amount }, await repo.committedRefundTotal(trx, paymentId));
            if (problem?.status === 404) throw notFound("Payment");
            if (problem?.status === 409) throw conflict(problem.message, [{ field: "paymentId", status: p.status }]);
            if (problem) throw validationError(problem.message, [{ field: "amount" }]);
            await repo.insertRefund(trx, refund);
            return p;
          });
        } catch (err) {
          if (isUniqueViolation(err)) {
            const again = await repo.findRefund(this.db, refundId);
            if (again) return replay(again);
          }
          throw err;
        }
        if ("paymentId" in payment) return replay(payment);
        return toRefundView(await this.executeRefund(refund, payment));
      },
    },
  };
}

export const refundMethods = {
  /** Calls the platform for a stored PENDING refund (same refundId every time) and applies the answer. */
  async executeRefund(this: PaymentServiceThis, refund: RefundRecord, payment: PaymentRecord): Promise<RefundRecord> {
    const platform = this.platforms().get(payment.provider);
    if (!platform) {
      this.logger.warn(`Refund ${refund.id}: provider ${payment.provider} is not enabled here; left PENDING`);
      return (await repo.findRefund(this.db, refund.id))!;
    }
    let result: RefundResult | undefined;
    try {
      result = await platform.refund({
        paymentId: payment.id,
        refundId: refund.id,
        amountMinor: refund.amount.amount,
        totalMinor: payment.amount.amount,
        currency: refund.amount.currency,
        reason: refund.reason,
      });
    } catch (err) {
      if (err instanceof PaymentPlatformError && !err.retryable) result = { status: "failed", failureCode: err.platformCode ?? err.reason };
      else this.logger.warn(`Refund ${refund.id}: outcome unknown, the sweep will ask again`, err instanceof Error ? err.message : err);
    }
    if (result) await this.applyRefundResult(refund, result);
    return (await repo.findRefund(this.db, refund.id))!;
  },

  async applyRefundResult(this: PaymentServiceThis, refund: RefundRecord, result: RefundResult): Promise<void> {
    const status = refundStatusOf(result);
    if (status === "PENDING") {
      if (result.providerRefundId) await repo.noteRefundProviderId(this.db, refund.id, result.providerRefundId, Date.now());
      return;
    }
    await inTransaction(this.db, async (trx) => {
      const now = Date.now();
      const fields = {
        ...(result.providerRefundId ? { providerRefundId: result.providerRefundId } : {}),
        ...(result.failureCode ? { failureCode: result.failureCode } : {}),
      };
      if (!(await repo.settleRefund(trx, refund.id, status, fields, now))) return;
      await this.publishEvent(trx, status === "SUCCEEDED" ? Events.RefundSucceeded : Events.RefundFailed, {
        refundId: refund.id,
        orderId: refund.orderId,
        paymentId: refund.paymentId,
        amount: { ...refund.amount },
        occurredAt: iso(now),
      });
      countBusiness(this.broker, "refunds", { result: status === "SUCCEEDED" ? "succeeded" : "failed" }, trx);
    });
  },
};
