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
 * - Cache: every write cleans the cached reads it changed after its commit, on every node
 *   (descriptive writes all of `product.**`, stock-only writes just those products'
 *   `product.get` keys: cleanProductCache), and again shortly after (lib/cache-clean.ts).
 *   Limit: a read slower than that delay could still store a stale entry, which then lives
 *   until the cache TTL (300 s).
 */

import { forRunner } from "../../lib/runner";
import path from "node:path";
import type { Context } from "moleculer";
import type { AppConfig } from "../../lib/config";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin } from "../../mixins/events.mixin";
import * as repo from "./product.repo";
import { catalogActions, catalogMethods, cleanProductCache } from "./catalog.actions";
import { CacheCleaner } from "../../lib/cache-clean";
import { inventoryActions, inventoryConsumers, inventoryMethods } from "./inventory.actions";
import type { ProductServiceThis } from "./product.this";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { periodic } from "../../lib/periodic";

export function createProductService(config: AppConfig): TypedServiceSchema<ProductServiceThis> {
  return {
    name: "product",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [
      EventsMixin({
        name: "product",
        config,
        consumes: inventoryConsumers,
      }),
      DbMixin({ name: "product", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      ...catalogActions(),
      ...inventoryActions(config),
    },

    events: {
      /** A cache hint from a writer on any node (not a business fact, so a Moleculer event). */
      "cache.clean.product": {
        async handler(this: ProductServiceThis, ctx: Context<{ ids?: unknown }>) {
          const ids = Array.isArray(ctx.params?.ids) ? ctx.params.ids.filter((x): x is string => typeof x === "string") : undefined;
          await this.cacheCleaner.received(ctx.nodeID ?? "", { ids });
        },
      },
    },

    methods: {
      ...catalogMethods,
      ...inventoryMethods,
    },

    created(this: ProductServiceThis) {
      this.cacheCleaner = new CacheCleaner(this.broker, this.logger, "product", cleanProductCache, Boolean(config.redisUrl));
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
      this.cacheCleaner.stop();
      await sweeping;
    },
  };
}

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createProductService);
