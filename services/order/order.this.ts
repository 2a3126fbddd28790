/** What the order service's handlers see as `this`, and its request context. */
import { randomBytes } from "node:crypto";
import type { Knex } from "knex";
import type { LRUCache } from "lru-cache";
import type { Context } from "moleculer";
import type { AppConfig } from "../../lib/config";
import type { RequestContext } from "../../lib/context";
import type { AuthUser } from "../../lib/auth/tokens";
import type { Db } from "../../lib/db";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import {
  toPublicOrder,
  toPublicRefund,
  type Money,
  type OrderEvent,
  type OrderLineInput,
  type OrderRecord,
  type OrderStatus,
  type RefundSummary,
  type SoldOutHints,
} from "./order.domain";
import type { Periodic } from "../../lib/periodic";
import type { ActionParams } from "../../proto/gen/contracts";

export type Ctx<P = Record<string, unknown>> = RequestContext<P>;

export type PublicRefund = ReturnType<typeof toPublicRefund>;
export type NewRefund = RefundSummary & { orderId: string };

export interface OrderThis extends EventsServiceThis {
  db: Db;
  broker: Context["broker"];
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
  sweeper?: Periodic;
  /** See SoldOutHints: set in `created`. */
  soldOut: SoldOutHints;
  /** Users whose order_user_limits row this process has seen or made (holdUnpaidSlot): set in `created`. */
  limitRows: LRUCache<string, true>;
  view(id: string, caller?: AuthUser): Promise<ReturnType<typeof toPublicOrder>>;
  viewIn(trx: Knex.Transaction, order: OrderRecord): Promise<ReturnType<typeof toPublicOrder>>;
  ownOrder(ctx: Ctx<unknown>, id: string): Promise<OrderRecord>;
  transition(trx: Knex.Transaction, order: OrderRecord, event: OrderEvent, extra?: Record<string, unknown>): Promise<OrderStatus>;
  withKey<T>(
    ctx: Ctx<unknown>,
    request: unknown,
    resourceId: string,
    create: (id: string) => Promise<T>,
    replay: (id: string) => Promise<T | undefined>,
  ): Promise<T>;
  createOrder(ctx: Ctx<CreateParams>, userId: string, orderId: string): Promise<OrderRecord>;
  holdUnpaidSlot(userId: string, orderId: string, lines: OrderLineInput[]): Promise<void>;
  refuseIfSoldOut(ctx: Ctx<CreateParams>, lines: OrderLineInput[]): Promise<void>;
  refuseBeforeKey(ctx: Ctx<CreateParams>, userId: string): Promise<void>;
  requestRefund(orderId: string, refundId: string, r: { requested?: number; reason: string; byAdmin: boolean }): Promise<PublicRefund>;
  sendRefund(refund: { id: string; orderId: string; paymentId: string; amount: Money; reason: string }): Promise<void>;
  sendAfterCommit(trx: Knex.Transaction, refund: NewRefund): void;
  retryPendingRefunds(): Promise<void>;
  sweep(): Promise<void>;
}

export type CreateParams = ActionParams<"order.create">;

export const isAdmin = (ctx: Ctx<unknown>) => ctx.meta.user?.role === "admin";
export const newRefundId = () => randomBytes(16).toString("hex");

/** The order service's waits, from the request timeout its callers use. */
export function orderTimings(config: AppConfig) {
  return {
    /** How long a request whose key is already claimed waits for that result: within its caller's timeout. */
    idempotentWaitMs: Math.max(1000, config.requestTimeoutMs - 500),
    /**
     * A claim (or a draft) without its order after this long belongs to a request that died: a
     * create makes a handful of calls, each bounded by the request timeout, so it cannot run this long.
     */
    staleClaimMs: Math.max(30_000, 6 * config.requestTimeoutMs),
  };
}
