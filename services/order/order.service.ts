/**
 * Order service: create (reserving stock all-or-nothing), pay, cancel, ship, deliver,
 * refund; it follows payments and reservation expiry through business events.
 * Rules live in order.domain.ts, SQL in order.repo.ts.
 *
 * Guarantees and their limits:
 * - Create is idempotent per (user, Idempotency-Key): the key row is claimed first under
 *   its primary key with the new order id; a concurrent or later request with the same key
 *   waits for and answers that order; the same key with another body is 409. Without a key
 *   every request creates an order.
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
 * - Refunds: the sum of refunds not failed never exceeds what was paid (checked with the
 *   order row locked; a CHECK constraint backs refunded ≤ paid). A refund is recorded
 *   PENDING, then sent to the platform (`payment.refund`, idempotent by refund id); the
 *   state changes when `refund.succeeded` arrives. A refund whose call failed is retried by
 *   the sweep. Stock returns (`product.returnStock`) when the whole order is refunded
 *   before it shipped.
 */
import { randomBytes, randomUUID } from "node:crypto";
import path from "node:path";
import type { Knex } from "knex";
import type { Context, ServiceSchema } from "moleculer";
import { addressProps } from "../../lib/address-rules";
import type { AppConfig } from "../../lib/config";
import { requireUser, type RequestContext } from "../../lib/context";
import { inTransaction, isUniqueViolation, type Db } from "../../lib/db";
import { AppError, conflict, notFound, validationError } from "../../lib/errors";
import { countBusiness } from "../../lib/metrics";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin, type EventsServiceThis } from "../../mixins/events.mixin";
import {
  ADDRESS_FIELDS,
  MAX_LINE_QUANTITY,
  MAX_ORDER_LINES,
  MixedCurrencyError,
  ORDER_STATUSES,
  PURCHASED,
  REFUNDABLE,
  nextStatus,
  normalizeOrderLines,
  orderTotal,
  pickAddress,
  refundAmount,
  refundEvent,
  refundable,
  requestFingerprint,
  returnsStock,
  toPublicOrder,
  toPublicRefund,
  type Money,
  type OrderEvent,
  type OrderLineInput,
  type OrderRecord,
  type OrderStatus,
  type PricedLine,
  type ShippingAddress,
} from "./order.domain";
import * as repo from "./order.repo";

type Ctx<P = Record<string, unknown>> = RequestContext<P>;

interface PaymentView {
  id: string;
  orderId: string;
  userId: string;
  provider: string;
  status: string;
  amount: Money;
}

interface OrderThis extends EventsServiceThis {
  db: Db;
  broker: Context["broker"];
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
  sweepTimer?: NodeJS.Timeout;
  stopping?: boolean;
  view(order: OrderRecord): Promise<ReturnType<typeof toPublicOrder>>;
  ownOrder(ctx: Ctx<any>, id: string): Promise<OrderRecord>;
  transition(trx: Knex.Transaction, order: OrderRecord, event: OrderEvent, extra?: Record<string, unknown>): Promise<OrderStatus>;
  createOrder(ctx: Ctx<CreateParams>, userId: string, orderId?: string): Promise<OrderRecord>;
  requestRefund(order: OrderRecord, amount: number, reason: string): Promise<ReturnType<typeof toPublicRefund>>;
  sendRefund(refund: { id: string; orderId: string; paymentId: string; amount: Money; reason: string }): Promise<void>;
  retryRefunds(): Promise<void>;
}

interface CreateParams {
  addressId?: string;
  shippingAddress?: Record<string, unknown>;
  items?: OrderLineInput[];
}

const idRule = { type: "string", min: 1, max: 64 } as const;
const moneySchema = { type: "object", properties: { amount: { type: "integer" }, currency: { type: "string" } } };
const orderSchema = {
  type: "object",
  properties: {
    id: { type: "string" },
    userId: { type: "string" },
    status: { type: "string", enum: [...ORDER_STATUSES] },
    items: {
      type: "array",
      items: { type: "object", properties: { productId: { type: "string" }, sku: { type: "string" }, name: { type: "string" }, unitPrice: moneySchema, quantity: { type: "integer" } } },
    },
    total: moneySchema,
    shippingAddress: { type: "object", properties: Object.fromEntries(ADDRESS_FIELDS.map((k) => [k, { type: "string" }])) },
    payments: { type: "array", items: { type: "object" } },
    refunds: { type: "array", items: { type: "object" } },
    shipment: { type: "object", properties: { carrier: { type: "string" }, trackingNumber: { type: "string" }, shippedAt: { type: "string" }, deliveredAt: { type: "string" } } },
    history: { type: "array", items: { type: "object", properties: { status: { type: "string" }, at: { type: "string", format: "date-time" } } } },
    payBefore: { type: "string", format: "date-time" },
    createdAt: { type: "string", format: "date-time" },
    updatedAt: { type: "string", format: "date-time" },
  },
};
const refundSchema = {
  type: "object",
  properties: { id: { type: "string" }, paymentId: { type: "string" }, amount: moneySchema, status: { type: "string" }, reason: { type: "string" }, createdAt: { type: "string" }, updatedAt: { type: "string" } },
};


const REFUND_RETRY_AFTER_MS = 30_000;
const SWEEP_INTERVAL_MS = 15_000;

const isAdmin = (ctx: Ctx<any>) => ctx.meta.user?.role === "admin";
const errorCode = (err: unknown) => (err as { type?: string })?.type;

export function createOrderService(config: AppConfig): ServiceSchema {
  /** How long a request whose key is already claimed waits for that order: within its caller's timeout. */
  const idempotentWaitMs = Math.max(1000, config.requestTimeoutMs - 500);
  /**
   * A claim without its order after this long belongs to a request that died: a create makes
   * a handful of calls, each bounded by the request timeout, so it cannot run this long.
   */
  const staleClaimMs = Math.max(30_000, 6 * config.requestTimeoutMs);
  return {
    name: "order",
    mixins: [
      EventsMixin({
        name: "order",
        config,
        consumes: {
          async "payment.succeeded"(this: OrderThis, trx: Knex.Transaction, p: { paymentId: string; orderId: string; provider: string; amount: Money }) {
            await onPaymentSucceeded(this, trx, p);
          },
          async "payment.failed"(this: OrderThis, trx: Knex.Transaction, p: { paymentId: string; orderId: string; provider: string; reason?: string }) {
            await onPaymentFailed(this, trx, p);
          },
          async "reservation.expired"(this: OrderThis, trx: Knex.Transaction, p: { orderId: string }) {
            await onReservationExpired(this, trx, p);
          },
          async "refund.succeeded"(this: OrderThis, trx: Knex.Transaction, p: { refundId: string; orderId: string }) {
            await onRefundSettled(this, trx, p, "SUCCEEDED");
          },
          async "refund.failed"(this: OrderThis, trx: Knex.Transaction, p: { refundId: string; orderId: string }) {
            await onRefundSettled(this, trx, p, "FAILED");
          },
        },
      }),
      DbMixin({ name: "order", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      create: {
        auth: "user",
        openapi: {
          summary: "Place an order from the cart (or the given items): reserves all lines or none. Send an Idempotency-Key header to make retries safe",
          tags: ["orders"], status: 201, response: orderSchema, errors: [409],
        },
        params: {
          $$strict: true,
          addressId: { type: "string", min: 1, max: 64, optional: true },
          shippingAddress: { type: "object", optional: true, strict: true, props: addressProps },
          items: {
            type: "array", optional: true, min: 1, max: MAX_ORDER_LINES,
            items: { type: "object", strict: true, props: { productId: idRule, quantity: { type: "number", integer: true, min: 1, max: MAX_LINE_QUANTITY } } },
          },
        },
        async handler(this: OrderThis, ctx: Ctx<CreateParams>) {
          const me = requireUser(ctx);
          if (Boolean(ctx.params.addressId) === Boolean(ctx.params.shippingAddress))
            throw validationError("Give either addressId or shippingAddress", [{ field: "addressId" }, { field: "shippingAddress" }]);
          const key = ctx.meta.idempotencyKey;
          let order: OrderRecord;
          if (!key) order = await this.createOrder(ctx, me.id);
          else {
            const fingerprint = requestFingerprint(ctx.params);
            const orderId = randomUUID();
            const deadline = Date.now() + idempotentWaitMs;
            // Claim the key, or answer with the order of whoever claimed it.
            for (;;) {
              try {
                await repo.insertIdempotencyKey(this.db, me.id, key, fingerprint, orderId, Date.now());
                break;
              } catch (err) {
                if (!isUniqueViolation(err)) throw err;
              }
              const claimed = await repo.findIdempotencyKey(this.db, me.id, key);
              if (claimed) {
                if (claimed.fingerprint !== fingerprint) throw conflict("This Idempotency-Key was used with another request body", [{ field: "Idempotency-Key" }]);
                const existing = await repo.findOrder(this.db, claimed.orderId);
                if (existing) {
                  ctx.meta.$statusCode = 201;
                  ctx.meta.$location = `/api/orders/${existing.id}`;
                  return this.view(existing);
                }
                // A claim whose order never appeared, older than any request can run: its
                // process died between the claim and the insert. Free it (its stock hold, if
                // any, expires by TTL) and claim again.
                if (claimed.createdAt < Date.now() - staleClaimMs) {
                  await repo.deleteIdempotencyKey(this.db, me.id, key, claimed.orderId);
                  continue;
                }
              }
              // Still being created by the first request, or it failed and released the key
              // (then the next round claims it for this one).
              if (Date.now() > deadline) throw new AppError("SERVICE_UNAVAILABLE", "The same request is still being processed; try again");
              await new Promise((r) => setTimeout(r, 25));
            }
            try {
              order = await this.createOrder(ctx, me.id, orderId);
            } catch (err) {
              // Nothing was created: the key is free again for a corrected retry.
              await repo.deleteIdempotencyKey(this.db, me.id, key, orderId).catch(() => undefined);
              throw err;
            }
          }
          ctx.meta.$statusCode = 201;
          ctx.meta.$location = `/api/orders/${order.id}`;
          return this.view(order);
        },
      },

      list: {
        auth: "user",
        openapi: { summary: "Orders: your own, or (admins) everyone's filtered by userId and status", tags: ["orders"], response: { type: "object", properties: { items: { type: "array", items: orderSchema }, total: { type: "integer" }, page: { type: "integer" }, pageSize: { type: "integer" } } } },
        params: {
          userId: { type: "string", optional: true, max: 64 },
          status: { type: "enum", values: [...ORDER_STATUSES], optional: true },
          page: { type: "number", integer: true, convert: true, min: 1, max: 100_000, optional: true },
          pageSize: { type: "number", integer: true, convert: true, min: 1, max: 100, optional: true },
        },
        async handler(this: OrderThis, ctx: Ctx<{ userId?: string; status?: OrderStatus; page?: number; pageSize?: number }>) {
          const me = requireUser(ctx);
          const page = ctx.params.page ?? 1;
          const pageSize = ctx.params.pageSize ?? 20;
          // A customer's `userId` is ignored: identity comes from the token only.
          const userId = isAdmin(ctx) ? ctx.params.userId : me.id;
          const { items, total } = await repo.listOrders(this.db, { userId, status: ctx.params.status, limit: pageSize, offset: (page - 1) * pageSize });
          return { items: await Promise.all(items.map((o) => this.view(o))), total, page, pageSize };
        },
      },

      get: {
        auth: "user",
        openapi: { summary: "One order (its owner or an admin)", tags: ["orders"], response: orderSchema },
        params: { id: idRule },
        async handler(this: OrderThis, ctx: Ctx<{ id: string }>) {
          return this.view(await this.ownOrder(ctx, ctx.params.id));
        },
      },

      /**
       * Every purchased order (paid, not fully refunded) in id order, a page at a time (keyset
       * on id), for a consumer that rebuilds from the order history (the recommendation model).
       * `total` (on the first page only) is for a progress display. Not routed.
       */
      exportPurchases: {
        visibility: "public",
        params: {
          $$strict: true,
          after: { type: "string", max: 64, optional: true },
          limit: { type: "number", integer: true, min: 1, max: 2000, optional: true },
        },
        async handler(this: OrderThis, ctx: Ctx<{ after?: string; limit?: number }>) {
          const limit = ctx.params.limit ?? 1000;
          const items = await repo.purchasesAfter(this.db, ctx.params.after ?? "", limit, PURCHASED);
          return {
            items,
            next: items.length === limit ? items[items.length - 1]!.orderId : null,
            ...(ctx.params.after ? {} : { total: await repo.countOrders(this.db, PURCHASED) }),
          };
        },
      },

      cancel: {
        auth: "user",
        openapi: { summary: "Cancel an unpaid order; its stock reservation is released", tags: ["orders"], response: orderSchema, errors: [409] },
        params: { $$strict: "remove", id: idRule },
        async handler(this: OrderThis, ctx: Ctx<{ id: string }>) {
          const owned = await this.ownOrder(ctx, ctx.params.id);
          const order = await inTransaction(this.db, async (trx) => {
            const o = (await repo.findOrderForUpdate(trx, owned.id))!;
            await this.transition(trx, o, "cancel");
            await this.publishEvent(trx, "order.cancelled", { orderId: o.id, userId: o.userId, reason: isAdmin(ctx) && ctx.meta.user!.id !== o.userId ? "admin" : "user", occurredAt: new Date().toISOString() });
            countBusiness(this.broker, "orders_cancelled", { reason: isAdmin(ctx) && ctx.meta.user!.id !== o.userId ? "admin" : "user" }, trx);
            return o;
          });
          // After the commit: a payment racing this cancel now finds CANCELLED and is refunded.
          await this.broker.call("product.release", { orderId: order.id }).catch((err: unknown) => {
            // No hold (already expired or released) is fine; anything else the sweep's expiry covers.
            if (errorCode(err) !== "NOT_FOUND") this.logger.warn(`Release of order ${order.id} failed; its hold expires by TTL: ${(err as Error).message}`);
          });
          return this.view((await repo.findOrder(this.db, order.id))!);
        },
      },

      pay: {
        auth: "user",
        openapi: { summary: "Start paying an order with a platform; answers what the client needs (payUrl, codeUrl or form)", tags: ["orders"], errors: [409] },
        // Unknown fields (an injected userId) are dropped: ownership alone decides, 404.
        params: { $$strict: "remove", id: idRule, provider: { type: "enum", values: ["sandbox", "alipay", "wechatpay"] } },
        async handler(this: OrderThis, ctx: Ctx<{ id: string; provider: string }>) {
          const me = requireUser(ctx);
          const order = await repo.findOrder(this.db, ctx.params.id);
          // Only the owner pays; anyone else's order is not found.
          if (!order || order.userId !== me.id) throw notFound("Order");
          if (order.status !== "PENDING_PAYMENT") throw conflict(`An order in status ${order.status} cannot be paid`, [{ status: order.status }]);
          const payment = (await this.broker.call(
            "payment.create",
            { orderId: order.id, userId: order.userId, provider: ctx.params.provider, amount: order.total, subject: `Meridian order ${order.id.slice(0, 8)}` },
            { parentCtx: ctx },
          )) as PaymentView;
          await repo.upsertPayment(this.db, order.id, { id: payment.id, provider: payment.provider, status: payment.status, amount: payment.amount }, Date.now());
          return payment;
        },
      },

      ship: {
        auth: "admin",
        openapi: { summary: "Mark a paid order shipped, with carrier and tracking number", tags: ["orders"], response: orderSchema, errors: [409] },
        params: { $$strict: true, id: idRule, carrier: { type: "string", trim: true, min: 1, max: 100 }, trackingNumber: { type: "string", trim: true, min: 1, max: 100 } },
        async handler(this: OrderThis, ctx: Ctx<{ id: string; carrier: string; trackingNumber: string }>) {
          const { id, carrier, trackingNumber } = ctx.params;
          await inTransaction(this.db, async (trx) => {
            const o = await repo.findOrderForUpdate(trx, id);
            if (!o) throw notFound("Order");
            const shipment = { carrier, trackingNumber, shippedAt: new Date().toISOString() };
            await this.transition(trx, o, "ship", { shipment: JSON.stringify(shipment), shipped: true });
            await this.publishEvent(trx, "order.shipped", { orderId: o.id, userId: o.userId, carrier, trackingNumber, occurredAt: shipment.shippedAt });
          });
          return this.view((await repo.findOrder(this.db, id))!);
        },
      },

      deliver: {
        auth: "admin",
        openapi: { summary: "Mark a shipped order delivered", tags: ["orders"], response: orderSchema, errors: [409] },
        params: { $$strict: true, id: idRule },
        async handler(this: OrderThis, ctx: Ctx<{ id: string }>) {
          await inTransaction(this.db, async (trx) => {
            const o = await repo.findOrderForUpdate(trx, ctx.params.id);
            if (!o) throw notFound("Order");
            const at = new Date().toISOString();
            await this.transition(trx, o, "deliver", { shipment: JSON.stringify({ ...o.shipment, deliveredAt: at }) });
            await this.publishEvent(trx, "order.delivered", { orderId: o.id, userId: o.userId, occurredAt: at });
          });
          return this.view((await repo.findOrder(this.db, ctx.params.id))!);
        },
      },

      refund: {
        auth: "user",
        openapi: { summary: "Refund part or all of what is left (owner or admin); goes back through the platform that took the money", tags: ["orders"], status: 202, response: refundSchema, errors: [409] },
        params: {
          $$strict: "remove",
          id: idRule,
          amount: { type: "number", integer: true, min: 1, optional: true },
          reason: { type: "string", trim: true, min: 1, max: 200 },
        },
        async handler(this: OrderThis, ctx: Ctx<{ id: string; amount?: number; reason: string }>) {
          const order = await this.ownOrder(ctx, ctx.params.id);
          const refund = await this.requestRefund(order, ctx.params.amount ?? NaN, ctx.params.reason);
          ctx.meta.$statusCode = 202;
          return refund;
        },
      },
    },

    methods: {
      async view(this: OrderThis, order: OrderRecord) {
        const [payments, refunds, history] = await Promise.all([repo.paymentsOf(this.db, order.id), repo.refundsOf(this.db, order.id), repo.historyOf(this.db, order.id)]);
        return toPublicOrder(order, payments, refunds, history);
      },

      /** The order if the caller owns it or is an admin; otherwise (or unknown) 404. */
      async ownOrder(this: OrderThis, ctx: Ctx<any>, id: string) {
        const me = requireUser(ctx);
        const order = await repo.findOrder(this.db, id);
        if (!order || (order.userId !== me.id && me.role !== "admin")) throw notFound("Order");
        return order;
      },

      /** Applies the table's transition (409 when not allowed) with the row locked by the caller. */
      async transition(this: OrderThis, trx: Knex.Transaction, order: OrderRecord, event: OrderEvent, extra: Record<string, unknown> = {}) {
        const to = nextStatus(order.status, event);
        if (!to) throw conflict(`An order in status ${order.status} cannot ${event.replace("_", " ")}`, [{ status: order.status }]);
        if (!(await repo.setStatus(trx, order.id, order.status, to, Date.now(), extra))) throw conflict("The order changed meanwhile; try again");
        order.status = to;
        return to;
      },

      async createOrder(this: OrderThis, ctx: Ctx<CreateParams>, userId: string, orderId: string = randomUUID()) {
        let address: ShippingAddress;
        if (ctx.params.addressId) {
          try {
            address = pickAddress(await this.broker.call("user.getAddress", { userId, id: ctx.params.addressId }, { parentCtx: ctx }));
          } catch (err) {
            if (errorCode(err) === "NOT_FOUND") throw validationError("Unknown addressId", [{ field: "addressId" }]);
            throw err;
          }
        } else address = pickAddress(ctx.params.shippingAddress!);

        const requested = ctx.params.items ?? ((await this.broker.call("cart.lines", { userId }, { parentCtx: ctx })) as OrderLineInput[]);
        const { lines, problems } = normalizeOrderLines(requested);
        if (problems.length) throw validationError("The order cannot be placed", problems);

        // Prices are read now, from the product service, and frozen into the order.
        const priced: PricedLine[] = [];
        for (const l of lines) {
          let p: { id: string; sku: string; name: string; price: Money };
          try {
            p = await this.broker.call("product.get", { id: l.productId }, { parentCtx: ctx });
          } catch (err) {
            if (errorCode(err) === "NOT_FOUND") throw validationError("A product of the order does not exist", [{ field: `items.${l.productId}`, message: "unknown product" }]);
            throw err;
          }
          priced.push({ productId: p.id, sku: p.sku, name: p.name, unitPrice: p.price, quantity: l.quantity });
        }
        let total: Money;
        try {
          total = orderTotal(priced);
        } catch (err) {
          if (err instanceof MixedCurrencyError) throw validationError(err.message, [{ field: "items" }]);
          throw err;
        }

        // All or nothing; OUT_OF_STOCK (409) passes through with the products named.
        const reservation = (await this.broker.call("product.reserve", { orderId, lines }, { parentCtx: ctx })) as { expiresAt: string };
        const now = Date.now();
        const order: OrderRecord = {
          id: orderId, userId, status: "PENDING_PAYMENT", total, items: priced, shippingAddress: address, shipment: null,
          paidPaymentId: null, paidAmount: 0, refundedAmount: 0, shipped: false,
          reservationExpiresAt: Date.parse(reservation.expiresAt), createdAt: now, updatedAt: now,
        };
        try {
          await inTransaction(this.db, async (trx) => {
            await repo.insertOrder(trx, order);
            await this.publishEvent(trx, "order.created", {
              orderId, userId, total, items: priced.map((l) => ({ productId: l.productId, name: l.name, quantity: l.quantity })), occurredAt: new Date(now).toISOString(),
            });
            countBusiness(this.broker, "orders_created", undefined, trx);
          });
        } catch (err) {
          await this.broker.call("product.release", { orderId }).catch(() => undefined); // else the TTL frees it
          throw err;
        }
        return order;
      },

      async requestRefund(this: OrderThis, order: OrderRecord, requested: number, reason: string) {
        const refund = await inTransaction(this.db, async (trx) => {
          const o = (await repo.findOrderForUpdate(trx, order.id))!;
          if (!REFUNDABLE.includes(o.status) || !o.paidPaymentId) throw conflict(`An order in status ${o.status} cannot be refunded`, [{ status: o.status }]);
          const left = refundable(o.paidAmount, (await repo.refundsOf(trx, o.id)).map((r) => ({ id: r.id, amount: r.amount.amount, status: r.status })));
          const verdict = refundAmount(Number.isNaN(requested) ? undefined : requested, left);
          if ("problem" in verdict) throw validationError(`Refund refused: ${verdict.problem}`, [{ field: "amount", refundable: left }]);
          const now = Date.now();
          const r = { id: randomBytes(16).toString("hex"), orderId: o.id, paymentId: o.paidPaymentId, amount: { amount: verdict.amount, currency: o.total.currency }, status: "PENDING" as const, reason, createdAt: now, updatedAt: now };
          await repo.insertRefund(trx, r);
          return r;
        });
        // After the commit: the platform call (idempotent by refund id); a failure leaves it PENDING for the sweep.
        await this.sendRefund(refund).catch((err: Error) => this.logger.warn(`Refund ${refund.id} not sent yet (the sweep retries): ${err.message}`));
        return toPublicRefund((await repo.findRefund(this.db, refund.id))!);
      },

      async sendRefund(this: OrderThis, r: { id: string; orderId: string; paymentId: string; amount: Money; reason: string }) {
        await this.broker.call("payment.refund", { refundId: r.id, orderId: r.orderId, paymentId: r.paymentId, amount: r.amount, reason: r.reason });
      },

      async retryRefunds(this: OrderThis) {
        for (const r of await repo.stalePendingRefunds(this.db, Date.now() - REFUND_RETRY_AFTER_MS, 50)) {
          await repo.touchRefund(this.db, r.id, Date.now());
          await this.sendRefund(r).catch((err: Error) => this.logger.warn(`Refund ${r.id} retry failed: ${err.message}`));
        }
      },
    },

    async started(this: OrderThis) {
      const tick = async () => {
        await this.retryRefunds().catch((err: Error) => this.logger.warn(`Refund sweep failed: ${err.message}`));
        if (!this.stopping) this.sweepTimer = setTimeout(tick, SWEEP_INTERVAL_MS);
      };
      this.sweepTimer = setTimeout(tick, SWEEP_INTERVAL_MS);
    },

    async stopped(this: OrderThis) {
      this.stopping = true;
      clearTimeout(this.sweepTimer);
    },
  } as unknown as ServiceSchema;
}

// ---- event handlers: each runs inside the inbox transaction of its message ----

async function onPaymentSucceeded(svc: OrderThis, trx: Knex.Transaction, p: { paymentId: string; orderId: string; provider: string; amount: Money }) {
  const order = await repo.findOrderForUpdate(trx, p.orderId);
  if (!order) {
    svc.logger.warn(`payment.succeeded for unknown order ${p.orderId} (payment ${p.paymentId})`);
    return;
  }
  const now = Date.now();
  await repo.upsertPayment(trx, order.id, { id: p.paymentId, provider: p.provider, status: "SUCCEEDED", amount: p.amount }, now);
  if (order.paidPaymentId === p.paymentId) return; // the same success again
  let refundReason: string | undefined;
  if (order.status !== "PENDING_PAYMENT") refundReason = order.paidPaymentId ? "duplicate payment" : `order ${order.status.toLowerCase()} before the payment arrived`;
  else if (p.amount.amount !== order.total.amount || p.amount.currency !== order.total.currency) refundReason = "amount does not match the order";
  else {
    try {
      await svc.broker.call("product.commit", { orderId: order.id });
    } catch (err) {
      if (errorCode(err) !== "CONFLICT" && errorCode(err) !== "NOT_FOUND") throw err; // retried by the event layer
      refundReason = "the stock reservation expired before the payment arrived";
    }
  }
  if (refundReason) {
    // Money taken for an order that cannot take it: give it back in full, once (refund id
    // derived from the payment, so a redelivery asks for the same refund).
    svc.logger.warn(`Refunding payment ${p.paymentId} of order ${order.id}: ${refundReason}`);
    const refundId = `auto${p.paymentId}`.slice(0, 64);
    if (!(await repo.findRefund(trx, refundId)))
      await repo.insertRefund(trx, { id: refundId, orderId: order.id, paymentId: p.paymentId, amount: p.amount, status: "PENDING", reason: refundReason, createdAt: now, updatedAt: now });
    trx.executionPromise.then(
      () => svc.sendRefund({ id: refundId, orderId: order.id, paymentId: p.paymentId, amount: p.amount, reason: refundReason! }).catch(() => undefined),
      () => undefined,
    );
    return;
  }
  await svc.transition(trx, order, "payment_succeeded", { paid_payment_id: p.paymentId, paid_amount: p.amount.amount, reservation_expires_at: null });
  await svc.publishEvent(trx, "order.paid", {
    orderId: order.id, userId: order.userId, total: order.total, paymentId: p.paymentId, provider: p.provider,
    lines: order.items.map((l) => ({ productId: l.productId, quantity: l.quantity })), occurredAt: new Date(now).toISOString(),
  });
  countBusiness(svc.broker, "orders_paid", { provider: p.provider }, trx);
}

async function onPaymentFailed(svc: OrderThis, trx: Knex.Transaction, p: { paymentId: string; orderId: string; provider: string; reason?: string }) {
  const order = await repo.findOrderForUpdate(trx, p.orderId);
  if (!order) return;
  await trx("order_payments").where({ payment_id: p.paymentId, status: "PENDING" }).update({ status: "FAILED", updated_at: Date.now() });
  // The order stays payable; the user hears of it only while it still is.
  if (order.status !== "PENDING_PAYMENT") return;
  await svc.publishEvent(trx, "order.payment_failed", {
    orderId: order.id, userId: order.userId, paymentId: p.paymentId, provider: p.provider, reason: p.reason ?? "declined", occurredAt: new Date().toISOString(),
  });
}

async function onReservationExpired(svc: OrderThis, trx: Knex.Transaction, p: { orderId: string }) {
  const order = await repo.findOrderForUpdate(trx, p.orderId);
  // One event per expired line: the first cancels, the others find CANCELLED. No order:
  // a hold left by a create that crashed before its insert.
  if (!order || order.status !== "PENDING_PAYMENT") return;
  await svc.transition(trx, order, "expire", { reservation_expires_at: null });
  await svc.publishEvent(trx, "order.cancelled", { orderId: order.id, userId: order.userId, reason: "expired", occurredAt: new Date().toISOString() });
  countBusiness(svc.broker, "orders_cancelled", { reason: "expired" }, trx);
  // Lines of the order not yet swept go back now rather than at their own expiry
  // (idempotent: a redelivery releases nothing more).
  await svc.broker.call("product.release", { orderId: order.id });
}

async function onRefundSettled(svc: OrderThis, trx: Knex.Transaction, p: { refundId: string; orderId: string }, to: "SUCCEEDED" | "FAILED") {
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
    await svc.publishEvent(trx, "order.payment_refunded", {
      orderId: order.id, userId: order.userId, paymentId: refund.paymentId, refundId: refund.id, amount: refund.amount,
      reason: refund.reason, occurredAt: new Date().toISOString(),
    });
    return;
  }
  const refunded = order.refundedAmount + refund.amount.amount;
  const event = refundEvent(order.paidAmount, refunded);
  await svc.transition(trx, order, event, { refunded_amount: refunded });
  await svc.publishEvent(trx, "order.refunded", {
    orderId: order.id, userId: order.userId, refundId: refund.id, amount: refund.amount,
    refundedTotal: { amount: refunded, currency: order.total.currency }, status: order.status, occurredAt: new Date().toISOString(),
  });
  // Idempotent (each line moves committed → returned once), so it runs inside the handler:
  // a failure retries the whole message, a redelivery returns nothing more.
  if (returnsStock(order.shipped, event)) await svc.broker.call("product.returnStock", { orderId: order.id });
}
