/**
 * The recommendation model's rebuild and the catalog copy: `syncCatalog` reads the whole
 * catalog (`product.export`) into the copy, at start and as a rebuild's first step; a rebuild
 * (claimed by one replica under a lease) recomputes the model from the order history
 * (`order.exportPurchases`) with its progress readable from any replica. Bound into the
 * `recommendation` service by recommendation.service.ts.
 */
import type { Knex } from "knex";
import type { AppConfig } from "../../lib/config";
import { inTransaction } from "../../lib/db";
import { AppError } from "../../lib/errors";
import { buildModel, type Purchase } from "./recommendation.domain";
import * as repo from "./recommendation.repo";
import { callAction } from "../../lib/call";
import type { RebuildSummary } from "../../proto/gen/meridian/recommendation/v1/recommendation";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { productFields } from "./recommendation.consumers";
import type { Ctx, RebuildProgress, RecThis } from "./recommendation.this";
import type { TypedActions } from "../../lib/service-schema";

const EXPORT_PAGE = 500;
const ORDER_PAGE = 1000;
/** A rebuild's claim; renewed with every progress report, so only a dead owner loses it. */
const REBUILD_LEASE_MS = 120_000;

/** The stored summary: written by this service from a RebuildSummary. */
const parseSummary = (json: string): RebuildSummary => JSON.parse(json) as RebuildSummary;

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

export function rebuildActions(config: AppConfig): TypedActions<RecThis> {
  return {
    startRebuild: {
      auth: "admin",
      params: Params["recommendation.startRebuild"],
      async handler(
        this: RecThis,
        ctx: Ctx<ActionParams<"recommendation.startRebuild">>,
      ): Promise<ActionResponse<"recommendation.startRebuild">> {
        const by = `${config.nodeId}:${Date.now()}`;
        if (!(await repo.claimRebuild(this.db, by, Date.now(), REBUILD_LEASE_MS)))
          throw new AppError("CONFLICT", "A rebuild is already running", [rebuildView(await repo.readMeta(this.db))]);
        this.rebuildRunning = this.runRebuild(by).catch(() => undefined);
        ctx.meta.$statusCode = 202;
        return rebuildView(await repo.readMeta(this.db));
      },
    },

    rebuildStatus: {
      auth: "admin",
      params: Params["recommendation.rebuildStatus"],
      async handler(this: RecThis): Promise<ActionResponse<"recommendation.rebuildStatus">> {
        const live = this.rebuildLive;
        if (live)
          return {
            status: "running",
            phase: live.phase,
            done: live.done,
            total: live.total ?? null,
            startedAt: new Date(live.startedAt).toISOString(),
            finishedAt: null,
            error: null,
            summary: null,
          };
        return rebuildView(await repo.readMeta(this.db));
      },
    },

    /** The model's size and the rebuild state. Not routed (REPL, tests, benchmark). */
    status: {
      visibility: "public",
      params: Params["recommendation.status"],
      async handler(this: RecThis): Promise<ActionResponse<"recommendation.status">> {
        return { ...(await repo.counts(this.db)), catalogSynced: this.sync.done, rebuild: rebuildView(await repo.readMeta(this.db)) };
      },
    },

    /** Waits for a rebuild this replica started (tests, benchmark). Not routed. */
    awaitRebuild: {
      visibility: "public",
      params: Params["recommendation.awaitRebuild"],
      async handler(this: RecThis): Promise<ActionResponse<"recommendation.awaitRebuild">> {
        await this.rebuildRunning;
        return rebuildView(await repo.readMeta(this.db));
      },
    },
  };
}

export const rebuildMethods = {
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
      const have = await repo.findItems(
        this.db,
        page.items.map((p) => p.id),
      );
      const fresh = page.items.filter((p) => (have.get(p.id)?.version ?? -1) < p.version);
      if (fresh.length)
        await inTransaction(this.db, async (trx: Knex.Transaction) => {
          const changed: string[] = [];
          for (const p of fresh) if (await repo.applyProduct(trx, productFields(p), Date.now())) changed.push(p.id);
          if (changed.length) await this.modelChanged(trx, { productIds: changed });
        });
      for (const p of page.items) live.add(p.id);
      after = page.next ?? undefined;
      await progress?.({ phase: "catalog", done: live.size });
    } while (after && !this.sync.stopped);
    const removed = this.sync.stopped
      ? 0
      : await inTransaction(this.db, async (trx: Knex.Transaction) => {
          const gone = await repo.markMissingDeleted(trx, live, since);
          if (gone.length) await this.modelChanged(trx, gone.length > 1000 ? { everything: true } : { productIds: gone });
          return gone.length;
        });
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
        for (const o of page.items)
          for (const p of new Set(o.productIds)) purchases.push({ orderId: o.orderId, productId: p, userId: o.userId, at: o.paidAt });
        orders += page.items.length;
        after = page.next ?? undefined;
        await report({ phase: "orders", done: orders, total });
      } while (after);
      let summary: Record<string, unknown> = {};
      await report({ phase: "writing", done: 0, total: null });
      await inTransaction(
        this.db,
        async (trx) => {
          await repo.lockModelExclusive(trx);
          const byKey = new Map(purchases.map((p) => [`${p.orderId}\u0000${p.productId}`, p]));
          for (const p of await repo.purchasesSince(trx, snapshotAt)) byKey.set(`${p.orderId}\u0000${p.productId}`, p);
          const refunded = await repo.refundedOrders(trx);
          const kept = [...byKey.values()].filter((p) => !refunded.has(p.orderId));
          const users = new Map<string, Purchase[]>();
          for (const p of kept) users.set(p.userId, [...(users.get(p.userId) ?? []), { productId: p.productId, at: p.at }]);
          const model = buildModel(users);
          const rows = kept.length + [...model.sets.values()].reduce((n, s) => n + s.length, 0) + model.pairRows;
          await repo.replaceModel(trx, kept, model, Date.now(), (written) =>
            report({ phase: "writing", done: written, total: rows }, false),
          );
          await this.modelChanged(trx, { everything: true });
          summary = { products: catalog.products, orders, purchases: kept.length, users: model.sets.size, pairs: model.pairRows, ms: 0 };
        },
        1,
      );
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
};
