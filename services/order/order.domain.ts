/**
 * The order's rules as pure functions (no knex, no Moleculer): the state machine as ONE
 * table, money (integer minor units, one currency per order), refund limits, the public
 * view, refund and return rules, and the hoarding limits.
 */
import type { Money } from "../../proto/gen/meridian/common/v1/common";
import type { ShippingAddress } from "../../proto/gen/meridian/order/v1/order";

export const ORDER_STATUSES = ["PENDING_PAYMENT", "PAID", "SHIPPED", "DELIVERED", "CANCELLED", "REFUNDED"] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

export type OrderEvent = "payment_succeeded" | "cancel" | "expire" | "ship" | "deliver" | "refund_full";

/**
 * API.md's fulfilment state machine: PENDING_PAYMENT → PAID → SHIPPED → DELIVERED;
 * PENDING_PAYMENT → CANCELLED (user, admin, or the reservation expired); PAID|SHIPPED|DELIVERED
 * → REFUNDED once everything paid was refunded. Partial refunds are not transitions: they
 * show in the payment status (paymentStatusOf), so a partly refunded order still ships.
 * Anything not in this table is a 409. A failed payment is not a transition.
 */
export const TRANSITIONS: Readonly<Record<OrderStatus, Partial<Record<OrderEvent, OrderStatus>>>> = {
  PENDING_PAYMENT: { payment_succeeded: "PAID", cancel: "CANCELLED", expire: "CANCELLED" },
  PAID: { ship: "SHIPPED", refund_full: "REFUNDED" },
  SHIPPED: { deliver: "DELIVERED", refund_full: "REFUNDED" },
  DELIVERED: { refund_full: "REFUNDED" },
  CANCELLED: {},
  REFUNDED: {},
};

/** The next status, or undefined when the event is not allowed in `from`. */
export function nextStatus(from: OrderStatus, event: OrderEvent): OrderStatus | undefined {
  return TRANSITIONS[from][event];
}

/** States in which money was taken and some may still be refunded. */
export const REFUNDABLE: readonly OrderStatus[] = ["PAID", "SHIPPED", "DELIVERED"];
/** Orders that count as purchases (paid, not fully refunded): the recommendation model's history. */
export const PURCHASED: readonly OrderStatus[] = REFUNDABLE;

export const PAYMENT_STATUSES = ["unpaid", "paid", "partially_refunded", "refunded"] as const;
export type PaymentStatus = (typeof PAYMENT_STATUSES)[number];

/** How much came back, from the kept payment's figures (derived, never stored). */
export function paymentStatusOf(o: { paidPaymentId: string | null; paidAmount: number; refundedAmount: number }): PaymentStatus {
  if (!o.paidPaymentId) return "unpaid";
  if (o.refundedAmount <= 0) return "paid";
  return o.refundedAmount >= o.paidAmount ? "refunded" : "partially_refunded";
}

/** The contracts' Money (meridian.common.v1): integer minor units and an ISO 4217 code. */
export type { Money };

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

/**
 * The order's lines, in the order given (normalizeOrderLines sorts them by productId), frozen from what product.reserve answered for
 * them (sku, name and price as the reserve read them). A line it did not price would be a
 * product node answering an older contract: refused rather than frozen without a price.
 */
export function frozenLines(lines: readonly OrderLineInput[], priced: readonly PricedLine[]): PricedLine[] {
  const byId = new Map(priced.map((p) => [p.productId, p]));
  return lines.map((l) => {
    const p = byId.get(l.productId);
    if (!p || p.quantity !== l.quantity) throw new Error(`product.reserve answered no price for ${l.productId} x${l.quantity}`);
    return { productId: l.productId, sku: p.sku, name: p.name, unitPrice: { ...p.unitPrice }, quantity: l.quantity };
  });
}

export const MAX_ORDER_LINES = 50;
export const MAX_LINE_QUANTITY = 99;

/** Lines of one product merged, sorted by productId; problems listed per field. */
export function normalizeOrderLines(lines: readonly OrderLineInput[]): {
  lines: OrderLineInput[];
  problems: { field: string; message: string }[];
} {
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
  const currency = lines[0].unitPrice.currency;
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

/**
 * What can still be refunded of the order: what the kept payment captured minus its refunds
 * not failed (pending ones count). Refunds of other charges (a duplicate payment refunded
 * automatically) are not the order's money and do not count against it.
 */
export function refundable(
  paid: number,
  keptPaymentId: string | null,
  refunds: readonly Pick<RefundSummary, "paymentId" | "amount" | "status">[],
): number {
  if (!keptPaymentId) return 0;
  const committed = refunds.filter((r) => r.paymentId === keptPaymentId && r.status !== "FAILED").reduce((s, r) => s + r.amount.amount, 0);
  return Math.max(0, paid - committed);
}

/**
 * The amount of a refund request: the given one, or all that is left. A problem when not
 * allowed (nothing left, zero, or more than what is left).
 */
export function refundAmount(requested: number | undefined, left: number): { amount: number } | { problem: string } {
  if (left <= 0) return { problem: "nothing left to refund" };
  const amount = requested ?? left;
  if (!Number.isSafeInteger(amount) || amount < 1) return { problem: "amount must be a positive integer (minor units)" };
  if (amount > left) return { problem: `at most ${left} can still be refunded` };
  return { amount };
}

/**
 * Who may refund what (API.md v1.1): the owner only before the order ships, and only all
 * that is left (the stock returns); after shipping the owner files a return request. Admins
 * refund any amount at any point after payment.
 */
export function refundRequestVerdict(r: {
  byAdmin: boolean;
  shipped: boolean;
  left: number;
  requested?: number;
}): { amount: number } | { conflict: string } | { problem: string } {
  if (!r.byAdmin) {
    if (r.shipped) return { conflict: "the order has shipped: file a return request (POST /api/orders/:id/returns) instead" };
    if (r.left > 0 && r.requested !== undefined && r.requested !== r.left)
      return { problem: `before shipping a customer refunds all that is left (${r.left}), not part of it` };
  }
  return refundAmount(r.requested, r.left);
}

/** After a refund of the kept payment succeeded: the transition, when it was the last of the money. */
export function refundEvent(paid: number, refundedSucceeded: number): "refund_full" | undefined {
  return refundedSucceeded >= paid ? "refund_full" : undefined;
}

/**
 * Stock goes back to the shelf with a refund only when the whole order is refunded before it
 * shipped: a partial refund by amount names no items, and shipped goods are with the buyer
 * (they come back through an approved return with `restock`).
 */
export function returnsStock(shipped: boolean, event: OrderEvent | undefined): boolean {
  return !shipped && event === "refund_full";
}

// ---- hoarding limits on unpaid orders ----

export interface UnpaidLimits {
  maxOrders: number;
  maxUnitsPerProduct: number;
}

/** A user's unpaid orders (and creates under way): how many, and units per product across them. */
export interface UnpaidState {
  orders: number;
  units: ReadonlyMap<string, number>;
}

export type UnpaidLimitProblem =
  | { limit: "MAX_UNPAID_ORDERS"; max: number; unpaidOrders: number }
  | { limit: "MAX_UNPAID_UNITS_PER_PRODUCT"; max: number; productId: string; unpaidUnits: number; requested: number };

/**
 * Whether one more order with `lines` stays within the limits: at most `maxOrders` unpaid
 * orders, and at most `maxUnitsPerProduct` units of one product across them. Undefined when
 * it does; else the first limit it breaks (which the 409 names).
 */
export function unpaidLimitProblem(
  limits: UnpaidLimits,
  state: UnpaidState,
  lines: readonly OrderLineInput[],
): UnpaidLimitProblem | undefined {
  if (state.orders + 1 > limits.maxOrders) return { limit: "MAX_UNPAID_ORDERS", max: limits.maxOrders, unpaidOrders: state.orders };
  for (const l of lines) {
    const unpaidUnits = state.units.get(l.productId) ?? 0;
    if (unpaidUnits + l.quantity > limits.maxUnitsPerProduct)
      return {
        limit: "MAX_UNPAID_UNITS_PER_PRODUCT",
        max: limits.maxUnitsPerProduct,
        productId: l.productId,
        unpaidUnits,
        requested: l.quantity,
      };
  }
  return undefined;
}

export function describeUnpaidLimit(p: UnpaidLimitProblem): string {
  return p.limit === "MAX_UNPAID_ORDERS"
    ? `At most ${p.max} unpaid orders at a time (MAX_UNPAID_ORDERS): pay or cancel one first`
    : `At most ${p.max} units of one product across unpaid orders (MAX_UNPAID_UNITS_PER_PRODUCT): product ${p.productId} has ${p.unpaidUnits} unpaid, ${p.requested} more asked`;
}

// ---- returns ----

export const RETURN_STATUSES = ["REQUESTED", "APPROVED", "REJECTED"] as const;
export type ReturnStatus = (typeof RETURN_STATUSES)[number];

export interface ReturnRecord {
  id: string;
  orderId: string;
  userId: string;
  status: ReturnStatus;
  items: OrderLineInput[];
  reason: string;
  amount: Money | null;
  restock: boolean | null;
  refundId: string | null;
  decisionReason: string | null;
  createdAt: number;
  decidedAt: number | null;
}

/**
 * Whether a return of `items` may be requested now: a DELIVERED order, within `windowDays`
 * of delivery, lines of the order only, and no more of a product than was bought minus what
 * other requested or approved returns already take back. `items` are merged per product.
 */
export function returnRequestVerdict(
  order: Pick<OrderRecord, "status" | "items" | "shipment">,
  items: readonly OrderLineInput[],
  open: readonly Pick<ReturnRecord, "status" | "items">[],
  now: number,
  windowDays: number,
): { lines: OrderLineInput[] } | { conflict: string } | { problems: { field: string; message: string }[] } {
  if (order.status !== "DELIVERED") return { conflict: `only a delivered order can be returned (this one is ${order.status})` };
  const deliveredAt = order.shipment?.deliveredAt ? Date.parse(order.shipment.deliveredAt) : NaN;
  if (!Number.isFinite(deliveredAt) || now > deliveredAt + windowDays * 86_400_000)
    return { conflict: `the return window (${windowDays} days after delivery) has passed` };
  const { lines, problems } = normalizeOrderLines(items);
  const taken = new Map<string, number>();
  for (const r of open)
    if (r.status !== "REJECTED") for (const l of r.items) taken.set(l.productId, (taken.get(l.productId) ?? 0) + l.quantity);
  for (const l of lines) {
    const bought = order.items.find((i) => i.productId === l.productId)?.quantity ?? 0;
    if (!bought) problems.push({ field: `items.${l.productId}`, message: "not a line of this order" });
    else if (l.quantity > bought - (taken.get(l.productId) ?? 0))
      problems.push({ field: `items.${l.productId}`, message: `at most ${bought - (taken.get(l.productId) ?? 0)} can still be returned` });
  }
  return problems.length ? { problems } : { lines };
}

/** What the returned lines cost in the order (the default refund of an approved return). */
export function returnValue(order: Pick<OrderRecord, "items" | "total">, lines: readonly OrderLineInput[]): Money {
  let amount = 0;
  for (const l of lines) amount += (order.items.find((i) => i.productId === l.productId)?.unitPrice.amount ?? 0) * l.quantity;
  return { amount, currency: order.total.currency };
}

/** A return is decided once: REQUESTED → APPROVED | REJECTED. */
export function canDecide(r: Pick<ReturnRecord, "status">): boolean {
  return r.status === "REQUESTED";
}

/** The same fields as a saved address of the user service (frozen into the order). */
/** The address an order ships to, as its contract (meridian.order.v1.ShippingAddress) says. */
export type { ShippingAddress };

/** The shipping fields of an address (a saved one has more: id, timestamps), copied. */
export function pickAddress(a: ShippingAddress): ShippingAddress {
  const out: ShippingAddress = {
    recipient: a.recipient,
    phone: a.phone,
    line1: a.line1,
    city: a.city,
    postalCode: a.postalCode,
    country: a.country,
  };
  if (a.line2 !== undefined) out.line2 = a.line2;
  if (a.province !== undefined) out.province = a.province;
  return out;
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

export function toPublicOrder(
  o: OrderRecord,
  payments: PaymentSummary[],
  refunds: RefundSummary[],
  history: HistoryEntry[],
  returns: ReturnRecord[],
) {
  return {
    id: o.id,
    userId: o.userId,
    status: o.status,
    paymentStatus: paymentStatusOf(o),
    refundedTotal: { amount: o.refundedAmount, currency: o.total.currency },
    items: o.items.map((l) => ({ productId: l.productId, sku: l.sku, name: l.name, unitPrice: l.unitPrice, quantity: l.quantity })),
    total: o.total,
    shippingAddress: o.shippingAddress,
    payments: payments.map((p) => ({
      id: p.id,
      provider: p.provider,
      status: p.status,
      amount: p.amount,
      createdAt: iso(p.createdAt),
      updatedAt: iso(p.updatedAt),
    })),
    refunds: refunds.map(toPublicRefund),
    returns: returns.map(toPublicReturn),
    ...(o.shipment ? { shipment: o.shipment } : {}),
    history: history.map((h) => ({ status: h.status, at: iso(h.at) })),
    ...(o.status === "PENDING_PAYMENT" && o.reservationExpiresAt ? { payBefore: iso(o.reservationExpiresAt) } : {}),
    createdAt: iso(o.createdAt),
    updatedAt: iso(o.updatedAt),
  };
}

/**
 * The view of an order as its create committed it (a PENDING_PAYMENT order, no payment,
 * refund or return yet, its one history entry): what a read right after the commit returns,
 * without the read.
 */
export function newOrderView(o: OrderRecord) {
  return toPublicOrder(o, [], [], [{ status: o.status, at: o.createdAt }], []);
}

export function toPublicRefund(r: RefundSummary) {
  return {
    id: r.id,
    paymentId: r.paymentId,
    amount: r.amount,
    status: r.status,
    reason: r.reason,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
  };
}

export function toPublicReturn(r: ReturnRecord) {
  return {
    id: r.id,
    orderId: r.orderId,
    status: r.status,
    items: r.items,
    reason: r.reason,
    ...(r.amount ? { amount: r.amount } : {}),
    ...(r.restock !== null ? { restock: r.restock } : {}),
    ...(r.refundId ? { refundId: r.refundId } : {}),
    ...(r.decisionReason ? { decisionReason: r.decisionReason } : {}),
    createdAt: iso(r.createdAt),
    ...(r.decidedAt ? { decidedAt: iso(r.decidedAt) } : {}),
  };
}

/**
 * Products this order node saw refused as out of stock, each for `ttlMs` after its latest
 * refusal. A create naming a marked product first asks the product service for one plain read
 * (product.checkStock) before it writes anything: in a sold-out flash sale the refusals then
 * skip the key's claim-to-release round of writes, the draft and the hoarding check. A mark
 * only picks that path; the refusal is still the product service's read at that moment, so a
 * stale mark costs one extra call and never refuses a buyer who could have bought. Bounded:
 * past `max` products the oldest mark goes.
 */
export class SoldOutHints {
  private readonly until = new Map<string, number>();

  constructor(
    private readonly ttlMs: number,
    private readonly max = 10_000,
  ) {}

  mark(productIds: Iterable<string>, now: number): void {
    for (const id of productIds) {
      this.until.delete(id); // re-inserted last: Map order is the eviction order
      if (this.until.size >= this.max) this.until.delete(this.until.keys().next().value as string);
      this.until.set(id, now + this.ttlMs);
    }
  }

  clear(productIds: Iterable<string>): void {
    for (const id of productIds) this.until.delete(id);
  }

  anyMarked(productIds: Iterable<string>, now: number): boolean {
    let marked = false;
    for (const id of productIds) {
      const until = this.until.get(id);
      if (until === undefined) continue;
      if (until > now) marked = true;
      else this.until.delete(id);
    }
    return marked;
  }

  get size(): number {
    return this.until.size;
  }
}
