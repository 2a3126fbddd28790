/**
 * The product service's inventory: stock adjustments, reservations for the order service
 * (reserve / commit / release / returnStock, each idempotent per order), the expiry sweep and
 * the restock of approved returns. Bound into the one `product` service by product.service.ts.
 */
import type { Knex } from "knex";
import type { AppConfig } from "../../lib/config";
import { inTransaction, isUniqueViolation } from "../../lib/db";
import { AppError, conflict, notFound, validationError } from "../../lib/errors";
import { countBusiness } from "../../lib/metrics";
import {
  MAX_STOCK,
  adjustVerdict,
  lineProblems,
  normalizeLines,
  pricedLines,
  reservationView,
  sameLines,
  shortages,
  stockOf,
  type Shortage,
  toPublicProduct,
  type ReservableProduct,
  type ReservationLine,
  type ReservationRow,
} from "./product.domain";
import * as repo from "./product.repo";
import { Events } from "../../proto/gen/contracts";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import type { TypedActions } from "../../lib/service-schema";
import type { Ctx, ProductServiceThis } from "./product.this";

/** Expired reservation lines handled per sweep pass. */
const SWEEP_BATCH = 200;

const outOfStock = (short: Shortage[]) => new AppError("OUT_OF_STOCK", "Not enough stock for some products; nothing was reserved", short);
/** A line's product does not exist (or was deleted): the 404 that names it. */
const productNotFound = (productId: string) => new AppError("NOT_FOUND", "Product not found", [{ productId }]);

export function inventoryActions(config: AppConfig): TypedActions<ProductServiceThis> {
  const ttlDefault = config.reservations.ttlSeconds;
  return {
    adjustStock: {
      auth: "admin",
      params: Params["product.adjustStock"],
      async handler(
        this: ProductServiceThis,
        ctx: Ctx<ActionParams<"product.adjustStock">>,
      ): Promise<ActionResponse<"product.adjustStock">> {
        const { id, delta } = ctx.params;
        if (delta === 0) throw validationError("delta must not be 0", [{ field: "delta" }]);
        const product = await inTransaction(this.db, async (trx) => {
          if (!(await repo.adjustOnHand(trx, id, delta, MAX_STOCK, Date.now()))) {
            const current = await repo.findProduct(trx, id);
            if (!current) throw notFound("Product");
            const verdict = adjustVerdict(current, delta);
            throw conflict(verdict === "too-large" ? `Stock would exceed ${MAX_STOCK}` : "Stock cannot go below what is reserved", [
              { field: "delta", onHand: current.onHand, reserved: current.reserved },
            ]);
          }
          await this.stockChanged(trx, id, delta > 0 ? "restocked" : "removed");
          return (await repo.findProduct(trx, id))!;
        });
        await this.invalidate([id]);
        return toPublicProduct(product);
      },
    },

    // ---- inventory, for the order service (not routed; "public": callable from any node) ----

    reserve: {
      visibility: "public",
      params: Params["product.reserve"],
      async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.reserve">>): Promise<ActionResponse<"product.reserve">> {
        const { orderId } = ctx.params;
        const lines = normalizeLines(ctx.params.lines);
        const problems = lineProblems(lines);
        if (problems.length) throw validationError("Invalid reservation lines", problems);
        const ids = lines.map((l) => l.productId);
        // The lines priced from a read of their products: a product that does not exist (or
        // was deleted) is a 404 naming it, before anything is held.
        const price = (products: Map<string, ReservableProduct>) => {
          const found = pricedLines(lines, products);
          if ("missing" in found) throw productNotFound(found.missing);
          return found.priced;
        };
        const replay = async () => {
          const existing = await repo.findReservations(this.db, orderId);
          if (!sameLines(existing, lines))
            throw conflict("This order already holds a different reservation", [{ field: "orderId", orderId }]);
          // The hold exists: a product deleted since still has the row the order freezes.
          return reservationView(orderId, existing, price(await repo.reservableOf(this.db, ids, { withDeleted: true })));
        };
        // A replay (the order service's retry of a reserve that held) is found where it would
        // otherwise fail: a product deleted since, a line short since, or the reservation's
        // primary key in the transaction below. Not looked up first: a lookup on every
        // reserve is a statement on the checkout's path for the rare retry (#16).
        const isReplay = async () => (await repo.findReservations(this.db, orderId)).length > 0;
        // A plain read first: when a line is already short, refuse without taking the hot
        // rows' locks (a sold-out flash sale otherwise queues every refusal behind them).
        // Only a refusal is decided here; a success is decided by the locked UPDATEs below.
        // The same read prices the lines: a price changed between it and the UPDATE is the
        // race any read-then-reserve has; the order freezes what this read saw.
        const products = await repo.reservableOf(this.db, ids);
        const found = pricedLines(lines, products);
        if ("missing" in found) {
          if (await isReplay()) return replay();
          throw productNotFound(found.missing);
        }
        const { priced } = found;
        const shortNow = shortages(lines, (id) => products.get(id)?.available ?? 0);
        if (shortNow.length) {
          // The same order reserved earlier or concurrently (and took that stock): a replay, not a refusal.
          if (await isReplay()) return replay();
          countBusiness(this.broker, "oversell_refused");
          throw outOfStock(shortNow);
        }
        const now = Date.now();
        const expiresAt = now + (ctx.params.ttlSeconds ?? ttlDefault) * 1000;
        try {
          await inTransaction(this.db, async (trx) => {
            // The order's rows first: a concurrent reserve of the same order waits on this
            // primary key, then fails on it and answers with our rows (a replay), instead
            // of competing for the stock. Reservation row, then products: the same lock
            // order as commit, release and the sweep.
            await repo.insertReservations(trx, orderId, lines, expiresAt, now);
            const short: string[] = [];
            // In productId order: the lock order (see product.service.ts's header).
            for (const l of lines) if (!(await repo.reserveStock(trx, l.productId, l.quantity, now))) short.push(l.productId);
            if (short.length) {
              const available = await repo.availableOf(trx, short);
              throw outOfStock(
                shortages(
                  lines.filter((l) => short.includes(l.productId)),
                  (id) => available.get(id) ?? 0,
                ),
              );
            }
            for (const l of lines) await this.stockChanged(trx, l.productId, "reserved");
          });
        } catch (err) {
          if (isUniqueViolation(err)) return replay();
          // Lost to a concurrent reserve of the same order on another path: still a replay.
          if (err instanceof AppError && err.type === "OUT_OF_STOCK" && (await isReplay())) return replay();
          if (err instanceof AppError && err.type === "OUT_OF_STOCK") countBusiness(this.broker, "oversell_refused");
          throw err;
        }
        await this.invalidate(lines.map((l) => l.productId));
        return reservationView(
          orderId,
          lines.map((l) => ({ ...l, orderId, status: "held", expiresAt })),
          priced,
        );
      },
    },

    checkStock: {
      visibility: "public",
      params: Params["product.checkStock"],
      async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.checkStock">>): Promise<ActionResponse<"product.checkStock">> {
        // Reserve's refusal without its writes, for an order node that saw these products sold
        // out moments ago (services/order/checkout.actions.ts): a yes here holds nothing, so the
        // order still reserves; a no is what a reserve at this moment would have answered.
        const lines = normalizeLines(ctx.params.lines);
        const problems = lineProblems(lines);
        if (problems.length) throw validationError("Invalid reservation lines", problems);
        const available = await repo.availableOf(
          this.db,
          lines.map((l) => l.productId),
        );
        const missing = lines.find((l) => !available.has(l.productId));
        if (missing) throw productNotFound(missing.productId);
        const short = shortages(lines, (id) => available.get(id) ?? 0);
        if (short.length) {
          countBusiness(this.broker, "oversell_refused");
          throw outOfStock(short);
        }
        return null;
      },
    },

    commit: {
      visibility: "public",
      params: Params["product.commit"],
      async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.commit">>): Promise<ActionResponse<"product.commit">> {
        return this.finishReservations(ctx, "committed");
      },
    },

    release: {
      visibility: "public",
      params: Params["product.release"],
      async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.release">>): Promise<ActionResponse<"product.release">> {
        return this.finishReservations(ctx, "released");
      },
    },

    /**
     * The committed lines of a refunded order that never shipped go back on the shelf
     * (on_hand += quantity). Idempotent: each line moves committed → returned once.
     */
    returnStock: {
      visibility: "public",
      params: Params["product.returnStock"],
      async handler(
        this: ProductServiceThis,
        ctx: Ctx<ActionParams<"product.returnStock">>,
      ): Promise<ActionResponse<"product.returnStock">> {
        const { orderId } = ctx.params;
        let changed = false;
        await inTransaction(this.db, async (trx) => {
          for (const r of await repo.findReservationsForUpdate(trx, orderId)) {
            if (r.status !== "committed") continue;
            if (!(await repo.returnCommitted(trx, orderId, r.productId, r.quantity, Date.now()))) continue;
            await this.stockChanged(trx, r.productId, "returned");
            changed = true;
          }
        });
        const rows = await repo.findReservations(this.db, orderId);
        if (!rows.length) throw notFound("Reservation");
        if (changed) await this.invalidate(rows.map((r) => r.productId));
        return reservationView(orderId, rows);
      },
    },

    /** Runs one expiry pass now (tests, operations). */
    sweep: {
      visibility: "public",
      params: Params["product.sweep"],
      async handler(this: ProductServiceThis): Promise<ActionResponse<"product.sweep">> {
        return { expired: await this.sweepExpired() };
      },
    },
  };
}

export const inventoryMethods = {
  /**
   * `stock.changed` with the figures as they are inside this transaction, and the whole
   * product at its new version, so a consumer keeping a copy (search) needs no read back.
   */
  async stockChanged(this: ProductServiceThis, trx: Knex.Transaction, productId: string, reason: string) {
    const found = await repo.findProductAnyState(trx, productId);
    if (!found) return;
    const { product, deleted } = found;
    await this.publishEvent(trx, Events.StockChanged, {
      productId,
      ...stockOf(product.onHand, product.reserved),
      version: product.version,
      deleted,
      reason,
      occurredAt: new Date().toISOString(),
      product: toPublicProduct(product),
    });
  },

  /**
   * Commit (sold: on_hand and reserved both drop) or release (reserved drops) of every
   * line of the order still held. Idempotent: lines already moved are left alone, so a
   * second commit, or a release after a commit, changes nothing.
   */
  async finishReservations(this: ProductServiceThis, ctx: Ctx<{ orderId: string }>, to: "committed" | "released") {
    const { orderId } = ctx.params;
    let changed = false;
    /** The order's lines as this transaction leaves them (undefined: read them again after the commit). */
    let after: ReservationRow[] | undefined;
    let unsure = false;
    await inTransaction(this.db, async (trx) => {
      changed = false;
      unsure = false;
      const found = await repo.findReservationsForUpdate(trx, orderId);
      // A commit is all lines or none: if any line already left `held` other than by a
      // commit (expired, released), nothing is sold — otherwise an order paid just as its
      // first line expired would sell the other lines of an order about to be cancelled.
      // The rows are locked, so no sweep can expire a line between this check and the loop.
      if (to === "committed") {
        const gone = found.filter((r) => r.status !== "held" && r.status !== "committed");
        if (gone.length)
          throw conflict(
            "The reservation is no longer held; nothing was committed",
            gone.map((r) => ({ productId: r.productId, status: r.status })),
          );
      }
      const now = Date.now();
      const moved = new Set<string>();
      for (const r of found) {
        if (r.status !== "held") continue;
        // Not expected under the lock; that line's status is read back after the commit.
        if (!(await repo.transitionReservation(trx, orderId, r.productId, to, now))) {
          unsure = true;
          continue;
        }
        moved.add(r.productId);
        await repo.unreserveStock(trx, r.productId, r.quantity, to === "committed", now);
        await this.stockChanged(trx, r.productId, to === "committed" ? "sold" : "released");
        changed = true;
      }
      after = found.map((r) => (moved.has(r.productId) ? { ...r, status: to } : r));
    });
    // The locked rows (a locking read: as committed now, not the REPEATABLE READ snapshot) with
    // this transaction's moves are the lines at its commit: no read after it. Otherwise read
    // after the commit: inside the transaction a plain SELECT would answer from the snapshot,
    // older than a racing commit we just queued behind.
    const rows = after && !unsure ? after : await repo.findReservations(this.db, orderId);
    if (!rows.length) throw notFound("Reservation");
    if (changed) await this.invalidate(rows.map((r) => r.productId));
    const view = reservationView(orderId, rows);
    // Paying for an order whose hold already expired (or was released) must not pass silently.
    if (to === "committed" && view.lines.some((l) => l.status !== "committed"))
      throw conflict(
        "The reservation is no longer held; nothing was committed for those lines",
        view.lines.filter((l) => l.status !== "committed"),
      );
    return view;
  },

  /**
   * Releases held reservations whose TTL has passed. Any number of replicas may run it
   * at once: each line moves `held → expired` under `WHERE status = 'held' AND
   * expires_at <= now` in the same transaction as its stock update, so only one
   * sweeper (or a racing commit/release) wins it. Returns the lines this call expired.
   */
  async sweepExpired(this: ProductServiceThis, now = Date.now()) {
    let expired = 0;
    const touched = new Set<string>();
    const candidates = await repo.findExpiredHeld(this.db, now, SWEEP_BATCH);
    for (const r of candidates) {
      const won = await inTransaction(this.db, async (trx) => {
        if (!(await repo.transitionReservation(trx, r.orderId, r.productId, "expired", Date.now(), now))) return false;
        await repo.unreserveStock(trx, r.productId, r.quantity, false, Date.now());
        await this.stockChanged(trx, r.productId, "expired");
        // For the order service: an unpaid order whose hold expired is cancelled (one event
        // per line, committed with the release, so it is published exactly when it happened).
        await this.publishEvent(trx, Events.ReservationExpired, {
          orderId: r.orderId,
          productId: r.productId,
          quantity: r.quantity,
          expiredAt: new Date(now).toISOString(),
        });
        return true;
      });
      if (won) {
        expired++;
        touched.add(r.productId);
      }
    }
    if (expired) {
      this.logger.info(`Released ${expired} expired reservation line(s)`);
      await this.invalidate([...touched]);
    }
    return expired;
  },
};

/**
 * An approved return whose goods came back (`restock`): its lines go back on the shelf — the
 * undo of the order's `commit` for those units — once per return (the inbox, and one
 * stock_returns row per line), never more than the order sold.
 */
export const inventoryConsumers = {
  async [Events.ReturnApproved](
    this: ProductServiceThis,
    trx: Knex.Transaction,
    p: { returnId: string; orderId: string; restock: boolean; lines: ReservationLine[] },
  ) {
    if (!p.restock) return;
    const sold = new Map(
      (await repo.findReservationsForUpdate(trx, p.orderId)).filter((r) => r.status === "committed").map((r) => [r.productId, r.quantity]),
    );
    const changed: string[] = [];
    for (const l of p.lines) {
      if (
        !(await repo.restockReturned(
          trx,
          { returnId: p.returnId, orderId: p.orderId, productId: l.productId, quantity: l.quantity },
          sold.get(l.productId) ?? 0,
          Date.now(),
        ))
      )
        continue;
      await this.stockChanged(trx, l.productId, "returned");
      changed.push(l.productId);
    }
    if (changed.length)
      trx.executionPromise.then(
        () => this.invalidate(changed),
        () => undefined,
      );
  },
};
