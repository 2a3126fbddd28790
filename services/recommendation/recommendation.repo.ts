/**
 * Data access of the recommendation service: the only file that knows its tables.
 *
 * Concurrency (MariaDB REPEATABLE READ; SQLite serializes every transaction):
 * - a change to one user's purchases runs in the event's inbox transaction and takes, in
 *   this order: the model lock row SHARED (`rec_meta`; only a rebuild takes it exclusively),
 *   the user's row (`rec_users`, an upsert: exclusive), then the count rows in sorted key
 *   order (items, then pairs). Two users' changes touching the same pairs therefore lock them
 *   in the same order; the rare deadlock left (InnoDB's gap locks on inserts) rolls the whole
 *   transaction back and `inTransaction` runs it again;
 * - the user lock makes "read the user's old set, write the new one" safe: two orders of one
 *   user handled at once on two replicas see each other's purchases, so no pair is lost;
 * - catalog rows are versioned: a product event is applied only when newer than the row.
 */
import type { Knex } from "knex";
import { isMysql } from "../../lib/db";
import type { CatalogItem, ModelDelta, Purchase } from "./recommendation.domain";
import { contributingSet, distinctPurchases, modelDelta } from "./recommendation.domain";

/** Rows per multi-row INSERT (well under SQLite's and MariaDB's parameter limits). */
const CHUNK = 400;


function chunks<T>(xs: T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}

interface ItemRow {
  product_id: string;
  name: string;
  category: string;
  brand: string | null;
  available: number | string;
  deleted: number | boolean;
  version: number | string;
  buyers: number | string;
}

/** A catalog row as the ranking reads it: the product's fields, its buyer count and version. */
export type RankedItem = CatalogItem & { buyers: number; version: number };

const toItem = (r: ItemRow): RankedItem => ({
  productId: r.product_id,
  name: r.name,
  category: r.category,
  brand: r.brand,
  available: Number(r.available),
  deleted: Boolean(r.deleted),
  version: Number(r.version),
  buyers: Number(r.buyers),
});

// ---- locks -------------------------------------------------------------------------------

/** Shared: event handlers run side by side and only wait for a rebuild's replacement step. */
export async function lockModelShared(trx: Knex.Transaction): Promise<void> {
  if (isMysql(trx)) await trx("rec_meta").where({ id: 1 }).forShare().select("id");
}

export async function lockModelExclusive(trx: Knex.Transaction): Promise<void> {
  if (isMysql(trx)) await trx("rec_meta").where({ id: 1 }).forUpdate().select("id");
}

async function lockUser(trx: Knex.Transaction, userId: string, now: number): Promise<void> {
  await trx("rec_users").insert({ user_id: userId, updated_at: now }).onConflict("user_id").merge({ updated_at: now });
}

// ---- purchases and the counts ------------------------------------------------------------

/**
 * Records a paid order's products and updates the model. Returns false (and changes nothing)
 * when the order was fully refunded already (its refund event came first) or was counted.
 */
export async function applyPaidOrder(trx: Knex.Transaction, o: { orderId: string; userId: string; at: number; productIds: string[] }, now: number): Promise<boolean> {
  await lockModelShared(trx);
  await lockUser(trx, o.userId, now);
  if (await trx("rec_refunded_orders").where({ order_id: o.orderId }).first()) return false;
  if (await trx("rec_purchases").where({ order_id: o.orderId }).first()) return false;
  if (!o.productIds.length) return false;
  await trx("rec_purchases").insert(o.productIds.map((p) => ({ order_id: o.orderId, product_id: p, user_id: o.userId, at: o.at, created_at: now })));
  await refreshUser(trx, o.userId, now);
  return true;
}

/** Takes a fully refunded order's products out of the model (and remembers the refund). */
export async function applyRefundedOrder(trx: Knex.Transaction, o: { orderId: string; userId: string }, now: number): Promise<boolean> {
  await lockModelShared(trx);
  await lockUser(trx, o.userId, now);
  await trx("rec_refunded_orders").insert({ order_id: o.orderId, user_id: o.userId, at: now }).onConflict("order_id").ignore();
  const removed = await trx("rec_purchases").where({ order_id: o.orderId, user_id: o.userId }).delete();
  if (removed) await refreshUser(trx, o.userId, now);
  return removed > 0;
}

async function purchasesOf(db: Knex, userId: string): Promise<Purchase[]> {
  const rows = (await db("rec_purchases").where({ user_id: userId }).select("product_id", "at")) as { product_id: string; at: number | string }[];
  return rows.map((r) => ({ productId: r.product_id, at: Number(r.at) }));
}

/** Recomputes the user's contributing set and applies the difference to the counts. */
async function refreshUser(trx: Knex.Transaction, userId: string, now: number): Promise<void> {
  const purchases = await purchasesOf(trx, userId);
  const before = ((await trx("rec_user_items").where({ user_id: userId }).select("product_id")) as { product_id: string }[]).map((r) => r.product_id);
  const after = contributingSet(purchases);
  const delta = modelDelta(before, after);
  if (!delta.buyers.size && !delta.pairs.length) return;
  const firstAt = new Map(distinctPurchases(purchases).map((p) => [p.productId, p.at]));
  const gone = [...delta.buyers].filter(([, d]) => d < 0).map(([p]) => p);
  const added = [...delta.buyers].filter(([, d]) => d > 0).map(([p]) => p);
  for (const part of chunks(gone)) await trx("rec_user_items").where({ user_id: userId }).whereIn("product_id", part).delete();
  for (const part of chunks(added)) await trx("rec_user_items").insert(part.map((p) => ({ user_id: userId, product_id: p, at: firstAt.get(p)! })));
  await applyDelta(trx, delta, now);
}

/** Adds `rows` ([...keys, n]) to the counter column, creating missing rows. */
async function upsertIncrement(trx: Knex.Transaction, table: string, keys: string[], column: string, rows: Record<string, unknown>[]): Promise<void> {
  const merge = isMysql(trx) ? trx.raw("?? + VALUES(??)", [column, column]) : trx.raw("??.?? + excluded.??", [table, column, column]);
  for (const part of chunks(rows)) await trx(table).insert(part).onConflict(keys).merge({ [column]: merge });
}

async function ensureItems(trx: Knex.Transaction, ids: string[], now: number): Promise<void> {
  for (const part of chunks([...ids].sort())) await trx("rec_items").insert(part.map((p) => ({ product_id: p, updated_at: now }))).onConflict("product_id").ignore();
}

async function applyDelta(trx: Knex.Transaction, delta: ModelDelta, now: number): Promise<void> {
  const ids = [...delta.buyers.keys()].sort();
  await ensureItems(trx, ids, now);
  for (const d of new Set(delta.buyers.values())) {
    const group = ids.filter((p) => delta.buyers.get(p) === d);
    for (const part of chunks(group)) await trx("rec_items").whereIn("product_id", part).update({ buyers: trx.raw("buyers + ?", [d]) });
  }
  await upsertIncrement(trx, "rec_pairs", ["product_id", "other_id"], "co", delta.pairs.map(([p, q, n]) => ({ product_id: p, other_id: q, co: n })));
  const shrunk = [...new Set(delta.pairs.filter((x) => x[2] < 0).map((x) => x[0]))].sort();
  for (const part of chunks(shrunk)) await trx("rec_pairs").whereIn("product_id", part).where("co", "<=", 0).delete();
}

// ---- the catalog copy --------------------------------------------------------------------

export interface ProductFields {
  id: string;
  name: string;
  category: string;
  brand?: string | null;
  available: number;
  deleted: boolean;
  version: number;
}

/** Applies a product event: only when newer than the row (duplicates and reordering settle). */
export async function applyProduct(trx: Knex.Transaction, p: ProductFields, now: number): Promise<boolean> {
  await trx("rec_items").insert({ product_id: p.id, updated_at: now }).onConflict("product_id").ignore();
  const n = await trx("rec_items")
    .where({ product_id: p.id })
    .where("version", "<", p.version)
    .update({
      name: p.name.slice(0, 200),
      category: p.category.slice(0, 100),
      brand: p.brand ? p.brand.slice(0, 100) : null,
      available: Math.max(0, Math.trunc(p.available)),
      deleted: p.deleted,
      version: p.version,
      updated_at: now,
    });
  return n === 1;
}

/** Marks deleted the products the catalog no longer lists and that no event touched since `since`. */
export async function markMissingDeleted(db: Knex, liveIds: Set<string>, since: number): Promise<number> {
  const rows = (await db("rec_items").where({ deleted: false }).where("updated_at", "<", since).where("version", ">=", 0).select("product_id")) as { product_id: string }[];
  const missing = rows.map((r) => r.product_id).filter((id) => !liveIds.has(id));
  for (const part of chunks(missing)) await db("rec_items").whereIn("product_id", part).where("updated_at", "<", since).update({ deleted: true });
  return missing.length;
}

export async function findItems(db: Knex, ids: string[]): Promise<Map<string, RankedItem>> {
  const out = new Map<string, RankedItem>();
  for (const part of chunks([...new Set(ids)], 900)) for (const r of (await db("rec_items").whereIn("product_id", part)) as ItemRow[]) out.set(r.product_id, toItem(r));
  return out;
}

// ---- reads for the ranking ----------------------------------------------------------------

const ITEM_COLUMNS = ["product_id", "name", "category", "brand", "available", "deleted", "version", "buyers"].map((c) => `i.${c}`);

/** The user's most recent contributing products, recent first, with their catalog rows. */
export async function recentItems(db: Knex, userId: string, limit: number): Promise<RankedItem[]> {
  const rows = (await db("rec_user_items as u")
    .join("rec_items as i", "i.product_id", "u.product_id")
    .where("u.user_id", userId)
    .orderBy([{ column: "u.at", order: "desc" }, { column: "u.product_id", order: "asc" }])
    .limit(limit)
    .select(ITEM_COLUMNS)) as ItemRow[];
  return rows.map(toItem);
}

/** Changes with every purchase or refund of the user (0: none yet): part of a cached ranking's key. */
export async function userStamp(db: Knex, userId: string): Promise<number> {
  const row = (await db("rec_users").where({ user_id: userId }).first("updated_at")) as { updated_at: number | string } | undefined;
  return row ? Number(row.updated_at) : 0;
}

/** Everything the user bought (paid, not fully refunded). */
export async function boughtBy(db: Knex, userId: string): Promise<Set<string>> {
  const rows = (await db("rec_purchases").where({ user_id: userId }).distinct("product_id")) as { product_id: string }[];
  return new Set(rows.map((r) => r.product_id));
}

/**
 * The `perItem` highest co-purchase counts of each product (one index range per product),
 * each with the neighbour's catalog row.
 */
export async function neighbours(db: Knex, ids: string[], perItem: number): Promise<{ source: string; productId: string; co: number; item: RankedItem }[]> {
  if (!ids.length) return [];
  // One statement: a LIMITed range scan per product, glued with UNION ALL (both databases
  // accept a LIMIT inside a derived table). Ties: the higher id first, so the scan runs
  // backwards over (product_id, co, other_id) without a sort.
  const part = "SELECT * FROM (SELECT product_id AS source, other_id, co FROM rec_pairs WHERE product_id = ? ORDER BY co DESC, other_id DESC LIMIT ?) AS ";
  const sql = `SELECT t.source, t.co, ${ITEM_COLUMNS.join(", ")} FROM (${ids.map((_, i) => `${part}t${i}`).join(" UNION ALL ")}) AS t JOIN rec_items i ON i.product_id = t.other_id`;
  const result = await db.raw(sql, ids.flatMap((id) => [id, perItem]));
  const rows = (isMysql(db) ? result[0] : result) as (ItemRow & { source: string; co: number | string })[];
  return rows.map((r) => ({ source: r.source, productId: r.product_id, co: Number(r.co), item: toItem(r) }));
}

/**
 * Recommendable products, most bought first (ties: higher id first, the index's order):
 * within the preferred categories or brands when given, else any.
 */
export async function popular(db: Knex, opts: { categories?: string[]; brands?: string[]; limit: number }): Promise<RankedItem[]> {
  const variants = (xs: string[] = []) => [...new Set(xs.flatMap((x) => [x, x.toLowerCase()]))];
  const cats = variants(opts.categories);
  const brands = variants(opts.brands);
  const top = (where: Record<string, string>) =>
    db("rec_items")
      .where(where)
      .where({ deleted: false })
      .where("available", ">", 0)
      .whereNot("category", "")
      .orderBy(RANKING)
      .limit(opts.limit)
      .select(ITEM_COLUMNS.map((c) => c.slice(2)));
  const ranges = [...cats.map((c) => ({ category: c })), ...brands.map((b) => ({ brand: b }))];
  if (!ranges.length) return ((await top({})) as ItemRow[]).map(toItem);
  // The top `limit` of each category and brand (one index range each: rec_items_category_top,
  // rec_items_brand_top), in one statement; the overall top `limit` is among them. A product
  // in a preferred category AND brand comes twice: kept once.
  const [first, ...rest] = ranges.map((w, i) => db.select("*").from(top(w).as(`r${i}`)));
  const rows = (await first.unionAll(rest)) as ItemRow[];
  const byId = new Map(rows.map((r) => [r.product_id, r]));
  return [...byId.values()]
    .sort((a, b) => Number(b.buyers) - Number(a.buyers) || (a.product_id < b.product_id ? 1 : a.product_id > b.product_id ? -1 : 0))
    .slice(0, opts.limit)
    .map(toItem);
}

/** The popularity order: buyers, then product id (both descending), as every index above ends. */
const RANKING = [
  { column: "buyers", order: "desc" },
  { column: "product_id", order: "desc" },
];

// ---- rebuild ------------------------------------------------------------------------------

export interface MetaRow {
  model_version: number | string;
  rebuild_status: string;
  rebuild_phase: string | null;
  rebuild_done: number | string;
  rebuild_total: number | string | null;
  rebuild_by: string | null;
  rebuild_lease_until: number | string | null;
  rebuild_started_at: number | string | null;
  rebuild_finished_at: number | string | null;
  rebuild_error: string | null;
  rebuild_summary: string | null;
}

export async function readMeta(db: Knex): Promise<MetaRow> {
  return (await db("rec_meta").where({ id: 1 }).first()) as MetaRow;
}

/** Claims the rebuild (one at a time across replicas; a claim whose owner died expires). */
export async function claimRebuild(db: Knex, by: string, now: number, leaseMs: number): Promise<boolean> {
  const n = await db("rec_meta")
    .where({ id: 1 })
    .where((w) => w.whereNot("rebuild_status", "running").orWhere("rebuild_lease_until", "<", now))
    .update({ rebuild_status: "running", rebuild_phase: "starting", rebuild_done: 0, rebuild_total: null, rebuild_by: by, rebuild_lease_until: now + leaseMs, rebuild_started_at: now, rebuild_finished_at: null, rebuild_error: null });
  return n === 1;
}

/** Progress of the claim holder; also renews its lease. */
export async function reportRebuild(db: Knex, by: string, fields: { phase: string; done: number; total?: number | null }, now: number, leaseMs: number): Promise<void> {
  await db("rec_meta")
    .where({ id: 1, rebuild_by: by, rebuild_status: "running" })
    .update({ rebuild_phase: fields.phase, rebuild_done: fields.done, rebuild_total: fields.total ?? null, rebuild_lease_until: now + leaseMs });
}

export async function finishRebuild(db: Knex, by: string, outcome: { status: "done" | "failed"; error?: string; summary?: unknown }, now: number): Promise<void> {
  await db("rec_meta")
    .where({ id: 1, rebuild_by: by })
    .update({ rebuild_status: outcome.status, rebuild_phase: null, rebuild_finished_at: now, rebuild_lease_until: null, rebuild_error: outcome.error?.slice(0, 500) ?? null, rebuild_summary: outcome.summary === undefined ? null : JSON.stringify(outcome.summary) });
}

export interface PurchaseRow {
  orderId: string;
  productId: string;
  userId: string;
  at: number;
}

/** Purchases recorded by events since `since` (they may be newer than a rebuild's snapshot). */
export async function purchasesSince(trx: Knex.Transaction, since: number): Promise<PurchaseRow[]> {
  const rows = (await trx("rec_purchases").where("created_at", ">=", since).select("order_id", "product_id", "user_id", "at")) as { order_id: string; product_id: string; user_id: string; at: number | string }[];
  return rows.map((r) => ({ orderId: r.order_id, productId: r.product_id, userId: r.user_id, at: Number(r.at) }));
}

export async function refundedOrders(trx: Knex.Transaction): Promise<Set<string>> {
  return new Set(((await trx("rec_refunded_orders").select("order_id")) as { order_id: string }[]).map((r) => r.order_id));
}

/**
 * Replaces the whole model (the rebuild's last step, inside the exclusive model lock): the
 * purchases, every user's contributing set and the counts, from `purchases`.
 */
export async function replaceModel(
  trx: Knex.Transaction,
  purchases: PurchaseRow[],
  model: { buyers: Map<string, number>; pairs: Map<string, Map<string, number>>; sets: Map<string, { productId: string; at: number }[]> },
  now: number,
  progress: (written: number) => Promise<void> | void,
): Promise<void> {
  for (const t of ["rec_pairs", "rec_user_items", "rec_purchases", "rec_users"]) await trx(t).delete();
  await trx("rec_items").where("buyers", "<>", 0).update({ buyers: 0 });
  let written = 0;
  const step = async (n: number) => {
    written += n;
    await progress(written);
  };
  for (const part of chunks(purchases)) {
    await trx("rec_purchases").insert(part.map((p) => ({ order_id: p.orderId, product_id: p.productId, user_id: p.userId, at: p.at, created_at: now })));
    await step(part.length);
  }
  const users = [...model.sets.keys()].sort();
  for (const part of chunks(users)) await trx("rec_users").insert(part.map((u) => ({ user_id: u, updated_at: now })));
  const userItems = [...model.sets].flatMap(([u, items]) => items.map((i) => ({ user_id: u, product_id: i.productId, at: i.at })));
  for (const part of chunks(userItems)) {
    await trx("rec_user_items").insert(part);
    await step(part.length);
  }
  await ensureItems(trx, [...model.buyers.keys()], now);
  const byCount = new Map<number, string[]>();
  for (const [p, n] of model.buyers) byCount.set(n, [...(byCount.get(n) ?? []), p]);
  for (const [n, ids] of byCount) for (const part of chunks(ids)) await trx("rec_items").whereIn("product_id", part).update({ buyers: n });
  let batch: { product_id: string; other_id: string; co: number }[] = [];
  for (const p of [...model.pairs.keys()].sort())
    for (const [q, co] of model.pairs.get(p)!) {
      batch.push({ product_id: p, other_id: q, co });
      if (batch.length >= CHUNK) {
        await trx("rec_pairs").insert(batch);
        await step(batch.length);
        batch = [];
      }
    }
  if (batch.length) {
    await trx("rec_pairs").insert(batch);
    await step(batch.length);
  }
  await trx("rec_meta").where({ id: 1 }).update({ model_version: trx.raw("model_version + 1") });
}

// ---- inspection (tests, status) -----------------------------------------------------------

/** The counts, sorted: equal for an incrementally kept model and a rebuilt one. */
export async function modelSnapshot(db: Knex): Promise<{ buyers: [string, number][]; pairs: [string, string, number][]; userItems: [string, string][] }> {
  const buyers = ((await db("rec_items").where("buyers", ">", 0).orderBy("product_id").select("product_id", "buyers")) as { product_id: string; buyers: number }[]).map((r) => [r.product_id, Number(r.buyers)] as [string, number]);
  const pairs = ((await db("rec_pairs").orderBy(["product_id", "other_id"]).select("product_id", "other_id", "co")) as { product_id: string; other_id: string; co: number }[]).map((r) => [r.product_id, r.other_id, Number(r.co)] as [string, string, number]);
  const userItems = ((await db("rec_user_items").orderBy(["user_id", "product_id"]).select("user_id", "product_id")) as { user_id: string; product_id: string }[]).map((r) => [r.user_id, r.product_id] as [string, string]);
  return { buyers, pairs, userItems };
}

export async function counts(db: Knex): Promise<{ users: number; purchases: number; pairs: number; items: number }> {
  const one = async (t: string) => Number(((await db(t).count({ n: "*" })) as { n: number | string }[])[0]!.n);
  return { users: await one("rec_users"), purchases: await one("rec_purchases"), pairs: await one("rec_pairs"), items: await one("rec_items") };
}
