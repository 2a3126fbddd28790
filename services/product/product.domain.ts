/**
 * Product rules, pure (no I/O): money, stock arithmetic and invariants, reservation rules,
 * patchable fields per action, list query parsing, and the public shape of a product.
 */
import type { Money } from "../../proto/gen/meridian/common/v1/common";
import type { CreateRequest, PricedLine } from "../../proto/gen/meridian/product/v1/product";

/** Largest amount in minor units we accept (well inside 2^53 and a signed BIGINT). */
export const MAX_AMOUNT = 1_000_000_000_000;
/** Largest on-hand stock of one product; keeps `on_hand`/`reserved` inside a signed INT. */
export const MAX_STOCK = 1_000_000_000;
export const MAX_PAGE_SIZE = 100;
export const DEFAULT_PAGE_SIZE = 20;
/** Lines of one reservation (one order). */
export const MAX_RESERVATION_LINES = 100;

/** The contracts' Money (meridian.common.v1): integer minor units and an ISO 4217 code. */
export type { Money };

export interface Stock {
  onHand: number;
  reserved: number;
  available: number;
}

/** What a stored product and the API's `product` have in common. */
interface ProductFields {
  id: string;
  sku: string;
  name: string;
  description: string;
  category: string;
  brand: string | null;
  tags: string[];
  price: Money;
  images: string[];
}

export interface ProductRecord extends ProductFields {
  onHand: number;
  reserved: number;
  createdAt: number;
  updatedAt: number;
  /** Raised by every write to the product (see the product_version migration). */
  version: number;
}

export interface PublicProduct extends ProductFields {
  stock: Stock;
  createdAt: string;
  updatedAt: string;
  /** Increases with every change, stock included: newer copies win (events, caches, ETags). */
  version: number;
}

// ---- money ----

let isoCurrencies: Set<string> | undefined;
/** ISO 4217 codes known to this runtime's ICU (Node 20: `Intl.supportedValuesOf`). */
export function isIsoCurrency(code: string): boolean {
  isoCurrencies ??= new Set(Intl.supportedValuesOf("currency"));
  return /^[A-Z]{3}$/.test(code) && isoCurrencies.has(code);
}

/** Problems with a price, as `{field, message}` details; empty when valid. */
export function moneyProblems(m: { amount: unknown; currency: unknown }, field = "price"): { field: string; message: string }[] {
  const problems: { field: string; message: string }[] = [];
  if (typeof m.amount !== "number" || !Number.isSafeInteger(m.amount))
    problems.push({ field: `${field}.amount`, message: "must be an integer number of minor units (no fractions)" });
  else if (m.amount < 0 || m.amount > MAX_AMOUNT) problems.push({ field: `${field}.amount`, message: `must be from 0 to ${MAX_AMOUNT}` });
  if (typeof m.currency !== "string" || !isIsoCurrency(m.currency))
    problems.push({ field: `${field}.currency`, message: "must be an ISO 4217 currency code in upper case (e.g. EUR, CNY)" });
  return problems;
}

// ---- stock ----

export const stockOf = (onHand: number, reserved: number): Stock => ({ onHand, reserved, available: onHand - reserved });

/** The invariant the database also enforces (CHECK): 0 ≤ reserved ≤ onHand ≤ MAX_STOCK. */
export function stockInvariantHolds(onHand: number, reserved: number): boolean {
  return Number.isInteger(onHand) && Number.isInteger(reserved) && reserved >= 0 && reserved <= onHand && onHand <= MAX_STOCK;
}

/**
 * An admin adjustment: on-hand changes by `delta` (≠ 0) and never goes below what is
 * reserved (nor above MAX_STOCK). Mirrors the conditional UPDATE in the repo, which is
 * the real guard under concurrency; this is used for the message and the tests.
 */
export function adjustVerdict(s: { onHand: number; reserved: number }, delta: number): "ok" | "below-reserved" | "too-large" | "invalid" {
  if (!Number.isSafeInteger(delta) || delta === 0) return "invalid";
  const next = s.onHand + delta;
  if (next < s.reserved) return "below-reserved";
  if (next > MAX_STOCK) return "too-large";
  return "ok";
}

export interface ReservationLine {
  productId: string;
  quantity: number;
}

/**
 * Reservation lines as the repo applies them: duplicates of one product merged (their
 * quantities added), sorted by productId. The fixed order is the lock order: two
 * reservations touching the same products lock their rows in the same sequence, so they
 * cannot deadlock each other.
 */
export function normalizeLines(lines: ReservationLine[]): ReservationLine[] {
  const merged = new Map<string, number>();
  for (const l of lines) merged.set(l.productId, (merged.get(l.productId) ?? 0) + l.quantity);
  return [...merged.entries()]
    .map(([productId, quantity]) => ({ productId, quantity }))
    .sort((a, b) => (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0));
}

/** Problems with normalized lines (after merging a quantity may exceed the limit). */
export function lineProblems(lines: ReservationLine[]): { field: string; message: string }[] {
  const out: { field: string; message: string }[] = [];
  if (lines.length === 0) out.push({ field: "lines", message: "must not be empty" });
  if (lines.length > MAX_RESERVATION_LINES) out.push({ field: "lines", message: `at most ${MAX_RESERVATION_LINES} products` });
  for (const l of lines)
    if (!Number.isSafeInteger(l.quantity) || l.quantity < 1 || l.quantity > MAX_STOCK)
      out.push({ field: "lines", message: `quantity of ${l.productId} must be an integer from 1 to ${MAX_STOCK}` });
  return out;
}

/** A line a read of availability cannot fill, as OUT_OF_STOCK's details name it. */
export interface Shortage {
  productId: string;
  requested: number;
  available: number;
}

/** The lines (normalized) that `availableOf` cannot fill; what is available never shows below 0. */
export function shortages(lines: readonly ReservationLine[], availableOf: (productId: string) => number): Shortage[] {
  return lines
    .filter((l) => availableOf(l.productId) < l.quantity)
    .map((l) => ({ productId: l.productId, requested: l.quantity, available: Math.max(0, availableOf(l.productId)) }));
}

/** Does a replay carry the same lines as the reservation already stored for the order? */
export function sameLines(a: ReservationLine[], b: ReservationLine[]): boolean {
  const x = normalizeLines(a);
  const y = normalizeLines(b);
  return x.length === y.length && x.every((l, i) => l.productId === y[i].productId && l.quantity === y[i].quantity);
}

/**
 * Reservation states. `held` is the only live state; every transition leaves it, and each
 * is applied with `WHERE status = 'held'`, so it happens at most once whoever races.
 */
/** held → committed | released | expired; committed → returned (a refunded, unshipped order). */
export type ReservationStatus = "held" | "committed" | "released" | "expired" | "returned";

export interface ReservationRow {
  orderId: string;
  productId: string;
  quantity: number;
  status: ReservationStatus;
  expiresAt: number;
}

export interface ReservationView {
  orderId: string;
  /** The lines' common status, or `mixed` (e.g. some lines expired by separate sweeps). */
  status: ReservationStatus | "mixed";
  lines: { productId: string; quantity: number; status: ReservationStatus }[];
  expiresAt: string;
  /** A reserve's answer only: the lines with what the order freezes (see pricedLines). */
  priced: PricedLine[];
}

/** A live product as a reserve reads it: its available stock and what an order freezes of it. */
export interface ReservableProduct {
  sku: string;
  name: string;
  price: Money;
  available: number;
}

/**
 * The lines priced from the products a reserve read, or the first line whose product does
 * not exist (or was deleted): the order service's 422 names it.
 */
export function pricedLines(
  lines: readonly ReservationLine[],
  products: ReadonlyMap<string, Omit<ReservableProduct, "available">>,
): { priced: PricedLine[] } | { missing: string } {
  const priced: PricedLine[] = [];
  for (const l of lines) {
    const p = products.get(l.productId);
    if (!p) return { missing: l.productId };
    priced.push({ productId: l.productId, sku: p.sku, name: p.name, unitPrice: { ...p.price }, quantity: l.quantity });
  }
  return { priced };
}

export function reservationView(orderId: string, rows: ReservationRow[], priced: PricedLine[] = []): ReservationView {
  const sorted = [...rows].sort((a, b) => (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0));
  const statuses = new Set(sorted.map((r) => r.status));
  return {
    orderId,
    status: statuses.size === 1 ? sorted[0].status : "mixed",
    lines: sorted.map((r) => ({ productId: r.productId, quantity: r.quantity, status: r.status })),
    expiresAt: new Date(Math.min(...sorted.map((r) => r.expiresAt))).toISOString(),
    priced,
  };
}

// ---- patchable fields (allow-lists per action) ----

/** Fields a PATCH may change: everything of a create but `sku` (and never stock, id, times). */
export const PATCH_FIELDS = ["name", "description", "category", "brand", "tags", "price", "images"] as const;

/** A create's product fields, as its contract has them (`stock`, the initial on-hand, is handled apart). */
export type ProductInput = Omit<CreateRequest, "stock">;
export type ProductPatch = Partial<Pick<ProductInput, (typeof PATCH_FIELDS)[number]>>;

/** Copies only allow-listed keys that are present; anything else is dropped, whatever the validator let in. */
export function pickFields<T extends object, K extends string>(input: T, allowed: readonly K[]): Partial<Pick<T, K & keyof T>> {
  const out: Partial<Pick<T, K & keyof T>> = {};
  for (const k of allowed)
    if (Object.prototype.hasOwnProperty.call(input, k) && Reflect.get(input, k) !== undefined) Reflect.set(out, k, Reflect.get(input, k));
  return out;
}

/** Tags: trimmed, empties and case-insensitive duplicates dropped (first spelling kept). */
export function normalizeTags(tags: string[] | undefined): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const raw of tags ?? []) {
    const t = raw.trim();
    if (!t || seen.has(t.toLowerCase())) continue;
    seen.add(t.toLowerCase());
    out.push(t);
  }
  return out;
}

export function applyPatch(p: ProductRecord, patch: ProductPatch, now: number): ProductRecord {
  return {
    ...p,
    ...(patch.name !== undefined && { name: patch.name }),
    ...(patch.description !== undefined && { description: patch.description }),
    ...(patch.category !== undefined && { category: patch.category }),
    ...(patch.brand !== undefined && { brand: patch.brand }),
    ...(patch.tags !== undefined && { tags: normalizeTags(patch.tags) }),
    ...(patch.price !== undefined && { price: { ...patch.price } }),
    ...(patch.images !== undefined && { images: [...patch.images] }),
    updatedAt: now,
    version: p.version + 1,
  };
}

// ---- list query ----

export const SORTS = ["newest", "price_asc", "price_desc"] as const;
export type Sort = (typeof SORTS)[number];

export interface ListQuery {
  category?: string;
  brand?: string;
  page: number;
  pageSize: number;
  sort: Sort;
  offset: number;
}

/** Defaults and bounds for a list request; the validator already checked the types. */
export function parseListQuery(q: { category?: string; brand?: string; page?: number; pageSize?: number; sort?: string }): ListQuery {
  const page = Number.isSafeInteger(q.page) && q.page! >= 1 ? q.page! : 1;
  const size = Number.isSafeInteger(q.pageSize) && q.pageSize! >= 1 ? Math.min(q.pageSize!, MAX_PAGE_SIZE) : DEFAULT_PAGE_SIZE;
  const sort: Sort = (SORTS as readonly string[]).includes(q.sort ?? "") ? (q.sort as Sort) : "newest";
  const category = q.category?.trim() || undefined;
  const brand = q.brand?.trim() || undefined;
  return { category, brand, page, pageSize: size, sort, offset: (page - 1) * size };
}

/** ORDER BY for a sort, always ending in a unique column so pages never overlap or skip. */
export function orderBy(sort: Sort): { column: string; order: "asc" | "desc" }[] {
  switch (sort) {
    case "price_asc":
      return [
        { column: "price_amount", order: "asc" },
        { column: "id", order: "asc" },
      ];
    case "price_desc":
      return [
        { column: "price_amount", order: "desc" },
        { column: "id", order: "asc" },
      ];
    default:
      return [
        { column: "created_at", order: "desc" },
        { column: "id", order: "asc" },
      ];
  }
}

export function toPublicProduct(p: ProductRecord): PublicProduct {
  return {
    id: p.id,
    sku: p.sku,
    name: p.name,
    description: p.description,
    category: p.category,
    brand: p.brand,
    tags: p.tags,
    price: { amount: p.price.amount, currency: p.price.currency },
    images: p.images,
    stock: stockOf(p.onHand, p.reserved),
    createdAt: new Date(p.createdAt).toISOString(),
    updatedAt: new Date(p.updatedAt).toISOString(),
    version: p.version,
  };
}

/** Stored JSON arrays of strings, read defensively. */
export function parseStringList(raw: unknown): string[] {
  try {
    const v: unknown = typeof raw === "string" ? JSON.parse(raw) : raw;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return [];
  }
}
