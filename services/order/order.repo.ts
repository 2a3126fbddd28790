/**
 * Data access of the order service: the only file that knows its tables.
 *
 * Concurrency: every change to an order first locks its row (`findOrderForUpdate`: InnoDB
 * `FOR UPDATE` at REPEATABLE READ reads the latest committed row; SQLite serializes
 * writers), then checks the transition, then writes. Lock order: the order row, then its
 * refunds/payments rows. Status changes are also conditional (`WHERE status = ?`), so a
 * bug that skipped the lock would lose the race loudly (0 rows) rather than silently.
 */
import type { Knex } from "knex";
import type { IdempotencyStore } from "../../lib/idempotency";
import { isMysql, isUniqueViolation, param, Statement } from "../../lib/db";
import type {
  HistoryEntry,
  Money,
  OrderLineInput,
  OrderRecord,
  OrderStatus,
  PaymentStatus,
  PaymentSummary,
  PricedLine,
  RefundStatus,
  RefundSummary,
  ReturnRecord,
  ReturnStatus,
  UnpaidState,
} from "./order.domain";

interface OrderRow {
  id: string;
  user_id: string;
  status: OrderStatus;
  total_amount: number | string;
  currency: string;
  shipping_address: string;
  shipment: string | null;
  shipped: number | boolean;
  paid_payment_id: string | null;
  paid_amount: number | string;
  refunded_amount: number | string;
  reservation_expires_at: number | string | null;
  created_at: number | string;
  updated_at: number | string;
}

interface ItemRow {
  order_id: string;
  product_id: string;
  sku: string;
  name: string;
  unit_price: number | string;
  quantity: number | string;
}

const parse = <T>(s: string | null): T | null => (s ? (JSON.parse(s) as T) : null);

/** An order without its lines: what a check of its state, owner, total or deadline needs. */
export type OrderHead = Omit<OrderRecord, "items">;

function toOrder(r: OrderRow, items: ItemRow[]): OrderRecord {
  return {
    ...toOrderHead(r),
    items: items.map((i) => ({
      productId: i.product_id,
      sku: i.sku,
      name: i.name,
      unitPrice: { amount: Number(i.unit_price), currency: r.currency },
      quantity: Number(i.quantity),
    })),
  };
}

function toOrderHead(r: OrderRow): OrderHead {
  return {
    id: r.id,
    userId: r.user_id,
    status: r.status,
    total: { amount: Number(r.total_amount), currency: r.currency },
    shippingAddress: parse(r.shipping_address)!,
    shipment: parse(r.shipment),
    shipped: Boolean(r.shipped),
    paidPaymentId: r.paid_payment_id,
    paidAmount: Number(r.paid_amount),
    refundedAmount: Number(r.refunded_amount),
    reservationExpiresAt: r.reservation_expires_at === null ? null : Number(r.reservation_expires_at),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

async function itemsOf(db: Knex, ids: string[]): Promise<Map<string, ItemRow[]>> {
  const rows = ids.length ? ((await db("order_items").whereIn("order_id", ids).orderBy(["order_id", "product_id"])) as ItemRow[]) : [];
  const by = new Map<string, ItemRow[]>();
  for (const r of rows) by.set(r.order_id, [...(by.get(r.order_id) ?? []), r]);
  return by;
}

/** A new order's row, compiled once (lib/db.ts Statement): what a create writes is the same every time. */
const ORDER_VALUES = [
  "id",
  "user_id",
  "status",
  "total_amount",
  "currency",
  "shipping_address",
  "reservation_expires_at",
  "created_at",
  "updated_at",
] as const;
const insertOrderRow = new Statement<Record<(typeof ORDER_VALUES)[number], Knex.Value>>((db) =>
  db("orders").insert({
    ...Object.fromEntries(ORDER_VALUES.map((c) => [c, param(c)])),
    shipment: null,
    shipped: false,
    paid_payment_id: null,
    paid_amount: 0,
    refunded_amount: 0,
  }),
);

export async function insertOrder(trx: Knex.Transaction, o: OrderRecord): Promise<void> {
  await insertOrderRow.run(trx, {
    id: o.id,
    user_id: o.userId,
    status: o.status,
    total_amount: o.total.amount,
    currency: o.total.currency,
    shipping_address: JSON.stringify(o.shippingAddress),
    reservation_expires_at: o.reservationExpiresAt,
    created_at: o.createdAt,
    updated_at: o.updatedAt,
  });
  await trx("order_items").insert(
    o.items.map((l: PricedLine) => ({
      order_id: o.id,
      product_id: l.productId,
      sku: l.sku,
      name: l.name,
      unit_price: l.unitPrice.amount,
      quantity: l.quantity,
    })),
  );
  await addHistory(trx, o.id, o.status, o.createdAt);
}

export async function findOrder(db: Knex, id: string): Promise<OrderRecord | undefined> {
  const row = (await db("orders").where({ id }).first()) as OrderRow | undefined;
  if (!row) return undefined;
  return toOrder(row, (await itemsOf(db, [id])).get(id) ?? []);
}

/** The order's own row, without its lines: one statement (undefined: no such order). */
export async function findOrderHead(db: Knex, id: string): Promise<OrderHead | undefined> {
  const row = (await db("orders").where({ id }).first()) as OrderRow | undefined;
  return row && toOrderHead(row);
}

/** Only the order's status (undefined: no such order). */
export async function statusOf(db: Knex, id: string): Promise<OrderStatus | undefined> {
  const row = await db("orders").where({ id }).first<{ status: OrderStatus } | undefined>("status");
  return row?.status;
}

/** findOrderForUpdate's two reads, compiled once (lib/db.ts Statement): every event about an order locks it. */
const lockOrderRow = new Statement<{ id: string }, OrderRow>((db) =>
  db("orders")
    .where({ id: param("id") })
    .forUpdate()
    .first(),
);
const itemsOfOrder = new Statement<{ id: string }, ItemRow>((db) =>
  db("order_items")
    .where({ order_id: param("id") })
    .orderBy("product_id"),
);

export async function findOrderForUpdate(trx: Knex.Transaction, id: string): Promise<OrderRecord | undefined> {
  const row = await lockOrderRow.first(trx, { id });
  if (!row) return undefined;
  return toOrder(row, (await itemsOfOrder.run(trx, { id })).rows);
}

export async function listOrders(
  db: Knex,
  q: { userId?: string; status?: OrderStatus; paymentStatus?: PaymentStatus; limit: number; offset: number },
): Promise<{ items: OrderRecord[]; total: number }> {
  const filtered = () => {
    const b = db("orders");
    if (q.userId) b.where({ user_id: q.userId });
    if (q.status) b.where({ status: q.status });
    // The payment status is derived (order.domain.ts paymentStatusOf); the same rule in SQL.
    if (q.paymentStatus === "unpaid") b.whereNull("paid_payment_id");
    else if (q.paymentStatus === "paid") b.whereNotNull("paid_payment_id").where("refunded_amount", 0);
    else if (q.paymentStatus === "partially_refunded")
      b.whereNotNull("paid_payment_id").where("refunded_amount", ">", 0).whereRaw("refunded_amount < paid_amount");
    else if (q.paymentStatus === "refunded")
      b.whereNotNull("paid_payment_id").where("refunded_amount", ">", 0).whereRaw("refunded_amount >= paid_amount");
    return b;
  };
  const [{ n }] = await filtered().count<{ n: number | string }[]>({ n: "*" });
  const rows = (await filtered()
    .orderBy([
      { column: "created_at", order: "desc" },
      { column: "id", order: "asc" },
    ])
    .limit(q.limit)
    .offset(q.offset)) as OrderRow[];
  const items = await itemsOf(
    db,
    rows.map((r) => r.id),
  );
  return { items: rows.map((r) => toOrder(r, items.get(r.id) ?? [])), total: Number(n) };
}

/**
 * Purchased orders (PURCHASED statuses) in id order after `afterId`, with their product ids
 * and when they were paid (the PAID history entry), for a consumer rebuilding from history.
 */
export async function purchasesAfter(
  db: Knex,
  afterId: string,
  limit: number,
  statuses: readonly OrderStatus[],
): Promise<{ orderId: string; userId: string; paidAt: number; productIds: string[] }[]> {
  const rows = await db("orders")
    .whereIn("status", statuses)
    .where("id", ">", afterId)
    .orderBy("id")
    .limit(limit)
    .select<{ id: string; user_id: string; updated_at: number | string }[]>("id", "user_id", "updated_at");
  if (!rows.length) return [];
  const ids = rows.map((r) => r.id);
  const items = await db("order_items").whereIn("order_id", ids).orderBy(["order_id", "product_id"]).select<
    {
      order_id: string;
      product_id: string;
    }[]
  >("order_id", "product_id");
  const paid = await db("order_history")
    .whereIn("order_id", ids)
    .where({ status: "PAID" })
    .groupBy("order_id")
    .select("order_id")
    .min<{ order_id: string; at: number | string }[]>({ at: "at" });
  const paidAt = new Map(paid.map((p) => [p.order_id, Number(p.at)]));
  const lines = new Map<string, string[]>();
  for (const i of items) lines.set(i.order_id, [...(lines.get(i.order_id) ?? []), i.product_id]);
  return rows.map((r) => ({
    orderId: r.id,
    userId: r.user_id,
    paidAt: paidAt.get(r.id) ?? Number(r.updated_at),
    productIds: lines.get(r.id) ?? [],
  }));
}

export async function countOrders(db: Knex, statuses: readonly OrderStatus[]): Promise<number> {
  return Number((await db("orders").whereIn("status", statuses).count<{ n: number | string }[]>({ n: "*" }))[0].n);
}

/** Conditional status change (the caller holds the row lock); false when the row moved on. */
export async function setStatus(
  trx: Knex.Transaction,
  id: string,
  from: OrderStatus,
  to: OrderStatus,
  now: number,
  extra: Record<string, unknown> = {},
): Promise<boolean> {
  const n = await trx("orders")
    .where({ id, status: from })
    .update({ status: to, updated_at: now, ...extra });
  if (n === 1) await addHistory(trx, id, to, now);
  return n === 1;
}

/** A succeeded refund of the kept payment adds to `refunded_amount` (the CHECK keeps it ≤ paid). */
export async function addRefunded(trx: Knex.Transaction, id: string, amount: number, now: number): Promise<void> {
  await trx("orders")
    .where({ id })
    .update({ refunded_amount: trx.raw("refunded_amount + ?", [amount]), updated_at: now });
}

const insertHistory = new Statement<{ order_id: string; status: string; at: number }>((db) =>
  db("order_history").insert({ order_id: param("order_id"), status: param("status"), at: param("at") }),
);

export async function addHistory(trx: Knex.Transaction, orderId: string, status: OrderStatus, at: number): Promise<void> {
  await insertHistory.run(trx, { order_id: orderId, status, at });
}

interface HistoryRow {
  status: OrderStatus;
  at: number | string;
  seq: number | string;
}

const toHistory = (r: HistoryRow): HistoryEntry => ({ status: r.status, at: Number(r.at) });

export async function historyOf(db: Knex, orderId: string): Promise<HistoryEntry[]> {
  return ((await db("order_history").where({ order_id: orderId }).orderBy("seq")) as HistoryRow[]).map(toHistory);
}

// ---- payments the order knows of ----

export async function upsertPayment(
  db: Knex,
  orderId: string,
  p: Omit<PaymentSummary, "createdAt" | "updatedAt">,
  now: number,
): Promise<void> {
  await upsertPaymentRow.run(db, {
    payment_id: p.id,
    order_id: orderId,
    provider: p.provider,
    status: p.status,
    amount: p.amount.amount,
    currency: p.amount.currency,
    now,
  });
}

const upsertPaymentRow = new Statement<
  Record<"payment_id" | "order_id" | "provider" | "status" | "amount" | "currency" | "now", Knex.Value>
>((db) =>
  db("order_payments")
    .insert({
      payment_id: param("payment_id"),
      order_id: param("order_id"),
      provider: param("provider"),
      status: param("status"),
      amount: param("amount"),
      currency: param("currency"),
      created_at: param("now"),
      updated_at: param("now"),
    })
    .onConflict("payment_id")
    .merge({ status: param("status"), updated_at: param("now") }),
);

/** A payment the order knew as PENDING failed (a success already recorded stays). */
export async function failPayment(trx: Knex.Transaction, paymentId: string, now: number): Promise<void> {
  await trx("order_payments").where({ payment_id: paymentId, status: "PENDING" }).update({ status: "FAILED", updated_at: now });
}

interface PaymentRow {
  payment_id: string;
  provider: string;
  status: string;
  amount: number | string;
  currency: string;
  created_at: number | string;
  updated_at: number | string;
}

const toPaymentSummary = (r: PaymentRow): PaymentSummary => ({
  id: r.payment_id,
  provider: r.provider,
  status: r.status,
  amount: { amount: Number(r.amount), currency: r.currency },
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

export async function paymentsOf(db: Knex, orderId: string): Promise<PaymentSummary[]> {
  return ((await db("order_payments").where({ order_id: orderId }).orderBy(["created_at", "payment_id"])) as PaymentRow[]).map(
    toPaymentSummary,
  );
}

// ---- refunds ----

interface RefundRow {
  id: string;
  order_id: string;
  payment_id: string;
  amount: number | string;
  currency: string;
  status: RefundStatus;
  reason: string;
  created_at: number | string;
  updated_at: number | string;
}

const toRefund = (r: RefundRow): RefundSummary & { orderId: string } => ({
  id: r.id,
  orderId: r.order_id,
  paymentId: r.payment_id,
  amount: { amount: Number(r.amount), currency: r.currency },
  status: r.status,
  reason: r.reason,
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

export async function refundsOf(db: Knex, orderId: string): Promise<(RefundSummary & { orderId: string })[]> {
  return ((await db("order_refunds").where({ order_id: orderId }).orderBy(["created_at", "id"])) as RefundRow[]).map(toRefund);
}

export async function findRefund(db: Knex, id: string): Promise<(RefundSummary & { orderId: string }) | undefined> {
  const row = (await db("order_refunds").where({ id }).first()) as RefundRow | undefined;
  return row && toRefund(row);
}

export async function insertRefund(trx: Knex.Transaction, r: RefundSummary & { orderId: string }): Promise<void> {
  await trx("order_refunds").insert({
    id: r.id,
    order_id: r.orderId,
    payment_id: r.paymentId,
    amount: r.amount.amount,
    currency: r.amount.currency,
    status: r.status,
    reason: r.reason,
    created_at: r.createdAt,
    updated_at: r.updatedAt,
  });
}

/** PENDING → SUCCEEDED|FAILED once; false when it was already settled. */
export async function settleRefund(trx: Knex.Transaction, id: string, to: Exclude<RefundStatus, "PENDING">, now: number): Promise<boolean> {
  return (await trx("order_refunds").where({ id, status: "PENDING" }).update({ status: to, updated_at: now })) === 1;
}

/** Refunds still pending since before `olderThan` (their platform call is retried; it is idempotent). */
export async function stalePendingRefunds(db: Knex, olderThan: number, limit: number): Promise<(RefundSummary & { orderId: string })[]> {
  return (
    (await db("order_refunds")
      .where({ status: "PENDING" })
      .where("updated_at", "<", olderThan)
      .orderBy("updated_at")
      .limit(limit)) as RefundRow[]
  ).map(toRefund);
}

export async function touchRefund(db: Knex, id: string, now: number): Promise<void> {
  await db("order_refunds").where({ id, status: "PENDING" }).update({ updated_at: now });
}

// ---- idempotency keys (lib/idempotency.ts) ----

export function idempotencyStore(db: Knex): IdempotencyStore {
  return {
    async claim(userId, key, c) {
      await db("idempotency_keys").insert({
        user_id: userId,
        idem_key: key,
        fingerprint: c.fingerprint,
        resource_id: c.resourceId,
        created_at: c.createdAt,
      });
    },
    async find(userId, key) {
      const row = (await db("idempotency_keys").where({ user_id: userId, idem_key: key }).first()) as
        { fingerprint: string; resource_id: string; created_at: number | string } | undefined;
      return row && { fingerprint: row.fingerprint, resourceId: row.resource_id, createdAt: Number(row.created_at) };
    },
    async release(userId, key, resourceId) {
      await db("idempotency_keys").where({ user_id: userId, idem_key: key, resource_id: resourceId }).del();
    },
    isConflict: isUniqueViolation,
  };
}

/** Every key naming `resourceId` (the kill test checks each names an order that exists). */
export async function idempotencyKeysOf(db: Knex, userId: string): Promise<{ key: string; resourceId: string }[]> {
  return ((await db("idempotency_keys").where({ user_id: userId })) as { idem_key: string; resource_id: string }[]).map((r) => ({
    key: r.idem_key,
    resourceId: r.resource_id,
  }));
}

// ---- hoarding limits: per-user overrides, the lock row, the creates under way ----

/** The user's lock row exists (its own statement: inside the transaction an insert-ignore would deadlock). */
export async function ensureUserLimitsRow(db: Knex, userId: string, now: number): Promise<void> {
  await db("order_user_limits")
    .insert({ user_id: userId, max_unpaid_orders: null, max_unpaid_units_per_product: null, updated_at: now })
    .onConflict("user_id")
    .ignore();
}

export interface LimitOverrides {
  maxUnpaidOrders: number | null;
  maxUnpaidUnitsPerProduct: number | null;
}

// The statements of every create's unpaid-order slot, compiled once (lib/db.ts Statement).
const lockLimitsRow = new Statement<{ userId: string }, { max_unpaid_orders: number | null; max_unpaid_units_per_product: number | null }>(
  (db) =>
    db("order_user_limits")
      .where({ user_id: param("userId") })
      .forUpdate()
      .first(),
);
const unpaidOrderIds = new Statement<{ userId: string }, { id: string }>((db) =>
  db("orders")
    .where({ user_id: param("userId"), status: "PENDING_PAYMENT" })
    .select("id"),
);
const liveDrafts = new Statement<{ userId: string; liveSince: number }, { lines: string }>((db) =>
  db("order_drafts")
    .where({ user_id: param("userId") })
    .where("created_at", ">=", param("liveSince"))
    .select("lines"),
);
const insertDraftRow = new Statement<{ orderId: string; userId: string; lines: string; now: number }>((db) =>
  db("order_drafts").insert({ order_id: param("orderId"), user_id: param("userId"), lines: param("lines"), created_at: param("now") }),
);
const deleteDraftRow = new Statement<{ orderId: string }>((db) =>
  db("order_drafts")
    .where({ order_id: param("orderId") })
    .del(),
);

/** Locks the user's row (creates of one user are serialised here) and reads their overrides; undefined: no row yet. */
export async function lockUserLimits(trx: Knex.Transaction, userId: string): Promise<LimitOverrides | undefined> {
  const row = await lockLimitsRow.first(trx, { userId });
  return row && { maxUnpaidOrders: row.max_unpaid_orders, maxUnpaidUnitsPerProduct: row.max_unpaid_units_per_product };
}

export async function findUserLimits(db: Knex, userId: string): Promise<LimitOverrides> {
  const row = (await db("order_user_limits").where({ user_id: userId }).first()) as
    { max_unpaid_orders: number | null; max_unpaid_units_per_product: number | null } | undefined;
  return { maxUnpaidOrders: row?.max_unpaid_orders ?? null, maxUnpaidUnitsPerProduct: row?.max_unpaid_units_per_product ?? null };
}

export async function setUserLimits(db: Knex, userId: string, o: LimitOverrides, now: number): Promise<void> {
  await db("order_user_limits")
    .insert({
      user_id: userId,
      max_unpaid_orders: o.maxUnpaidOrders,
      max_unpaid_units_per_product: o.maxUnpaidUnitsPerProduct,
      updated_at: now,
    })
    .onConflict("user_id")
    .merge(["max_unpaid_orders", "max_unpaid_units_per_product", "updated_at"]);
}

/**
 * The user's unpaid orders and the creates under way (drafts younger than `liveSince`; an
 * older one belongs to a process that died), with units per product across both.
 */
export async function unpaidState(trx: Knex.Transaction, userId: string, liveSince: number): Promise<UnpaidState> {
  const orders = (await unpaidOrderIds.run(trx, { userId })).rows;
  const drafts = (await liveDrafts.run(trx, { userId, liveSince })).rows;
  const units = new Map<string, number>();
  if (orders.length)
    for (const i of await trx("order_items")
      .whereIn(
        "order_id",
        orders.map((o) => o.id),
      )
      .select<{ product_id: string; quantity: number | string }[]>("product_id", "quantity"))
      units.set(i.product_id, (units.get(i.product_id) ?? 0) + Number(i.quantity));
  for (const d of drafts)
    for (const l of JSON.parse(d.lines) as OrderLineInput[]) units.set(l.productId, (units.get(l.productId) ?? 0) + l.quantity);
  return { orders: orders.length + drafts.length, units };
}

export async function insertDraft(
  trx: Knex.Transaction,
  orderId: string,
  userId: string,
  lines: OrderLineInput[],
  now: number,
): Promise<void> {
  await insertDraftRow.run(trx, { orderId, userId, lines: JSON.stringify(lines), now });
}

export async function deleteDraft(db: Knex, orderId: string): Promise<void> {
  await deleteDraftRow.run(db, { orderId });
}

/** Housekeeping: drafts of creates that died (they no longer count; see unpaidState). */
export async function deleteStaleDrafts(db: Knex, before: number): Promise<number> {
  return db("order_drafts").where("created_at", "<", before).del();
}

// ---- returns ----

interface ReturnRow {
  id: string;
  order_id: string;
  user_id: string;
  status: ReturnStatus;
  items: string;
  reason: string;
  amount: number | string | null;
  currency: string | null;
  restock: number | boolean | null;
  refund_id: string | null;
  decision_reason: string | null;
  created_at: number | string;
  decided_at: number | string | null;
}

const toReturn = (r: ReturnRow): ReturnRecord => ({
  id: r.id,
  orderId: r.order_id,
  userId: r.user_id,
  status: r.status,
  items: JSON.parse(r.items) as OrderLineInput[],
  reason: r.reason,
  amount: r.amount === null ? null : { amount: Number(r.amount), currency: r.currency! },
  restock: r.restock === null ? null : Boolean(r.restock),
  refundId: r.refund_id,
  decisionReason: r.decision_reason,
  createdAt: Number(r.created_at),
  decidedAt: r.decided_at === null ? null : Number(r.decided_at),
});

// ---- the whole order in one statement ----

/** The parts of an order's view, each table with the columns its reader above maps. */
const VIEW_PARTS = [
  {
    part: "order",
    table: "orders",
    key: "id",
    columns: [
      "id",
      "user_id",
      "status",
      "total_amount",
      "currency",
      "shipping_address",
      "shipment",
      "shipped",
      "paid_payment_id",
      "paid_amount",
      "refunded_amount",
      "reservation_expires_at",
      "created_at",
      "updated_at",
    ],
  },
  { part: "item", table: "order_items", key: "order_id", columns: ["order_id", "product_id", "sku", "name", "unit_price", "quantity"] },
  {
    part: "payment",
    table: "order_payments",
    key: "order_id",
    columns: ["payment_id", "provider", "status", "amount", "currency", "created_at", "updated_at"],
  },
  {
    part: "refund",
    table: "order_refunds",
    key: "order_id",
    columns: ["id", "order_id", "payment_id", "amount", "currency", "status", "reason", "created_at", "updated_at"],
  },
  { part: "history", table: "order_history", key: "order_id", columns: ["status", "at", "seq"] },
  {
    part: "return",
    table: "order_returns",
    key: "order_id",
    columns: [
      "id",
      "order_id",
      "user_id",
      "status",
      "items",
      "reason",
      "amount",
      "currency",
      "restock",
      "refund_id",
      "decision_reason",
      "created_at",
      "decided_at",
    ],
  },
] as const;
type ViewPart = (typeof VIEW_PARTS)[number]["part"];
const VIEW_COLUMNS = new Map<ViewPart, readonly string[]>(VIEW_PARTS.map((p) => [p.part, p.columns]));
const VIEW_WIDTH = Math.max(...VIEW_PARTS.map((p) => p.columns.length));
/** Code-unit order, as the per-table readers' ORDER BY sorts ids (ASCII, utf8mb4_bin: one order everywhere). */
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
/** By time, ties by id: the per-table readers' ORDER BY. */
const byTimeThenId = (a: { createdAt: number; id: string }, b: { createdAt: number; id: string }) =>
  a.createdAt - b.createdAt || cmp(a.id, b.id);
/** Columns UNION may hand back as text ("0"/"1" on MariaDB, where a column mixes types): read as numbers first. */
const FLAGS = new Set(["shipped", "restock"]);

export interface OrderView {
  order: OrderRecord;
  payments: PaymentSummary[];
  refunds: (RefundSummary & { orderId: string })[];
  history: HistoryEntry[];
  returns: ReturnRecord[];
}

/** Where the order's id goes in the view's compiled statement. */
const VIEW_ID = Symbol("order id");
/** The view's statement per SQL dialect, compiled once. */
const viewStatements = new Map<string, { sql: string; bindings: readonly (Knex.Value | typeof VIEW_ID)[] }>();

/**
 * The view's UNION compiled by knex's builder once per dialect, then run as that text: the
 * builder took ~100 objects and a compilation on every order read (#16), for the same text.
 */
function viewStatement(db: Knex): { sql: string; bindings: readonly (Knex.Value | typeof VIEW_ID)[] } {
  const dialect = isMysql(db) ? "mysql" : "sqlite"; // the two engines the project runs on
  let statement = viewStatements.get(dialect);
  if (!statement) {
    const placeholder = `view-id-${dialect}`;
    const [first, ...rest] = VIEW_PARTS.map(({ part, table, key, columns }) =>
      db(table)
        .where(key, placeholder)
        .select(
          db.raw("? as part", [part]),
          ...Array.from({ length: VIEW_WIDTH }, (_, i) => (i < columns.length ? db.ref(columns[i]).as(`c${i}`) : db.raw(`null as c${i}`))),
        ),
    );
    const compiled = first.unionAll(rest).toSQL();
    statement = { sql: compiled.sql, bindings: compiled.bindings.map((b) => (b === placeholder ? VIEW_ID : b)) };
    viewStatements.set(dialect, statement);
  }
  return statement;
}

/**
 * An order with its items, payments, refunds, history and returns in ONE statement: a UNION
 * ALL of the six tables, each row tagged with its part and padded to one width. One statement
 * reads one snapshot on both engines (SQLite's read transaction; InnoDB's consistent read,
 * one read view per statement), which is what the view needs: no status without the history
 * entry that led to it. It replaced BEGIN, six SELECTs and COMMIT on every order read (#16).
 * UNION merges each column's type across the parts, so every field goes through the same
 * conversions as the per-table readers (numbers from text, flags from "0"/"1").
 */
export async function findOrderView(db: Knex, id: string): Promise<OrderView | undefined> {
  const { sql, bindings } = viewStatement(db);
  const result: unknown = await db.raw(
    sql,
    bindings.map((b) => (b === VIEW_ID ? id : b)),
  );
  // A raw statement answers as its driver does: mysql2 [rows, fields], better-sqlite3 rows.
  const rows = (isMysql(db) ? (result as unknown[])[0] : result) as ({ part: ViewPart } & Record<string, unknown>)[];
  const byPart = new Map<ViewPart, Record<string, unknown>[]>(VIEW_PARTS.map((p) => [p.part, []]));
  for (const row of rows) {
    const named: Record<string, unknown> = {};
    VIEW_COLUMNS.get(row.part)!.forEach((c, i) => {
      const v = row[`c${i}`];
      named[c] = FLAGS.has(c) && typeof v === "string" ? Number(v) : v;
    });
    byPart.get(row.part)!.push(named);
  }
  const all = <T>(part: ViewPart) => byPart.get(part) as T[];
  const [orderRow] = all<OrderRow>("order");
  if (!orderRow) return undefined;
  return {
    order: toOrder(
      orderRow,
      all<ItemRow>("item").sort((a, b) => cmp(a.product_id, b.product_id)),
    ),
    payments: all<PaymentRow>("payment").map(toPaymentSummary).sort(byTimeThenId),
    refunds: all<RefundRow>("refund").map(toRefund).sort(byTimeThenId),
    history: all<HistoryRow>("history")
      .sort((a, b) => Number(a.seq) - Number(b.seq))
      .map(toHistory),
    returns: all<ReturnRow>("return").map(toReturn).sort(byTimeThenId),
  };
}

export async function insertReturn(trx: Knex.Transaction, r: ReturnRecord): Promise<void> {
  await trx("order_returns").insert({
    id: r.id,
    order_id: r.orderId,
    user_id: r.userId,
    status: r.status,
    items: JSON.stringify(r.items),
    reason: r.reason,
    amount: null,
    currency: null,
    restock: null,
    refund_id: null,
    decision_reason: null,
    created_at: r.createdAt,
    decided_at: null,
  });
}

export async function findReturn(db: Knex, id: string): Promise<ReturnRecord | undefined> {
  const row = (await db("order_returns").where({ id }).first()) as ReturnRow | undefined;
  return row && toReturn(row);
}

export async function returnsOf(db: Knex, orderId: string): Promise<ReturnRecord[]> {
  return (
    (await db("order_returns")
      .where({ order_id: orderId })
      .orderBy([{ column: "created_at" }, { column: "id" }])) as ReturnRow[]
  ).map(toReturn);
}

export async function listReturns(
  db: Knex,
  q: { status?: ReturnStatus; limit: number; offset: number },
): Promise<{ items: ReturnRecord[]; total: number }> {
  const filtered = () => (q.status ? db("order_returns").where({ status: q.status }) : db("order_returns"));
  const [{ n }] = await filtered().count<{ n: number | string }[]>({ n: "*" });
  const rows = (await filtered()
    .orderBy([
      { column: "created_at", order: "desc" },
      { column: "id", order: "asc" },
    ])
    .limit(q.limit)
    .offset(q.offset)) as ReturnRow[];
  return { items: rows.map(toReturn), total: Number(n) };
}

/** REQUESTED → APPROVED | REJECTED once (the caller holds the order's row lock); false when already decided. */
export async function decideReturn(
  trx: Knex.Transaction,
  id: string,
  d: {
    status: Exclude<ReturnStatus, "REQUESTED">;
    amount?: Money;
    restock?: boolean;
    refundId?: string;
    decisionReason?: string;
    decidedAt: number;
  },
): Promise<boolean> {
  const n = await trx("order_returns")
    .where({ id, status: "REQUESTED" })
    .update({
      status: d.status,
      amount: d.amount?.amount ?? null,
      currency: d.amount?.currency ?? null,
      restock: d.restock ?? null,
      refund_id: d.refundId ?? null,
      decision_reason: d.decisionReason ?? null,
      decided_at: d.decidedAt,
    });
  return n === 1;
}
