/**
 * The payment platform layer: one interface that the sandbox, Alipay and WeChat Pay
 * implement, plus the error types and the pure checks the payment service needs.
 *
 * Nothing here knows about Moleculer or the database: a platform turns our payment into
 * what the client needs (create), turns a callback into a verified fact
 * (verifyNotification), and asks the platform for the truth (query, refund). What we
 * EXPECTED (the order's amount, that the payment exists) lives in our database, so that
 * check is a separate pure function (`checkBusiness`) the service calls after loading it.
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
}

/** What the client needs to pay: open a URL, show a QR code, or submit a form. */
export type CreatePaymentResult =
  | { kind: "redirect"; url: string }
  | { kind: "qr"; codeUrl: string }
  | { kind: "form"; html: string };

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
   * refund_fee, which is NOT a failed payment). Informational: refunds are settled
   * through the refund flow.
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
  | "invalid_request"
  | "transport"
  | "http_status"
  | "bad_response"
  | "bad_response_signature"
  | "unsupported";

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
  return (contentType ?? "").split(";")[0]!.trim().toLowerCase();
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

/** Validates what every platform needs before it sends anything. */
export function assertCreateInput(input: CreatePaymentInput): void {
  if (!Number.isSafeInteger(input.amountMinor) || input.amountMinor <= 0) {
    throw new PaymentPlatformError("invalid_request", "amountMinor must be a positive integer", false);
  }
  if (!/^[A-Z]{3}$/.test(input.currency)) throw new PaymentPlatformError("invalid_request", "currency must be an ISO 4217 code", false);
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
