/**
 * Payment rules, pure (no I/O): ids, the public shape of a payment and a refund, what a
 * platform's answer means for our records (state transitions, reconciliation), the refund
 * ceiling, which callback headers travel to the action, and the sandbox pay page.
 */
import { randomBytes } from "node:crypto";
import type { CreatePaymentResult, PlatformName, QueryResult, RefundResult } from "./platforms";
import type { Money } from "../../proto/gen/meridian/common/v1/common";

export type PaymentStatus = "PENDING" | "SUCCEEDED" | "FAILED";
export type RefundStatus = "PENDING" | "SUCCEEDED" | "FAILED";

/** The contracts' Money (meridian.common.v1): integer minor units and an ISO 4217 code. */
export type { Money };

export interface PaymentRecord {
  id: string;
  orderId: string;
  userId: string;
  provider: PlatformName;
  status: PaymentStatus;
  amount: Money;
  subject: string;
  payUrl: string | null;
  codeUrl: string | null;
  form: string | null;
  providerTxnId: string | null;
  failureReason: string | null;
  reconcileAfter: number;
  paidAt: number | null;
  /** The trade's deadline at its platform (epoch ms); null for trades created before it was kept. */
  expiresAt: number | null;
  createdAt: number;
  updatedAt: number;
}

export interface PaymentView {
  id: string;
  orderId: string;
  userId: string;
  provider: PlatformName;
  status: PaymentStatus;
  amount: Money;
  payUrl?: string;
  codeUrl?: string;
  form?: string;
  providerTxnId?: string;
  createdAt: string;
  updatedAt: string;
  paidAt?: string;
}

export interface RefundRecord {
  id: string;
  paymentId: string;
  orderId: string;
  status: RefundStatus;
  amount: Money;
  reason: string;
  providerRefundId: string | null;
  failureCode: string | null;
  reconcileAfter: number;
  createdAt: number;
  updatedAt: number;
}

export interface RefundView {
  refundId: string;
  paymentId: string;
  status: RefundStatus;
  amount: Money;
  providerRefundId?: string;
}

/** 32 lower-case hex characters (128 random bits): WeChat Pay's out_trade_no takes at most 32. */
export function newPaymentId(): string {
  return randomBytes(16).toString("hex");
}

export const PAYMENT_ID = /^[0-9a-f]{32}$/;

/** While PENDING: the unique key that makes a re-pay of the same order, provider and amount reuse the payment. */
export function pendingKey(orderId: string, provider: PlatformName, amount: Money): string {
  return `${orderId}|${provider}|${amount.amount}|${amount.currency}`;
}

export const iso = (ms: number) => new Date(ms).toISOString();

export function toPaymentView(p: PaymentRecord): PaymentView {
  return {
    id: p.id,
    orderId: p.orderId,
    userId: p.userId,
    provider: p.provider,
    status: p.status,
    amount: { amount: p.amount.amount, currency: p.amount.currency },
    ...(p.payUrl ? { payUrl: p.payUrl } : {}),
    ...(p.codeUrl ? { codeUrl: p.codeUrl } : {}),
    ...(p.form ? { form: p.form } : {}),
    ...(p.providerTxnId ? { providerTxnId: p.providerTxnId } : {}),
    createdAt: iso(p.createdAt),
    updatedAt: iso(p.updatedAt),
    ...(p.paidAt !== null ? { paidAt: iso(p.paidAt) } : {}),
  };
}

export function toRefundView(r: RefundRecord): RefundView {
  return {
    refundId: r.id,
    paymentId: r.paymentId,
    status: r.status,
    amount: { amount: r.amount.amount, currency: r.amount.currency },
    ...(r.providerRefundId ? { providerRefundId: r.providerRefundId } : {}),
  };
}

/** What the client needs, from the platform's create answer. */
export function payloadColumns(result: CreatePaymentResult): { payUrl: string | null; codeUrl: string | null; form: string | null } {
  switch (result.kind) {
    case "redirect":
      return { payUrl: result.url, codeUrl: null, form: null };
    case "qr":
      return { payUrl: null, codeUrl: result.codeUrl, form: null };
    case "form":
      return { payUrl: null, codeUrl: null, form: result.html };
  }
}

/** The outcome a callback or a reconciliation query settles a payment with. */
export type Outcome =
  { kind: "succeeded"; providerTxnId: string; paidAt: number } | { kind: "failed"; reason: string; providerTxnId?: string };

/**
 * Which stored states an outcome may leave. A success is recorded from PENDING and also
 * from FAILED (a late success: the buyer's money was taken, so it must be on record);
 * a failure only from PENDING. Anything else is a repeat or a stale message: no change.
 */
export function fromStatesFor(outcome: Outcome): PaymentStatus[] {
  return outcome.kind === "succeeded" ? ["PENDING", "FAILED"] : ["PENDING"];
}

/** ISO text from a platform → epoch ms; a missing or unreadable time is "now". */
export function paidAtMs(text: string | undefined, now: number): number {
  if (!text) return now;
  const t = Date.parse(text);
  return Number.isFinite(t) ? t : now;
}

/**
 * Reconciliation: what the platform's answer about a payment left PENDING past the
 * timeout settles it with. Paid at the platform → SUCCEEDED (only with the amount we
 * expect); closed, unknown to it, or still waiting for the buyer after the timeout → FAILED
 * (a success arriving later is still recorded, see fromStatesFor). `undefined`: leave it
 * (an answer we cannot trust; it is asked again later).
 */
export function reconcileOutcome(q: QueryResult, expected: Money, now: number): Outcome | undefined {
  switch (q.status) {
    case "succeeded":
      if (q.amountMinor !== undefined && q.amountMinor !== expected.amount) return undefined;
      if (q.currency !== undefined && q.currency !== expected.currency) return undefined;
      return { kind: "succeeded", providerTxnId: q.providerTxnId ?? "", paidAt: paidAtMs(q.paidAt, now) };
    case "failed":
      return { kind: "failed", reason: "closed", ...(q.providerTxnId ? { providerTxnId: q.providerTxnId } : {}) };
    case "not_found":
      return { kind: "failed", reason: "not_found" };
    case "pending":
      return { kind: "failed", reason: "timeout" };
  }
}

/** A refund's state from the platform's answer. */
export function refundStatusOf(r: RefundResult): RefundStatus {
  return r.status === "succeeded" ? "SUCCEEDED" : r.status === "failed" ? "FAILED" : "PENDING";
}

/** A payment or a refund is of a positive amount (the Money contract allows 0, a free product's price). */
export function movedAmountProblem(amount: Money): string | undefined {
  return amount.amount >= 1 ? undefined : "The amount must be at least 1 (minor units)";
}

/**
 * Why a refund of `amount` cannot be taken from `payment` given the refunds already
 * counted (PENDING and SUCCEEDED ones: money promised back), or undefined when it can.
 */

export function refundProblem(
  payment: { status: PaymentStatus; amount: Money; orderId: string },
  request: { orderId: string; amount: Money },
  committed: number,
): { status: 404 | 409 | 422; message: string } | undefined {
  if (payment.orderId !== request.orderId) return { status: 404, message: "Payment not found" };
  if (payment.status !== "SUCCEEDED") return { status: 409, message: "Only a succeeded payment can be refunded" };
  if (request.amount.currency !== payment.amount.currency)
    return { status: 422, message: "The refund's currency differs from the payment's" };
  if (committed + request.amount.amount > payment.amount.amount)
    return { status: 422, message: `Refunds would exceed the payment: ${payment.amount.amount - committed} left to refund` };
  return undefined;
}

export function sameRefund(r: RefundRecord, request: { paymentId: string; orderId: string; amount: Money }): boolean {
  return (
    r.paymentId === request.paymentId &&
    r.orderId === request.orderId &&
    r.amount.amount === request.amount.amount &&
    r.amount.currency === request.amount.currency
  );
}

// ---- the sandbox pay page ----

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

export function formatMoney(m: Money): string {
  const digits = (() => {
    try {
      return new Intl.NumberFormat("en", { style: "currency", currency: m.currency }).resolvedOptions().maximumFractionDigits ?? 2;
    } catch {
      return 2;
    }
  })();
  const s = String(m.amount).padStart(digits + 1, "0");
  return `${digits ? `${s.slice(0, -digits)}.${s.slice(-digits)}` : s} ${m.currency}`;
}

/** Content-Security-Policy of the pay page: nothing external; the one script and style carry the nonce. */
export function sandboxPageCsp(nonce: string): string {
  return `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'`;
}

/**
 * The sandbox's pay page: the payment, and two buttons that POST the tester's choice
 * (JSON) to the complete route. No external assets; the inline script and style run only
 * through the per-response CSP nonce.
 */
export function sandboxPageHtml(
  p: { id: string; subject: string; amount: Money; status: PaymentStatus },
  token: string,
  nonce: string,
): string {
  const completeUrl = `/api/payments/sandbox/${encodeURIComponent(p.id)}/complete`;
  const data = JSON.stringify({ url: completeUrl, token }).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox payment</title>
<style nonce="${nonce}">body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}
button{font-size:1rem;padding:.6rem 1.2rem;margin-right:.8rem;cursor:pointer}#ok{background:#1a7f37;color:#fff;border:0}
#ko{background:#cf222e;color:#fff;border:0}.muted{color:#666}</style></head>
<body><h1>Meridian sandbox payment</h1>
<p class="muted">A stand-in for a real payment platform: no money moves.</p>
<p><strong>${escapeHtml(p.subject)}</strong><br>Amount: <strong>${escapeHtml(formatMoney(p.amount))}</strong><br>
Payment: <code>${escapeHtml(p.id)}</code> (${escapeHtml(p.status)})</p>
<p><button id="ok" type="button" data-outcome="success">Pay (success)</button>
<button id="ko" type="button" data-outcome="failure">Decline (failure)</button></p>
<p id="result" role="status"></p>
<script nonce="${nonce}">(function(){var c=${data};var out=document.getElementById("result");
function send(outcome){out.textContent="Sending...";fetch(c.url,{method:"POST",headers:{"content-type":"application/json"},body:JSON.stringify({outcome:outcome,token:c.token})})
.then(function(r){out.textContent=r.status===202?"Done: the platform is notifying the shop ("+outcome+").":"Refused (HTTP "+r.status+").";})
.catch(function(){out.textContent="Network error.";});}
document.getElementById("ok").addEventListener("click",function(){send("success");});
document.getElementById("ko").addEventListener("click",function(){send("failure");});})();</script>
</body></html>`;
}
