/**
 * Reconciliation: each replica sweeps on a timer (and when woken); a row is claimed by a
 * conditional UPDATE of its lease, then its platform is asked and the answer settled through
 * `settle`. It also closes the trades of cancelled orders and hands successes the order
 * service never acknowledged back to it (`order.applyPayment`). Bound into the `payment`
 * service by payment.service.ts; its guarantees are listed there.
 */
import type { AppConfig } from "../../lib/config";
import { reconcileOutcome, type PaymentRecord } from "./payment.domain";
import * as repo from "./payment.repo";
import { paymentTimings, type Ctx, type PaymentServiceThis } from "./payment.this";
import { callAction } from "../../lib/call";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import type { TypedActions } from "../../lib/service-schema";

export function reconcileActions(): TypedActions<PaymentServiceThis> {
  return {
    /** One reconciliation pass now (tests, operations); `now` (epoch ms) lets a test look ahead. */
    reconcile: {
      visibility: "public",
      params: Params["payment.reconcile"],
      async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.reconcile">>): Promise<ActionResponse<"payment.reconcile">> {
        return this.reconcileOnce(ctx.params.now);
      },
    },
    /**
     * For the order service: close the order's trades that may still be open (the order
     * was cancelled while one was being created: its `order.cancelled` came before the
     * trade existed). Idempotent; the closing itself is reconciliation's. Not routed.
     */
    closeOrderTrades: {
      visibility: "public",
      params: Params["payment.closeOrderTrades"],
      async handler(
        this: PaymentServiceThis,
        ctx: Ctx<ActionParams<"payment.closeOrderTrades">>,
      ): Promise<ActionResponse<"payment.closeOrderTrades">> {
        const marked = await repo.requestClose(this.db, ctx.params.orderId, Date.now());
        if (marked) this.reconcileSoon();
        return { marked };
      },
    },
  };
}

/** Rows handled per sweep pass (payments, then refunds). */
const SWEEP_BATCH = 100;

export function reconcileMethods(config: AppConfig) {
  const { leaseMs, ackTimeoutMs, failedWatchMs } = paymentTimings(config);
  return {
    /**
     * One pass: PENDING payments past the timeout are queried and settled; PENDING refunds
     * whose call never settled are sent again (same refundId). Any number of replicas may
     * run it: each row is claimed by a conditional UPDATE first.
     */
    async reconcileOnce(this: PaymentServiceThis, now = Date.now()) {
      let payments = 0;
      let refunds = 0;
      let closed = 0;
      let handedOver = 0;
      const platforms = this.platforms();
      const watchSince = now - failedWatchMs;
      for (const p of await repo.dueCloses(this.db, now, SWEEP_BATCH)) {
        if (!(await repo.claimClose(this.db, p.id, now, now + leaseMs))) continue;
        try {
          if (await this.closeTrade(p)) closed++;
        } catch (err) {
          this.logger.warn(
            `Closing the trade of payment ${p.id} failed; retried after ${leaseMs} ms`,
            err instanceof Error ? err.message : err,
          );
        }
      }
      for (const p of await repo.duePendingPayments(this.db, now, SWEEP_BATCH, watchSince)) {
        if (!(await repo.claimPayment(this.db, p.id, now, now + leaseMs, watchSince))) continue;
        const platform = platforms.get(p.provider);
        if (!platform) continue;
        try {
          const outcome = reconcileOutcome(await platform.query(p.id), p.amount, Date.now());
          if (!outcome) {
            this.logger.error(`Reconciliation of payment ${p.id}: the platform's amount or currency differs from ours; left ${p.status}`);
            continue;
          }
          // A watched FAILED payment changes only if the platform now says it was paid.
          if (p.status === "FAILED" && outcome.kind !== "succeeded") continue;
          if (await this.settle(p, outcome)) payments++;
        } catch (err) {
          this.logger.warn(
            `Reconciliation of payment ${p.id} failed; retried after ${leaseMs} ms`,
            err instanceof Error ? err.message : err,
          );
        }
      }
      // Successes the order never acknowledged (their event dead-lettered): hand them over again.
      for (const p of await repo.dueUnacknowledged(this.db, now - ackTimeoutMs, now, SWEEP_BATCH)) {
        if (!(await repo.claimUnacknowledged(this.db, p.id, now, now + leaseMs))) continue;
        try {
          const { outcome } = await callAction(this.broker, "order.applyPayment", {
            paymentId: p.id,
            orderId: p.orderId,
            provider: p.provider,
            amount: p.amount,
          });
          this.logger.warn(
            `Payment ${p.id} of order ${p.orderId} was never acknowledged by the order service; handed over again: ${outcome}`,
          );
          await repo.acknowledgeByOrder(this.db, p.id, Date.now());
          handedOver++;
        } catch (err) {
          this.logger.warn(
            `Handing payment ${p.id} over to the order service failed; retried after ${leaseMs} ms`,
            err instanceof Error ? err.message : err,
          );
        }
      }
      for (const r of await repo.duePendingRefunds(this.db, now, SWEEP_BATCH)) {
        if (!(await repo.claimRefund(this.db, r.id, now, now + leaseMs))) continue;
        const payment = await repo.findPayment(this.db, r.paymentId);
        if (!payment) continue;
        try {
          if ((await this.executeRefund(r, payment)).status !== "PENDING") refunds++;
        } catch (err) {
          this.logger.warn(`Reconciliation of refund ${r.id} failed`, err instanceof Error ? err.message : err);
        }
      }
      if (payments || refunds || closed || handedOver)
        this.logger.info(
          `Reconciliation settled ${payments} payment(s), ${refunds} refund(s); closed ${closed} trade(s); handed ${handedOver} success(es) over`,
        );
      return { payments, refunds, closed, handedOver };
    },

    /**
     * Closes a cancelled order's trade at its platform and settles it: closed → FAILED
     * ("closed"); unknown to the platform → FAILED ("not_found", still watched: an Alipay
     * page-pay trade comes into being only when the buyer opens the page, until its
     * time_expire); paid meanwhile → SUCCEEDED (the order refunds it). A trade already
     * FAILED here (given up for want of an answer, or declined) keeps its status; closed at
     * the platform it is no longer watched. True when this changed something.
     */
    async closeTrade(this: PaymentServiceThis, p: PaymentRecord) {
      const platform = this.platforms().get(p.provider);
      if (!platform) return false;
      const result = await platform.close(p.id);
      let changed = false;
      if (result.status === "paid") {
        const outcome = reconcileOutcome(await platform.query(p.id), p.amount, Date.now());
        if (outcome?.kind !== "succeeded") throw new Error(`the platform said paid, then ${outcome?.kind ?? "an amount that differs"}`);
        changed = await this.settle(p, outcome);
      } else if (p.status === "PENDING") {
        changed = await this.settle(p, { kind: "failed", reason: result.status === "closed" ? "closed" : "not_found" });
      }
      await repo.closeHandled(this.db, p.id, result.status === "closed", Date.now());
      return changed || result.status === "closed";
    },

    /** Runs a reconciliation pass now (after a cancel), unless one is running. */
    reconcileSoon(this: PaymentServiceThis) {
      // Before `started` (a backlog's order.cancelled consumed at boot): run it once started.
      if (this.reconciler) this.reconciler.kick();
      else this.reconcileAsked = true;
    },
  };
}
