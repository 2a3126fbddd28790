/** What the recommendation service's handlers see as `this`, and its request context. */
import type { Context } from "moleculer";
import type { RequestContext } from "../../lib/context";
import type { Db } from "../../lib/db";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import type { Preferences, Recommendation } from "./recommendation.domain";
import type { Product } from "../../proto/gen/meridian/product/v1/product";
import type { Periodic } from "../../lib/periodic";
import type { Knex } from "knex";
import type { ModelChange, ModelMemory } from "./recommendation.memory";

export type Ctx<P = Record<string, unknown>> = RequestContext<P>;

/** A product as the product service answers and publishes it (its contract). */
export type PublicProduct = Product;

export interface RebuildProgress {
  phase: string;
  done: number;
  total?: number | null;
}

export interface RecThis extends EventsServiceThis {
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
  /** This replica's memory of the model (recommendation.memory.ts). */
  model: ModelMemory;
  rank(userId: string, prefs: Preferences, limit: number, stamp?: number): Promise<Recommendation[]>;
  /** Publishes `recommendation.model_changed` in `trx` and forgets at its commit. */
  modelChanged(trx: Knex.Transaction, change: ModelChange): Promise<void>;
  cached<T>(key: () => string | Promise<string>, compute: () => Promise<T>): Promise<T>;
  hydrate(ctx: Ctx<unknown>, ids: string[]): Promise<Map<string, PublicProduct>>;
  showable<T extends { productId: string }>(ctx: Ctx<unknown>, ranked: T[], limit: number): Promise<(T & { product: PublicProduct })[]>;
  syncCatalog(progress?: (p: RebuildProgress) => Promise<void>): Promise<{ products: number; removed: number }>;
  startSync(): void;
  runRebuild(by: string): Promise<unknown>;
}
