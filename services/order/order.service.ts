/**
 * Order service: create (reserving stock all-or-nothing), pay, cancel, ship, deliver,
 * refund; it follows payments and reservation expiry through business events.
 * Rules live in order.domain.ts, SQL in order.repo.ts. This file binds the actions and holds
 * the lifecycle (list, get, cancel, pay, ship, deliver); checkout.actions.ts creates orders
 * (and the hoarding limits), refunds.actions.ts and returns.actions.ts give money back, and
 * order.consumers.ts follows the other services' events.
 *
 * Guarantees and their limits:
 * - Create, refunds, return requests and approvals are idempotent per (user,
 *   Idempotency-Key) (lib/idempotency.ts): the same key and body answer the first result,
 *   another body is 409. Without a key every request creates.
 * - Hoarding: at most MAX_UNPAID_ORDERS unpaid orders per user and MAX_UNPAID_UNITS_PER_PRODUCT
 *   units of one product across them (an admin may raise both per user). A create checks the
 *   limits and records a draft (its lines) under the user's row lock, so concurrent creates
 *   of one user are counted against each other; the draft turns into the order (or goes)
 *   when the create ends. A draft left by a process that died stops counting after
 *   staleClaimMs.
 * - Stock: `product.reserve` holds all lines or none, keyed by the order id (a replay holds
 *   nothing more). A crash between the reserve and the order insert leaves a hold with no
 *   order: it expires after RESERVATION_TTL_SECONDS and the stock comes back.
 * - Every state change locks the order row, checks the transition table, writes, and
 *   publishes its event (outbox) in the same transaction.
 * - Payment success (event `payment.succeeded`, handled once per message through the inbox):
 *   the reservation is committed (`product.commit`, idempotent per order), the order
 *   becomes PAID and `order.paid` is published (the cart removes the lines, notification
 *   tells the user). A success for an order that can no longer take it (cancelled after its
 *   hold expired, or already paid by another payment) is refunded in full at once.
 *   Remote calls made inside the handler are idempotent, so a redelivery after a crash
 *   repeats them harmlessly.
 * - Refunds: the sum of refunds of the kept payment not failed never exceeds what it
 *   captured (checked with the order row locked; a CHECK constraint backs refunded ≤ paid);
 *   auto-refunds of other charges do not count against it. A customer refunds only before
 *   shipping and only all that is left; afterwards a return request, which an admin approves
 *   (refund through the platform, and `return.approved` tells the product service to restock
 *   when asked) or rejects. A refund is recorded PENDING, then sent to the platform
 *   (`payment.refund`, idempotent by refund id); `refund.succeeded` adds it to the refunded
 *   total, and the order becomes REFUNDED once everything paid came back. A refund whose call
 *   failed is retried by the sweep. Stock returns (`product.returnStock`) when the whole
 *   order is refunded before it shipped.
 */
import { forRunner } from "../../lib/runner";
import path from "node:path";
import type { Knex } from "knex";
import { LRUCache } from "lru-cache";
import type { AppConfig } from "../../lib/config";
import { requireUser } from "../../lib/context";
import type { AuthUser } from "../../lib/auth/tokens";
import { inTransaction } from "../../lib/db";
import { conflict, errorCode, notFound } from "../../lib/errors";
import { idempotent, requestFingerprint } from "../../lib/idempotency";
import { countBusiness } from "../../lib/metrics";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin } from "../../mixins/events.mixin";
import { PURCHASED, SoldOutHints, nextStatus, refundable, toPublicOrder, type OrderEvent, type OrderRecord } from "./order.domain";
import * as repo from "./order.repo";
import { returnActions } from "./returns.actions";
import { checkoutActions, checkoutMethods } from "./checkout.actions";
import { refundActions, refundMethods } from "./refunds.actions";
import { onPaymentSucceeded, orderConsumers } from "./order.consumers";
import { isAdmin, orderTimings, type Ctx, type OrderThis } from "./order.this";
import { callAction } from "../../lib/call";
import { periodic } from "../../lib/periodic";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { Events } from "../../proto/gen/contracts";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Params } from "../../proto/gen/params";

const SWEEP_INTERVAL_MS = 15_000;
/** Users whose hoarding-limits row a node remembers as made (~100 bytes each): see holdUnpaidSlot. */
const LIMIT_ROWS_REMEMBERED = 100_000;
/** How long a product refused as out of stock sends creates through product.checkStock first (SoldOutHints). */
const SOLD_OUT_HINT_MS = 5_000;

export function createOrderService(config: AppConfig): TypedServiceSchema<OrderThis> {
  const { idempotentWaitMs, staleClaimMs } = orderTimings(config);
  return {
    name: "order",
    mixins: [
      EventsMixin({
        name: "order",
        config,
        consumes: orderConsumers,
        // Its handlers call product.commit / release / returnStock inside the order's
        // transaction: never batched, so no neighbour's failure can roll the order back
        // after the product side acted (lib/events/consumer.ts).
        batch: false,
      }),
      DbMixin({ name: "order", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      ...checkoutActions(config),
      ...refundActions(),
      ...returnActions(config),

      list: {
        auth: "user",
        params: Params["order.list"],
        async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.list">>): Promise<ActionResponse<"order.list">> {
          const me = requireUser(ctx);
          const page = ctx.params.page ?? 1;
          const pageSize = ctx.params.pageSize ?? 20;
          // A customer's `userId` is ignored: identity comes from the token only.
          const userId = isAdmin(ctx) ? ctx.params.userId : me.id;
          // The page, its count and every order's parts from one snapshot: an order shipped
          // meanwhile cannot show up under `status=PAID`.
          return inTransaction(this.db, async (trx) => {
            const { items, total } = await repo.listOrders(trx, {
              userId,
              status: ctx.params.status,
              paymentStatus: ctx.params.paymentStatus,
              limit: pageSize,
              offset: (page - 1) * pageSize,
            });
            return { items: await Promise.all(items.map((o) => this.viewIn(trx, o))), total, page, pageSize };
          });
        },
      },

      get: {
        auth: "user",
        params: Params["order.get"],
        async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.get">>): Promise<ActionResponse<"order.get">> {
          return this.view(ctx.params.id, requireUser(ctx));
        },
      },

      /**
       * Every purchased order (paid, not fully refunded) in id order, a page at a time (keyset
       * on id), for a consumer that rebuilds from the order history (the recommendation model).
       * `total` (on the first page only) is for a progress display. Not routed.
       */
      exportPurchases: {
        visibility: "public",
        params: Params["order.exportPurchases"],
        async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.exportPurchases">>): Promise<ActionResponse<"order.exportPurchases">> {
          const limit = ctx.params.limit ?? 1000;
          const items = await repo.purchasesAfter(this.db, ctx.params.after ?? "", limit, PURCHASED);
          return {
            items,
            next: items.length === limit ? items[items.length - 1].orderId : null,
            ...(ctx.params.after ? {} : { total: await repo.countOrders(this.db, PURCHASED) }),
          };
        },
      },

      cancel: {
        auth: "user",
        params: Params["order.cancel"],
        async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.cancel">>): Promise<ActionResponse<"order.cancel">> {
          const owned = await this.ownOrder(ctx, ctx.params.id);
          const reason = isAdmin(ctx) && ctx.meta.user!.id !== owned.userId ? "admin" : "user";
          const order = await inTransaction(this.db, async (trx) => {
            const o = (await repo.findOrderForUpdate(trx, owned.id))!;
            await this.transition(trx, o, "cancel");
            // The payment service closes the order's open trades at their platforms on this event.
            await this.publishEvent(trx, Events.OrderCancelled, {
              orderId: o.id,
              userId: o.userId,
              reason,
              occurredAt: new Date().toISOString(),
            });
            countBusiness(this.broker, "orders_cancelled", { reason }, trx);
            return o;
          });
          // After the commit: a payment racing this cancel now finds CANCELLED and is refunded.
          await callAction(this.broker, "product.release", { orderId: order.id }).catch((err: unknown) => {
            // No hold (already expired or released) is fine; anything else the sweep's expiry covers.
            if (errorCode(err) !== "NOT_FOUND")
              this.logger.warn(`Release of order ${order.id} failed; its hold expires by TTL: ${(err as Error).message}`);
          });
          return this.view(order.id);
        },
      },

      pay: {
        auth: "user",
        // Unknown fields (an injected userId) are dropped: ownership alone decides, 404.
        params: Params["order.pay"],
        async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.pay">>): Promise<ActionResponse<"order.pay">> {
          const me = requireUser(ctx);
          // Its row only: paying needs the owner, status, total and deadline, not the lines.
          const order = await repo.findOrderHead(this.db, ctx.params.id);
          // Only the owner pays; anyone else's order is not found.
          if (!order || order.userId !== me.id) throw notFound("Order");
          if (order.status !== "PENDING_PAYMENT")
            throw conflict(`An order in status ${order.status} cannot be paid`, [{ status: order.status }]);
          // The trade must not outlive the stock it pays for: it expires with the reservation.
          if (!order.reservationExpiresAt || order.reservationExpiresAt <= Date.now() + 1000)
            throw conflict("The order's reservation has expired; it is being cancelled", [{ status: order.status }]);
          const payment = await callAction(
            this.broker,
            "payment.create",
            {
              orderId: order.id,
              userId: order.userId,
              provider: ctx.params.provider,
              amount: order.total,
              subject: `Meridian order ${order.id.slice(0, 8)}`,
              expiresAt: order.reservationExpiresAt,
            },
            { parentCtx: ctx },
          );
          await repo.upsertPayment(
            this.db,
            order.id,
            { id: payment.id, provider: payment.provider, status: payment.status, amount: payment.amount },
            Date.now(),
          );
          // A cancel that committed while the trade was being created published its
          // order.cancelled before the trade existed: close it now. (A cancel committing after
          // this read finds the trade, which exists by then, through its event.)
          const status = (await repo.statusOf(this.db, order.id))!;
          if (status !== "PENDING_PAYMENT") {
            await callAction(this.broker, "payment.closeOrderTrades", { orderId: order.id }, { parentCtx: ctx });
            throw conflict(`The order was ${status.toLowerCase()} meanwhile; its payment is being closed`, [{ status }]);
          }
          return payment;
        },
      },

      ship: {
        auth: "admin",
        params: Params["order.ship"],
        async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.ship">>): Promise<ActionResponse<"order.ship">> {
          const { id, carrier, trackingNumber } = ctx.params;
          await inTransaction(this.db, async (trx) => {
            const o = await repo.findOrderForUpdate(trx, id);
            if (!o) throw notFound("Order");
            // Goods leave only while some of the money stays: not with a full refund under way.
            if (o.status === "PAID" && refundable(o.paidAmount, o.paidPaymentId, await repo.refundsOf(trx, o.id)) <= 0)
              throw conflict("The order is being refunded in full; it cannot ship", [{ status: o.status }]);
            const shipment = { carrier, trackingNumber, shippedAt: new Date().toISOString() };
            await this.transition(trx, o, "ship", { shipment: JSON.stringify(shipment), shipped: true });
            await this.publishEvent(trx, Events.OrderShipped, {
              orderId: o.id,
              userId: o.userId,
              carrier,
              trackingNumber,
              occurredAt: shipment.shippedAt,
            });
          });
          return this.view(id);
        },
      },

      deliver: {
        auth: "admin",
        params: Params["order.deliver"],
        async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.deliver">>): Promise<ActionResponse<"order.deliver">> {
          await inTransaction(this.db, async (trx) => {
            const o = await repo.findOrderForUpdate(trx, ctx.params.id);
            if (!o) throw notFound("Order");
            const at = new Date().toISOString();
            await this.transition(trx, o, "deliver", { shipment: JSON.stringify({ ...o.shipment, deliveredAt: at }) });
            await this.publishEvent(trx, Events.OrderDelivered, { orderId: o.id, userId: o.userId, occurredAt: at });
          });
          return this.view(ctx.params.id);
        },
      },

      /**
       * For the payment service's reconciliation: a recorded success the order never
       * acknowledged (its `payment.succeeded` dead-lettered, say) is handed over again and
       * applied exactly as the event would be (idempotent per payment): the order takes it, or
       * it is refunded automatically and the buyer told. Not routed.
       */
      applyPayment: {
        visibility: "public",
        params: Params["order.applyPayment"],
        async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.applyPayment">>): Promise<ActionResponse<"order.applyPayment">> {
          return { outcome: await inTransaction(this.db, (trx) => onPaymentSucceeded(this, trx, ctx.params)) };
        },
      },
    },

    methods: {
      /**
       * The order with its payments, refunds, history and returns as of one moment: read by
       * one statement (repo.findOrderView), since a commit between separate reads showed, say,
       * DELIVERED with a REFUNDED history entry, and a live stream that read such a view never
       * sent the REFUNDED state (its sequence was already counted). With `caller`, someone
       * else's order is NOT_FOUND (an admin sees every order).
       */
      async view(this: OrderThis, id: string, caller?: AuthUser) {
        const v = await repo.findOrderView(this.db, id);
        if (!v || (caller && v.order.userId !== caller.id && caller.role !== "admin")) throw notFound("Order");
        return toPublicOrder(v.order, v.payments, v.refunds, v.history, v.returns);
      },

      /** The public view of `order` with its parts, read in the caller's transaction `trx`. */
      async viewIn(this: OrderThis, trx: Knex.Transaction, order: OrderRecord) {
        const [payments, refunds, history, returns] = await Promise.all([
          repo.paymentsOf(trx, order.id),
          repo.refundsOf(trx, order.id),
          repo.historyOf(trx, order.id),
          repo.returnsOf(trx, order.id),
        ]);
        return toPublicOrder(order, payments, refunds, history, returns);
      },

      /** The order if the caller owns it or is an admin; otherwise (or unknown) 404. */
      async ownOrder(this: OrderThis, ctx: Ctx<unknown>, id: string) {
        const me = requireUser(ctx);
        const order = await repo.findOrder(this.db, id);
        if (!order || (order.userId !== me.id && me.role !== "admin")) throw notFound("Order");
        return order;
      },

      /** Applies the table's transition (409 when not allowed) with the row locked by the caller. */
      async transition(this: OrderThis, trx: Knex.Transaction, order: OrderRecord, event: OrderEvent, extra: Record<string, unknown> = {}) {
        const to = nextStatus(order.status, event);
        if (!to) throw conflict(`An order in status ${order.status} cannot ${event.replace("_", " ")}`, [{ status: order.status }]);
        if (!(await repo.setStatus(trx, order.id, order.status, to, Date.now(), extra)))
          throw conflict("The order changed meanwhile; try again");
        order.status = to;
        return to;
      },

      /** Runs `create` once per the caller's Idempotency-Key (lib/idempotency.ts); without a key, every time. */
      async withKey<T>(
        this: OrderThis,
        ctx: Ctx<unknown>,
        request: unknown,
        resourceId: string,
        create: (id: string) => Promise<T>,
        replay: (id: string) => Promise<T | undefined>,
      ): Promise<T> {
        const key = ctx.meta.idempotencyKey;
        if (!key) return create(resourceId);
        const { result } = await idempotent({
          store: repo.idempotencyStore(this.db),
          userId: requireUser(ctx).id,
          key,
          fingerprint: requestFingerprint(request),
          resourceId,
          waitMs: idempotentWaitMs,
          staleMs: staleClaimMs,
          create,
          replay,
        });
        return result;
      },

      ...checkoutMethods(config),
      ...refundMethods,

      /** Refunds whose platform call failed are sent again (same id); drafts of dead creates go. */
      async sweep(this: OrderThis) {
        await this.retryPendingRefunds();
        await repo.deleteStaleDrafts(this.db, Date.now() - staleClaimMs);
      },
    },

    created(this: OrderThis) {
      this.soldOut = new SoldOutHints(SOLD_OUT_HINT_MS);
      this.limitRows = new LRUCache({ max: LIMIT_ROWS_REMEMBERED });
    },

    async started(this: OrderThis) {
      this.sweeper = periodic("Order sweep", SWEEP_INTERVAL_MS, () => this.sweep(), this.logger);
    },

    async stopped(this: OrderThis) {
      await this.sweeper?.stop();
    },
  };
}

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createOrderService);
