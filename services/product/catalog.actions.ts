/**
 * The product service's catalog: reads for anyone (cached), CRUD for admins, the keyset
 * export other services rebuild their copies from, the demo catalog, and the cache cleaning
 * every write ends with. Bound into the one `product` service by product.service.ts.
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import { actionCacheKey } from "../../lib/cache-clean";
import { inTransaction, isUniqueViolation } from "../../lib/db";
import { conflict, notFound, validationError } from "../../lib/errors";
import { syntheticProducts } from "../../lib/demo-catalog";
import {
  PATCH_FIELDS,
  applyPatch,
  moneyProblems,
  normalizeTags,
  parseListQuery,
  pickFields,
  toPublicProduct,
  type Money,
  type ProductPatch,
  type ProductRecord,
} from "./product.domain";
import * as repo from "./product.repo";
import { Events } from "../../proto/gen/contracts";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import type { TypedActions } from "../../lib/service-schema";
import type { Ctx, ProductServiceThis } from "./product.this";

/** Product lists are not cleaned by stock-only changes; this bounds how old their stock figures get. */
const LIST_CACHE_TTL_S = 5;

function assertMoney(price: Money | undefined): void {
  if (!price) return;
  const problems = moneyProblems(price);
  if (problems.length) throw validationError("Invalid price", problems);
}

/** `product.get`'s cache key for a product (its cache: keys ["id"]). */
function productGetKey(cacher: NonNullable<ServiceBroker["cacher"]>, id: string): string {
  return actionCacheKey(cacher, "product.get", ["id"], { id });
}

/**
 * What a write cleans (lib/cache-clean.ts runs it after the commit, on every node).
 * Descriptive changes (create, update, delete) clean every product entry: lists show names and
 * prices. Stock-only changes (reserve, commit, release, expiry, adjust) delete just those
 * products' `product.get` entries, by key (no pattern scan of the cache): a checkout must not
 * empty the whole catalog cache. Lists are not cleaned for them and carry a short TTL instead
 * (LIST_CACHE_TTL_S): their stock figures may lag that long.
 */
export async function cleanProductCache(cacher: NonNullable<ServiceBroker["cacher"]>, hint: ProductCacheHint): Promise<void> {
  if (!hint.ids) return void (await cacher.clean("product.**"));
  const keys = [...new Set(hint.ids)].map((id) => productGetKey(cacher, id));
  if (keys.length) await cacher.del(keys);
}

/** A write's cache hint: the products whose stock alone changed, or none for a descriptive change. */
export interface ProductCacheHint {
  ids?: string[];
}

export function catalogActions(): TypedActions<ProductServiceThis> {
  return {
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

    getMany: {
      visibility: "public",
      params: Params["product.getMany"],
      async handler(this: ProductServiceThis, ctx: Ctx<ActionParams<"product.getMany">>): Promise<ActionResponse<"product.getMany">> {
        // Through product.get's own cache entries (the same keys, cleaned by the same
        // invalidations), the misses read in one statement and cached: a caller showing ten
        // products makes one call instead of ten. A cacher that fails is skipped.
        const { ids } = ctx.params;
        const cacher = this.broker.cacher;
        const cached = cacher
          ? await Promise.all(
              ids.map(
                (id) =>
                  Promise.resolve(cacher.get(productGetKey(cacher, id))).catch(() => null) as Promise<ReturnType<
                    typeof toPublicProduct
                  > | null>,
              ),
            )
          : ids.map(() => null);
        const missing = ids.filter((_, i) => !cached[i]);
        const fresh = new Map(missing.length ? (await repo.findProducts(this.db, missing)).map((p) => [p.id, toPublicProduct(p)]) : []);
        if (cacher) for (const [id, p] of fresh) Promise.resolve(cacher.set(productGetKey(cacher, id), p)).catch(() => undefined);
        return { items: ids.flatMap((id, i) => cached[i] ?? fresh.get(id) ?? []) };
      },
    },

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
        return { items: rows.map(toPublicProduct), next: rows.length === limit ? rows[rows.length - 1].id : null };
      },
    },

    /**
     * Loads products [from, from + count) of the demo catalog (lib/demo-catalog.ts), skipping
     * skus that exist, each batch in one transaction with its events. Not routed: used by
     * `npm run seed` and by a fresh embedded start.
     */
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
          if (isUniqueViolation(err)) throw conflict("A product with this sku already exists", [{ field: "sku", type: "unique" }]);
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
  };
}

export const catalogMethods = {
  async seedDemoBatch(this: ProductServiceThis, from: number, count: number): Promise<number> {
    const now = Date.now();
    const batch = syntheticProducts(from + count).slice(from);
    const inserted = await inTransaction(this.db, async (trx) => {
      const existing = await repo.existingSkus(
        trx,
        batch.map((p) => p.sku),
      );
      let n = 0;
      for (const p of batch) {
        if (existing.has(p.sku)) continue;
        const product: ProductRecord = {
          ...p,
          id: randomUUID(),
          onHand: p.stock.onHand,
          reserved: 0,
          createdAt: now,
          updatedAt: now,
          version: 1,
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

  /** After a commit: the cached reads it changed are cleaned, here and on every node (lib/cache-clean.ts). */
  async invalidate(this: ProductServiceThis, stockOnlyOf?: string[]) {
    await this.cacheCleaner.afterCommit(stockOnlyOf ? { ids: stockOnlyOf } : {});
  },
};
