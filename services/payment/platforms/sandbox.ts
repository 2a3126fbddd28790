/**
 * The sandbox: our built-in stand-in for a third-party payment platform, so embedded
 * mode works end to end with nothing to sign up for. It behaves like a real one on
 * purpose — its own RSA key, signed callbacks over HTTP with a timestamp window, retries
 * until the merchant answers "success" — so the notify route, the verification and the
 * exactly-once handling are exercised the same way as with Alipay or WeChat Pay.
 *
 * Trades and refunds follow the real platforms' rules: a closed trade can no longer be
 * paid (query answers "failed", a refund is TRADE_NOT_PAID), and refunds of one payment
 * never exceed its amount in total (REFUND_AMOUNT_EXCEEDED). The trade's expiry is
 * enforced by the payment service, which owns the pay page; the payUrl carries none.
 *
 * Wire format of a callback (POST notifyUrl, application/json):
 *   X-Sandbox-Timestamp: unix seconds      X-Sandbox-Nonce: random hex
 *   X-Sandbox-Key-Id: keyId(public key)    X-Sandbox-Signature: base64 RSA-SHA256 over
 *   `MERIDIAN-SANDBOX-V1\n${timestamp}\n${nonce}\n${body}\n`
 */
import { createHmac, randomBytes, sign as rsaSign, timingSafeEqual, verify as rsaVerify, type KeyObject } from "node:crypto";
import { z } from "zod";
import { keyId } from "./keys";
import {
  PaymentPlatformError,
  PaymentVerificationError,
  assertCreateInput,
  assertRefundInput,
  headerOf,
  mediaType,
  nackStatus,
  type CloseResult,
  type CreatePaymentInput,
  type CreatePaymentResult,
  type PaymentPlatform,
  type PaymentStatus,
  type PlatformHttpResponse,
  type PlatformNotification,
  type QueryResult,
  type RawNotification,
  type RefundInput,
  type RefundResult,
} from "./platform";

export const SANDBOX_SIGNATURE_PREFIX = "MERIDIAN-SANDBOX-V1";
export const SANDBOX_MAX_SKEW_S = 300;

export interface SandboxNotificationPayload {
  /** Unique per callback event (logs; a repeat of the same event keeps it). */
  notifyId: string;
  paymentId: string;
  providerTxnId: string;
  amountMinor: number;
  currency: string;
  status: "succeeded" | "failed";
  paidAt?: string;
}

const PayloadSchema = z.object({
  notifyId: z.string().min(1).max(100),
  paymentId: z.string().min(1).max(200),
  providerTxnId: z.string().min(1).max(200),
  amountMinor: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  currency: z.string().regex(/^[A-Z]{3}$/),
  status: z.enum(["succeeded", "failed"]),
  paidAt: z.iso.datetime().optional(),
});

export interface SignedSandboxNotification {
  headers: Record<string, string>;
  body: string;
}

function canonical(timestamp: string, nonce: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${SANDBOX_SIGNATURE_PREFIX}\n${timestamp}\n${nonce}\n`, "utf8"), body, Buffer.from("\n")]);
}

/** Signs a callback as the sandbox platform does; `now` in milliseconds. */
export function signSandboxNotification(
  payload: SandboxNotificationPayload,
  privateKey: KeyObject,
  now: number,
  nonce: string = randomBytes(16).toString("hex"),
): SignedSandboxNotification {
  const body = JSON.stringify(payload);
  const timestamp = String(Math.floor(now / 1000));
  const signature = rsaSign("sha256", canonical(timestamp, nonce, Buffer.from(body, "utf8")), privateKey).toString("base64");
  return {
    headers: {
      "content-type": "application/json",
      "x-sandbox-timestamp": timestamp,
      "x-sandbox-nonce": nonce,
      "x-sandbox-key-id": keyId(privateKey),
      "x-sandbox-signature": signature,
    },
    body,
  };
}

/** Verifies a sandbox callback: key id, ±5 minute window, signature, then the payload's shape. */
export function verifySandboxNotification(raw: RawNotification, publicKey: KeyObject, nowMs: number): SandboxNotificationPayload {
  if (mediaType(raw.contentType) !== "application/json") throw new PaymentVerificationError("content_type");
  const timestamp = headerOf(raw.headers, "x-sandbox-timestamp");
  const nonce = headerOf(raw.headers, "x-sandbox-nonce");
  const signature = headerOf(raw.headers, "x-sandbox-signature");
  const kid = headerOf(raw.headers, "x-sandbox-key-id");
  if (!timestamp || !nonce || !signature || !kid) throw new PaymentVerificationError("missing_header");
  if (kid !== keyId(publicKey)) throw new PaymentVerificationError("unknown_serial");
  if (!/^\d{1,12}$/.test(timestamp) || Math.abs(nowMs / 1000 - Number(timestamp)) > SANDBOX_MAX_SKEW_S)
    throw new PaymentVerificationError("timestamp");
  let ok: boolean;
  try {
    ok = rsaVerify("sha256", canonical(timestamp, nonce, raw.rawBody), publicKey, Buffer.from(signature, "base64"));
  } catch {
    ok = false;
  }
  if (!ok) throw new PaymentVerificationError("bad_signature");
  let value: unknown;
  try {
    value = JSON.parse(raw.rawBody.toString("utf8"));
  } catch {
    throw new PaymentVerificationError("malformed");
  }
  const parsed = PayloadSchema.safeParse(value);
  if (!parsed.success) throw new PaymentVerificationError("malformed");
  const p = parsed.data;
  return {
    notifyId: p.notifyId,
    paymentId: p.paymentId,
    providerTxnId: p.providerTxnId,
    amountMinor: p.amountMinor,
    currency: p.currency,
    status: p.status,
    ...(p.paidAt ? { paidAt: p.paidAt } : {}),
  };
}

/** The payload for a tester's choice on the pay page (fresh ids; `now` in milliseconds). */
export function sandboxOutcomePayload(
  payment: { paymentId: string; amountMinor: number; currency: string },
  outcome: "success" | "failure",
  now: number,
): SandboxNotificationPayload {
  return {
    notifyId: `sbn_${randomBytes(12).toString("hex")}`,
    paymentId: payment.paymentId,
    providerTxnId: `sbx_${randomBytes(12).toString("hex")}`,
    amountMinor: payment.amountMinor,
    currency: payment.currency,
    status: outcome === "success" ? "succeeded" : "failed",
    ...(outcome === "success" ? { paidAt: new Date(now).toISOString() } : {}),
  };
}

/** The pay-token secret per key object, derived once (exporting the key cost ~0.2 ms a token). */
const payTokenSecrets = new WeakMap<KeyObject, Buffer>();

/**
 * The pay URL is a capability ("anyone holding the payUrl" may complete it): the token
 * makes it unguessable even when payment ids are not. HMAC keyed by a hash of the
 * sandbox private key, so every node holding the key computes the same token.
 */
export function sandboxPayToken(paymentId: string, privateKey: KeyObject): string {
  let secret = payTokenSecrets.get(privateKey);
  if (!secret) {
    secret = createHmac("sha256", "meridian-sandbox-pay-token")
      .update(privateKey.export({ type: "pkcs8", format: "der" }))
      .digest();
    payTokenSecrets.set(privateKey, secret);
  }
  return createHmac("sha256", secret).update(paymentId, "utf8").digest("base64url").slice(0, 32);
}

export function checkSandboxPayToken(paymentId: string, token: string, privateKey: KeyObject): boolean {
  const expected = Buffer.from(sandboxPayToken(paymentId, privateKey));
  const given = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

// --- the sender of callbacks ---

export interface SandboxNotifierOptions {
  privateKey: KeyObject;
  fetch?: typeof fetch;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  /** Jitter source in [0, 1); injected for deterministic tests. */
  random?: () => number;
  /** Attempts in all, including the first (default 8, like Alipay). */
  maxAttempts?: number;
  /** First retry delay; doubles each time up to maxDelayMs (defaults 1 s and 5 min). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Per attempt (default 10 s). */
  timeoutMs?: number;
}

export interface DeliveryResult {
  delivered: boolean;
  attempts: number;
  /** HTTP status of the last attempt, when one came back. */
  lastStatus?: number;
  /** Short description of the last failure (no body content beyond a status). */
  lastError?: string;
}

/**
 * POSTs a signed callback until the merchant answers 2xx with the body "success", with
 * exponential backoff between attempts. Each attempt is signed afresh, so a retry sent
 * an hour later still falls inside the receiver's ±5 minute window (as real platforms do).
 */
export class SandboxNotifier {
  readonly #o: Required<Omit<SandboxNotifierOptions, "privateKey">> & { privateKey: KeyObject };

  constructor(options: SandboxNotifierOptions) {
    this.#o = {
      privateKey: options.privateKey,
      fetch: options.fetch ?? fetch,
      sleep: options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
      now: options.now ?? Date.now,
      random: options.random ?? Math.random,
      maxAttempts: options.maxAttempts ?? 8,
      baseDelayMs: options.baseDelayMs ?? 1000,
      maxDelayMs: options.maxDelayMs ?? 300_000,
      timeoutMs: options.timeoutMs ?? 10_000,
    };
  }

  /** Delay before retry number `retry` (1-based): base·2^(retry-1), capped, with ±25 % jitter so retries spread out. */
  delayFor(retry: number): number {
    const raw = Math.min(this.#o.maxDelayMs, this.#o.baseDelayMs * 2 ** (retry - 1));
    return Math.round(raw * (0.75 + this.#o.random() * 0.5));
  }

  async deliver(notifyUrl: string, payload: SandboxNotificationPayload, signal?: AbortSignal): Promise<DeliveryResult> {
    let lastStatus: number | undefined;
    let lastError: string | undefined;
    for (let attempt = 1; attempt <= this.#o.maxAttempts; attempt++) {
      if (attempt > 1) await this.#o.sleep(this.delayFor(attempt - 1));
      if (signal?.aborted) break;
      const signed = signSandboxNotification(payload, this.#o.privateKey, this.#o.now());
      try {
        const res = await this.#o.fetch(notifyUrl, {
          method: "POST",
          headers: signed.headers,
          body: signed.body,
          signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(this.#o.timeoutMs)]) : AbortSignal.timeout(this.#o.timeoutMs),
        });
        lastStatus = res.status;
        const text = await res.text();
        if (res.ok && text.trim() === "success") return { delivered: true, attempts: attempt, lastStatus };
        lastError = res.ok ? 'reply was not "success"' : `HTTP ${res.status}`;
      } catch (err) {
        lastStatus = undefined;
        lastError = err instanceof Error && err.name === "TimeoutError" ? "timeout" : "network error";
      }
    }
    return {
      delivered: false,
      attempts: this.#o.maxAttempts,
      ...(lastStatus !== undefined ? { lastStatus } : {}),
      ...(lastError ? { lastError } : {}),
    };
  }
}

// --- the platform as the payment service sees it ---

/**
 * A sandbox trade as the sandbox platform knows it. An open trade has the buyer's choice
 * (or "pending" before any). A closed one can no longer be paid; it may have been closed
 * before the buyer chose anything, so its amount may be unknown.
 */
export type SandboxPaymentState =
  | {
      paymentId: string;
      amountMinor: number;
      currency: string;
      status: PaymentStatus;
      providerTxnId?: string;
      paidAt?: string;
    }
  | {
      paymentId: string;
      status: "closed";
      amountMinor?: number;
      currency?: string;
      providerTxnId?: string;
    };

export interface SandboxRefundRequest {
  paymentId: string;
  /** Our refund id: the key of idempotency (a repeat returns the first answer). */
  refundId: string;
  amountMinor: number;
  /** The payment's amount: refunds of this payment may not exceed it in total. */
  totalMinor: number;
}

/**
 * The store's answer to a refund: recorded (now or by an earlier call with this refundId),
 * or refused because the payment's refunds would then exceed its amount — what Alipay
 * (ACQ.REFUND_AMT_NOT_EQUAL_TOTAL, 退款金额超限) and WeChat Pay (退款金额超过可退金额)
 * answer to an over-refund.
 */
export type SandboxRefundRecord =
  { status: "recorded"; providerRefundId: string } | { status: "refused"; failureCode: "REFUND_AMOUNT_EXCEEDED" };

/**
 * What the sandbox "platform" knows, kept by the lead in the database (the sandbox has no
 * servers of its own). MemorySandboxStateStore is the reference behaviour.
 *
 * closeTrade: a trade with no state, pending or failed becomes closed ("closed"; a
 * closed one stays so); a succeeded one is left as it is ("paid"). It must be atomic with
 * the pay page's recording of the buyer's choice (one transaction, or a conditional
 * update), and a closed trade must refuse any later choice: otherwise a success can land
 * after "closed" was answered, which is exactly what closing rules out.
 *
 * recordRefund: idempotent on refundId (a repeat returns the first recorded answer, as
 * out_request_no does at Alipay), and the sum of this payment's recorded refunds plus
 * this one must not exceed totalMinor. The check and the insert must be one atomic step
 * (one transaction with the payment's refunds locked, or a serialised insert): two
 * concurrent refunds each passing the check alone would together exceed the amount. A
 * refusal records nothing; a repeat is checked again and, refunds only growing, is
 * refused again.
 */
export interface SandboxStateStore {
  getPayment(paymentId: string): Promise<SandboxPaymentState | undefined>;
  closeTrade(paymentId: string): Promise<CloseResult>;
  recordRefund(refund: SandboxRefundRequest): Promise<SandboxRefundRecord>;
}

/** An in-memory store: for tests, and as the reference behaviour for a database-backed one. */
export class MemorySandboxStateStore implements SandboxStateStore {
  readonly payments = new Map<string, SandboxPaymentState>();
  readonly refunds = new Map<string, { paymentId: string; amountMinor: number; providerRefundId: string }>();

  async getPayment(paymentId: string): Promise<SandboxPaymentState | undefined> {
    return this.payments.get(paymentId);
  }

  /**
   * The pay page's write (repo.recordSandboxChoice in the service), mirrored as the
   * reference: a first choice is recorded; a success replaces a failure (the buyer tried
   * again); a success is final; a closed trade takes no choice. Returns the state after.
   */
  async recordChoice(choice: {
    paymentId: string;
    amountMinor: number;
    currency: string;
    status: "succeeded" | "failed";
    providerTxnId: string;
    paidAt?: string;
  }): Promise<SandboxPaymentState> {
    const current = this.payments.get(choice.paymentId);
    if (!current || current.status === "pending" || (current.status === "failed" && choice.status === "succeeded")) {
      this.payments.set(choice.paymentId, { ...choice });
    }
    return this.payments.get(choice.paymentId)!;
  }

  // No await between reading and writing: each call is one atomic step in this process.
  async closeTrade(paymentId: string): Promise<CloseResult> {
    const current = this.payments.get(paymentId);
    if (current?.status === "succeeded") return { status: "paid" };
    if (current?.status !== "closed") this.payments.set(paymentId, { ...current, paymentId, status: "closed" });
    return { status: "closed" };
  }

  async recordRefund(refund: SandboxRefundRequest): Promise<SandboxRefundRecord> {
    const existing = this.refunds.get(refund.refundId);
    if (existing) return { status: "recorded", providerRefundId: existing.providerRefundId };
    let refunded = 0;
    for (const r of this.refunds.values()) if (r.paymentId === refund.paymentId) refunded += r.amountMinor;
    if (refunded + refund.amountMinor > refund.totalMinor) return { status: "refused", failureCode: "REFUND_AMOUNT_EXCEEDED" };
    const providerRefundId = `sbr_${randomBytes(12).toString("hex")}`;
    this.refunds.set(refund.refundId, { paymentId: refund.paymentId, amountMinor: refund.amountMinor, providerRefundId });
    return { status: "recorded", providerRefundId };
  }
}

export interface SandboxConfig {
  /** The sandbox's own key pair: the private half signs callbacks, the public half verifies them. */
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The gateway's public base URL (PUBLIC_URL); the pay page is served there. */
  publicUrl: string;
}

export interface SandboxDeps {
  store: SandboxStateStore;
  now?: () => number;
}

export class SandboxPlatform implements PaymentPlatform {
  readonly name = "sandbox" as const;
  readonly #c: SandboxConfig;
  readonly #store: SandboxStateStore;
  readonly #now: () => number;

  constructor(config: SandboxConfig, deps: SandboxDeps) {
    this.#c = config;
    this.#store = deps.store;
    this.#now = deps.now ?? Date.now;
  }

  toString(): string {
    return `SandboxPlatform(keyId=${keyId(this.#c.publicKey)})`;
  }

  /** The private key, for the lead's pay-page route and the SandboxNotifier. */
  get signingKey(): KeyObject {
    return this.#c.privateKey;
  }

  async create(input: CreatePaymentInput): Promise<CreatePaymentResult> {
    assertCreateInput(input, this.#now());
    const base = this.#c.publicUrl.replace(/\/+$/, "");
    const token = sandboxPayToken(input.paymentId, this.#c.privateKey);
    return { kind: "redirect", url: `${base}/sandbox/pay/${encodeURIComponent(input.paymentId)}?token=${token}` };
  }

  async verifyNotification(raw: RawNotification): Promise<PlatformNotification> {
    const p = verifySandboxNotification(raw, this.#c.publicKey, this.#now());
    return {
      paymentId: p.paymentId,
      providerTxnId: p.providerTxnId,
      amountMinor: p.amountMinor,
      currency: p.currency,
      status: p.status,
      ...(p.paidAt ? { paidAt: p.paidAt } : {}),
    };
  }

  /** The SandboxNotifier stops on a 2xx with the body "success", like Alipay. */
  ackResponse(): PlatformHttpResponse {
    return { status: 200, headers: { "content-type": "text/plain; charset=utf-8" }, body: "success" };
  }

  nackResponse(err?: unknown): PlatformHttpResponse {
    return { status: nackStatus(err), headers: { "content-type": "text/plain; charset=utf-8" }, body: "fail" };
  }

  async query(paymentId: string): Promise<QueryResult> {
    const p = await this.#store.getPayment(paymentId);
    if (!p) return { status: "not_found", paymentId };
    if (p.status === "closed") {
      // Closed unpaid, like TRADE_CLOSED / CLOSED at the real platforms.
      return {
        status: "failed",
        paymentId,
        ...(p.amountMinor !== undefined && p.currency !== undefined ? { amountMinor: p.amountMinor, currency: p.currency } : {}),
        ...(p.providerTxnId ? { providerTxnId: p.providerTxnId } : {}),
      };
    }
    return {
      status: p.status,
      paymentId,
      amountMinor: p.amountMinor,
      currency: p.currency,
      ...(p.providerTxnId ? { providerTxnId: p.providerTxnId } : {}),
      ...(p.paidAt ? { paidAt: p.paidAt } : {}),
    };
  }

  async refund(input: RefundInput): Promise<RefundResult> {
    assertRefundInput(input);
    const p = await this.#store.getPayment(input.paymentId);
    // Same codes a real platform would give: final refusals, not errors to retry.
    if (!p) return { status: "failed", failureCode: "TRADE_NOT_EXIST" };
    // Pending, failed or closed: nothing was paid, so nothing can go back.
    if (p.status !== "succeeded") return { status: "failed", failureCode: "TRADE_NOT_PAID" };
    if (input.amountMinor > p.amountMinor || input.totalMinor !== p.amountMinor) return { status: "failed", failureCode: "AMOUNT_INVALID" };
    if (input.currency && input.currency !== p.currency)
      throw new PaymentPlatformError("invalid_request", "refund currency differs from the payment's", false);
    // The cumulative bound is checked by the store, atomically with the insert.
    const record = await this.#store.recordRefund({
      paymentId: input.paymentId,
      refundId: input.refundId,
      amountMinor: input.amountMinor,
      totalMinor: p.amountMinor,
    });
    if (record.status === "refused") return { status: "failed", failureCode: record.failureCode };
    return { status: "succeeded", providerRefundId: record.providerRefundId };
  }

  /** Closed in the store (see SandboxStateStore.closeTrade); the pay page refuses a closed trade. */
  async close(paymentId: string): Promise<CloseResult> {
    return this.#store.closeTrade(paymentId);
  }
}
