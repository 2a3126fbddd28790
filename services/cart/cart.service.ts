/**
 * Cart service: one cart per user (API.md "Cart"), and for the order service the raw lines
 * (`cart.lines`) and the removal of a paid order's lines (business event `order.paid`).
 * Handlers stay thin: rules live in cart.domain.ts, SQL in cart.repo.ts.
 *
 * Guarantees and their limits:
 * - Identity comes only from `ctx.meta.user` (the gateway's verified token); every query is
 *   scoped to that id, so another user's cart is unreachable. Body fields other than the
 *   declared ones are a 422 on adds (`$$strict`); on the routes that name a line (PATCH and
 *   DELETE /api/cart/items/:productId) and on GET/DELETE /api/cart, a `userId` is dropped:
 *   the line is looked up in the caller's own cart, so someone else's is a 404.
 * - Prices are never stored nor taken from the client: each read asks the product service
 *   (`product.get`, cached and cleaned on every product write), so a price change shows at
 *   the next read. A line whose product was deleted (404 from the product service) leaves
 *   the answer and the storage; so does one whose product was repriced in another currency
 *   than the cart's (one cart, one currency, one subtotal). Any other failure of the product
 *   service fails the request (503) and drops nothing.
 * - Concurrent adds lose nothing: every write locks the user's `carts` row first (serializing
 *   one cart's writers, so the 100-line and one-currency checks see the truth), and the
 *   quantity change is one upsert computed by the database (`quantity = quantity + n`),
 *   bounded by a CHECK (1..99). An add that would exceed a bound is a 422 and changes nothing.
 * - An add with an `Idempotency-Key` happens once per (user, key): the key is stored in the
 *   add's transaction, under the cart's lock, so a repeat (a client's retry, or the edge's
 *   after a broker node died with the answer) finds it and answers the cart as it is now
 *   without adding again; the same key with another body is a 409. Keys count for 24 h
 *   (`ADD_KEY_TTL_MS`) and are deleted at the user's next keyed add after that. An add
 *   refused (422) stores no key. Without a key every add adds.
 * - Stock is NOT checked here: a cart may hold more than is available (stock moves until the
 *   order reserves it, which answers 409 OUT_OF_STOCK then). The product must exist.
 * - `order.paid` is applied once per message (the inbox of EventsMixin, in the handler's
 *   transaction): each ordered quantity is taken off its line, a line reaching 0 is deleted.
 */
import { forRunner } from "../../lib/runner";
import path from "node:path";
import type { Knex } from "knex";
import type { AppConfig } from "../../lib/config";
import { requireUser, type RequestContext } from "../../lib/context";
import { inTransaction, type Db } from "../../lib/db";
import { notFound, validationError } from "../../lib/errors";
import { keyUsedElsewhere, requestFingerprint } from "../../lib/idempotency";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin, type EventsServiceThis } from "../../mixins/events.mixin";
import { MAX_LINE_QUANTITY, addProblems, buildCart, paidLines, setQuantityProblems, type Cart, type ProductInfo } from "./cart.domain";
import * as repo from "./cart.repo";
import { callAction } from "../../lib/call";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Events } from "../../proto/gen/contracts";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";

interface CartServiceThis extends EventsServiceThis {
  db: Db;
  cartOf(ctx: Ctx<unknown>, userId: string): Promise<Cart>;
  productOf(ctx: Ctx<unknown>, productId: string): Promise<ProductInfo | null>;
}

type Ctx<P = Record<string, unknown>> = RequestContext<P>;

/** The `order.paid` consumer: the order's lines leave the user's cart (in the inbox's transaction). */
export async function onOrderPaid(trx: Knex.Transaction, payload: unknown): Promise<void> {
  const { userId, lines } = paidLines(payload);
  // Same lock order as every other write: the cart row, then its lines.
  if (!(await repo.lockCart(trx, userId))) return;
  await repo.subtractLines(trx, userId, lines, Date.now());
}

export function createCartService(config: AppConfig): TypedServiceSchema<CartServiceThis> {
  return {
    name: "cart",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [
      EventsMixin({ name: "cart", config, consumes: { [Events.OrderPaid]: onOrderPaid } }),
      DbMixin({ name: "cart", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      get: {
        auth: "user",
        params: Params["cart.get"],
        async handler(this: CartServiceThis, ctx: Ctx<ActionParams<"cart.get">>): Promise<ActionResponse<"cart.get">> {
          return this.cartOf(ctx, requireUser(ctx).id);
        },
      },

      addItem: {
        auth: "user",
        params: Params["cart.addItem"],
        async handler(this: CartServiceThis, ctx: Ctx<ActionParams<"cart.addItem">>): Promise<ActionResponse<"cart.addItem">> {
          const userId = requireUser(ctx).id;
          const { productId, quantity } = ctx.params;
          const key = ctx.meta.idempotencyKey;
          const keyed = key ? { key, fingerprint: requestFingerprint({ op: "cart.addItem", productId, quantity }) } : undefined;
          // A product deleted since a keyed add was applied answers its repeat 404 too: the cart
          // would not show that line any more either.
          const product = await this.productOf(ctx, productId);
          if (!product) throw notFound("Product");
          await repo.ensureCart(this.db, userId, Date.now());
          await inTransaction(this.db, async (trx) => {
            const cart = await repo.lockCart(trx, userId);
            // A repeated key: the add is in the cart already (its key committed with it, and
            // this user's adds are serialized by the lock above), so the answer is the cart now.
            if (keyed) {
              await repo.pruneAddKeys(trx, userId, Date.now());
              const seen = await repo.findAddKey(trx, userId, keyed.key);
              if (seen === keyed.fingerprint) return;
              if (seen !== undefined) throw keyUsedElsewhere();
            }
            const existing = await repo.findLine(trx, userId, productId);
            const lineCount = await repo.countLines(trx, userId);
            const problems = addProblems({
              quantity,
              existing: existing?.quantity,
              lineCount,
              cartCurrency: cart?.currency ?? null,
              productCurrency: product.price.currency,
            });
            if (problems.length) throw validationError("This cannot be added to the cart", problems);
            const now = Date.now();
            if (lineCount === 0) await repo.setCartCurrency(trx, userId, product.price.currency, now);
            try {
              await repo.addToLine(trx, userId, productId, quantity, now);
            } catch (err) {
              // The CHECK backs the bound up (only reachable if a writer skipped the lock).
              if (repo.isCheckViolation(err))
                throw validationError("This cannot be added to the cart", [
                  { field: "quantity", message: `a line holds at most ${MAX_LINE_QUANTITY} units` },
                ]);
              throw err;
            }
            if (keyed) await repo.recordAddKey(trx, userId, keyed.key, keyed.fingerprint, now);
          });
          return this.cartOf(ctx, userId);
        },
      },

      updateItem: {
        auth: "user",
        params: Params["cart.updateItem"],
        async handler(this: CartServiceThis, ctx: Ctx<ActionParams<"cart.updateItem">>): Promise<ActionResponse<"cart.updateItem">> {
          const userId = requireUser(ctx).id;
          const { productId, quantity } = ctx.params;
          const problems = setQuantityProblems(quantity);
          if (problems.length) throw validationError("Invalid quantity", problems);
          if (quantity === 0) {
            // Like DELETE: idempotent, a line that is not there is already removed.
            await repo.removeLines(this.db, userId, [productId]);
          } else {
            const found = await inTransaction(this.db, async (trx) => {
              await repo.lockCart(trx, userId);
              return repo.setLineQuantity(trx, userId, productId, quantity, Date.now());
            });
            if (!found) throw notFound("Cart line");
          }
          return this.cartOf(ctx, userId);
        },
      },

      removeItem: {
        auth: "user",
        params: Params["cart.removeItem"], // an injected userId is dropped, as above
        async handler(this: CartServiceThis, ctx: Ctx<ActionParams<"cart.removeItem">>): Promise<ActionResponse<"cart.removeItem">> {
          const userId = requireUser(ctx).id;
          await repo.removeLines(this.db, userId, [ctx.params.productId]);
          return this.cartOf(ctx, userId);
        },
      },

      clear: {
        auth: "user",
        params: Params["cart.clear"],
        async handler(this: CartServiceThis, ctx: Ctx<ActionParams<"cart.clear">>): Promise<ActionResponse<"cart.clear">> {
          await repo.clearCart(this.db, requireUser(ctx).id);
          ctx.meta.$statusCode = 204;
          return null;
        },
      },

      // ---- for the order service (not routed; "public": callable from any node) ----

      /** The raw stored lines of a user's cart, oldest first: `[{productId, quantity}]`. */
      lines: {
        visibility: "public",
        params: Params["cart.lines"],
        async handler(this: CartServiceThis, ctx: Ctx<ActionParams<"cart.lines">>): Promise<ActionResponse<"cart.lines">> {
          return (await repo.findLines(this.db, ctx.params.userId)).map((l) => ({ productId: l.productId, quantity: l.quantity }));
        },
      },
    },

    methods: {
      /** The product as the product service sees it now; null when it does not exist (or was deleted). */
      async productOf(this: CartServiceThis, ctx: Ctx<unknown>, productId: string): Promise<ProductInfo | null> {
        try {
          const p = await callAction(ctx, "product.get", { id: productId });
          return { id: p.id, name: p.name, price: p.price };
        } catch (err) {
          if ((err as { type?: unknown }).type === "NOT_FOUND") return null;
          throw err;
        }
      },

      /** The public cart; lines whose product is gone (or repriced in another currency) are deleted. */
      async cartOf(this: CartServiceThis, ctx: Ctx<unknown>, userId: string): Promise<Cart> {
        // The lines and the cart's currency from one moment (one transaction): read apart, a
        // cart emptied and refilled in another currency between them showed its new line as gone.
        const [lines, currency] = await inTransaction(
          this.db,
          async (trx) => [await repo.findLines(trx, userId), await repo.cartCurrency(trx, userId)] as const,
        );
        if (!lines.length) return { items: [], subtotal: { amount: 0, currency: null } };
        const products = await Promise.all(lines.map(async (l) => [l.productId, await this.productOf(ctx, l.productId)] as const));
        const { cart, drop } = buildCart(lines, new Map(products), currency);
        if (drop.length) await repo.removeLines(this.db, userId, drop);
        return cart;
      },
    },
  };
}

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createCartService);
