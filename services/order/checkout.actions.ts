/**
 * Checkout: an order is created from the cart (or the lines given) in one idempotent request,
 * reserving its stock all-or-nothing, under the per-user hoarding limits that admins read and
 * set here. Bound into the `order` service by order.service.ts.
 *
 * The steps of a create and their undo (each names what takes it back if a later step fails):
 * 0. only for a product this node saw sold out moments ago: `product.checkStock`, a read that
 *    changes nothing (no undo), so a sold-out refusal writes nothing here (refuseIfSoldOut);
 * 1. the unpaid-order slot (a draft row under the user's lock)  → deleteDraft, else it stops
 *    counting after staleClaimMs;
 * 2. `product.reserve` (idempotent per order id)                → `product.release` (also
 *    after a reserve that did not answer: it may have held), else the reservation's TTL frees it;
 * 3. the order row, the draft's removal and `order.created` in one commit.
 */
import { randomUUID } from "node:crypto";
import type { AppConfig } from "../../lib/config";
import { requireUser } from "../../lib/context";
import { inTransaction } from "../../lib/db";
import { AppError, errorCode, validationError } from "../../lib/errors";
import { countBusiness } from "../../lib/metrics";
import { callAction } from "../../lib/call";
import {
  MixedCurrencyError,
  describeUnpaidLimit,
  newOrderView,
  frozenLines,
  normalizeOrderLines,
  orderTotal,
  pickAddress,
  unpaidLimitProblem,
  type Money,
  type OrderLineInput,
  type OrderRecord,
  type PricedLine,
  type ShippingAddress,
} from "./order.domain";
import * as repo from "./order.repo";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { Events } from "../../proto/gen/contracts";
import { Params } from "../../proto/gen/params";
import type { TypedActions } from "../../lib/service-schema";
import { orderTimings, type CreateParams, type Ctx, type OrderThis } from "./order.this";

/** The products an error of product.reserve or checkStock names (its details: `[{productId, …}]`). */
const productsNamedBy = (err: unknown): string[] =>
  [(err as { data?: unknown }).data]
    .flat()
    .flatMap((d: unknown) => (d && typeof d === "object" && "productId" in d && typeof d.productId === "string" ? [d.productId] : []));

/** A NOT_FOUND naming a product of the order: the caller's 422 (the rest passes through). */
const unknownProduct = (err: unknown): AppError | undefined => {
  const missing = errorCode(err) === "NOT_FOUND" && productsNamedBy(err)[0];
  return missing
    ? validationError("A product of the order does not exist", [{ field: `items.${missing}`, message: "unknown product" }])
    : undefined;
};

/** Answers of product.reserve that held nothing for sure. */
const REFUSALS: ReadonlySet<string> = new Set(["OUT_OF_STOCK", "NOT_FOUND", "VALIDATION_ERROR", "MALFORMED_REQUEST", "CONFLICT"]);

export function checkoutActions(config: AppConfig): TypedActions<OrderThis> {
  return {
    create: {
      auth: "user",
      rateLimit: "orders",
      params: Params["order.create"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.create">>): Promise<ActionResponse<"order.create">> {
        const me = requireUser(ctx);
        if (Boolean(ctx.params.addressId) === Boolean(ctx.params.shippingAddress))
          throw validationError("Give either addressId or shippingAddress", [{ field: "addressId" }, { field: "shippingAddress" }]);
        await this.refuseBeforeKey(ctx, me.id);
        const order = await this.withKey(
          ctx,
          { op: "order.create", body: ctx.params },
          randomUUID(),
          // A new order's view is what its create committed (newOrderView): no read back.
          async (id) => newOrderView(await this.createOrder(ctx, me.id, id)),
          // A replay reads the order as it is now (it may have been paid since); none yet: undefined.
          (id) =>
            this.view(id).catch((err: unknown) => {
              if (errorCode(err) === "NOT_FOUND") return undefined;
              throw err;
            }),
        );
        ctx.meta.$statusCode = 201;
        ctx.meta.$location = `/api/orders/${order.id}`;
        return order;
      },
    },

    getUserLimits: {
      auth: "admin",
      params: Params["order.getUserLimits"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.getUserLimits">>): Promise<ActionResponse<"order.getUserLimits">> {
        return limitsView(ctx.params.userId, await repo.findUserLimits(this.db, ctx.params.userId), config);
      },
    },

    setUserLimits: {
      auth: "admin",
      params: Params["order.setUserLimits"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.setUserLimits">>): Promise<ActionResponse<"order.setUserLimits">> {
        const { userId } = ctx.params;
        const current = await repo.findUserLimits(this.db, userId);
        const next = {
          maxUnpaidOrders: ctx.params.maxUnpaidOrders === undefined ? current.maxUnpaidOrders : ctx.params.maxUnpaidOrders,
          maxUnpaidUnitsPerProduct:
            ctx.params.maxUnpaidUnitsPerProduct === undefined ? current.maxUnpaidUnitsPerProduct : ctx.params.maxUnpaidUnitsPerProduct,
        };
        await repo.setUserLimits(this.db, userId, next, Date.now());
        this.logger.info(`Unpaid-order limits of user ${userId} set to ${JSON.stringify(next)} by admin ${requireUser(ctx).id}`);
        return limitsView(userId, next, config);
      },
    },
  };
}

export function checkoutMethods(config: AppConfig) {
  const { staleClaimMs } = orderTimings(config);
  return {
    /**
     * Checks the hoarding limits and records this create's draft, under the user's row lock:
     * concurrent creates of one user count each other's drafts. 409 UNPAID_LIMIT names the limit.
     */
    async holdUnpaidSlot(this: OrderThis, userId: string, orderId: string, lines: OrderLineInput[]) {
      const now = Date.now();
      for (let round = 1; ; round++) {
        // The lock row is made in its own statement before the transaction (an insert-ignore
        // inside it would deadlock two first creates of one user), once per user and process:
        // rows are never deleted, so a row this process has seen stays. Made before the first
        // round rather than after a round that found nothing (#16): a user's first create runs
        // one round, a BEGIN, a locking read and a COMMIT fewer; a user who ordered before this
        // process started pays one insert that changes nothing.
        if (!this.limitRows.has(userId)) {
          await repo.ensureUserLimitsRow(this.db, userId, now);
          this.limitRows.set(userId, true);
        }
        const held = await inTransaction(this.db, async (trx) => {
          const o = await repo.lockUserLimits(trx, userId);
          if (!o) return false;
          const limits = {
            maxOrders: o.maxUnpaidOrders ?? config.unpaidLimits.maxOrders,
            maxUnitsPerProduct: o.maxUnpaidUnitsPerProduct ?? config.unpaidLimits.maxUnitsPerProduct,
          };
          const problem = unpaidLimitProblem(limits, await repo.unpaidState(trx, userId, now - staleClaimMs), lines);
          if (problem) throw new AppError("UNPAID_LIMIT", describeUnpaidLimit(problem), [problem]);
          await repo.insertDraft(trx, orderId, userId, lines, now);
          return true;
        });
        if (held) return;
        // Remembered but gone (a database restored under a running process): made again, once.
        this.limitRows.delete(userId);
        if (round > 1) throw new Error(`The order_user_limits row of user ${userId} is missing after it was created`);
      }
    },

    /**
     * A create naming a product this node saw sold out moments ago (SoldOutHints) asks the
     * product service's read first, so a refusal writes nothing here: no draft, no hoarding
     * check (and, run by refuseBeforeKey, no claim of the key either). A check that passes
     * clears the marks and the create goes on (the reserve decides); a check that fails to
     * answer is ignored.
     */
    async refuseIfSoldOut(this: OrderThis, ctx: Ctx<CreateParams>, lines: OrderLineInput[]) {
      const ids = lines.map((l) => l.productId);
      if (!this.soldOut.anyMarked(ids, Date.now())) return;
      try {
        await callAction(this.broker, "product.checkStock", { lines }, { parentCtx: ctx });
      } catch (err) {
        if (errorCode(err) === "OUT_OF_STOCK") {
          this.soldOut.mark(productsNamedBy(err), Date.now());
          throw err;
        }
        const unknown = unknownProduct(err);
        if (unknown) throw unknown;
        // No answer: the reserve decides, as without a mark.
      }
      // A yes or no answer: the marks go either way, so this create (run again by createOrder
      // after refuseBeforeKey) does not ask twice.
      this.soldOut.clear(ids);
    },

    /**
     * refuseIfSoldOut before the Idempotency-Key is claimed, so a sold-out refusal skips the
     * claim and its release too (two writes, each with its commit): for lines given in the
     * request only (a cart's lines cost a call), and only while the key names nothing. A key
     * already claimed goes on to withKey without the check: it replays (or waits for) the
     * order its first request made, so it is no refusal (nor counted as one: the check counts
     * `oversell_refused`). The key is looked at again after a refusal: its first request may
     * have claimed it meanwhile and taken the last unit (a double submit), and then this one
     * replays that order too (the check's count is then one too many: that race only).
     */
    async refuseBeforeKey(this: OrderThis, ctx: Ctx<CreateParams>, userId: string) {
      if (!ctx.params.items) return;
      const { lines, problems } = normalizeOrderLines(ctx.params.items);
      if (problems.length) return; // the create reports them
      if (
        !this.soldOut.anyMarked(
          lines.map((l) => l.productId),
          Date.now(),
        )
      )
        return;
      const key = ctx.meta.idempotencyKey;
      const claimed = async () => Boolean(key && (await repo.idempotencyStore(this.db).find(userId, key)));
      if (await claimed()) return;
      try {
        await this.refuseIfSoldOut(ctx, lines);
      } catch (err) {
        if (await claimed()) return;
        throw err;
      }
    },

    async createOrder(this: OrderThis, ctx: Ctx<CreateParams>, userId: string, orderId: string) {
      let address: ShippingAddress;
      if (ctx.params.addressId) {
        try {
          address = pickAddress(await callAction(this.broker, "user.getAddress", { userId, id: ctx.params.addressId }, { parentCtx: ctx }));
        } catch (err) {
          if (errorCode(err) === "NOT_FOUND") throw validationError("Unknown addressId", [{ field: "addressId" }]);
          throw err;
        }
      } else address = pickAddress(ctx.params.shippingAddress!);

      const requested = ctx.params.items ?? (await callAction(this.broker, "cart.lines", { userId }, { parentCtx: ctx }));
      const { lines, problems } = normalizeOrderLines(requested);
      if (problems.length) throw validationError("The order cannot be placed", problems);

      await this.refuseIfSoldOut(ctx, lines);
      await this.holdUnpaidSlot(userId, orderId, lines);
      let reserved = false;
      try {
        // All or nothing; OUT_OF_STOCK (409) passes through with the products named. The
        // reserve also answers each line's sku, name and price as it read them: frozen into
        // the order here, with no read of the product before.
        let reservation: ActionResponse<"product.reserve">;
        try {
          reservation = await callAction(this.broker, "product.reserve", { orderId, lines }, { parentCtx: ctx });
        } catch (err) {
          if (errorCode(err) === "OUT_OF_STOCK") this.soldOut.mark(productsNamedBy(err), Date.now());
          const unknown = unknownProduct(err);
          if (unknown) throw unknown;
          // No answer (a timeout: the request's deadline, a node gone): the reserve may still
          // commit. Released below like a held one; one still running on a product node when
          // the release arrives holds until RESERVATION_TTL_SECONDS (and its draft no longer counts).
          if (!REFUSALS.has(errorCode(err) ?? "")) reserved = true;
          throw err;
        }
        reserved = true;
        let priced: PricedLine[];
        try {
          priced = frozenLines(lines, reservation.priced);
        } catch {
          // A product node of an older contract (no prices in its answer): retryable, not a 500.
          throw new AppError("SERVICE_UNAVAILABLE", "The product service answered without prices; try again shortly");
        }
        let total: Money;
        try {
          total = orderTotal(priced);
        } catch (err) {
          if (err instanceof MixedCurrencyError) throw validationError(err.message, [{ field: "items" }]);
          throw err;
        }
        const now = Date.now();
        const order: OrderRecord = {
          id: orderId,
          userId,
          status: "PENDING_PAYMENT",
          total,
          items: priced,
          shippingAddress: address,
          shipment: null,
          paidPaymentId: null,
          paidAmount: 0,
          refundedAmount: 0,
          shipped: false,
          reservationExpiresAt: Date.parse(reservation.expiresAt),
          createdAt: now,
          updatedAt: now,
        };
        await inTransaction(this.db, async (trx) => {
          await repo.insertOrder(trx, order);
          // The draft becomes the order in one commit: the unpaid count never sees both or neither.
          await repo.deleteDraft(trx, orderId);
          await this.publishEvent(trx, Events.OrderCreated, {
            orderId,
            userId,
            total,
            items: priced.map((l) => ({ productId: l.productId, name: l.name, quantity: l.quantity })),
            occurredAt: new Date(now).toISOString(),
          });
          countBusiness(this.broker, "orders_created", undefined, trx);
        });
        return order;
      } catch (err) {
        await repo.deleteDraft(this.db, orderId).catch(() => undefined); // else it stops counting after staleClaimMs
        if (reserved) await callAction(this.broker, "product.release", { orderId }).catch(() => undefined); // else the TTL frees it
        throw err;
      }
    },
  };
}

function limitsView(userId: string, o: repo.LimitOverrides, config: AppConfig) {
  return {
    userId,
    maxUnpaidOrders: o.maxUnpaidOrders ?? config.unpaidLimits.maxOrders,
    maxUnpaidUnitsPerProduct: o.maxUnpaidUnitsPerProduct ?? config.unpaidLimits.maxUnitsPerProduct,
    overridden: { maxUnpaidOrders: o.maxUnpaidOrders !== null, maxUnpaidUnitsPerProduct: o.maxUnpaidUnitsPerProduct !== null },
  };
}
