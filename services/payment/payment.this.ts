/** What the payment service's handlers see as `this`, and its request context. */
import type { Context } from "moleculer";
import type { RequestContext } from "../../lib/context";
import type { Db } from "../../lib/db";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import { movedAmountProblem, type Money, type Outcome, type PaymentRecord, type RefundRecord } from "./payment.domain";
import type { AppConfig } from "../../lib/config";
import { validationError } from "../../lib/errors";
import type { Periodic } from "../../lib/periodic";
import {
  SandboxNotifier,
  type PaymentConfig,
  type PaymentPlatform,
  type PlatformName,
  type RefundResult,
  type SandboxNotificationPayload,
} from "./platforms";

export type Ctx<P = Record<string, unknown>> = RequestContext<P>;

export interface PaymentServiceThis extends EventsServiceThis {
  db: Db;
  broker: Context["broker"];
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
  paymentConfig: PaymentConfig;
  platformMap?: Map<PlatformName, PaymentPlatform>;
  notifier?: SandboxNotifier;
  lifetime: AbortController;
  deliveries: Set<Promise<unknown>>;
  reconciler?: Periodic;
  /** A pass was asked for before the reconciler existed. */
  reconcileAsked?: boolean;
  publicUrl(): string;
  platforms(): Map<PlatformName, PaymentPlatform>;
  platformFor(provider: string): PaymentPlatform;
  settle(payment: PaymentRecord, outcome: Outcome): Promise<boolean>;
  executeRefund(refund: RefundRecord, payment: PaymentRecord): Promise<RefundRecord>;
  applyRefundResult(refund: RefundRecord, result: RefundResult): Promise<void>;
  reconcileOnce(now?: number): Promise<{ payments: number; refunds: number; closed: number; handedOver: number }>;
  closeTrade(p: PaymentRecord): Promise<boolean>;
  reconcileSoon(): void;
  deliverSandbox(payload: SandboxNotificationPayload): void;
}

/** A payment or a refund moves money: Money's contract allows 0 (a free product), these do not. */
export function assertMoves(amount: Money): void {
  const problem = movedAmountProblem(amount);
  if (problem) throw validationError(problem, [{ field: "amount.amount", message: problem }]);
}

/** The payment service's waits, from its configuration. */
export function paymentTimings(config: AppConfig) {
  return {
    /** A PENDING payment is asked about after this long. */
    timeoutMs: config.payments.pendingTimeoutS * 1000,
    /** A claimed row is left to its claimer this long before another sweep may try it. */
    leaseMs: Math.max(60_000, 2 * config.payments.reconcileIntervalMs),
    /** A success the order service has not acknowledged after this long is handed over again. */
    ackTimeoutMs: config.payments.orderAckTimeoutS * 1000,
    /**
     * How long a payment the reconciliation failed for want of an answer is still asked about
     * (once per lease): a late payment whose callback was lost is then recorded SUCCEEDED, and
     * the order service refunds it if the order can no longer take it. A day, and at least as
     * long as a trade can be paid (its time_expire is the reservation's end) plus an hour.
     */
    failedWatchMs: Math.max(24 * 3600 * 1000, config.reservations.ttlSeconds * 1000 + 3600 * 1000),
  };
}
