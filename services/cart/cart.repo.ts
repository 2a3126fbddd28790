/**
 * Data access of the cart service: the only file that knows its tables.
 *
 * Concurrency: every write to a cart runs in a transaction that first locks the user's
 * `carts` row (`FOR UPDATE`; SQLite serializes writers outright), so the line count and the
 * currency it checks are the truth until it commits. The quantity change itself is ONE
 * statement computed by the database from the row's current value (`quantity = quantity + n`
 * in an upsert, `quantity - n` in a conditional UPDATE), never a value computed in the
 * process, and the CHECK (1 ≤ quantity ≤ 99) refuses any result out of bounds.
 */
import type { Knex } from "knex";
import type { OrderLine, StoredLine } from "./cart.domain";

interface LineRow {
  user_id: string;
  product_id: string;
  quantity: number | string;
  added_at: number | string;
  updated_at: number | string;
}

const toLine = (r: LineRow): StoredLine => ({ productId: r.product_id, quantity: Number(r.quantity), addedAt: Number(r.added_at) });

/**
 * Creates the user's cart row when missing. Outside any transaction on purpose: on InnoDB,
 * concurrent `INSERT IGNORE`s of one new key hold shared locks until their transaction
 * ends, and two of them upgrading to `FOR UPDATE` would deadlock each other.
 */
export async function ensureCart(db: Knex, userId: string, now: number): Promise<void> {
  await db("carts").insert({ user_id: userId, currency: null, created_at: now, updated_at: now }).onConflict("user_id").ignore();
}

/** Locks the user's cart row until the transaction ends; undefined when the user has none. */
export async function lockCart(trx: Knex.Transaction, userId: string): Promise<{ currency: string | null } | undefined> {
  const row = await trx("carts").where({ user_id: userId }).forUpdate().first<{ currency: string | null } | undefined>("currency");
  return row && { currency: row.currency };
}

export async function cartCurrency(db: Knex, userId: string): Promise<string | null> {
  const row = await db("carts").where({ user_id: userId }).first<{ currency: string | null } | undefined>("currency");
  return row?.currency ?? null;
}

export async function setCartCurrency(trx: Knex.Transaction, userId: string, currency: string, now: number): Promise<void> {
  await trx("carts").where({ user_id: userId }).update({ currency, updated_at: now });
}

/** The stored lines, oldest first. */
export async function findLines(db: Knex, userId: string): Promise<StoredLine[]> {
  const rows = await db<LineRow>("cart_items")
    .where({ user_id: userId })
    .orderBy([{ column: "added_at" }, { column: "product_id" }]);
  return rows.map(toLine);
}

export async function findLine(db: Knex, userId: string, productId: string): Promise<StoredLine | undefined> {
  const row = await db<LineRow>("cart_items").where({ user_id: userId, product_id: productId }).first<LineRow | undefined>();
  return row && toLine(row);
}

export async function countLines(db: Knex, userId: string): Promise<number> {
  const row = (await db("cart_items").where({ user_id: userId }).count({ n: "*" }).first()) as { n: number | string } | undefined;
  return Number(row?.n ?? 0);
}

/**
 * Adds `quantity` to the line, creating it when missing: ONE upsert whose update is computed
 * by the database from the row's current value (`ON CONFLICT … DO UPDATE` on SQLite,
 * `ON DUPLICATE KEY UPDATE` on MariaDB), so concurrent adds lose nothing. A result above 99
 * fails the CHECK (see `isCheckViolation`).
 */
export async function addToLine(trx: Knex.Transaction, userId: string, productId: string, quantity: number, now: number): Promise<void> {
  await trx("cart_items")
    .insert({ user_id: userId, product_id: productId, quantity, added_at: now, updated_at: now })
    .onConflict(["user_id", "product_id"])
    .merge({ quantity: trx.raw("?? + ?", ["cart_items.quantity", quantity]), updated_at: now });
}

/** Sets an existing line's quantity (≥ 1). False when the cart has no such line. */
export async function setLineQuantity(
  trx: Knex.Transaction,
  userId: string,
  productId: string,
  quantity: number,
  now: number,
): Promise<boolean> {
  const n = await trx("cart_items").where({ user_id: userId, product_id: productId }).update({ quantity, updated_at: now });
  return n > 0;
}

export async function removeLines(db: Knex, userId: string, productIds: string[]): Promise<number> {
  if (!productIds.length) return 0;
  return db("cart_items").where({ user_id: userId }).whereIn("product_id", productIds).del();
}

export async function clearCart(db: Knex, userId: string): Promise<number> {
  return db("cart_items").where({ user_id: userId }).del();
}

/**
 * Takes ordered quantities out of the cart: a line holding no more than what was ordered is
 * deleted, a larger one drops by it (`quantity - n`, under `quantity > n`, so the CHECK
 * always holds). Lines the cart does not have are ignored (removed meanwhile).
 */
export async function subtractLines(trx: Knex.Transaction, userId: string, lines: OrderLine[], now: number): Promise<void> {
  for (const l of lines) {
    await trx("cart_items").where({ user_id: userId, product_id: l.productId }).where("quantity", "<=", l.quantity).del();
    await trx("cart_items")
      .where({ user_id: userId, product_id: l.productId })
      .where("quantity", ">", l.quantity)
      .update({ quantity: trx.raw("?? - ?", ["quantity", l.quantity]), updated_at: now });
  }
}

// ---- Idempotency-Key of an add: written in the add's transaction, under the cart's lock ----

/** How long an add's key is remembered: a retry comes within seconds; a day covers a client's offline queue. */
export const ADD_KEY_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * Deletes this user's keys past their TTL (call under the cart's lock, before `findAddKey`,
 * so an expired key no longer counts). By primary key: a range DELETE would gap-lock the
 * index past this user's keys on InnoDB, where the next user's keys begin.
 */
export async function pruneAddKeys(trx: Knex.Transaction, userId: string, now: number): Promise<void> {
  const expired = (
    await trx("cart_add_keys")
      .where({ user_id: userId })
      .where("created_at", "<", now - ADD_KEY_TTL_MS)
      .select<{ idem_key: string }[]>("idem_key")
  ).map((r) => r.idem_key);
  for (let i = 0; i < expired.length; i += 500)
    await trx("cart_add_keys")
      .where({ user_id: userId })
      .whereIn("idem_key", expired.slice(i, i + 500))
      .del();
}

/** The fingerprint an add recorded with this key, if any (call under the cart's lock). */
export async function findAddKey(trx: Knex.Transaction, userId: string, key: string): Promise<string | undefined> {
  const row = await trx("cart_add_keys")
    .where({ user_id: userId, idem_key: key })
    .first<{ fingerprint: string } | undefined>("fingerprint");
  return row?.fingerprint;
}

/** Records the key with the add (same transaction: a failed add keeps no key). */
export async function recordAddKey(trx: Knex.Transaction, userId: string, key: string, fingerprint: string, now: number): Promise<void> {
  await trx("cart_add_keys").insert({ user_id: userId, idem_key: key, fingerprint, created_at: now });
}

/** A CHECK constraint refused the row (MariaDB ER_CONSTRAINT_FAILED 4025; SQLite). */
export function isCheckViolation(err: unknown): boolean {
  const e = err as { code?: string; errno?: number };
  return e.code === "SQLITE_CONSTRAINT_CHECK" || e.code === "ER_CONSTRAINT_FAILED" || e.errno === 4025;
}
