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
import { isMysql, param, rawRows, Statement } from "../../lib/db";
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

/** What a change to one user's purchases touched: the user, and the products whose counts moved. */
export interface UserChange {
  userId: string;
  productIds: string[];
}

/**
 * Records a paid order's products and updates the model. Returns undefined (and changes
 * nothing) when the order was fully refunded already (its refund event came first) or was
 * counted.
 */
export async function applyPaidOrder(
  trx: Knex.Transaction,
  o: { orderId: string; userId: string; at: number; productIds: string[] },
  now: number,
): Promise<UserChange | undefined> {
  await lockModelShared(trx);
  await lockUser(trx, o.userId, now);
  if (await trx("rec_refunded_orders").where({ order_id: o.orderId }).first()) return undefined;
  if (await trx("rec_purchases").where({ order_id: o.orderId }).first()) return undefined;
  if (!o.productIds.length) return undefined;
  await trx("rec_purchases").insert(
    o.productIds.map((p) => ({ order_id: o.orderId, product_id: p, user_id: o.userId, at: o.at, created_at: now })),
  );
  return { userId: o.userId, productIds: await refreshUser(trx, o.userId, now) };
}

/** Takes a fully refunded order's products out of the model (and remembers the refund). */
export async function applyRefundedOrder(
  trx: Knex.Transaction,
  o: { orderId: string; userId: string },
  now: number,
): Promise<UserChange | undefined> {
  await lockModelShared(trx);
  await lockUser(trx, o.userId, now);
  await trx("rec_refunded_orders").insert({ order_id: o.orderId, user_id: o.userId, at: now }).onConflict("order_id").ignore();
  const removed = await trx("rec_purchases").where({ order_id: o.orderId, user_id: o.userId }).delete();
  return removed ? { userId: o.userId, productIds: await refreshUser(trx, o.userId, now) } : undefined;
}

async function purchasesOf(db: Knex, userId: string): Promise<Purchase[]> {
  const rows = await db("rec_purchases").where({ user_id: userId }).select<
    {
      product_id: string;
      at: number | string;
    }[]
  >("product_id", "at");
  return rows.map((r) => ({ productId: r.product_id, at: Number(r.at) }));
}

/**
 * Recomputes the user's contributing set and applies the difference to the counts. Returns the
 * products whose counts changed (their buyers, or their co-purchase rows: both directions).
 */
async function refreshUser(trx: Knex.Transaction, userId: string, now: number): Promise<string[]> {
  const purchases = await purchasesOf(trx, userId);
  const before = (await trx("rec_user_items").where({ user_id: userId }).select<{ product_id: string }[]>("product_id")).map(
    (r) => r.product_id,
  );
  const after = contributingSet(purchases);
  const delta = modelDelta(before, after);
  if (!delta.buyers.size && !delta.pairs.length) return [];
  const firstAt = new Map(distinctPurchases(purchases).map((p) => [p.productId, p.at]));
  const gone = [...delta.buyers].filter(([, d]) => d < 0).map(([p]) => p);
  const added = [...delta.buyers].filter(([, d]) => d > 0).map(([p]) => p);
  for (const part of chunks(gone)) await trx("rec_user_items").where({ user_id: userId }).whereIn("product_id", part).delete();
  for (const part of chunks(added))
    await trx("rec_user_items").insert(part.map((p) => ({ user_id: userId, product_id: p, at: firstAt.get(p)! })));
  await applyDelta(trx, delta, now);
  return [...new Set([...delta.buyers.keys(), ...delta.pairs.map((x) => x[0])])];
}

/** Adds `rows` ([...keys, n]) to the counter column, creating missing rows. */
async function upsertIncrement(
  trx: Knex.Transaction,
  table: string,
  keys: string[],
  column: string,
  rows: Record<string, unknown>[],
): Promise<void> {
  const merge = isMysql(trx) ? trx.raw("?? + VALUES(??)", [column, column]) : trx.raw("??.?? + excluded.??", [table, column, column]);
  for (const part of chunks(rows))
    await trx(table)
      .insert(part)
      .onConflict(keys)
      .merge({ [column]: merge });
}

async function ensureItems(trx: Knex.Transaction, ids: string[], now: number): Promise<void> {
  for (const part of chunks([...ids].sort()))
    await trx("rec_items")
      .insert(part.map((p) => ({ product_id: p, updated_at: now })))
      .onConflict("product_id")
      .ignore();
}

async function applyDelta(trx: Knex.Transaction, delta: ModelDelta, now: number): Promise<void> {
  const ids = [...delta.buyers.keys()].sort();
  await ensureItems(trx, ids, now);
  for (const d of new Set(delta.buyers.values())) {
    const group = ids.filter((p) => delta.buyers.get(p) === d);
    for (const part of chunks(group))
      await trx("rec_items")
        .whereIn("product_id", part)
        .update({ buyers: trx.raw("buyers + ?", [d]) });
  }
  await upsertIncrement(
    trx,
    "rec_pairs",
    ["product_id", "other_id"],
    "co",
    delta.pairs.map(([p, q, n]) => ({ product_id: p, other_id: q, co: n })),
  );
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

/** applyProduct's three statements, compiled once: every reserve and commit of stock changes a product here. */
const itemPlaceholder = new Statement<{ id: string; now: number }>((db) =>
  db("rec_items")
    .insert({ product_id: param("id"), updated_at: param("now") })
    .onConflict("product_id")
    .ignore(),
);
const lockItem = new Statement<{ id: string }, Omit<ItemRow, "product_id" | "buyers">>((db) => {
  const read = db("rec_items")
    .where({ product_id: param("id") })
    .first("name", "category", "brand", "available", "deleted", "version");
  return isMysql(db) ? read.forUpdate() : read;
});
const updateItem = new Statement<Record<"id" | "name" | "category" | "brand" | "available" | "deleted" | "version" | "now", Knex.Value>>(
  (db) =>
    db("rec_items")
      .where({ product_id: param("id") })
      .where("version", "<", param("version"))
      .update({
        name: param("name"),
        category: param("category"),
        brand: param("brand"),
        available: param("available"),
        deleted: param("deleted"),
        version: param("version"),
        updated_at: param("now"),
      }),
);

/**
 * Applies a product event: only when newer than the row (duplicates and reordering settle).
 * Returns whether a replica's memory must forget the row: a field the ranking shows or filters
 * on changed (name, category, brand, deleted, or availability crossing zero; a stock count
 * moving above zero changes no answer, and the products shown are read from the product
 * service anyway). The row is read locked (MariaDB), so the comparison is with what it replaces.
 */
export async function applyProduct(trx: Knex.Transaction, p: ProductFields, now: number): Promise<boolean> {
  // The placeholder row first, then its lock: a locking read of a row that does not exist yet
  // would take only a gap lock on InnoDB, and two new products in one gap would deadlock on
  // their inserts. A placeholder (version -1, no name) compares as changed below.
  await itemPlaceholder.run(trx, { id: p.id, now });
  const old = await lockItem.first(trx, { id: p.id });
  if (!old) throw new Error(`rec_items row of product ${p.id} missing after its placeholder insert`);
  if (Number(old.version) >= p.version) return false;
  const available = Math.max(0, Math.trunc(p.available));
  const { changes } = await updateItem.run(trx, {
    id: p.id,
    name: p.name.slice(0, 200),
    category: p.category.slice(0, 100),
    brand: p.brand ? p.brand.slice(0, 100) : null,
    available,
    deleted: p.deleted,
    version: p.version,
    now,
  });
  if (changes !== 1) return false;
  const item = toItem({ ...old, product_id: p.id, buyers: 0 });
  return (
    item.name !== p.name.slice(0, 200) ||
    item.category !== p.category.slice(0, 100) ||
    item.brand !== (p.brand ? p.brand.slice(0, 100) : null) ||
    item.deleted !== p.deleted ||
    item.available > 0 !== available > 0
  );
}

/**
 * Marks deleted the products the catalog no longer lists and that no event touched since
 * `since`; returns their ids.
 */
export async function markMissingDeleted(db: Knex, liveIds: Set<string>, since: number): Promise<string[]> {
  const rows = await db("rec_items")
    .where({ deleted: false })
    .where("updated_at", "<", since)
    .where("version", ">=", 0)
    .select<{ product_id: string }[]>("product_id");
  const missing = rows.map((r) => r.product_id).filter((id) => !liveIds.has(id));
  for (const part of chunks(missing))
    await db("rec_items").whereIn("product_id", part).where("updated_at", "<", since).update({ deleted: true });
  return missing;
}

/** What a catalog row is read as (`toItem`). */
const ITEM_COLUMNS = ["product_id", "name", "category", "brand", "available", "deleted", "version", "buyers"];

export async function findItems(db: Knex, ids: string[]): Promise<Map<string, RankedItem>> {
  const out = new Map<string, RankedItem>();
  for (const part of chunks([...new Set(ids)], 900))
    for (const r of await db("rec_items").whereIn("product_id", part).select<ItemRow[]>(ITEM_COLUMNS)) out.set(r.product_id, toItem(r));
  return out;
}

// ---- reads for the ranking (recommendation.memory.ts keeps what they return) --------------

/** Every catalog row with its buyer count (a replica's memory loads them once). */
export async function allItems(db: Knex): Promise<Map<string, RankedItem>> {
  const rows = await db("rec_items").select<ItemRow[]>(ITEM_COLUMNS);
  return new Map(rows.map((r) => [r.product_id, toItem(r)]));
}

/** Changes with every purchase or refund of the user (0: none yet): part of a cached ranking's key. */
export async function userStamp(db: Knex, userId: string): Promise<number> {
  const row = await db("rec_users").where({ user_id: userId }).first<{ updated_at: number | string } | undefined>("updated_at");
  return row ? Number(row.updated_at) : 0;
}

/**
 * A user's most recent contributing products (at most `historyLimit`, recent first; ties by
 * id), everything they bought (paid, not fully refunded) and their stamp (`userStamp`), in ONE
 * statement: one snapshot on both engines, so a purchase committed meanwhile is in all three
 * or in none.
 */
export async function userPurchases(
  db: Knex,
  userId: string,
  historyLimit: number,
): Promise<{ recent: string[]; bought: Set<string>; stamp: number }> {
  const sql =
    "SELECT 'r' AS k, r.product_id, r.at FROM (SELECT product_id, at FROM rec_user_items WHERE user_id = ? ORDER BY at DESC, product_id ASC LIMIT ?) AS r " +
    "UNION ALL SELECT DISTINCT 'b' AS k, product_id, 0 AS at FROM rec_purchases WHERE user_id = ? " +
    "UNION ALL SELECT 's' AS k, '' AS product_id, updated_at AS at FROM rec_users WHERE user_id = ?";
  const rows = await rawRows<{ k: string; product_id: string; at: number | string }>(db, sql, [userId, historyLimit, userId, userId]);
  const recent = rows.filter((r) => r.k === "r").map((r) => ({ productId: r.product_id, at: Number(r.at) }));
  recent.sort((a, b) => b.at - a.at || (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0));
  const stamp = rows.find((r) => r.k === "s");
  return {
    recent: recent.map((r) => r.productId),
    bought: new Set(rows.filter((r) => r.k === "b").map((r) => r.product_id)),
    stamp: stamp ? Number(stamp.at) : 0,
  };
}

/** A product's neighbours: the other product and their co-purchase count, highest first (ties: higher id first). */
export type NeighbourList = { productId: string; co: number }[];

/**
 * The `perItem` highest co-purchase counts of each product (one index range per product, glued
 * with UNION ALL: both databases accept a LIMIT inside a derived table). Ties: the higher id
 * first, so the scan runs backwards over (product_id, co, other_id) without a sort.
 */
export async function neighbourLists(db: Knex, ids: string[], perItem: number): Promise<Map<string, NeighbourList>> {
  const out = new Map<string, NeighbourList>(ids.map((id) => [id, []]));
  if (!ids.length) return out;
  const part =
    "SELECT * FROM (SELECT product_id AS source, other_id, co FROM rec_pairs WHERE product_id = ? ORDER BY co DESC, other_id DESC LIMIT ?) AS ";
  for (const group of chunks([...new Set(ids)], 200)) {
    const rows = await rawRows<{ source: string; other_id: string; co: number | string }>(
      db,
      group.map((_, i) => `${part}t${i}`).join(" UNION ALL "),
      group.flatMap((id) => [id, perItem]),
    );
    for (const r of rows) out.get(r.source)!.push({ productId: r.other_id, co: Number(r.co) });
  }
  // The outer UNION ALL promises no order: each list is sorted as its range was read.
  for (const list of out.values()) list.sort((a, b) => b.co - a.co || (a.productId < b.productId ? 1 : a.productId > b.productId ? -1 : 0));
  return out;
}

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
    // (`void`: the callback builds the nested condition on `w`; its result is not a query to await.)
    .where((w) => void w.whereNot("rebuild_status", "running").orWhere("rebuild_lease_until", "<", now))
    .update({
      rebuild_status: "running",
      rebuild_phase: "starting",
      rebuild_done: 0,
      rebuild_total: null,
      rebuild_by: by,
      rebuild_lease_until: now + leaseMs,
      rebuild_started_at: now,
      rebuild_finished_at: null,
      rebuild_error: null,
    });
  return n === 1;
}

/** Progress of the claim holder; also renews its lease. */
export async function reportRebuild(
  db: Knex,
  by: string,
  fields: { phase: string; done: number; total?: number | null },
  now: number,
  leaseMs: number,
): Promise<void> {
  await db("rec_meta")
    .where({ id: 1, rebuild_by: by, rebuild_status: "running" })
    .update({
      rebuild_phase: fields.phase,
      rebuild_done: fields.done,
      rebuild_total: fields.total ?? null,
      rebuild_lease_until: now + leaseMs,
    });
}

export async function finishRebuild(
  db: Knex,
  by: string,
  outcome: { status: "done" | "failed"; error?: string; summary?: unknown },
  now: number,
): Promise<void> {
  await db("rec_meta")
    .where({ id: 1, rebuild_by: by })
    .update({
      rebuild_status: outcome.status,
      rebuild_phase: null,
      rebuild_finished_at: now,
      rebuild_lease_until: null,
      rebuild_error: outcome.error?.slice(0, 500) ?? null,
      rebuild_summary: outcome.summary === undefined ? null : JSON.stringify(outcome.summary),
    });
}

export interface PurchaseRow {
  orderId: string;
  productId: string;
  userId: string;
  at: number;
}

/** Purchases recorded by events since `since` (they may be newer than a rebuild's snapshot). */
export async function purchasesSince(trx: Knex.Transaction, since: number): Promise<PurchaseRow[]> {
  const rows = await trx("rec_purchases").where("created_at", ">=", since).select<
    {
      order_id: string;
      product_id: string;
      user_id: string;
      at: number | string;
    }[]
  >("order_id", "product_id", "user_id", "at");
  return rows.map((r) => ({ orderId: r.order_id, productId: r.product_id, userId: r.user_id, at: Number(r.at) }));
}

export async function refundedOrders(trx: Knex.Transaction): Promise<Set<string>> {
  return new Set((await trx("rec_refunded_orders").select<{ order_id: string }[]>("order_id")).map((r) => r.order_id));
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
    await trx("rec_purchases").insert(
      part.map((p) => ({ order_id: p.orderId, product_id: p.productId, user_id: p.userId, at: p.at, created_at: now })),
    );
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
  await trx("rec_meta")
    .where({ id: 1 })
    .update({ model_version: trx.raw("model_version + 1") });
}

// ---- inspection (tests, status) -----------------------------------------------------------

/** The counts, sorted: equal for an incrementally kept model and a rebuilt one. */
export async function modelSnapshot(
  db: Knex,
): Promise<{ buyers: [string, number][]; pairs: [string, string, number][]; userItems: [string, string][] }> {
  const buyers = (
    await db("rec_items").where("buyers", ">", 0).orderBy("product_id").select<
      {
        product_id: string;
        buyers: number;
      }[]
    >("product_id", "buyers")
  ).map((r) => [r.product_id, Number(r.buyers)] as [string, number]);
  const pairs = (
    await db("rec_pairs").orderBy(["product_id", "other_id"]).select<
      {
        product_id: string;
        other_id: string;
        co: number;
      }[]
    >("product_id", "other_id", "co")
  ).map((r) => [r.product_id, r.other_id, Number(r.co)] as [string, string, number]);
  const userItems = (
    await db("rec_user_items").orderBy(["user_id", "product_id"]).select<
      {
        user_id: string;
        product_id: string;
      }[]
    >("user_id", "product_id")
  ).map((r) => [r.user_id, r.product_id] as [string, string]);
  return { buyers, pairs, userItems };
}

export async function counts(db: Knex): Promise<{ users: number; purchases: number; pairs: number; items: number }> {
  const one = async (t: string) => Number((await db(t).count<{ n: number | string }[]>({ n: "*" }))[0].n);
  return {
    users: await one("rec_users"),
    purchases: await one("rec_purchases"),
    pairs: await one("rec_pairs"),
    items: await one("rec_items"),
  };
}
