/**
 * Product service: catalog (CRUD for admins, cached reads for anyone) and inventory
 * (reserve / commit / release for the order service, TTL expiry by a sweep).
 * Handlers stay thin: rules live in product.domain.ts, SQL in product.repo.ts.
 *
 * Guarantees and their limits:
 * - Stock never oversells: each change is one conditional UPDATE checked by row count
 *   (product.repo.ts), and the database's CHECK (0 ≤ reserved ≤ on_hand) backs it up.
 *   InnoDB runs these transactions at its default REPEATABLE READ; an UPDATE there is a
 *   locking read of the latest committed row, so the condition is never checked against a
 *   stale snapshot. Lock order: a reserve inserts the order's reservation rows first, then
 *   updates its products in productId order (lines merged and sorted), so two reserves
 *   never deadlock each other; a commit, release or sweep locks the reservation rows
 *   (`FOR UPDATE`), then their products. A deadlock victim is retried whole by
 *   `inTransaction` (3 attempts). SQLite serializes writers (one connection per process;
 *   one process per file).
 * - Reserve is all-or-nothing in one transaction, and idempotent per orderId: the
 *   reservation rows' primary key (order_id, product_id) makes a replay, even a concurrent
 *   one, a no-op that answers with the stored reservation.
 * - Every reservation transition leaves `held` under `WHERE status = 'held'` together with
 *   its stock change, so commit, release and sweeps on any number of replicas apply it once.
 * - Every change and its business event (outbox) commit together.
 * - Cache: every write cleans this node's cacher after its commit (descriptive writes all of
 *   `product.**`, stock-only writes just those products' `product.get` keys, see cleanLocal)
 *   and broadcasts `cache.clean.product` for the other nodes' memory cachers; a second clean
 *   follows shortly after, for a read that loaded the old row just before the commit and
 *   stored it just after the first clean. Limit: a read slower than that delay could still
 *   store a stale entry, which then lives until the cache TTL (300 s).
 */
import { randomUUID } from "node:crypto";
import path from "node:path";
import type { Context } from "moleculer";
import type { Knex } from "knex";
import type { AppConfig } from "../../lib/config";
import type { RequestContext } from "../../lib/context";
import { inTransaction, isUniqueViolation, type Db } from "../../lib/db";
import { AppError, conflict, notFound, validationError } from "../../lib/errors";
import { countBusiness } from "../../lib/metrics";
import { syntheticProducts } from "../../lib/demo-catalog";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin, type EventsServiceThis } from "../../mixins/events.mixin";
import {
  MAX_STOCK,
  PATCH_FIELDS,
  adjustVerdict,
  applyPatch,
  lineProblems,
  moneyProblems,
  normalizeLines,
  pricedLines,
  normalizeTags,
  parseListQuery,
  pickFields,
  reservationView,
  sameLines,
  stockOf,
  toPublicProduct,
  type Money,
  type ProductPatch,
  type ProductRecord,
  type ReservableProduct,
  type ReservationLine,
  type ReservationStatus,
  type ReservationView,
} from "./product.domain";
import * as repo from "./product.repo";
import { Events } from "../../proto/gen/contracts";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { periodic, type Periodic } from "../../lib/periodic";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";

/** Wait before the second cache clean of a write (see the header). */
const SECOND_CLEAN_MS = 250;
/** Product lists are not cleaned by stock-only changes; this bounds how old their stock figures get. */
const LIST_CACHE_TTL_S = 5;
/** Expired reservation lines handled per sweep pass. */
const SWEEP_BATCH = 200;

interface ProductServiceThis extends EventsServiceThis {
  db: Db;
  broker: Context["broker"];
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
  sweeper?: Periodic;
  pendingCleans: Set<NodeJS.Timeout>;
  invalidate(stockOnlyOf?: string[]): Promise<void>;
  cleanLocal(stockOnlyOf?: string[]): Promise<void>;
  stockChanged(trx: Knex.Transaction, productId: string, reason: string): Promise<void>;
  seedDemoBatch(from: number, count: number): Promise<number>;
  sweepExpired(now?: number): Promise<number>;
  finishReservations(ctx: Ctx<{ orderId: string }>, to: "committed" | "released"): Promise<ReservationView>;
}

type Ctx<P = Record<string, unknown>> = RequestContext<P>;

function assertMoney(price: Money | undefined): void {
  if (!price) return;
  const problems = moneyProblems(price);
  if (problems.length) throw validationError("Invalid price", problems);
}

export function createProductService(config: AppConfig): TypedServiceSchema<ProductServiceThis> {
  const ttlDefault = config.reservations.ttlSeconds;
  return {
    name: "product",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [
      EventsMixin({
        name: "product",
        config,
        consumes: {
          /**
           * An approved return whose goods came back (`restock`): its lines go back on the
           * shelf — the undo of the order's `commit` for those units — once per return
           * (the inbox, and one stock_returns row per line), never more than the order sold.
           */
          async [Events.ReturnApproved](this: ProductServiceThis, trx: Knex.Transaction, p: { returnId: string; orderId: string; restock: boolean; lines: ReservationLine[] }) {
            if (!p.restock) return;
            const sold = new Map((await repo.findReservationsForUpdate(trx, p.orderId)).filter((r) => r.status === "committed").map((r) => [r.productId, r.quantity]));
            const changed: string[] = [];
            for (const l of p.lines) {
              if (!(await repo.restockReturned(trx, { returnId: p.returnId, orderId: p.orderId, productId: l.productId, quantity: l.quantity }, sold.get(l.productId) ?? 0, Date.now()))) continue;
              await this.stockChanged(trx, l.productId, "returned");
              changed.push(l.productId);
            }
            if (changed.length) trx.executionPromise.then(() => this.invalidate(changed), () => undefined);
          },
        },
      }),
      DbMixin({ name: "product", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      list: {
        auth: "none",
        cache: { keys: ["category", "brand", "page", "pageSize", "sort"], ttl: LIST_CACHE_TTL_S },
        params: Params["product.list"],
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.list">>): Promise<ActionResponse<"product.list">> {
          const q = parseListQuery(ctx.params);
          const { items, total } = await repo.listProducts(this.db, q);
          return { items: items.map(toPublicProduct), total, page: q.page, pageSize: q.pageSize };
        },
      },

      get: {
        auth: "none",
        cache: { keys: ["id"] },
        params: Params["product.get"],
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.get">>): Promise<ActionResponse<"product.get">> {
          const p = await repo.findProduct(this.db, ctx.params.id);
          if (!p) throw notFound("Product");
          return toPublicProduct(p);
        },
      },

      /**
       * Loads products [from, from + count) of the demo catalog (lib/demo-catalog.ts), skipping
       * skus that exist, each batch in one transaction with its events. Not routed: used by
       * `npm run seed` and by a fresh embedded start.
       */
      /**
       * Every live product in id order, a page at a time (keyset on id), for a consumer that
       * rebuilds its own copy of the catalog (each search replica at start). Not routed.
       */
      export: {
        visibility: "public",
        params: Params["product.export"],
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.export">>): Promise<ActionResponse<"product.export">> {
          const limit = ctx.params.limit ?? 500;
          const rows = await repo.productsAfter(this.db, ctx.params.after ?? "", limit);
          return { items: rows.map(toPublicProduct), next: rows.length === limit ? rows[rows.length - 1]!.id : null };
        },
      },

      seedDemo: {
        visibility: "public",
        params: Params["product.seedDemo"],
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.seedDemo">>): Promise<ActionResponse<"product.seedDemo">> {
          return { inserted: await this.seedDemoBatch(ctx.params.from, ctx.params.count) };
        },
      },

      create: {
        auth: "admin",
        params: Params["product.create"],
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.create">>): Promise<ActionResponse<"product.create">> {
          const input = ctx.params;
          assertMoney(input.price);
          const now = Date.now();
          const product: ProductRecord = {
            id: randomUUID(),
            sku: input.sku,
            name: input.name,
            description: input.description,
            category: input.category,
            brand: input.brand ?? null,
            tags: normalizeTags(input.tags),
            price: { amount: input.price.amount, currency: input.price.currency },
            images: input.images ?? [],
            onHand: input.stock ?? 0,
            reserved: 0,
            createdAt: now,
            updatedAt: now,
            version: 1,
          };
          try {
            await inTransaction(this.db, async (trx) => {
              await repo.insertProduct(trx, product);
              await this.publishEvent(trx, Events.ProductCreated, toPublicProduct(product));
              if (product.onHand > 0) await this.stockChanged(trx, product.id, "created");
            });
          } catch (err) {
            if (isUniqueViolation(err)) throw conflict("A product with this sku already exists", [{ field: "sku" }]);
            throw err;
          }
          await this.invalidate();
          ctx.meta.$statusCode = 201;
          ctx.meta.$location = `/api/products/${product.id}`;
          return toPublicProduct(product);
        },
      },

      update: {
        auth: "admin",
        params: Params["product.update"],
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.update">>): Promise<ActionResponse<"product.update">> {
          const patch: ProductPatch = pickFields(ctx.params, PATCH_FIELDS);
          assertMoney(patch.price);
          const updated = await inTransaction(this.db, async (trx) => {
            // Locked so a concurrent stock change cannot slip between read and event.
            const current = await repo.findProductForUpdate(trx, ctx.params.id);
            if (!current) throw notFound("Product");
            const next = applyPatch(current, patch, Date.now());
            await repo.updateProductFields(trx, next);
            await this.publishEvent(trx, Events.ProductUpdated, toPublicProduct(next));
            return next;
          });
          await this.invalidate();
          return toPublicProduct(updated);
        },
      },

      remove: {
        auth: "admin",
        params: Params["product.remove"],
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.remove">>): Promise<ActionResponse<"product.remove">> {
          await inTransaction(this.db, async (trx) => {
            const current = await repo.findProductForUpdate(trx, ctx.params.id);
            if (!current || !(await repo.softDeleteProduct(trx, current.id, Date.now()))) throw notFound("Product");
            // The row's version after the delete (raised under the lock taken above).
            await this.publishEvent(trx, Events.ProductDeleted, { ...toPublicProduct(current), version: current.version + 1 });
          });
          await this.invalidate();
          ctx.meta.$statusCode = 204;
          return null;
        },
      },

      adjustStock: {
        auth: "admin",
        params: Params["product.adjustStock"],
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.adjustStock">>): Promise<ActionResponse<"product.adjustStock">> {
          const { id, delta } = ctx.params;
          if (delta === 0) throw validationError("delta must not be 0", [{ field: "delta" }]);
          const product = await inTransaction(this.db, async (trx) => {
            if (!(await repo.adjustOnHand(trx, id, delta, MAX_STOCK, Date.now()))) {
              const current = await repo.findProduct(trx, id);
              if (!current) throw notFound("Product");
              const verdict = adjustVerdict(current, delta);
              throw conflict(
                verdict === "too-large" ? `Stock would exceed ${MAX_STOCK}` : "Stock cannot go below what is reserved",
                [{ field: "delta", onHand: current.onHand, reserved: current.reserved }],
              );
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
            if ("missing" in found) throw new AppError("NOT_FOUND", "Product not found", [{ productId: found.missing }]);
            return found.priced;
          };
          const replay = async () => {
            const existing = await repo.findReservations(this.db, orderId);
            if (!sameLines(existing, lines))
              throw conflict("This order already holds a different reservation", [{ field: "orderId", orderId }]);
            return reservationView(orderId, existing, price(await repo.reservableOf(this.db, ids)));
          };
          if ((await repo.findReservations(this.db, orderId)).length) return replay();
          // A plain read first: when a line is already short, refuse without taking the hot
          // rows' locks (a sold-out flash sale otherwise queues every refusal behind them).
          // Only a refusal is decided here; a success is decided by the locked UPDATEs below.
          // The same read prices the lines: a price changed between it and the UPDATE is the
          // race any read-then-reserve has; the order freezes what this read saw.
          const products = await repo.reservableOf(this.db, ids);
          const priced = price(products);
          const before = new Map([...products].map(([id, p]) => [id, p.available]));
          const shortNow = lines.filter((l) => (before.get(l.productId) ?? 0) < l.quantity);
          if (shortNow.length) {
            // The same order reserved concurrently (and took that stock): a replay, not a refusal.
            if ((await repo.findReservations(this.db, orderId)).length) return replay();
            countBusiness(this.broker, "oversell_refused");
            throw new AppError(
              "OUT_OF_STOCK",
              "Not enough stock for some products; nothing was reserved",
              shortNow.map((l) => ({ productId: l.productId, requested: l.quantity, available: Math.max(0, before.get(l.productId) ?? 0) })),
            );
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
              // In productId order: the lock order (see the header).
              for (const l of lines) if (!(await repo.reserveStock(trx, l.productId, l.quantity, now))) short.push(l.productId);
              if (short.length) {
                const available = await repo.availableOf(trx, short);
                throw new AppError(
                  "OUT_OF_STOCK",
                  "Not enough stock for some products; nothing was reserved",
                  lines
                    .filter((l) => short.includes(l.productId))
                    .map((l) => ({ productId: l.productId, requested: l.quantity, available: Math.max(0, available.get(l.productId) ?? 0) })),
                );
              }
              for (const l of lines) await this.stockChanged(trx, l.productId, "reserved");
            });
          } catch (err) {
            if (isUniqueViolation(err)) return replay();
            // Lost to a concurrent reserve of the same order on another path: still a replay.
            if (err instanceof AppError && err.type === "OUT_OF_STOCK" && (await repo.findReservations(this.db, orderId)).length) return replay();
            if (err instanceof AppError && err.type === "OUT_OF_STOCK") countBusiness(this.broker, "oversell_refused");
            throw err;
          }
          await this.invalidate(lines.map((l) => l.productId));
          return reservationView(orderId, lines.map((l) => ({ ...l, orderId, status: "held" as ReservationStatus, expiresAt })), priced);
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
        async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.returnStock">>): Promise<ActionResponse<"product.returnStock">> {
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
        async handler(this: ProductServiceThis) {
          return { expired: await this.sweepExpired() };
        },
      },
    },

    events: {
      /** A cache hint from a writer on any node (not a business fact, so a Moleculer event). */
      "cache.clean.product": {
        async handler(this: ProductServiceThis, ctx: Context<{ ids?: unknown }>) {
          // The writer cleaned its own cacher; a shared (Redis) cacher needs nothing more.
          if (ctx.nodeID === this.broker.nodeID || config.redisUrl) return;
          const ids = Array.isArray(ctx.params?.ids) ? ctx.params.ids.filter((x): x is string => typeof x === "string") : undefined;
          await this.cleanLocal(ids);
        },
      },
    },

    methods: {
      /**
       * Descriptive changes (create, update, delete) clean every product entry: lists show
       * names and prices. Stock-only changes (reserve, commit, release, expiry, adjust) delete
       * just those products' `product.get` entries, by key (no pattern scan of the cache):
       * a checkout must not empty the whole catalog cache. Lists are not cleaned for them and
       * carry a short TTL instead (LIST_CACHE_TTL_S): their stock figures may lag that long.
       */
      async cleanLocal(this: ProductServiceThis, stockOnlyOf?: string[]) {
        const cacher = this.broker.cacher;
        if (!cacher) return;
        if (!stockOnlyOf) return void (await cacher.clean("product.**"));
        // The cacher's own key function, as its middleware calls it for `product.get` (keys: ["id"]).
        const keys = [...new Set(stockOnlyOf)].map((id) => cacher.getCacheKey({ name: "product.get" } as never, { keys: ["id"] }, { params: { id } } as never));
        if (keys.length) await cacher.del(keys);
      },

      /** After a commit: clean here, tell the other nodes, and clean again a moment later. */
      async seedDemoBatch(this: ProductServiceThis, from: number, count: number): Promise<number> {
        const now = Date.now();
        const batch = syntheticProducts(from + count).slice(from);
        const inserted = await inTransaction(this.db, async (trx) => {
          const existing = await repo.existingSkus(trx, batch.map((p) => p.sku));
          let n = 0;
          for (const p of batch) {
            if (existing.has(p.sku)) continue;
            const product: ProductRecord = {
              ...p, id: randomUUID(), onHand: p.stock.onHand, reserved: 0, createdAt: now, updatedAt: now, version: 1,
            };
            await repo.insertProduct(trx, product);
            await this.publishEvent(trx, Events.ProductCreated, toPublicProduct(product));
            if (product.onHand > 0) await this.stockChanged(trx, product.id, "created");
            n++;
          }
          return n;
        });
        if (inserted) await this.invalidate();
        return inserted;
      },

      async invalidate(this: ProductServiceThis, stockOnlyOf?: string[]) {
        const hint = stockOnlyOf ? { ids: stockOnlyOf } : {};
        // The write is committed whatever happens here: a failed hint is logged, never thrown.
        await this.cleanLocal(stockOnlyOf).catch((err) => this.logger.warn("Product cache clean failed", err instanceof Error ? err.message : err));
        await Promise.resolve(this.broker.broadcast("cache.clean.product", hint)).catch((err) =>
          this.logger.warn("cache.clean.product broadcast failed", err instanceof Error ? err.message : err),
        );
        const timer = setTimeout(() => {
          this.pendingCleans.delete(timer);
          this.cleanLocal(stockOnlyOf).catch(() => undefined);
          Promise.resolve(this.broker.broadcast("cache.clean.product", hint)).catch(() => undefined);
        }, SECOND_CLEAN_MS);
        timer.unref();
        this.pendingCleans.add(timer);
      },

      /**
       * `stock.changed` with the figures as they are inside this transaction, and the whole
       * product at its new version, so a consumer keeping a copy (search) needs no read back.
       */
      async stockChanged(this: ProductServiceThis, trx: Knex.Transaction, productId: string, reason: string) {
        const found = await repo.findProductAnyState(trx, productId);
        if (!found) return;
        const { product, deleted } = found;
        await this.publishEvent(trx, Events.StockChanged, {
          productId, ...stockOf(product.onHand, product.reserved), version: product.version, deleted,
          reason, occurredAt: new Date().toISOString(), product: toPublicProduct(product),
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
        await inTransaction(this.db, async (trx) => {
          const found = await repo.findReservationsForUpdate(trx, orderId);
          // A commit is all lines or none: if any line already left `held` other than by a
          // commit (expired, released), nothing is sold — otherwise an order paid just as its
          // first line expired would sell the other lines of an order about to be cancelled.
          // The rows are locked, so no sweep can expire a line between this check and the loop.
          if (to === "committed") {
            const gone = found.filter((r) => r.status !== "held" && r.status !== "committed");
            if (gone.length)
              throw conflict("The reservation is no longer held; nothing was committed", gone.map((r) => ({ productId: r.productId, status: r.status })));
          }
          const now = Date.now();
          for (const r of found) {
            if (r.status !== "held") continue;
            if (!(await repo.transitionReservation(trx, orderId, r.productId, to, now))) continue;
            await repo.unreserveStock(trx, r.productId, r.quantity, to === "committed", now);
            await this.stockChanged(trx, r.productId, to === "committed" ? "sold" : "released");
            changed = true;
          }
        });
        // Read after the commit: inside the transaction a plain SELECT would answer from the
        // REPEATABLE READ snapshot, older than a racing commit we just queued behind.
        const rows = await repo.findReservations(this.db, orderId);
        if (!rows.length) throw notFound("Reservation");
        if (changed) await this.invalidate(rows.map((r) => r.productId));
        const view = reservationView(orderId, rows);
        // Paying for an order whose hold already expired (or was released) must not pass silently.
        if (to === "committed" && view.lines.some((l) => l.status !== "committed"))
          throw conflict("The reservation is no longer held; nothing was committed for those lines", view.lines.filter((l) => l.status !== "committed"));
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
              orderId: r.orderId, productId: r.productId, quantity: r.quantity, expiredAt: new Date(now).toISOString(),
            });
            return true;
          });
          if (won) expired++, touched.add(r.productId);
        }
        if (expired) {
          this.logger.info(`Released ${expired} expired reservation line(s)`);
          await this.invalidate([...touched]);
        }
        return expired;
      },
    },

    created(this: ProductServiceThis) {
      this.pendingCleans = new Set();
    },

    async started(this: ProductServiceThis) {
      if (config.demoCatalog.enabled && (await repo.countAllProducts(this.db)) === 0) {
        // A fresh embedded start shows a shop with things in it (DEMO_CATALOG=false to skip).
        const { size } = config.demoCatalog;
        for (let from = 0; from < size; from += 250) {
          await this.seedDemoBatch(from, Math.min(250, size - from));
          this.logger.info(`Demo catalog: ${Math.min(from + 250, size)}/${size} products`);
        }
      }
      this.sweeper = periodic("Reservation sweep", config.reservations.sweepIntervalMs, () => this.sweepExpired(), this.logger);
    },

    async stopped(this: ProductServiceThis) {
      const sweeping = this.sweeper?.stop();
      for (const t of this.pendingCleans) clearTimeout(t);
      this.pendingCleans.clear();
      await sweeping;
    },
  };
}
