/**
 * The payment platform layer: one interface that the sandbox, Alipay and WeChat Pay
 * implement, plus the error types and the pure checks the payment service needs.
 *
 * Nothing here knows about Moleculer or the database: a platform turns our payment into
 * what the client needs (create), turns a callback into a verified fact
 * (verifyNotification), asks the platform for the truth (query, refund) and ends a trade
 * nobody paid (close). What we EXPECTED (the order's amount, that the payment exists)
 * lives in our database, so that check is a separate pure function (`checkBusiness`) the
 * service calls after loading it.
 *
 * Trades are bounded twice: every trade is created with an expiry (`expiresAt`, sent as
 * the platform's own time_expire, so the platform refuses to take money after it even if
 * we never call again), and `close` ends one early or confirms it ended. The expiry is
 * enforced by the platform's clock, not ours: a skew between the two shifts it by that much.
 */

export type PlatformName = "sandbox" | "alipay" | "wechatpay";
export const PLATFORM_NAMES: readonly PlatformName[] = ["sandbox", "alipay", "wechatpay"];

export interface CreatePaymentInput {
  /** Our payment id; sent to the platform as out_trade_no, so it comes back in callbacks. */
  paymentId: string;
  orderId: string;
  /** Integer minor units (fen for CNY). Never a float. */
  amountMinor: number;
  /** ISO 4217. Alipay and WeChat Pay (domestic) take CNY only. */
  currency: string;
  /** Shown to the buyer on the platform's page. */
  subject: string;
  /** Where the platform posts its callback (our POST /api/payments/notify/:provider). */
  notifyUrl: string;
  /** Where the buyer's browser goes back to afterwards (page flows only). */
  returnUrl?: string;
  /**
   * Epoch milliseconds after which the trade must not be payable (the order's stock
   * reservation ends then). Sent to the platform rounded DOWN to the second, so the
   * platform's deadline is never later than ours. Must be in the future at create time.
   */
  expiresAt: number;
}

/** What the client needs to pay: open a URL, show a QR code, or submit a form. */
export type CreatePaymentResult = { kind: "redirect"; url: string } | { kind: "qr"; codeUrl: string } | { kind: "form"; html: string };

export type PaymentStatus = "succeeded" | "failed" | "pending";

export interface RawNotification {
  /** As Node gives them (IncomingHttpHeaders); names are matched case-insensitively. */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The exact bytes received: signatures are over the raw body, never a re-serialisation. */
  rawBody: Buffer;
  contentType: string | undefined;
}

/** A callback whose signature (and, for WeChat Pay, encryption) checked out. */
export interface PlatformNotification {
  /** Our payment id (the platform's out_trade_no). */
  paymentId: string;
  /** The platform's transaction id (Alipay trade_no, WeChat transaction_id). */
  providerTxnId: string;
  amountMinor: number;
  currency: string;
  status: PaymentStatus;
  /** ISO 8601 UTC, when the platform says the buyer paid. */
  paidAt?: string;
  /**
   * Total refunded so far, when the callback reports it (Alipay sends refund notices on
   * the same notify_url: a payment fully refunded arrives as TRADE_CLOSED with
   * refund_fee). Informational only: refunds are settled through the refund flow, and a
   * refund notice never makes a payment "succeeded" — TRADE_CLOSED is "failed" with or
   * without refund_fee. That is right in both cases: closed unpaid is a failure, and a
   * success we already recorded is never turned into a failure by the service.
   */
  refundedMinor?: number;
}

export interface QueryResult {
  /** not_found: the platform has no such trade (the buyer never opened the pay page). */
  status: PaymentStatus | "not_found";
  paymentId: string;
  providerTxnId?: string;
  amountMinor?: number;
  currency?: string;
  paidAt?: string;
}

export interface RefundInput {
  paymentId: string;
  /** Our refund id: the platform's out_request_no / out_refund_no, so a retry is idempotent. */
  refundId: string;
  amountMinor: number;
  /** What the payment was for in total (WeChat Pay requires it). */
  totalMinor: number;
  currency?: string;
  reason: string;
}

export interface RefundResult {
  /** pending: accepted, money not moved yet (query again later). failed: refused for good. */
  status: "succeeded" | "pending" | "failed";
  /** The platform's refund id, where it has one (Alipay keys refunds by our out_request_no). */
  providerRefundId?: string;
  /** The platform's short failure code when status is failed (never secret). */
  failureCode?: string;
}

/**
 * What closing a trade achieved. Every variant is a fact the platform stated (signed):
 * - closed: the trade can no longer be paid (closed now, or already closed or expired).
 * - paid: the buyer paid before the close; the caller must record the success (query()
 *   gives its details) — the money is there and closing did not undo it.
 * - not_found: the platform has no such trade yet (Alipay page pay creates it only when
 *   the buyer opens the page). Nothing was closed: a buyer holding the pay URL can still
 *   create and pay the trade until its expiresAt, so the caller must not treat the
 *   payment as dead before then (query it after expiresAt).
 */
export type CloseResult = { status: "closed" } | { status: "paid" } | { status: "not_found" };

/** An HTTP answer to the platform, in the platform's own format. */
export interface PlatformHttpResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface PaymentPlatform {
  readonly name: PlatformName;
  create(input: CreatePaymentInput): Promise<CreatePaymentResult>;
  /** Throws PaymentVerificationError (callers answer 400 with nackResponse()). */
  verifyNotification(raw: RawNotification): Promise<PlatformNotification>;
  /** The reply that tells the platform "received, stop re-sending". */
  ackResponse(): PlatformHttpResponse;
  /** The reply that tells the platform "rejected" (400 for a verification error, else 500). */
  nackResponse(err?: unknown): PlatformHttpResponse;
  /** Reconciliation: the platform's view of the payment. Throws PaymentPlatformError. */
  query(paymentId: string): Promise<QueryResult>;
  /** Throws PaymentPlatformError when the answer is unknown (retry with the same refundId). */
  refund(input: RefundInput): Promise<RefundResult>;
  /**
   * Ends an unpaid trade so that it can no longer be paid. Idempotent: closing a closed
   * trade answers "closed" again. Throws PaymentPlatformError (retryable) when the
   * outcome is unknown (transport error, 5xx, an answer we cannot verify, the buyer
   * paying at this moment): retry, and until then treat the trade as possibly paid.
   */
  close(paymentId: string): Promise<CloseResult>;
}

/** Stable short codes: logged and counted, safe to show (they carry no secret and no input). */
export type VerificationReason =
  | "malformed"
  | "content_type"
  | "missing_header"
  | "bad_signature"
  | "sign_type"
  | "timestamp"
  | "merchant"
  | "app"
  | "unknown_serial"
  | "decrypt"
  | "currency"
  | "amount"
  | "unknown_order";

/** A callback we refuse. The caller answers 400 (nackResponse) and changes nothing. */
export class PaymentVerificationError extends Error {
  constructor(public readonly reason: VerificationReason) {
    // The message is the code alone: a forged request must not learn more than "no".
    super(`payment notification rejected: ${reason}`);
    this.name = "PaymentVerificationError";
  }
}

export type PlatformErrorReason =
  "invalid_request" | "transport" | "http_status" | "bad_response" | "bad_response_signature" | "unsupported";

/**
 * An outbound call whose outcome is unknown or refused before sending. `retryable`
 * says whether the same call may succeed later (network, 5xx, unverifiable answer).
 */
export class PaymentPlatformError extends Error {
  constructor(
    public readonly reason: PlatformErrorReason,
    message: string,
    public readonly retryable: boolean,
    public readonly platformCode?: string,
  ) {
    super(message);
    this.name = "PaymentPlatformError";
  }
}

export interface ExpectedPayment {
  paymentId: string;
  amountMinor: number;
  currency: string;
}

/**
 * The business checks that need our stored expectation. `expected` is what we loaded
 * for notification.paymentId (undefined when we have no such payment). A signed callback
 * for an amount other than the order's is not a payment of that order.
 */
export function checkBusiness(notification: PlatformNotification, expected: ExpectedPayment | undefined | null): void {
  if (!expected || expected.paymentId !== notification.paymentId) throw new PaymentVerificationError("unknown_order");
  if (notification.currency !== expected.currency) throw new PaymentVerificationError("currency");
  if (notification.amountMinor !== expected.amountMinor) throw new PaymentVerificationError("amount");
}

// --- small shared helpers (used by the platforms; exported for the tests) ---

/** One header, case-insensitively; a repeated header is refused (which one would we trust?). */
export function headerOf(headers: RawNotification["headers"], name: string): string | undefined {
  const wanted = name.toLowerCase();
  let found: string | undefined;
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== wanted || value === undefined) continue;
    if (Array.isArray(value) || found !== undefined) throw new PaymentVerificationError("malformed");
    found = value;
  }
  return found;
}

/** The media type without parameters, lower-cased ("application/json; charset=utf-8" → "application/json"). */
export function mediaType(contentType: string | undefined): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

const YUAN = /^(0|[1-9]\d{0,12})\.(\d{2})$/;

/**
 * "10.00" → 1000. Exactly two decimals, as Alipay documents amounts; anything else
 * ("1234.5", "1e3", "-1.00", " 1.00") is refused rather than guessed. String arithmetic
 * only: a float round-trip can turn 0.29 into 28.999… fen.
 */
export function yuanToMinor(text: string): number {
  const m = YUAN.exec(text);
  if (!m) throw new RangeError("amount must be a decimal string with exactly two decimals");
  return Number(m[1]) * 100 + Number(m[2]);
}

/** 1000 → "10.00"; refuses non-integers and negatives. */
export function minorToYuan(minor: number): string {
  if (!Number.isSafeInteger(minor) || minor < 0) throw new RangeError("amount must be a non-negative integer of minor units");
  const s = String(minor).padStart(3, "0");
  return `${s.slice(0, -2)}.${s.slice(-2)}`;
}

/**
 * The latest expiresAt we accept: both platforms' formats need a four-digit year (and
 * Beijing time runs 8 hours ahead of UTC). Anything later is a unit mistake
 * (microseconds for milliseconds), not a real deadline.
 */
const MAX_EXPIRES_AT = Date.UTC(9999, 11, 31) - 8 * 3600_000;

/**
 * Validates what every platform needs before it sends anything. `now` (epoch ms) is the
 * platform's clock: a trade that would expire before it is created is refused, since the
 * platform would either reject it or, worse, ignore the deadline.
 */
export function assertCreateInput(input: CreatePaymentInput, now: number): void {
  if (!Number.isSafeInteger(input.amountMinor) || input.amountMinor <= 0) {
    throw new PaymentPlatformError("invalid_request", "amountMinor must be a positive integer", false);
  }
  if (!/^[A-Z]{3}$/.test(input.currency)) throw new PaymentPlatformError("invalid_request", "currency must be an ISO 4217 code", false);
  if (!Number.isSafeInteger(input.expiresAt) || input.expiresAt > MAX_EXPIRES_AT) {
    throw new PaymentPlatformError("invalid_request", "expiresAt must be an integer of epoch milliseconds", false);
  }
  if (input.expiresAt <= now) throw new PaymentPlatformError("invalid_request", "expiresAt must be in the future", false);
}

const BEIJING_OFFSET_MS = 8 * 3600_000;

/**
 * The wall-clock time in Beijing (UTC+8, no daylight saving) as "yyyy-MM-ddTHH:mm:ss",
 * milliseconds dropped (rounded down, so a deadline never moves later). Both domestic
 * platforms read their times in Beijing time; each adds its own separator or offset.
 */
export function beijingWallClock(ms: number): string {
  return new Date(ms + BEIJING_OFFSET_MS).toISOString().slice(0, 19);
}

export function assertRefundInput(input: RefundInput): void {
  if (!Number.isSafeInteger(input.amountMinor) || input.amountMinor <= 0) {
    throw new PaymentPlatformError("invalid_request", "refund amountMinor must be a positive integer", false);
  }
  if (!Number.isSafeInteger(input.totalMinor) || input.totalMinor < input.amountMinor) {
    throw new PaymentPlatformError("invalid_request", "refund totalMinor must be an integer not below the refund amount", false);
  }
}

/** "SUCCESS" etc. and our verification codes are safe to echo; nothing else from a request is. */
export function nackStatus(err: unknown): number {
  return err instanceof PaymentVerificationError ? 400 : 500;
}
