/**
 * Notification rules, pure (no I/O): which business event becomes which notification type,
 * the templates (in-app title/body and the e-mail's subject, text and HTML), money
 * formatting from integer minor units, the list query, and the e-mail retry schedule.
 */
import { Events } from "../../proto/gen/contracts";
import type { NotificationData } from "../../proto/gen/meridian/notification/v1/notification";
import type { Money } from "../../proto/gen/meridian/common/v1/common";

export const NOTIFICATION_TYPES = [
  "order.created",
  "payment.succeeded",
  "payment.failed",
  "order.shipped",
  "order.delivered",
  "order.cancelled",
  "refund.succeeded",
  "payment.refunded",
  "return.requested",
  "return.approved",
  "return.rejected",
] as const;
export type NotificationType = (typeof NOTIFICATION_TYPES)[number];

/** Business event (published by the order service) → notification type. */
export const EVENT_TYPES: Record<string, NotificationType> = {
  [Events.OrderCreated]: "order.created",
  [Events.OrderPaid]: "payment.succeeded",
  [Events.OrderPaymentFailed]: "payment.failed",
  [Events.OrderShipped]: "order.shipped",
  [Events.OrderDelivered]: "order.delivered",
  [Events.OrderCancelled]: "order.cancelled",
  [Events.OrderRefunded]: "refund.succeeded",
  // A charge the order did not keep (a second payment, or one after cancellation), returned.
  [Events.OrderPaymentRefunded]: "payment.refunded",
  // Return requests after delivery: each step is told (API.md v1.1).
  [Events.ReturnRequested]: "return.requested",
  [Events.ReturnApproved]: "return.approved",
  [Events.ReturnRejected]: "return.rejected",
};

/** The contracts' Money (meridian.common.v1): integer minor units and an ISO 4217 code. */
export type { Money };

export const MAX_PAGE_SIZE = 100;
export const DEFAULT_PAGE_SIZE = 20;

// ---- money ----

/**
 * One Intl.NumberFormat per (locale, currency), built on first use: building one costs ~0.5 ms
 * (ICU data), formatting with it microseconds. Bounded, since the currency comes from events:
 * past 256 pairs the cache starts over. An unknown or malformed code is cached as undefined.
 */
const formats = new Map<string, { fmt: Intl.NumberFormat; digits: number } | undefined>();
function currencyFormat(locale: string, currency: string): { fmt: Intl.NumberFormat; digits: number } | undefined {
  const key = `${locale}\u0000${currency}`;
  if (formats.has(key)) return formats.get(key);
  let found: { fmt: Intl.NumberFormat; digits: number } | undefined;
  try {
    const fmt = new Intl.NumberFormat(locale, { style: "currency", currency });
    found = { fmt, digits: fmt.resolvedOptions().maximumFractionDigits ?? 2 };
  } catch {
    found = undefined;
  }
  if (formats.size >= 256) formats.clear();
  formats.set(key, found);
  return found;
}

/**
 * `{amount: 123456, currency: "CNY"}` → `CN¥1,234.56`. The amount is an integer number of
 * minor units; the currency's minor-unit digits come from Intl (JPY 0, CNY 2, KWD 3) and the
 * decimal is built as a string, so no float ever rounds a price. An unknown or malformed
 * code falls back to `1234.56 XYZ`-style plain text.
 */
export function formatMoney(m: Money, locale = "en-US"): string {
  const amount = BigInt(Math.trunc(Number(m.amount) || 0));
  const negative = amount < 0n;
  const abs = negative ? -amount : amount;
  const { fmt, digits } = currencyFormat(locale, m.currency) ?? { fmt: undefined, digits: 2 };
  const s = abs.toString().padStart(digits + 1, "0");
  const decimal = `${negative ? "-" : ""}${digits ? `${s.slice(0, -digits)}.${s.slice(-digits)}` : s}`;
  // Intl formats a decimal string exactly (Intl.NumberFormat v3, Node ≥ 19). Its no-break
  // spaces become plain ones, so the text is the same whatever ICU version formats it.
  if (fmt) return fmt.format(decimal as unknown as number).replace(/[\u00a0\u202f]/g, " ");
  return `${decimal} ${String(m.currency).slice(0, 8)}`;
}

// ---- templates ----

/** What an in-app notification keeps: its type, the text, and the data a client may use. */
export interface NotificationContent {
  type: NotificationType;
  title: string;
  body: string;
  data: NotificationData;
}

export interface EmailContent {
  subject: string;
  text: string;
  html: string;
}

export class BadEventError extends Error {}

/** A payload field as bounded text: a string, or a number or boolean printed; anything else is "". */
const str = (v: unknown, max = 200): string =>
  typeof v === "string" ? v.slice(0, max) : typeof v === "number" || typeof v === "boolean" ? String(v).slice(0, max) : "";
/** An element of a payload's list, whose fields are read one by one (and checked by `str`, `Number`). */
type Item = { [field: string]: unknown } | null | undefined;
const money = (v: unknown): Money | undefined => {
  const m = v as Money | undefined;
  return m && typeof m === "object" && Number.isInteger(m.amount) && typeof m.currency === "string"
    ? { amount: m.amount, currency: m.currency }
    : undefined;
};
const shortId = (id: string) => (id.length > 12 ? id.slice(0, 8) : id);
const CANCEL_REASONS: Record<string, string> = {
  user: "you cancelled it",
  expired: "it was not paid in time and its reservation expired",
  admin: "it was cancelled by our staff",
};

/** The userId an event is for (every payload has one); throws on a malformed payload. */
export function recipientOf(payload: unknown): string {
  const p = payload as { userId?: unknown; orderId?: unknown } | null;
  if (!p || typeof p !== "object" || typeof p.userId !== "string" || !p.userId || typeof p.orderId !== "string" || !p.orderId)
    throw new BadEventError("event payload without userId/orderId");
  return p.userId;
}

/**
 * The in-app notification for a business event (`order.paid` → `payment.succeeded`, …).
 * `data` keeps the fields a client needs (ids, amounts, tracking), never the whole payload.
 */
export function notificationFor(event: string, payload: Record<string, unknown>): NotificationContent {
  const type = EVENT_TYPES[event];
  if (!type) throw new BadEventError(`no notification for event '${event}'`);
  recipientOf(payload);
  const orderId = str(payload.orderId, 64);
  const ref = shortId(orderId);
  switch (type) {
    case "order.created": {
      const total = money(payload.total);
      const items = Array.isArray(payload.items)
        ? (payload.items as Item[]).slice(0, 50).map((i) => ({ name: str(i?.name), quantity: Number(i?.quantity) || 0 }))
        : [];
      const count = items.reduce((n: number, i: { quantity: number }) => n + i.quantity, 0);
      return {
        type,
        title: `Order ${ref} placed`,
        body: `We received your order of ${count} item${count === 1 ? "" : "s"}${total ? ` for ${formatMoney(total)}` : ""}. It is reserved for you until you pay.`,
        data: { orderId, total: total ?? null, items },
      };
    }
    case "payment.succeeded": {
      const total = money(payload.total);
      return {
        type,
        title: `Payment received for order ${ref}`,
        body: `Your payment${total ? ` of ${formatMoney(total)}` : ""} was received. We are preparing your order.`,
        data: { orderId, total: total ?? null, paymentId: str(payload.paymentId, 64), provider: str(payload.provider, 32) },
      };
    }
    case "payment.failed":
      return {
        type,
        title: `Payment failed for order ${ref}`,
        body: `Your payment did not go through${payload.reason ? ` (${str(payload.reason)})` : ""}. You can try again while the order is reserved.`,
        data: { orderId, paymentId: str(payload.paymentId, 64), provider: str(payload.provider, 32), reason: str(payload.reason) },
      };
    case "order.shipped":
      return {
        type,
        title: `Order ${ref} shipped`,
        body: `Your order is on its way with ${str(payload.carrier, 100)}, tracking number ${str(payload.trackingNumber, 100)}.`,
        data: { orderId, carrier: str(payload.carrier, 100), trackingNumber: str(payload.trackingNumber, 100) },
      };
    case "order.delivered":
      return { type, title: `Order ${ref} delivered`, body: "Your order was delivered. Enjoy!", data: { orderId } };
    case "order.cancelled": {
      const reason = str(payload.reason, 32);
      return {
        type,
        title: `Order ${ref} cancelled`,
        body: `Your order was cancelled: ${CANCEL_REASONS[reason] ?? "it was cancelled"}.`,
        data: { orderId, reason },
      };
    }
    case "refund.succeeded": {
      const amount = money(payload.amount);
      const refundedTotal = money(payload.refundedTotal);
      return {
        type,
        title: `Refund for order ${ref}`,
        body: `A refund${amount ? ` of ${formatMoney(amount)}` : ""} was made to your original payment method.`,
        data: {
          orderId,
          refundId: str(payload.refundId, 64),
          amount: amount ?? null,
          refundedTotal: refundedTotal ?? null,
          status: str(payload.status, 32),
        },
      };
    }
    case "payment.refunded": {
      const amount = money(payload.amount);
      return {
        type,
        title: `Payment returned for order ${ref}`,
        body: `A payment${amount ? ` of ${formatMoney(amount)}` : ""} for this order was not needed and went back to your original payment method${payload.reason ? ` (${str(payload.reason)})` : ""}.`,
        data: {
          orderId,
          paymentId: str(payload.paymentId, 64),
          refundId: str(payload.refundId, 64),
          amount: amount ?? null,
          reason: str(payload.reason),
        },
      };
    }
    case "return.requested": {
      const items = lines(payload.items);
      const count = items.reduce((n, i) => n + i.quantity, 0);
      return {
        type,
        title: `Return request for order ${ref} received`,
        body: `We received your request to return ${count} item${count === 1 ? "" : "s"}. We will tell you when it is decided.`,
        data: { orderId, returnId: str(payload.returnId, 64), items, reason: str(payload.reason, 500) },
      };
    }
    case "return.approved": {
      const amount = money(payload.amount);
      return {
        type,
        title: `Return for order ${ref} approved`,
        body: `Your return was approved${amount ? `: ${formatMoney(amount)} will be refunded to your original payment method` : ""}.`,
        data: {
          orderId,
          returnId: str(payload.returnId, 64),
          refundId: str(payload.refundId, 64),
          amount: amount ?? null,
          items: lines(payload.lines),
        },
      };
    }
    case "return.rejected":
      return {
        type,
        title: `Return for order ${ref} not accepted`,
        body: `Your return request was not accepted${payload.reason ? `: ${str(payload.reason, 500)}` : ""}.`,
        data: { orderId, returnId: str(payload.returnId, 64), reason: str(payload.reason, 500) },
      };
  }
}

/** Return lines from an event: product ids and quantities only, bounded. */
function lines(v: unknown): { productId: string; quantity: number }[] {
  return Array.isArray(v)
    ? (v as Item[]).slice(0, 50).map((l) => ({ productId: str(l?.productId, 64), quantity: Number(l?.quantity) || 0 }))
    : [];
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/**
 * The e-mail for a notification, addressed to `name`. Every value that came from an event
 * (item names, carrier, reasons) is escaped in the HTML part.
 */
export function emailFor(
  n: Pick<NotificationContent, "type" | "title" | "body" | "data">,
  recipient: { name?: string | null },
): EmailContent {
  const greeting = recipient.name ? `Hello ${str(recipient.name, 100)},` : "Hello,";
  const lines: string[] = [];
  const items = n.type === "order.created" && Array.isArray(n.data.items) ? (n.data.items as { name: string; quantity: number }[]) : [];
  for (const i of items) lines.push(`${i.quantity} × ${i.name}`);
  const orderId = str(n.data.orderId, 64);
  const footer = `Order reference: ${orderId}`;
  const text = [greeting, "", n.body, ...(lines.length ? ["", ...lines.map((l) => `  - ${l}`)] : []), "", footer, "", "— Meridian"].join(
    "\n",
  );
  const html = [
    "<!doctype html>",
    `<html><body style="font-family:sans-serif">`,
    `<p>${escapeHtml(greeting)}</p>`,
    `<p>${escapeHtml(n.body)}</p>`,
    ...(lines.length ? [`<ul>${lines.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>`] : []),
    `<p style="color:#666">${escapeHtml(footer)}</p>`,
    "<p>— Meridian</p>",
    "</body></html>",
  ].join("\n");
  return { subject: `Meridian: ${n.title}`, text, html };
}

/** A stable Message-ID per notification, so a receiver can drop a resent copy. */
export function messageIdFor(notificationId: string, from: string): string {
  const domain = /@([^\s@<>]+)>?\s*$/.exec(from)?.[1] ?? "localhost";
  return `<notification-${notificationId}@${domain}>`;
}

// ---- e-mail retries ----

/** Longest wait between two attempts. */
export const MAX_RETRY_DELAY_MS = 3_600_000;

/**
 * Wait before the attempt after `attempts` failed ones: base, 2×base, 4×base, … capped at an
 * hour, plus up to 10 % jitter (`random` in [0, 1)) so replicas do not retry in step after
 * an SMTP outage.
 */
export function retryDelayMs(attempts: number, baseMs: number, random = 0): number {
  const exp = Math.min(MAX_RETRY_DELAY_MS, baseMs * 2 ** Math.max(0, Math.min(30, attempts - 1)));
  return Math.round(exp * (1 + 0.1 * Math.min(Math.max(random, 0), 1)));
}

/** The whole schedule (delays after failures 1 … maxAttempts-1), for logs and tests. */
export function retrySchedule(maxAttempts: number, baseMs: number): number[] {
  return Array.from({ length: Math.max(0, maxAttempts - 1) }, (_, i) => retryDelayMs(i + 1, baseMs));
}

// ---- list query ----

export interface ListQuery {
  unread: boolean;
  page: number;
  pageSize: number;
}

export function parseListQuery(p: { unread?: boolean; page?: number; pageSize?: number }): ListQuery {
  return { unread: p.unread === true, page: p.page ?? 1, pageSize: Math.min(p.pageSize ?? DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) };
}

export interface NotificationRecord {
  id: string;
  userId: string;
  type: NotificationType;
  title: string;
  body: string;
  data: NotificationData;
  readAt: number | null;
  createdAt: number;
}

export interface PublicNotification {
  id: string;
  type: NotificationType;
  title: string;
  body: string;
  read: boolean;
  createdAt: string;
  data: NotificationData;
}

export function toPublicNotification(n: NotificationRecord): PublicNotification {
  return {
    id: n.id,
    type: n.type,
    title: n.title,
    body: n.body,
    read: n.readAt !== null,
    createdAt: new Date(n.createdAt).toISOString(),
    data: n.data,
  };
}
