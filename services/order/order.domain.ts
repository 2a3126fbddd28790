/**
 * The order's rules as pure functions (no knex, no Moleculer): the state machine as ONE
 * table, money (integer minor units, one currency per order), refund limits, the public
 * view, and the idempotency fingerprint of a create request.
 */
import { createHash } from "node:crypto";

export const ORDER_STATUSES = ["PENDING_PAYMENT", "PAID", "SHIPPED", "DELIVERED", "CANCELLED", "PARTIALLY_REFUNDED", "REFUNDED"] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

export type OrderEvent = "payment_succeeded" | "cancel" | "expire" | "ship" | "deliver" | "refund_partial" | "refund_full";

/**
 * API.md's state machine: PENDING_PAYMENT → PAID → SHIPPED → DELIVERED;
 * PENDING_PAYMENT → CANCELLED (user, admin, or the reservation expired);
 * PAID|SHIPPED|DELIVERED → PARTIALLY_REFUNDED → REFUNDED (and straight to REFUNDED).
 * Anything not in this table is a 409. A failed payment is not a transition.
 */
export const TRANSITIONS: Readonly<Record<OrderStatus, Partial<Record<OrderEvent, OrderStatus>>>> = {
  PENDING_PAYMENT: { payment_succeeded: "PAID", cancel: "CANCELLED", expire: "CANCELLED" },
  PAID: { ship: "SHIPPED", refund_partial: "PARTIALLY_REFUNDED", refund_full: "REFUNDED" },
  SHIPPED: { deliver: "DELIVERED", refund_partial: "PARTIALLY_REFUNDED", refund_full: "REFUNDED" },
  DELIVERED: { refund_partial: "PARTIALLY_REFUNDED", refund_full: "REFUNDED" },
  PARTIALLY_REFUNDED: { refund_partial: "PARTIALLY_REFUNDED", refund_full: "REFUNDED" },
  CANCELLED: {},
  REFUNDED: {},
};

/** The next status, or undefined when the event is not allowed in `from`. */
export function nextStatus(from: OrderStatus, event: OrderEvent): OrderStatus | undefined {
  return TRANSITIONS[from][event];
}

/** States in which money was taken and may be refunded. */
export const REFUNDABLE: readonly OrderStatus[] = ["PAID", "SHIPPED", "DELIVERED", "PARTIALLY_REFUNDED"];
/** Orders that count as purchases (paid, not fully refunded): the recommendation model's history. */
export const PURCHASED: readonly OrderStatus[] = REFUNDABLE;

export interface Money {
  amount: number;
  currency: string;
}

export interface OrderLineInput {
  productId: string;
  quantity: number;
}

export interface PricedLine {
  productId: string;
  sku: string;
  name: string;
  unitPrice: Money;
  quantity: number;
}

export const MAX_ORDER_LINES = 50;
export const MAX_LINE_QUANTITY = 99;

/** Lines of one product merged, sorted by productId; problems listed per field. */
export function normalizeOrderLines(lines: readonly OrderLineInput[]): { lines: OrderLineInput[]; problems: { field: string; message: string }[] } {
  const merged = new Map<string, number>();
  for (const l of lines) merged.set(l.productId, (merged.get(l.productId) ?? 0) + l.quantity);
  const out = [...merged].map(([productId, quantity]) => ({ productId, quantity })).sort((a, b) => (a.productId < b.productId ? -1 : 1));
  const problems: { field: string; message: string }[] = [];
  if (out.length === 0) problems.push({ field: "items", message: "the order has no items (empty cart)" });
  if (out.length > MAX_ORDER_LINES) problems.push({ field: "items", message: `at most ${MAX_ORDER_LINES} different products` });
  for (const l of out)
    if (!Number.isSafeInteger(l.quantity) || l.quantity < 1 || l.quantity > MAX_LINE_QUANTITY)
      problems.push({ field: `items.${l.productId}`, message: `quantity must be 1 to ${MAX_LINE_QUANTITY}` });
  return { lines: out, problems };
}

/** Order total: exact integer arithmetic, one currency. Throws on mixed currencies. */
export function orderTotal(lines: readonly PricedLine[]): Money {
  if (!lines.length) throw new Error("no lines");
  const currency = lines[0]!.unitPrice.currency;
  let amount = 0;
  for (const l of lines) {
    if (l.unitPrice.currency !== currency) throw new MixedCurrencyError(currency, l.unitPrice.currency);
    amount += l.unitPrice.amount * l.quantity;
  }
  if (!Number.isSafeInteger(amount)) throw new Error("order total out of range");
  return { amount, currency };
}

export class MixedCurrencyError extends Error {
  constructor(
    readonly first: string,
    readonly other: string,
  ) {
    super(`one order, one currency: ${first} and ${other}`);
  }
}

export type RefundStatus = "PENDING" | "SUCCEEDED" | "FAILED";

export interface RefundRecord {
  id: string;
  amount: number;
  status: RefundStatus;
}

/** What can still be refunded: paid minus every refund not failed (pending ones count). */
export function refundable(paid: number, refunds: readonly RefundRecord[]): number {
  const committed = refunds.filter((r) => r.status !== "FAILED").reduce((s, r) => s + r.amount, 0);
  return Math.max(0, paid - committed);
}

/**
 * The amount of a refund request: the given one, or all that is left. Undefined + a reason
 * when not allowed (nothing left, zero, or more than what is left).
 */
export function refundAmount(requested: number | undefined, left: number): { amount: number } | { problem: string } {
  if (left <= 0) return { problem: "nothing left to refund" };
  const amount = requested ?? left;
  if (!Number.isSafeInteger(amount) || amount < 1) return { problem: "amount must be a positive integer (minor units)" };
  if (amount > left) return { problem: `at most ${left} can still be refunded` };
  return { amount };
}

/** After a refund succeeded: the event for the state machine. */
export function refundEvent(paid: number, refundedSucceeded: number): OrderEvent {
  return refundedSucceeded >= paid ? "refund_full" : "refund_partial";
}

/**
 * Stock goes back to the shelf only when the whole order is refunded before it shipped:
 * a partial refund by amount names no items, and shipped goods are with the buyer.
 */
export function returnsStock(shipped: boolean, event: OrderEvent): boolean {
  return !shipped && event === "refund_full";
}

/**
 * What makes two create requests "the same" for an Idempotency-Key: the body the client
 * sent, with object keys sorted (a re-serialisation by another client library still matches).
 */
export function requestFingerprint(body: unknown): string {
  return createHash("sha256").update(canonicalJson(body)).digest("hex");
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object")
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v ?? null);
}

/** The same fields as a saved address of the user service (frozen into the order). */
export interface ShippingAddress {
  recipient: string;
  phone: string;
  line1: string;
  line2?: string | null;
  city: string;
  province?: string | null;
  postalCode: string;
  country: string;
}

export const ADDRESS_FIELDS = ["recipient", "phone", "line1", "line2", "city", "province", "postalCode", "country"] as const;

export function pickAddress(a: Record<string, unknown>): ShippingAddress {
  const out: Record<string, unknown> = {};
  for (const k of ADDRESS_FIELDS) if (a[k] !== undefined) out[k] = a[k];
  return out as unknown as ShippingAddress;
}

export interface OrderRecord {
  id: string;
  userId: string;
  status: OrderStatus;
  total: Money;
  items: PricedLine[];
  shippingAddress: ShippingAddress;
  shipment: { carrier: string; trackingNumber: string; shippedAt: string; deliveredAt?: string } | null;
  paidPaymentId: string | null;
  paidAmount: number;
  refundedAmount: number;
  /** Whether it ever shipped (refunds after that do not return stock). */
  shipped: boolean;
  reservationExpiresAt: number | null;
  createdAt: number;
  updatedAt: number;
}

export interface PaymentSummary {
  id: string;
  provider: string;
  status: string;
  amount: Money;
  createdAt: number;
  updatedAt: number;
}

export interface RefundSummary {
  id: string;
  paymentId: string;
  amount: Money;
  status: RefundStatus;
  reason: string;
  createdAt: number;
  updatedAt: number;
}

export interface HistoryEntry {
  status: OrderStatus;
  at: number;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function toPublicOrder(o: OrderRecord, payments: PaymentSummary[], refunds: RefundSummary[], history: HistoryEntry[]) {
  return {
    id: o.id,
    userId: o.userId,
    status: o.status,
    items: o.items.map((l) => ({ productId: l.productId, sku: l.sku, name: l.name, unitPrice: l.unitPrice, quantity: l.quantity })),
    total: o.total,
    shippingAddress: o.shippingAddress,
    payments: payments.map((p) => ({ id: p.id, provider: p.provider, status: p.status, amount: p.amount, createdAt: iso(p.createdAt), updatedAt: iso(p.updatedAt) })),
    refunds: refunds.map(toPublicRefund),
    ...(o.shipment ? { shipment: o.shipment } : {}),
    history: history.map((h) => ({ status: h.status, at: iso(h.at) })),
    ...(o.status === "PENDING_PAYMENT" && o.reservationExpiresAt ? { payBefore: iso(o.reservationExpiresAt) } : {}),
    createdAt: iso(o.createdAt),
    updatedAt: iso(o.updatedAt),
  };
}

export function toPublicRefund(r: RefundSummary) {
  return { id: r.id, paymentId: r.paymentId, amount: r.amount, status: r.status, reason: r.reason, createdAt: iso(r.createdAt), updatedAt: iso(r.updatedAt) };
}
