/**
 * What the product service's handlers see as `this` (its catalog and inventory halves, its
 * mixins' `db` and `publishEvent`), and its request context.
 */
import type { Context } from "moleculer";
import type { Knex } from "knex";
import type { RequestContext } from "../../lib/context";
import type { CacheCleaner } from "../../lib/cache-clean";
import type { Db } from "../../lib/db";
import type { Periodic } from "../../lib/periodic";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import type { ProductCacheHint } from "./catalog.actions";
import type { ReservationView } from "./product.domain";

export interface ProductServiceThis extends EventsServiceThis {
  db: Db;
  broker: Context["broker"];
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
  sweeper?: Periodic;
  cacheCleaner: CacheCleaner<ProductCacheHint>;
  invalidate(stockOnlyOf?: string[]): Promise<void>;
  stockChanged(trx: Knex.Transaction, productId: string, reason: string): Promise<void>;
  seedDemoBatch(from: number, count: number): Promise<number>;
  sweepExpired(now?: number): Promise<number>;
  finishReservations(ctx: Ctx<{ orderId: string }>, to: "committed" | "released"): Promise<ReservationView>;
}

export type Ctx<P = Record<string, unknown>> = RequestContext<P>;
