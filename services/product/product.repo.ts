/**
 * Data access of the product service: the only file that knows its tables.
 *
 * Concurrency: every stock change is ONE conditional UPDATE whose WHERE clause states the
 * invariant (`on_hand - reserved >= q`, `on_hand + delta >= reserved`, `status = 'held'`),
 * and callers check the row count. On InnoDB (REPEATABLE READ) an UPDATE reads the latest
 * committed row and locks it until the transaction ends, so two transactions never both
 * pass the condition on the same stale value; on SQLite writers are serialized outright.
 */
import type { Knex } from "knex";
import { param, Statement } from "../../lib/db";
import { protectionOff } from "../../lib/protections";
import {
  parseStringList,
  orderBy,
  type ListQuery,
  type ProductRecord,
  type ReservableProduct,
  type ReservationLine,
  type ReservationRow,
  type ReservationStatus,
} from "./product.domain";

interface ProductRow {
  id: string;
  sku: string;
  name: string;
  description: string;
  category: string;
  brand: string | null;
  tags: string;
  price_amount: number | string;
  price_currency: string;
  images: string;
  on_hand: number | string;
  reserved: number | string;
  created_at: number | string;
  updated_at: number | string;
  deleted_at: number | string | null;
  version: number | string;
}

const toProduct = (r: ProductRow): ProductRecord => ({
  id: r.id,
  sku: r.sku,
  name: r.name,
  description: r.description,
  category: r.category,
  brand: r.brand,
  tags: parseStringList(r.tags),
  price: { amount: Number(r.price_amount), currency: r.price_currency },
  images: parseStringList(r.images),
  onHand: Number(r.on_hand),
  reserved: Number(r.reserved),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
  version: Number(r.version),
});

const live = (db: Knex) => db<ProductRow>("products").whereNull("deleted_at");

/** Products ever created, deleted ones included (the demo catalog loads into an empty database only). */
export async function countAllProducts(db: Knex): Promise<number> {
  const row = (await db("products").count({ n: "*" }).first()) as { n: number | string } | undefined;
  return Number(row?.n ?? 0);
}

export async function existingSkus(db: Knex, skus: string[]): Promise<Set<string>> {
  const rows = await db<ProductRow>("products").whereIn("sku", skus).select("sku");
  return new Set(rows.map((r) => r.sku));
}

/** The columns a create and an admin patch both write. */
const descriptiveColumns = (p: ProductRecord) => ({
  name: p.name,
  description: p.description,
  category: p.category,
  brand: p.brand,
  tags: JSON.stringify(p.tags),
  price_amount: p.price.amount,
  price_currency: p.price.currency,
  images: JSON.stringify(p.images),
});

export async function insertProduct(db: Knex, p: ProductRecord): Promise<void> {
  await db("products").insert({
    id: p.id,
    sku: p.sku,
    ...descriptiveColumns(p),
    on_hand: p.onHand,
    reserved: p.reserved,
    created_at: p.createdAt,
    updated_at: p.updatedAt,
    version: p.version,
  });
}

export async function findProduct(db: Knex, id: string): Promise<ProductRecord | undefined> {
  const row = await live(db).where({ id }).first();
  return row && toProduct(row);
}

/** Live products among `ids`, in no particular order (one statement). */
export async function findProducts(db: Knex, ids: readonly string[]): Promise<ProductRecord[]> {
  return (await live(db).whereIn("id", [...new Set(ids)])).map(toProduct);
}

/** The row locked until the transaction ends (InnoDB `FOR UPDATE`; SQLite's writer lock already serializes). */
export async function findProductForUpdate(trx: Knex.Transaction, id: string): Promise<ProductRecord | undefined> {
  const row = await live(trx).where({ id }).forUpdate().first();
  return row && toProduct(row);
}

export async function listProducts(db: Knex, q: ListQuery): Promise<{ items: ProductRecord[]; total: number }> {
  const filtered = () => {
    const b = live(db);
    if (q.category) b.where({ category: q.category });
    if (q.brand) b.where({ brand: q.brand });
    return b;
  };
  const [{ n }] = await filtered().count<{ n: number | string }[]>({ n: "*" });
  const rows = await filtered().orderBy(orderBy(q.sort)).limit(q.pageSize).offset(q.offset);
  return { items: rows.map(toProduct), total: Number(n) };
}

/** Writes the allow-listed descriptive fields (never sku, never stock). */
export async function updateProductFields(db: Knex, p: ProductRecord): Promise<boolean> {
  const n = await live(db)
    .where({ id: p.id })
    .update({ ...descriptiveColumns(p), updated_at: p.updatedAt, version: db.raw("version + 1") });
  return n === 1;
}

export async function softDeleteProduct(db: Knex, id: string, now: number): Promise<boolean> {
  return (
    (await live(db)
      .where({ id })
      .update({ deleted_at: now, updated_at: now, version: db.raw("version + 1") })) === 1
  );
}

/**
 * on_hand += delta unless that would go below reserved (or above `max`). One statement,
 * so concurrent adjustments never lose an update. Returns false when the condition failed
 * or the product does not exist.
 */
export async function adjustOnHand(db: Knex, id: string, delta: number, max: number, now: number): Promise<boolean> {
  const n = await live(db)
    .where({ id })
    .whereRaw("on_hand + ? >= reserved", [delta])
    .whereRaw("on_hand + ? <= ?", [delta, max])
    .update({ on_hand: db.raw("on_hand + ?", [delta]), updated_at: now, version: db.raw("version + 1") });
  return n === 1;
}

/**
 * reserved += q if at least q is available and the product is not deleted. The condition in
 * the UPDATE is the guarantee; `BREAK_PROTECTION=stock-guard` drops it (docs/tutorial.md).
 */
export async function reserveStock(trx: Knex.Transaction, productId: string, quantity: number, now: number): Promise<boolean> {
  const statement = protectionOff("stock-guard") ? reserveUnguarded : reserveGuarded;
  return (await statement.run(trx, { id: productId, quantity, now })).changes === 1;
}

/** A held quantity leaves `reserved` (release, expiry), and also `on_hand` when sold (commit). */
export async function unreserveStock(
  trx: Knex.Transaction,
  productId: string,
  quantity: number,
  sold: boolean,
  now: number,
): Promise<void> {
  // Deleted products too: an order placed before the delete is still paid or released.
  const { changes } = await (sold ? unreserveSold : unreserveReleased).run(trx, { id: productId, quantity, now });
  if (changes !== 1) throw new Error(`product ${productId} missing while releasing its reservation`);
}

// The stock statements of every reserve, commit and release, compiled once (lib/db.ts Statement).
type StockArgs = { id: string; quantity: number; now: number };
const reserveStatement = (guarded: boolean) =>
  new Statement<StockArgs>((db) => {
    const q = live(db).where({ id: param("id") });
    if (guarded) q.whereRaw("on_hand - reserved >= ?", [param("quantity")]);
    return q.update({ reserved: db.raw("reserved + ?", [param("quantity")]), updated_at: param("now"), version: db.raw("version + 1") });
  });
const reserveGuarded = reserveStatement(true);
/** Without the guard: `BREAK_PROTECTION=stock-guard` (docs/tutorial.md). */
const reserveUnguarded = reserveStatement(false);
const unreserveStatement = (sold: boolean) =>
  new Statement<StockArgs>((db) =>
    db("products")
      .where({ id: param("id") })
      .update({
        reserved: db.raw("reserved - ?", [param("quantity")]),
        updated_at: param("now"),
        version: db.raw("version + 1"),
        ...(sold ? { on_hand: db.raw("on_hand - ?", [param("quantity")]) } : {}),
      }),
  );
const unreserveSold = unreserveStatement(true);
const unreserveReleased = unreserveStatement(false);

/**
 * Products' available stock and what an order freezes of them (a plain read, no lock): live
 * ones only, or (`withDeleted`, for a reservation that already holds them) deleted ones too.
 */
export async function reservableOf(db: Knex, ids: string[], opts: { withDeleted?: boolean } = {}): Promise<Map<string, ReservableProduct>> {
  const rows = await (opts.withDeleted ? db<ProductRow>("products") : live(db))
    .whereIn("id", ids)
    .select<ProductRow[]>("id", "sku", "name", "price_amount", "price_currency", "on_hand", "reserved");
  return new Map(
    rows.map((r) => [
      r.id,
      {
        sku: r.sku,
        name: r.name,
        price: { amount: Number(r.price_amount), currency: r.price_currency },
        available: Number(r.on_hand) - Number(r.reserved),
      },
    ]),
  );
}

export async function availableOf(db: Knex, ids: string[]): Promise<Map<string, number>> {
  const rows = await live(db).whereIn("id", ids).select<ProductRow[]>("id", "on_hand", "reserved");
  return new Map(rows.map((r) => [r.id, Number(r.on_hand) - Number(r.reserved)]));
}

/** findProductAnyState's read, compiled once (lib/db.ts Statement): every stock change reads its product back. */
const productAnyState = new Statement<{ id: string }, ProductRow>((db) =>
  db("products")
    .where({ id: param("id") })
    .first(),
);

/**
 * One product as it is inside this transaction, deleted or not (the row's own writes are
 * visible to it), for the events that carry the whole product and its version.
 */
export async function findProductAnyState(db: Knex, id: string): Promise<{ product: ProductRecord; deleted: boolean } | undefined> {
  const row = await productAnyState.first(db, { id });
  return row && { product: toProduct(row), deleted: row.deleted_at !== null && row.deleted_at !== undefined };
}

/**
 * Live products in id order after `afterId` (keyset pagination: stable while products are
 * created and deleted, unlike an offset), for a consumer rebuilding its copy of the catalog.
 */
export async function productsAfter(db: Knex, afterId: string, limit: number): Promise<ProductRecord[]> {
  const rows = await live(db).where("id", ">", afterId).orderBy("id").limit(limit);
  return rows.map(toProduct);
}

// ---- reservations ----

interface ReservationDbRow {
  order_id: string;
  product_id: string;
  quantity: number | string;
  status: ReservationStatus;
  expires_at: number | string;
}

const toReservation = (r: ReservationDbRow): ReservationRow => ({
  orderId: r.order_id,
  productId: r.product_id,
  quantity: Number(r.quantity),
  status: r.status,
  expiresAt: Number(r.expires_at),
});

export async function findReservations(db: Knex, orderId: string): Promise<ReservationRow[]> {
  const rows = (await db("reservations").where({ order_id: orderId }).orderBy("product_id")) as ReservationDbRow[];
  return rows.map(toReservation);
}

/**
 * The order's rows, locked until the transaction ends and read as committed now (a locking
 * read, not the REPEATABLE READ snapshot): concurrent commits/releases of one order queue here.
 */
export async function findReservationsForUpdate(trx: Knex.Transaction, orderId: string): Promise<ReservationRow[]> {
  return (await lockReservations.run(trx, { orderId })).rows.map(toReservation);
}
const lockReservations = new Statement<{ orderId: string }, ReservationDbRow>((db) =>
  db("reservations")
    .where({ order_id: param("orderId") })
    .orderBy("product_id")
    .forUpdate(),
);

/** Inserts the order's rows; a concurrent or earlier reserve of the same order violates the primary key. */
export async function insertReservations(
  trx: Knex.Transaction,
  orderId: string,
  lines: ReservationLine[],
  expiresAt: number,
  now: number,
): Promise<void> {
  await trx("reservations").insert(
    lines.map((l) => ({
      order_id: orderId,
      product_id: l.productId,
      quantity: l.quantity,
      status: "held",
      expires_at: expiresAt,
      created_at: now,
      updated_at: now,
    })),
  );
}

/**
 * held → `to`, for one line, only if it is still held: of several transactions racing to
 * move the same line (a commit, a release, sweeps on several replicas) exactly one sees a
 * row count of 1 and applies the stock change, in the same transaction.
 */
export async function transitionReservation(
  trx: Knex.Transaction,
  orderId: string,
  productId: string,
  to: Exclude<ReservationStatus, "held">,
  now: number,
  onlyIfExpiredBy?: number,
): Promise<boolean> {
  const args = { orderId, productId, to, now };
  const { changes } =
    onlyIfExpiredBy === undefined
      ? await transitionHeld.run(trx, args)
      : await transitionExpired.run(trx, { ...args, expiredBy: onlyIfExpiredBy });
  return changes === 1;
}
const transitionStatement = (expired: boolean) =>
  new Statement<{ orderId: string; productId: string; to: string; now: number; expiredBy?: number }>((db) => {
    const q = db("reservations").where({ order_id: param("orderId"), product_id: param("productId"), status: "held" });
    if (expired) q.where("expires_at", "<=", param("expiredBy"));
    return q.update({ status: param("to"), updated_at: param("now") });
  });
const transitionHeld = transitionStatement(false);
const transitionExpired = transitionStatement(true);

/**
 * committed → returned for one line, once (the sold quantity goes back on the shelf: a
 * refunded order that never shipped). Same rule as the other transitions: only the
 * transaction that moves the row applies the stock change.
 */
export async function returnCommitted(
  trx: Knex.Transaction,
  orderId: string,
  productId: string,
  quantity: number,
  now: number,
): Promise<boolean> {
  const moved =
    (await trx("reservations")
      .where({ order_id: orderId, product_id: productId, status: "committed" })
      .update({ status: "returned", updated_at: now })) === 1;
  if (!moved) return false;
  // Deleted products too: the goods exist even if the listing does not.
  await trx("products")
    .where({ id: productId })
    .update({ on_hand: trx.raw("on_hand + ?", [quantity]), updated_at: now, version: trx.raw("version + 1") });
  return true;
}

/**
 * An approved return's line goes back on the shelf, once per (return, product), and only
 * as much as the order's committed reservation of it sold minus what earlier returns
 * restocked. False when there is nothing (more) to restock. The caller holds the
 * reservation row's lock (findReservationsForUpdate), so returns of one order are serialised.
 */
export async function restockReturned(
  trx: Knex.Transaction,
  r: { returnId: string; orderId: string; productId: string; quantity: number },
  sold: number,
  now: number,
): Promise<boolean> {
  if (await trx("stock_returns").where({ return_id: r.returnId, product_id: r.productId }).first()) return false;
  const [{ n }] = await trx("stock_returns").where({ order_id: r.orderId, product_id: r.productId }).sum<
    {
      n: number | string | null;
    }[]
  >({ n: "quantity" });
  const quantity = Math.min(r.quantity, sold - Number(n ?? 0));
  if (quantity <= 0) return false;
  await trx("stock_returns").insert({ return_id: r.returnId, product_id: r.productId, order_id: r.orderId, quantity, created_at: now });
  await trx("products")
    .where({ id: r.productId })
    .update({ on_hand: trx.raw("on_hand + ?", [quantity]), updated_at: now, version: trx.raw("version + 1") });
  return true;
}

/** Held reservations whose time is up (a candidate list; the transition re-checks). */
export async function findExpiredHeld(db: Knex, now: number, limit: number): Promise<ReservationRow[]> {
  const rows = (await db("reservations")
    .where({ status: "held" })
    .where("expires_at", "<=", now)
    .orderBy("expires_at")
    .limit(limit)) as ReservationDbRow[];
  return rows.map(toReservation);
}

/** Sum of held quantities per product (conservation checks). */
export async function heldTotals(db: Knex): Promise<Map<string, number>> {
  const rows = await db("reservations").where({ status: "held" }).groupBy("product_id").select("product_id").sum<
    {
      product_id: string;
      q: number | string;
    }[]
  >({ q: "quantity" });
  return new Map(rows.map((r) => [r.product_id, Number(r.q)]));
}
