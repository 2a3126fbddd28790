/**
 * Recommendation service: `GET /api/recommendations` (for the signed-in user) and
 * `GET /api/products/:id/also-bought`, from purchase history and stated preferences
 * (recommendation.domain.ts has the model and the ranking rules). This file binds the actions
 * and ranks; recommendation.consumers.ts applies the events, rebuild.actions.ts holds the
 * catalog copy and the rebuild.
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
 *   same. Each replica ranks from memory (recommendation.memory.ts): the rows of the model it
 *   read, forgotten when a `recommendation.model_changed` event (committed with the change,
 *   delivered to every replica) names them; the replica that made the change forgets at its
 *   commit. A rebuild (`POST /api/admin/recommendations/rebuild`, `npm run recs:rebuild`)
 *   recomputes the model from the order history (`order.exportPurchases`) with progress
 *   readable from any replica.
 * - An answer never holds a product the user bought, nor one that is deleted or out of stock:
 *   the copy filters candidates, then each product shown is read from the product service
 *   (`product.get`, cached there) and dropped if it is gone or unavailable by then.
 * - Rankings are cached (RECS_CACHE_TTL_S, the broker's cacher: Redis in cluster mode, shared
 *   by the replicas). A user's key carries their purchase stamp and preferences, so their
 *   own changes show at once; other shoppers' purchases reach it within the TTL.
 * Limit: an `order.paid` is reflected once its event is handled (milliseconds embedded; the
 * consumer's retry delays when the database refuses it for a while), on the replica that
 * handled it at once, on the others when its `recommendation.model_changed` arrives
 * (milliseconds; a replica that lost its queue forgets everything).
 */
import { forRunner } from "../../lib/runner";
import path from "node:path";
import type { AppConfig } from "../../lib/config";
import { requireUser } from "../../lib/context";
import type { Knex } from "knex";
import { errorCode } from "../../lib/errors";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin } from "../../mixins/events.mixin";
import { BroadcastEventsMixin } from "../../mixins/broadcast-events.mixin";
import {
  DEFAULT_LIMIT,
  HISTORY_FOR_SCORING,
  NEIGHBOURS_PER_ITEM,
  preferencesOf,
  rankAlsoBought,
  rankForUser,
  type Preferences,
} from "./recommendation.domain";
import { ModelMemory, type ModelChange } from "./recommendation.memory";
import * as repo from "./recommendation.repo";
import { rebuildActions, rebuildMethods } from "./rebuild.actions";
import { recommendationConsumers } from "./recommendation.consumers";
import type { Ctx, PublicProduct, RecThis } from "./recommendation.this";
import { callAction } from "../../lib/call";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Params } from "../../proto/gen/params";
import { periodic } from "../../lib/periodic";
import { Events, type ActionParams, type ActionResponse } from "../../proto/gen/contracts";

const MAX_SYNC_BACKOFF_MS = 30_000;
/** Extra candidates ranked beyond `limit`, for those the product service then drops. */
const SPARE = 10;

export function createRecommendationService(config: AppConfig): TypedServiceSchema<RecThis> {
  return {
    name: "recommendation",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [
      // Every replica hears every model change, to forget what its memory holds of it.
      BroadcastEventsMixin<RecThis>({
        name: "recommendation",
        config,
        handlers: {
          [Events.ModelChanged](change) {
            this.model.forget(change);
          },
        },
        onResync() {
          this.model.clear();
        },
      }),
      EventsMixin({
        name: "recommendation",
        config,
        consumes: recommendationConsumers,
      }),
      DbMixin({ name: "recommendation", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      ...rebuildActions(config),

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
          // The ranking under a stamp holds the user as of that stamp at least (memory reads
          // the user again when it has them from before: another replica applied the purchase).
          let stamp: number | undefined;
          const key = async () =>
            `recommendation.forMe:${me.id}:${(stamp = await repo.userStamp(this.db, me.id))}:${JSON.stringify([prefs.categories, prefs.brands])}:${limit}`;
          const ranked = await this.cached(key, () => this.rank(me.id, prefs, limit + SPARE, stamp));
          return {
            items: (await this.showable(ctx, ranked, limit)).map((r) => ({ product: r.product, score: r.score, reason: r.reason })),
          };
        },
      },

      alsoBought: {
        auth: "none",
        params: Params["recommendation.alsoBought"],
        async handler(
          this: RecThis,
          ctx: Ctx<ActionParams<"recommendation.alsoBought">>,
        ): Promise<ActionResponse<"recommendation.alsoBought">> {
          const limit = ctx.params.limit ?? DEFAULT_LIMIT;
          // An unknown or deleted product is a 404, as GET /api/products/:id answers.
          await callAction(ctx, "product.get", { id: ctx.params.id });
          const ranked = await this.cached(
            () => `recommendation.alsoBought:${ctx.params.id}:${limit}`,
            async () => {
              const { neighbours, catalog } = await this.model.ofProduct(ctx.params.id, Math.max(NEIGHBOURS_PER_ITEM, 5 * (limit + SPARE)));
              const buyers = new Map(
                [ctx.params.id, ...neighbours.map((n) => n.productId)].map((id) => [id, catalog.get(id)?.buyers ?? 0]),
              );
              return rankAlsoBought({ productId: ctx.params.id, neighbours, buyers, catalog, limit: limit + SPARE });
            },
          );
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
          return this.rank(
            ctx.params.userId,
            preferencesOf({ preferences: ctx.params.preferences ?? {} }),
            ctx.params.limit ?? DEFAULT_LIMIT,
          );
        },
      },
    },

    methods: {
      ...rebuildMethods,

      /**
       * The ranking, from this replica's memory of the model (recommendation.memory.ts); with
       * the user's stamp when the caller read it (the ranking cache's key).
       */
      async rank(this: RecThis, userId: string, prefs: Preferences, limit: number, stamp?: number) {
        return rankForUser(await this.model.forUser(userId, prefs, limit, NEIGHBOURS_PER_ITEM, stamp));
      },

      /**
       * A change to the model, in its transaction: the event that tells every replica to forget
       * what it names, and this replica forgets at the commit (not on a rollback).
       */
      async modelChanged(this: RecThis, trx: Knex.Transaction, change: ModelChange) {
        await this.publishEvent(trx, Events.ModelChanged, {
          userIds: change.userIds ?? [],
          productIds: change.productIds ?? [],
          everything: change.everything ?? false,
        });
        trx.executionPromise.then(
          () => this.model.forget(change),
          () => undefined,
        );
      },

      /**
       * The products to show, read from the product service in one call (product.getMany,
       * through product.get's cache; it was one product.get call per candidate, #16); gone or
       * unavailable ones are left out.
       */
      async hydrate(this: RecThis, ctx: Ctx<unknown>, ids: string[]) {
        if (!ids.length) return new Map<string, PublicProduct>();
        const { items } = await callAction(ctx, "product.getMany", { ids });
        return new Map(items.filter((p) => p.stock.available > 0).map((p) => [p.id, p]));
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
          const products = await this.hydrate(
            ctx,
            batch.map((r) => r.productId),
          );
          for (const r of batch) {
            const product = products.get(r.productId);
            if (product) out.push({ ...r, product });
          }
        }
        return out;
      },
    },

    created(this: RecThis) {
      const db = () => this.db;
      this.model = new ModelMemory({
        allItems: () => repo.allItems(db()),
        items: (ids) => repo.findItems(db(), ids),
        neighbourLists: (ids, perItem) => repo.neighbourLists(db(), ids, perItem),
        user: (userId) => repo.userPurchases(db(), userId, HISTORY_FOR_SCORING),
      });
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

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createRecommendationService);
