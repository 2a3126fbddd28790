/** What the payment service's handlers see as `this`, and its request context. */
import type { Context } from "moleculer";
import type { RequestContext } from "../../lib/context";
import type { Db } from "../../lib/db";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import type { Outcome, PaymentRecord, RefundRecord } from "./payment.domain";
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
