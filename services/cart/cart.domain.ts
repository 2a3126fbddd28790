/**
 * Cart rules, pure (no I/O): quantity and line bounds, one currency per cart, line totals
 * and the subtotal in integer minor units, and the public shape of a cart built from the
 * stored lines plus the product service's current prices.
 */
import type { Money } from "../../proto/gen/meridian/common/v1/common";

/** Most units of one product in a cart line. */
export const MAX_LINE_QUANTITY = 99;
/** Most lines (distinct products) in one cart; also the order service's reservation limit. */
export const MAX_LINES = 100;

/** The contracts' Money (meridian.common.v1): integer minor units and an ISO 4217 code. */
export type { Money };

/** A line as stored: no price, ever (prices are read from the product service at read time). */
export interface StoredLine {
  productId: string;
  quantity: number;
  addedAt: number;
}

/** What the cart needs of a product (the product service's `product.get` answer). */
export interface ProductInfo {
  id: string;
  name: string;
  price: Money;
}

export interface CartItem {
  productId: string;
  name: string;
  unitPrice: Money;
  quantity: number;
  lineTotal: Money;
}

export interface Cart {
  items: CartItem[];
  /** `currency` is null for an empty cart: it has none yet. */
  subtotal: { amount: number; currency: string | null };
}

export interface Problem {
  field: string;
  message: string;
  [k: string]: unknown;
}

const isQuantity = (q: unknown, min: number): q is number =>
  Number.isSafeInteger(q) && (q as number) >= min && (q as number) <= MAX_LINE_QUANTITY;

/**
 * May `quantity` units of a product priced in `productCurrency` be added to a cart?
 * `existing` is the line's current quantity (undefined: a new line), `lineCount` the cart's
 * lines, `cartCurrency` the currency of the cart's lines (meaningful only when it has lines).
 * The service checks this under the cart's lock; the database's CHECK backs the quantity up.
 */
export function addProblems(input: {
  quantity: number;
  existing: number | undefined;
  lineCount: number;
  cartCurrency: string | null;
  productCurrency: string;
}): Problem[] {
  const { quantity, existing, lineCount, cartCurrency, productCurrency } = input;
  if (!isQuantity(quantity, 1)) return [{ field: "quantity", message: `must be an integer from 1 to ${MAX_LINE_QUANTITY}` }];
  const problems: Problem[] = [];
  if (existing !== undefined && existing + quantity > MAX_LINE_QUANTITY)
    problems.push({
      field: "quantity",
      message: `a line holds at most ${MAX_LINE_QUANTITY} units; the cart already has ${existing}`,
      inCart: existing,
      max: MAX_LINE_QUANTITY,
    });
  if (existing === undefined && lineCount >= MAX_LINES)
    problems.push({ field: "productId", message: `a cart holds at most ${MAX_LINES} different products`, max: MAX_LINES });
  if (lineCount > 0 && cartCurrency !== null && cartCurrency !== productCurrency)
    problems.push({
      field: "productId",
      message: `the cart is priced in ${cartCurrency}; this product is priced in ${productCurrency}`,
      cartCurrency,
      productCurrency,
    });
  return problems;
}

/** A PATCH quantity: 0 (remove) to MAX_LINE_QUANTITY. */
export function setQuantityProblems(quantity: unknown): Problem[] {
  return isQuantity(quantity, 0) ? [] : [{ field: "quantity", message: `must be an integer from 0 to ${MAX_LINE_QUANTITY}` }];
}

/** unit × quantity, refusing anything that is not an exact integer. */
export function lineTotal(unit: Money, quantity: number): Money {
  const amount = unit.amount * quantity;
  if (!Number.isSafeInteger(amount)) throw new RangeError("line total is not a safe integer");
  return { amount, currency: unit.currency };
}

/**
 * The public cart from the stored lines (in their stored order) and the products as the
 * product service sees them now (`null`: deleted or unknown). A line is dropped, and listed
 * in `drop` for the caller to delete from storage, when its product is gone, or when its
 * price moved to a currency other than the cart's (an admin's repricing): the cart shows
 * one subtotal in one currency, and the order must not carry a line the customer was not
 * shown.
 */
export function buildCart(
  lines: StoredLine[],
  products: Map<string, ProductInfo | null>,
  cartCurrency: string | null,
): { cart: Cart; drop: string[] } {
  const items: CartItem[] = [];
  const drop: string[] = [];
  let currency: string | null = null;
  let amount = 0;
  for (const line of lines) {
    const p = products.get(line.productId);
    if (!p || (cartCurrency !== null && p.price.currency !== cartCurrency) || (currency !== null && p.price.currency !== currency)) {
      drop.push(line.productId);
      continue;
    }
    currency = p.price.currency;
    const total = lineTotal(p.price, line.quantity);
    amount += total.amount;
    if (!Number.isSafeInteger(amount)) throw new RangeError("subtotal is not a safe integer");
    items.push({
      productId: line.productId,
      name: p.name,
      unitPrice: { amount: p.price.amount, currency: p.price.currency },
      quantity: line.quantity,
      lineTotal: total,
    });
  }
  return { cart: { items, subtotal: { amount, currency } }, drop };
}

export interface OrderLine {
  productId: string;
  quantity: number;
}

/**
 * The lines of an `order.paid` payload, checked and merged per product (sorted by
 * productId: a fixed order of row locks). Throws on a payload that is not one: the event
 * is then retried and dead-lettered, where someone sees it, instead of being half applied.
 */
export function paidLines(payload: unknown): { userId: string; lines: OrderLine[] } {
  const p = (payload ?? {}) as { userId?: unknown; lines?: unknown };
  if (typeof p.userId !== "string" || !p.userId) throw new Error("order.paid: userId missing");
  if (!Array.isArray(p.lines)) throw new Error("order.paid: lines missing");
  const merged = new Map<string, number>();
  for (const l of p.lines as { productId?: unknown; quantity?: unknown }[]) {
    if (!l || typeof l.productId !== "string" || !l.productId || !Number.isSafeInteger(l.quantity) || (l.quantity as number) < 1)
      throw new Error("order.paid: a line is not {productId, quantity ≥ 1}");
    merged.set(l.productId, (merged.get(l.productId) ?? 0) + (l.quantity as number));
  }
  return {
    userId: p.userId,
    lines: [...merged.entries()]
      .map(([productId, quantity]) => ({ productId, quantity }))
      .sort((a, b) => (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0)),
  };
}
