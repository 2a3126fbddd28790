/**
 * Recommendation service: `GET /api/recommendations` (for the signed-in user) and
 * `GET /api/products/:id/also-bought`, from purchase history and stated preferences
 * (recommendation.domain.ts has the model and the ranking rules).
 *
 * Where the model comes from, and its guarantees:
 * - `order.paid` adds an order's products to the buyer's purchases; `order.refunded` with
 *   status REFUNDED takes them out again (a partial refund names no lines, so it changes
 *   nothing). Both arrive through the reliable event layer (EventsMixin: outbox, durable
 *   queue, inbox): each message is applied once, inside the inbox transaction, and the
 *   purchase rows are keyed by (order, product), so a copy with another message id changes
 *   nothing either. A refund arriving before its payment leaves a tombstone that the late
 *   `order.paid` respects.
 * - Product events (created, updated, deleted, stock.changed) keep a copy of the fields the
 *   ranking needs (name, category, brand, availability, deleted), applied only when newer
 *   than the copy (product versions). Every replica also reads the whole catalog
 *   (`product.export`) at start: products created before this service first subscribed.
 * - Everything lives in the service's database, which every replica shares (MariaDB in
 *   cluster mode), and the ranking is deterministic (ties by id): every replica answers the
 *   same. A rebuild (`POST /api/admin/recommendations/rebuild`, `npm run recs:rebuild`)
 *   recomputes the model from the order history (`order.exportPurchases`) with progress
 *   readable from any replica.
 * - An answer never holds a product the user bought, nor one that is deleted or out of stock:
 *   the copy filters candidates, then each product shown is read from the product service
 *   (`product.get`, cached there) and dropped if it is gone or unavailable by then.
 * - Rankings are cached (RECS_CACHE_TTL_S, the broker's cacher: Redis in cluster mode, shared
 *   by the replicas). A user's key carries their purchase stamp and preferences, so their
 *   own changes show at once; other shoppers' purchases reach it within the TTL.
 * Limit: an `order.paid` is reflected once its event is handled (milliseconds embedded; the
 * consumer's retry delays when the database refuses it for a while).
 */
import path from "node:path";
import type { Context } from "moleculer";
import type { Knex } from "knex";
import type { AppConfig } from "../../lib/config";
import { requireUser, type RequestContext } from "../../lib/context";
import { inTransaction, type Db } from "../../lib/db";
import { AppError, errorCode } from "../../lib/errors";
import type { EventHandler } from "../../lib/events/consumer";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin, type EventsServiceThis } from "../../mixins/events.mixin";
import {
  DEFAULT_LIMIT,
  HISTORY_FOR_SCORING,
  NEIGHBOURS_PER_ITEM,
  buildModel,
  isFullRefund,
  paidOrderOf,
  preferencesOf,
  rankAlsoBought,
  rankForUser,
  type Preferences,
  type Purchase,
  type Recommendation,
} from "./recommendation.domain";
import * as repo from "./recommendation.repo";
import { callAction } from "../../lib/call";
import type { Product } from "../../proto/gen/meridian/product/v1/product";
import type { RebuildSummary } from "../../proto/gen/meridian/recommendation/v1/recommendation";
import { Events } from "../../proto/gen/contracts";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Params } from "../../proto/gen/params";
import { periodic, type Periodic } from "../../lib/periodic";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";

const EXPORT_PAGE = 500;
const ORDER_PAGE = 1000;
/** A rebuild's claim; renewed with every progress report, so only a dead owner loses it. */
const REBUILD_LEASE_MS = 120_000;
const MAX_SYNC_BACKOFF_MS = 30_000;
/** Extra candidates ranked beyond `limit`, for those the product service then drops. */
const SPARE = 10;

type Ctx<P = Record<string, unknown>> = RequestContext<P>;

/** A product as the product service answers and publishes it (its contract). */
type PublicProduct = Product;

interface RebuildProgress {
  phase: string;
  done: number;
  total?: number | null;
}

interface RecThis extends EventsServiceThis {
  db: Db;
  broker: Context["broker"];
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
  /** RECS_CACHE_TTL_S (a field, so a benchmark can compare with and without). */
  cacheTtlS: number;
  /** The start-up catalog copy: one successful pass, retried with backoff until then. */
  sync: { loop: Periodic; stopped: boolean; done: boolean };
  rebuildRunning?: Promise<unknown>;
  /** This replica's rebuild in progress: answered from memory (SQLite's one connection is busy meanwhile). */
  rebuildLive?: RebuildProgress & { startedAt: number };
  rank(userId: string, prefs: Preferences, limit: number): Promise<Recommendation[]>;
  cached<T>(key: () => string | Promise<string>, compute: () => Promise<T>): Promise<T>;
  hydrate(ctx: Ctx<unknown>, ids: string[]): Promise<Map<string, PublicProduct>>;
  showable<T extends { productId: string }>(ctx: Ctx<unknown>, ranked: T[], limit: number): Promise<(T & { product: PublicProduct })[]>;
  syncCatalog(progress?: (p: RebuildProgress) => Promise<void>): Promise<{ products: number; removed: number }>;
  startSync(): void;
  runRebuild(by: string): Promise<unknown>;
}


function productFields(p: PublicProduct & { version: number }, deleted = false): repo.ProductFields {
  return { id: p.id, name: p.name, category: p.category, brand: p.brand ?? null, available: p.stock?.available ?? 0, deleted, version: p.version };
}

/** The stored summary: written by this service from a RebuildSummary. */
const parseSummary = (json: string): RebuildSummary => JSON.parse(json);

function rebuildView(m: repo.MetaRow) {
  const iso = (v: number | string | null) => (v === null ? null : new Date(Number(v)).toISOString());
  return {
    status: m.rebuild_status,
    phase: m.rebuild_phase,
    done: Number(m.rebuild_done),
    total: m.rebuild_total === null ? null : Number(m.rebuild_total),
    startedAt: iso(m.rebuild_started_at),
    finishedAt: iso(m.rebuild_finished_at),
    error: m.rebuild_error,
    summary: m.rebuild_summary ? parseSummary(m.rebuild_summary) : null,
  };
}

export function createRecommendationService(config: AppConfig): TypedServiceSchema<RecThis> {
  const onPaid: EventHandler = async (trx, payload) => {
    const order = paidOrderOf(payload);
    if (order) await repo.applyPaidOrder(trx, order, Date.now());
  };
  const onRefunded: EventHandler = async (trx, payload) => {
    if (isFullRefund(payload)) await repo.applyRefundedOrder(trx, payload, Date.now());
  };
  const onProduct =
    (deleted: boolean): EventHandler =>
    async (trx, payload: PublicProduct) => {
      if (typeof payload?.id === "string" && typeof payload.version === "number") await repo.applyProduct(trx, productFields(payload, deleted), Date.now());
    };
  const onStock: EventHandler = async (trx, payload: { product?: PublicProduct; deleted?: boolean }) => {
    if (payload?.product && typeof payload.product.version === "number") await repo.applyProduct(trx, productFields(payload.product, Boolean(payload.deleted)), Date.now());
  };

  return {
    name: "recommendation",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [
      EventsMixin({
        name: "recommendation",
        config,
        consumes: {
          [Events.OrderPaid]: onPaid,
          [Events.OrderRefunded]: onRefunded,
          [Events.ProductCreated]: onProduct(false),
          [Events.ProductUpdated]: onProduct(false),
          [Events.ProductDeleted]: onProduct(true),
          [Events.StockChanged]: onStock,
        },
      }),
      DbMixin({ name: "recommendation", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      forMe: {
        auth: "user",
        // Unknown fields (an injected userId) are dropped: the token alone says who asks.
        params: Params["recommendation.forMe"],
        async handler(this: RecThis, ctx: Ctx<ActionParams<"recommendation.forMe">>): Promise<ActionResponse<"recommendation.forMe">> {
          const me = requireUser(ctx);
          const limit = ctx.params.limit ?? DEFAULT_LIMIT;
          let prefs: Preferences = { categories: [], brands: [] };
          try {
            prefs = preferencesOf(await callAction(ctx, "user.get", { id: me.id }));
          } catch (err) {
            if (errorCode(err) !== "NOT_FOUND") throw err;
          }
          // Cached per user, keyed by the user's purchase stamp and preferences, so their own
          // purchase or preference change shows at once; other users' purchases move the
          // scores after RECS_CACHE_TTL_S at most. Availability is checked on every answer.
          const key = async () => `recommendation.forMe:${me.id}:${await repo.userStamp(this.db, me.id)}:${JSON.stringify([prefs.categories, prefs.brands])}:${limit}`;
          const ranked = await this.cached(key, () => this.rank(me.id, prefs, limit + SPARE));
          return { items: (await this.showable(ctx, ranked, limit)).map((r) => ({ product: r.product, score: r.score, reason: r.reason })) };
        },
      },

      alsoBought: {
        auth: "none",
        params: Params["recommendation.alsoBought"],
        async handler(this: RecThis, ctx: Ctx<ActionParams<"recommendation.alsoBought">>): Promise<ActionResponse<"recommendation.alsoBought">> {
          const limit = ctx.params.limit ?? DEFAULT_LIMIT;
          // An unknown or deleted product is a 404, as GET /api/products/:id answers.
          await callAction(ctx, "product.get", { id: ctx.params.id });
          const ranked = await this.cached(() => `recommendation.alsoBought:${ctx.params.id}:${limit}`, async () => {
            const near = await repo.neighbours(this.db, [ctx.params.id], Math.max(NEIGHBOURS_PER_ITEM, 5 * (limit + SPARE)));
            const items = await repo.findItems(this.db, [ctx.params.id]);
            for (const n of near) items.set(n.productId, n.item);
            return rankAlsoBought({
              productId: ctx.params.id,
              neighbours: near,
              buyers: new Map([...items].map(([id, i]) => [id, i.buyers])),
              catalog: items,
              limit: limit + SPARE,
            });
          });
          return { items: (await this.showable(ctx, ranked, limit)).map((r) => ({ product: r.product, score: r.score })) };
        },
      },

      /**
       * The ranking alone (product ids, scores, reasons) for a user id, with the preferences
       * given: what `forMe` shows before reading the products. Not routed: for the offline
       * evaluation (bench/recs.eval.ts) and the tests.
       */
      rank: {
        visibility: "public",
        params: Params["recommendation.rank"],
        async handler(this: RecThis, ctx: Ctx<ActionParams<"recommendation.rank">>): Promise<ActionResponse<"recommendation.rank">> {
          return this.rank(ctx.params.userId, preferencesOf({ preferences: ctx.params.preferences ?? {} }), ctx.params.limit ?? DEFAULT_LIMIT);
        },
      },

      startRebuild: {
        auth: "admin",
        params: Params["recommendation.startRebuild"],
        async handler(this: RecThis, ctx: Ctx<ActionParams<"recommendation.startRebuild">>): Promise<ActionResponse<"recommendation.startRebuild">> {
          const by = `${config.nodeId}:${Date.now()}`;
          if (!(await repo.claimRebuild(this.db, by, Date.now(), REBUILD_LEASE_MS))) throw new AppError("CONFLICT", "A rebuild is already running", [rebuildView(await repo.readMeta(this.db))]);
          this.rebuildRunning = this.runRebuild(by).catch(() => undefined);
          ctx.meta.$statusCode = 202;
          return rebuildView(await repo.readMeta(this.db));
        },
      },

      rebuildStatus: {
        auth: "admin",
        params: Params["recommendation.rebuildStatus"],
        async handler(this: RecThis) {
          const live = this.rebuildLive;
          if (live)
            return { status: "running", phase: live.phase, done: live.done, total: live.total ?? null, startedAt: new Date(live.startedAt).toISOString(), finishedAt: null, error: null, summary: null };
          return rebuildView(await repo.readMeta(this.db));
        },
      },

      /** The model's size and the rebuild state. Not routed (REPL, tests, benchmark). */
      status: {
        visibility: "public",
        params: Params["recommendation.status"],
        async handler(this: RecThis) {
          return { ...(await repo.counts(this.db)), catalogSynced: this.sync.done, rebuild: rebuildView(await repo.readMeta(this.db)) };
        },
      },

      /** Waits for a rebuild this replica started (tests, benchmark). Not routed. */
      awaitRebuild: {
        visibility: "public",
        params: Params["recommendation.awaitRebuild"],
        async handler(this: RecThis) {
          await this.rebuildRunning;
          return rebuildView(await repo.readMeta(this.db));
        },
      },
    },

    methods: {
      async rank(this: RecThis, userId: string, prefs: Preferences, limit: number) {
        const [history, bought] = await Promise.all([repo.recentItems(this.db, userId, HISTORY_FOR_SCORING), repo.boughtBy(this.db, userId)]);
        const near = await repo.neighbours(this.db, history.map((h) => h.productId), NEIGHBOURS_PER_ITEM);
        // Enough fallback candidates to fill the list after dropping what the user bought.
        const fallbackSize = limit + Math.min(bought.size, 1000);
        const [preferred, anyPopular] = await Promise.all([
          prefs.categories.length || prefs.brands.length ? repo.popular(this.db, { ...prefs, limit: fallbackSize }) : Promise.resolve([]),
          repo.popular(this.db, { limit: fallbackSize }),
        ]);
        const catalog = new Map<string, repo.RankedItem>();
        for (const i of [...history, ...near.map((n) => n.item), ...preferred, ...anyPopular]) catalog.set(i.productId, i);
        return rankForUser({
          history: history.map((h) => h.productId),
          bought,
          neighbours: near,
          buyers: new Map([...catalog].map(([id, i]) => [id, i.buyers])),
          catalog,
          preferences: prefs,
          popular: [...preferred, ...anyPopular].map((i) => ({ productId: i.productId, buyers: i.buyers })),
          limit,
        });
      },

      /** The products to show, read from the product service; gone or unavailable ones are left out. */
      async hydrate(this: RecThis, ctx: Ctx<unknown>, ids: string[]) {
        const found = await Promise.all(
          ids.map(async (id) => {
            try {
              return await callAction(ctx, "product.get", { id });
            } catch (err) {
              if (errorCode(err) === "NOT_FOUND") return undefined;
              throw err;
            }
          }),
        );
        return new Map(found.filter((p): p is PublicProduct => p !== undefined && p.stock.available > 0).map((p) => [p.id, p]));
      },

      /**
       * A ranking from the broker's cacher (Redis in cluster mode: one copy for every replica,
       * so they answer alike; the memory cacher embedded), computed on a miss. A cacher that
       * fails is skipped, never an error. The key is computed only when caching is on (a
       * user's key costs a query).
       */
      async cached<T>(this: RecThis, keyOf: () => string | Promise<string>, compute: () => Promise<T>) {
        const cacher = this.broker.cacher;
        const ttl = this.cacheTtlS;
        if (!cacher || ttl <= 0) return compute();
        const key = await keyOf();
        try {
          const hit = (await cacher.get(key)) as T | null;
          if (hit !== null && hit !== undefined) return hit;
        } catch {
          // fall through to the database
        }
        const value = await compute();
        await Promise.resolve(cacher.set(key, value, ttl)).catch(() => undefined);
        return value;
      },

      /**
       * The first `limit` of `ranked` that the product service still shows in stock: reads
       * only as many as needed (one round, then one more per product dropped).
       */
      async showable<T extends { productId: string }>(this: RecThis, ctx: Ctx<unknown>, ranked: T[], limit: number) {
        const out: (T & { product: PublicProduct })[] = [];
        let next = 0;
        while (out.length < limit && next < ranked.length) {
          const batch = ranked.slice(next, next + (limit - out.length));
          next += batch.length;
          const products = await this.hydrate(ctx, batch.map((r) => r.productId));
          for (const r of batch) {
            const product = products.get(r.productId);
            if (product) out.push({ ...r, product });
          }
        }
        return out;
      },

      /**
       * Reads the whole catalog (keyset pages of `product.export`) into the copy: only rows it
       * does not have at that version are written; products it no longer lists, and that no
       * event touched meanwhile, are marked deleted.
       */
      async syncCatalog(this: RecThis, progress?: (p: RebuildProgress) => Promise<void>) {
        await this.broker.waitForServices(["product"], 30_000);
        const since = Date.now();
        const live = new Set<string>();
        let after: string | undefined;
        do {
          const page = await callAction(this.broker, "product.export", { after, limit: EXPORT_PAGE });
          const have = await repo.findItems(this.db, page.items.map((p) => p.id));
          const fresh = page.items.filter((p) => (have.get(p.id)?.version ?? -1) < p.version);
          if (fresh.length)
            await inTransaction(this.db, async (trx: Knex.Transaction) => {
              for (const p of fresh) await repo.applyProduct(trx, productFields(p), Date.now());
            });
          for (const p of page.items) live.add(p.id);
          after = page.next ?? undefined;
          await progress?.({ phase: "catalog", done: live.size });
        } while (after && !this.sync.stopped);
        const removed = this.sync.stopped ? 0 : await repo.markMissingDeleted(this.db, live, since);
        return { products: live.size, removed };
      },

      /** The start-up catalog read, retried with backoff while the product service is away. */
      startSync(this: RecThis) {
        this.sync.loop.kick();
      },

      /**
       * The rebuild, on the replica that claimed it:
       * 1. the catalog copy (as at start);
       * 2. a snapshot of the order history (`order.exportPurchases`, keyset pages);
       * 3. in ONE transaction holding the model lock exclusively (event handlers hold it
       *    shared, so none runs meanwhile): the snapshot plus purchases events recorded since
       *    the snapshot began, minus orders refunded meanwhile, become the new model.
       * A failure leaves the old model (the transaction rolls back) and the status `failed`.
       */
      async runRebuild(this: RecThis, by: string) {
        const started = Date.now();
        this.rebuildLive = { phase: "starting", done: 0, startedAt: started };
        // Progress goes to memory always, and to the shared row (other replicas, lease) outside
        // the final transaction only: that transaction holds the row's lock (and, on SQLite,
        // the only connection).
        const report = async (p: RebuildProgress, shared = true) => {
          Object.assign(this.rebuildLive!, p);
          if (shared) await repo.reportRebuild(this.db, by, p, Date.now(), REBUILD_LEASE_MS);
        };
        try {
          const catalog = await this.syncCatalog(report);
          await this.broker.waitForServices(["order"], 30_000);
          const snapshotAt = Date.now();
          const purchases: repo.PurchaseRow[] = [];
          let after: string | undefined;
          let orders = 0;
          let total: number | null = null;
          do {
            const page = await callAction(this.broker, "order.exportPurchases", { after, limit: ORDER_PAGE });
            if (page.total !== undefined) total = page.total;
            for (const o of page.items) for (const p of new Set(o.productIds)) purchases.push({ orderId: o.orderId, productId: p, userId: o.userId, at: o.paidAt });
            orders += page.items.length;
            after = page.next ?? undefined;
            await report({ phase: "orders", done: orders, total });
          } while (after);
          let summary: Record<string, unknown> = {};
          await report({ phase: "writing", done: 0, total: null });
          await inTransaction(this.db, async (trx) => {
            await repo.lockModelExclusive(trx);
            const byKey = new Map(purchases.map((p) => [`${p.orderId}\u0000${p.productId}`, p]));
            for (const p of await repo.purchasesSince(trx, snapshotAt)) byKey.set(`${p.orderId}\u0000${p.productId}`, p);
            const refunded = await repo.refundedOrders(trx);
            const kept = [...byKey.values()].filter((p) => !refunded.has(p.orderId));
            const users = new Map<string, Purchase[]>();
            for (const p of kept) users.set(p.userId, [...(users.get(p.userId) ?? []), { productId: p.productId, at: p.at }]);
            const model = buildModel(users);
            const rows = kept.length + [...model.sets.values()].reduce((n, s) => n + s.length, 0) + model.pairRows;
            await repo.replaceModel(trx, kept, model, Date.now(), (written) => report({ phase: "writing", done: written, total: rows }, false));
            summary = { products: catalog.products, orders, purchases: kept.length, users: model.sets.size, pairs: model.pairRows, ms: 0 };
          }, 1);
          summary.ms = Date.now() - started;
          await repo.finishRebuild(this.db, by, { status: "done", summary }, Date.now());
          this.logger.info(`Recommendation model rebuilt: ${JSON.stringify(summary)}`);
          return summary;
        } catch (err) {
          this.logger.error(`Recommendation rebuild failed: ${(err as Error).message}`);
          await repo.finishRebuild(this.db, by, { status: "failed", error: (err as Error).message }, Date.now()).catch(() => undefined);
          throw err;
        } finally {
          this.rebuildLive = undefined;
        }
      },
    },

    created(this: RecThis) {
      this.sync = {
        loop: periodic(
          "Recommendation catalog sync",
          undefined,
          async () => {
            if (this.sync.done) return;
            const { products, removed } = await this.syncCatalog();
            this.sync.done = true;
            this.logger.info(`Recommendation catalog copy synced: ${products} products${removed ? `, ${removed} gone` : ""}`);
          },
          this.logger,
          // Not waited for at stop (as before): stopping ends the page loop, and a stopped sync
          // marks nothing missing (syncCatalog).
          { backoffMs: (failures) => Math.min(MAX_SYNC_BACKOFF_MS, 500 * 2 ** (failures - 1)), stopWaitMs: 0 },
        ),
        stopped: false,
        done: false,
      };
      this.cacheTtlS = config.recommendations.cacheTtlS;
    },

    async started(this: RecThis) {
      // In the background: the service answers from its database meanwhile.
      this.startSync();
    },

    async stopped(this: RecThis) {
      this.sync.stopped = true;
      await this.sync.loop.stop();
      await this.rebuildRunning;
    },
  };
}
