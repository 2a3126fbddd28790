/**
 * WeChat Pay APIv3 (Native pay: a code_url the client shows as a QR code).
 *
 * No SDK: WeChat publishes official SDKs for Java, Go and PHP but none for Node, and the
 * whole protocol is RSA-SHA256 signatures plus AES-256-GCM, which node:crypto does
 * directly — fewer moving parts than an unofficial wrapper.
 *
 * Inbound (callbacks) and outbound answers are verified alike: Wechatpay-Signature over
 * `${timestamp}\n${nonce}\n${body}\n` with the platform key named by Wechatpay-Serial
 * (one we hold), timestamp within ±5 minutes. WeChat sends probe callbacks with
 * deliberately wrong signatures ("WECHATPAY/SIGNTEST/…"): they fail like any forgery.
 *
 * Every Native trade carries time_expire (our expiresAt), and close() ends one early.
 * Developers report payments accepted after time_expire (WeChat community threads), so
 * the expiry is a bound we ask for, not one we rely on alone: the service closes expired
 * trades and refunds a payment that arrives for an order it can no longer keep.
 */
import { createCipheriv, createDecipheriv, randomBytes, sign as rsaSign, verify as rsaVerify, type KeyObject } from "node:crypto";
import { z } from "zod";
import type { Secret } from "./keys";
import {
  PaymentPlatformError,
  PaymentVerificationError,
  assertCreateInput,
  assertRefundInput,
  beijingWallClock,
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

export interface WechatPayConfig {
  mchId: string;
  appId: string;
  /** Serial number of OUR merchant API certificate (goes into the Authorization header). */
  serialNo: string;
  /** Our merchant API private key (apiclient_key.pem). */
  privateKey: KeyObject;
  /** The 32-byte APIv3 key that encrypts callback resources. */
  apiV3Key: Secret<Buffer>;
  /** WeChat Pay platform certificates / public keys we trust, by Wechatpay-Serial. */
  platformKeys: ReadonlyMap<string, KeyObject>;
  /** https://api.mch.weixin.qq.com, or a test server. */
  baseUrl: string;
  timeoutMs?: number;
}

export interface WechatPayDeps {
  now?: () => number;
  fetch?: typeof fetch;
  /** Nonce for our request signatures; injected for deterministic tests. */
  nonce?: () => string;
}

export const WECHATPAY_SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048";
/** ±5 minutes, WeChat's own recommendation for callbacks and answers. */
export const WECHATPAY_MAX_SKEW_S = 300;
/** Error codes that mean "not now" rather than "no": busy, rate-limited, merchant balance short. */
const TRANSIENT_CODES = new Set(["SYSTEM_ERROR", "FREQUENCY_LIMITED", "FREQUENCY_LIMIT_EXCEED", "NOT_ENOUGH"]);
/** WeChat's out_trade_no: 6 to 32 of letters, digits, _ - | * (a dashed UUID is 36: too long). */
const OUT_TRADE_NO = /^[A-Za-z0-9_\-|*]{6,32}$/;
/**
 * Native 下单 documents that a time_expire less than one minute after the order is
 * silently moved to one minute after it: WeChat would then take money after our
 * deadline, so such a trade is refused instead. Ten seconds more allow for our clock
 * running behind WeChat's and for the request's transit.
 */
export const WECHATPAY_MIN_EXPIRY_MS = 70_000;

/** time_expire as Native 下单 documents it: RFC 3339 in Beijing time, "2018-06-08T10:34:56+08:00" (seconds rounded down). */
export function wechatTimeExpire(ms: number): string {
  return `${beijingWallClock(ms)}+08:00`;
}

// --- pure protocol pieces (exported for tests and for tools) ---

/** The Authorization header of a merchant request (APIv3 "签名生成"). */
export function buildAuthorization(a: {
  method: string;
  /** Path plus query string, exactly as sent ("/v3/pay/transactions/native"). */
  pathAndQuery: string;
  body: string;
  mchId: string;
  serialNo: string;
  privateKey: KeyObject;
  timestamp: number;
  nonce: string;
}): string {
  const message = `${a.method}\n${a.pathAndQuery}\n${a.timestamp}\n${a.nonce}\n${a.body}\n`;
  const signature = rsaSign("sha256", Buffer.from(message, "utf8"), a.privateKey).toString("base64");
  return `${WECHATPAY_SIGNATURE_TYPE} mchid="${a.mchId}",nonce_str="${a.nonce}",signature="${signature}",timestamp="${a.timestamp}",serial_no="${a.serialNo}"`;
}

/** The signature WeChat Pay puts on callbacks and answers (and tests use to forge them). */
export function signWechatMessage(timestamp: string, nonce: string, body: Buffer | string, privateKey: KeyObject): string {
  return rsaSign(
    "sha256",
    Buffer.concat([Buffer.from(`${timestamp}\n${nonce}\n`), Buffer.from(body), Buffer.from("\n")]),
    privateKey,
  ).toString("base64");
}

/**
 * Checks the Wechatpay-* headers of a callback or an answer. Throws PaymentVerificationError;
 * never lets a malformed header crash the process.
 */
export function verifyWechatHeaders(
  headers: RawNotification["headers"],
  body: Buffer,
  platformKeys: ReadonlyMap<string, KeyObject>,
  nowMs: number,
): void {
  const timestamp = headerOf(headers, "wechatpay-timestamp");
  const nonce = headerOf(headers, "wechatpay-nonce");
  const signature = headerOf(headers, "wechatpay-signature");
  const serial = headerOf(headers, "wechatpay-serial");
  if (!timestamp || !nonce || !signature || !serial) throw new PaymentVerificationError("missing_header");
  // Pin the algorithm like RSA2 for Alipay: a different type is not ours to interpret.
  const type = headerOf(headers, "wechatpay-signature-type");
  if (type !== undefined && type !== WECHATPAY_SIGNATURE_TYPE) throw new PaymentVerificationError("sign_type");
  const key = platformKeys.get(serial);
  if (!key) throw new PaymentVerificationError("unknown_serial");
  if (!/^\d{1,12}$/.test(timestamp) || Math.abs(nowMs / 1000 - Number(timestamp)) > WECHATPAY_MAX_SKEW_S) {
    throw new PaymentVerificationError("timestamp");
  }
  let ok: boolean;
  try {
    const message = Buffer.concat([Buffer.from(`${timestamp}\n${nonce}\n`, "utf8"), body, Buffer.from("\n")]);
    ok = rsaVerify("sha256", message, key, Buffer.from(signature, "base64"));
  } catch {
    ok = false;
  }
  if (!ok) throw new PaymentVerificationError("bad_signature");
}

export interface EncryptedResource {
  algorithm: string;
  ciphertext: string;
  nonce: string;
  associated_data?: string;
}

/** AEAD_AES_256_GCM as WeChat uses it: base64(ciphertext || 16-byte tag), nonce and AD as UTF-8. */
export function decryptResource(resource: EncryptedResource, apiV3Key: Buffer): Buffer {
  if (resource.algorithm !== "AEAD_AES_256_GCM") throw new PaymentVerificationError("decrypt");
  try {
    const data = Buffer.from(resource.ciphertext, "base64");
    if (data.length <= 16) throw new Error("too short");
    const decipher = createDecipheriv("aes-256-gcm", apiV3Key, Buffer.from(resource.nonce, "utf8"));
    decipher.setAuthTag(data.subarray(data.length - 16));
    decipher.setAAD(Buffer.from(resource.associated_data ?? "", "utf8"));
    return Buffer.concat([decipher.update(data.subarray(0, data.length - 16)), decipher.final()]);
  } catch {
    throw new PaymentVerificationError("decrypt");
  }
}

/** The inverse of decryptResource (what WeChat does; used by tests and local tools). */
export function encryptResource(plaintext: string, apiV3Key: Buffer, nonce: string, associatedData: string): EncryptedResource {
  const cipher = createCipheriv("aes-256-gcm", apiV3Key, Buffer.from(nonce, "utf8"));
  cipher.setAAD(Buffer.from(associatedData, "utf8"));
  const ct = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()]);
  return { algorithm: "AEAD_AES_256_GCM", ciphertext: ct.toString("base64"), nonce, associated_data: associatedData };
}

// --- shapes (only the fields we read; WeChat adds fields freely) ---

const NotificationSchema = z.object({
  id: z.string().optional(),
  event_type: z.string(),
  resource_type: z.string().optional(),
  resource: z.object({
    algorithm: z.string(),
    ciphertext: z.string().min(1),
    nonce: z.string().min(1),
    associated_data: z.string().optional(),
    original_type: z.string().optional(),
  }),
});

const TransactionSchema = z.object({
  mchid: z.string(),
  appid: z.string(),
  out_trade_no: z.string().min(1),
  transaction_id: z.string().optional(),
  trade_state: z.string(),
  success_time: z.string().optional(),
  amount: z
    .object({
      total: z.number().int().nonnegative().optional(),
      currency: z.string().optional(),
    })
    .optional(),
});
type Transaction = z.infer<typeof TransactionSchema>;

const RefundSchema = z.object({
  refund_id: z.string(),
  out_refund_no: z.string(),
  status: z.string(),
});

const ErrorSchema = z.object({ code: z.string(), message: z.string().optional() });

/** The close refusals that are outcomes, not errors (APIv3 names, then the older API's). */
const CLOSE_OUTCOMES: ReadonlyMap<string, CloseResult["status"]> = new Map([
  ["ORDER_CLOSED", "closed"],
  ["ORDERCLOSED", "closed"],
  ["ORDER_NOT_EXIST", "not_found"],
  ["ORDERNOTEXIST", "not_found"],
  ["ORDERPAID", "paid"],
]);

/** SUCCESS = paid; REFUND = paid, then (partly) refunded; NOTPAY/USERPAYING = not yet; the rest = failed. */
function tradeStatus(state: string): PaymentStatus | undefined {
  switch (state) {
    case "SUCCESS":
    case "REFUND":
      return "succeeded";
    case "NOTPAY":
    case "USERPAYING":
      return "pending";
    case "CLOSED":
    case "REVOKED":
    case "PAYERROR":
      return "failed";
    default:
      return undefined;
  }
}

function isoOrUndefined(text: string | undefined): string | undefined {
  if (!text) return undefined;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
}

export class WechatPayPlatform implements PaymentPlatform {
  readonly name = "wechatpay" as const;
  readonly #c: WechatPayConfig;
  readonly #now: () => number;
  readonly #fetch: typeof fetch;
  readonly #nonce: () => string;

  constructor(config: WechatPayConfig, deps: WechatPayDeps = {}) {
    if (config.apiV3Key.reveal().length !== 32) throw new Error("WeChat Pay APIv3 key must be 32 bytes");
    this.#c = config;
    this.#now = deps.now ?? Date.now;
    this.#fetch = deps.fetch ?? fetch;
    this.#nonce = deps.nonce ?? (() => randomBytes(16).toString("hex"));
  }

  toString(): string {
    return `WechatPayPlatform(mchId=${this.#c.mchId})`;
  }

  async create(input: CreatePaymentInput): Promise<CreatePaymentResult> {
    const now = this.#now();
    assertCreateInput(input, now);
    if (input.currency !== "CNY") throw new PaymentPlatformError("invalid_request", "WeChat Pay takes CNY only", false);
    if (!OUT_TRADE_NO.test(input.paymentId))
      throw new PaymentPlatformError("invalid_request", "paymentId does not fit WeChat Pay's out_trade_no (6-32 chars)", false);
    if (input.expiresAt - now < WECHATPAY_MIN_EXPIRY_MS) {
      throw new PaymentPlatformError(
        "invalid_request",
        "expiresAt is too close: WeChat Pay would extend it to one minute after the order",
        false,
      );
    }
    const res = await this.#request("POST", "/v3/pay/transactions/native", {
      appid: this.#c.appId,
      mchid: this.#c.mchId,
      // description: at most 127 characters.
      description: [...input.subject].slice(0, 127).join("") || input.orderId,
      out_trade_no: input.paymentId,
      // 支付结束时间: the last moment the buyer can pay. WeChat moves a deadline too far
      // ahead (15 or 90 days after the order, by product) earlier: never past ours.
      time_expire: wechatTimeExpire(input.expiresAt),
      notify_url: input.notifyUrl,
      amount: { total: input.amountMinor, currency: "CNY" },
    });
    if (res.status !== 200) throw this.#errorOf(res, "native");
    const codeUrl = (res.json as { code_url?: unknown } | undefined)?.code_url;
    if (typeof codeUrl !== "string" || !codeUrl) throw new PaymentPlatformError("bad_response", "WeChat Pay native: no code_url", true);
    return { kind: "qr", codeUrl };
  }

  async verifyNotification(raw: RawNotification): Promise<PlatformNotification> {
    if (mediaType(raw.contentType) !== "application/json") throw new PaymentVerificationError("content_type");
    verifyWechatHeaders(raw.headers, raw.rawBody, this.#c.platformKeys, this.#now());
    const body = parseJson(raw.rawBody, NotificationSchema);
    // Payment callbacks only: we never give a refund notify_url, so REFUND.* is not expected here.
    if (!body.event_type.startsWith("TRANSACTION.")) throw new PaymentVerificationError("malformed");
    const plain = decryptResource(body.resource, this.#c.apiV3Key.reveal());
    const txn = parseJson(plain, TransactionSchema);
    return this.#notificationOf(txn);
  }

  /** APIv3: 200 or 204, no body needed. */
  ackResponse(): PlatformHttpResponse {
    return { status: 204, headers: {}, body: "" };
  }

  /** APIv3: 4xx/5xx with {code, message}; the message is our short reason code, nothing more. */
  nackResponse(err?: unknown): PlatformHttpResponse {
    const message = err instanceof PaymentVerificationError ? err.reason : "internal";
    return { status: nackStatus(err), headers: { "content-type": "application/json" }, body: JSON.stringify({ code: "FAIL", message }) };
  }

  async query(paymentId: string): Promise<QueryResult> {
    if (!OUT_TRADE_NO.test(paymentId)) return { status: "not_found", paymentId };
    const res = await this.#request(
      "GET",
      `/v3/pay/transactions/out-trade-no/${encodeURIComponent(paymentId)}?mchid=${encodeURIComponent(this.#c.mchId)}`,
    );
    if (res.status === 404 && res.errorCode === "ORDER_NOT_EXIST") return { status: "not_found", paymentId };
    if (res.status !== 200) throw this.#errorOf(res, "query");
    const parsed = TransactionSchema.safeParse(res.json);
    if (!parsed.success) throw new PaymentPlatformError("bad_response", "WeChat Pay query: malformed answer", true);
    const txn = parsed.data;
    if (txn.mchid !== this.#c.mchId || txn.appid !== this.#c.appId || txn.out_trade_no !== paymentId) {
      throw new PaymentPlatformError("bad_response", "WeChat Pay query: answer about another merchant or trade", true);
    }
    const status = tradeStatus(txn.trade_state);
    if (!status) throw new PaymentPlatformError("bad_response", "WeChat Pay query: unknown trade_state", true);
    const paidAt = status === "succeeded" ? isoOrUndefined(txn.success_time) : undefined;
    return {
      status,
      paymentId,
      ...(txn.transaction_id ? { providerTxnId: txn.transaction_id } : {}),
      ...(txn.amount?.total !== undefined ? { amountMinor: txn.amount.total, currency: txn.amount.currency ?? "CNY" } : {}),
      ...(paidAt ? { paidAt } : {}),
    };
  }

  async refund(input: RefundInput): Promise<RefundResult> {
    assertRefundInput(input);
    if (input.currency && input.currency !== "CNY") throw new PaymentPlatformError("invalid_request", "WeChat Pay takes CNY only", false);
    const res = await this.#request("POST", "/v3/refund/domestic/refunds", {
      out_trade_no: input.paymentId,
      // Our refund id as out_refund_no: WeChat treats a repeat as the same refund.
      out_refund_no: input.refundId,
      reason: [...input.reason].slice(0, 80).join(""),
      amount: { refund: input.amountMinor, total: input.totalMinor, currency: "CNY" },
    });
    if (res.status === 200) {
      const parsed = RefundSchema.safeParse(res.json);
      if (!parsed.success || parsed.data.out_refund_no !== input.refundId)
        throw new PaymentPlatformError("bad_response", "WeChat Pay refund: malformed answer", true);
      const s = parsed.data.status;
      const status = s === "SUCCESS" ? "succeeded" : s === "PROCESSING" ? "pending" : "failed";
      return { status, providerRefundId: parsed.data.refund_id, ...(status === "failed" ? { failureCode: s } : {}) };
    }
    // A verified 4xx with a business code is a final "no" (amount too large, trade not
    // paid…); busy/limit/balance codes and 5xx may work later.
    if (res.status >= 400 && res.status < 500 && res.status !== 429 && res.errorCode && !TRANSIENT_CODES.has(res.errorCode)) {
      return { status: "failed", failureCode: res.errorCode };
    }
    throw this.#errorOf(res, "refund");
  }

  /**
   * POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close with {"mchid"}. WeChat
   * documents (关闭订单, pay.weixin.qq.com/doc/v3/merchant/4012556398) 204 No Content on
   * success, 400 ORDER_CLOSED, 202 USER_PAYING (the buyer is entering the password now),
   * a 404 for an unknown trade (ORDER_NOT_EXIST, the code the query API documents), and
   * 5xx/429 to retry; ORDERPAID / ORDERCLOSED / ORDERNOTEXIST are the older API's
   * (closeorder) spellings, accepted alike. Error codes count only when the answer is
   * signed (#request); an unsigned or unknown one is an error, retryable when it may pass.
   *
   * A 204 is confirmed with query(): developers report 204 for a trade closed before and
   * for an out_trade_no WeChat never had (community thread "v3 关闭订单API一直返回204"),
   * so it alone does not say whether a trade exists, and "closed" must never hide money.
   */
  async close(paymentId: string): Promise<CloseResult> {
    if (!OUT_TRADE_NO.test(paymentId)) return { status: "not_found" };
    const res = await this.#request("POST", `/v3/pay/transactions/out-trade-no/${encodeURIComponent(paymentId)}/close`, {
      mchid: this.#c.mchId,
    });
    if (res.status === 202) {
      // USER_PAYING (signed, else #request threw): the buyer may be paying right now.
      throw new PaymentPlatformError("http_status", "WeChat Pay close: HTTP 202, buyer paying", true, "USER_PAYING");
    }
    if (res.status >= 200 && res.status < 300) {
      const q = await this.query(paymentId);
      if (q.status === "succeeded") return { status: "paid" };
      if (q.status === "failed") return { status: "closed" };
      if (q.status === "not_found") return { status: "not_found" };
      // Still NOTPAY/USERPAYING right after a close: not (yet) closed; ask again.
      throw new PaymentPlatformError("bad_response", "WeChat Pay close: trade still open after close", true);
    }
    if (res.status >= 400 && res.status < 500 && res.errorCode) {
      const outcome = CLOSE_OUTCOMES.get(res.errorCode);
      if (outcome) return { status: outcome };
    }
    throw this.#errorOf(res, "close");
  }

  #errorOf(res: Answer, what: string): PaymentPlatformError {
    // An unsigned error answer is an unknown outcome: retryable as well.
    const retryable = res.status >= 500 || res.status === 429 || res.errorCode === undefined || TRANSIENT_CODES.has(res.errorCode);
    return new PaymentPlatformError(
      "http_status",
      `WeChat Pay ${what}: HTTP ${res.status}${res.errorCode ? ` ${res.errorCode}` : ""}`,
      retryable,
      res.errorCode,
    );
  }

  #notificationOf(txn: Transaction): PlatformNotification {
    if (txn.mchid !== this.#c.mchId) throw new PaymentVerificationError("merchant");
    if (txn.appid !== this.#c.appId) throw new PaymentVerificationError("app");
    const status = tradeStatus(txn.trade_state);
    if (!status || !txn.transaction_id || txn.amount?.total === undefined) throw new PaymentVerificationError("malformed");
    const paidAt = status === "succeeded" ? isoOrUndefined(txn.success_time) : undefined;
    return {
      paymentId: txn.out_trade_no,
      providerTxnId: txn.transaction_id,
      amountMinor: txn.amount.total,
      currency: txn.amount.currency ?? "CNY",
      status,
      ...(paidAt ? { paidAt } : {}),
    };
  }

  /**
   * One signed request. A 2xx answer must carry a valid platform signature (else the
   * call fails, retryable); an error answer's code is trusted only when signed too.
   */
  async #request(method: "GET" | "POST", pathAndQuery: string, payload?: unknown): Promise<Answer> {
    const body = payload === undefined ? "" : JSON.stringify(payload);
    const authorization = buildAuthorization({
      method,
      pathAndQuery,
      body,
      mchId: this.#c.mchId,
      serialNo: this.#c.serialNo,
      privateKey: this.#c.privateKey,
      timestamp: Math.floor(this.#now() / 1000),
      nonce: this.#nonce(),
    });
    let response: Response;
    let raw: Buffer;
    try {
      response = await this.#fetch(new URL(pathAndQuery, this.#c.baseUrl), {
        method,
        headers: {
          authorization,
          accept: "application/json",
          // APIv3 refuses requests without a User-Agent.
          "user-agent": "meridian-payment/1",
          ...(payload === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(payload === undefined ? {} : { body }),
        signal: AbortSignal.timeout(this.#c.timeoutMs ?? 10_000),
      });
      raw = Buffer.from(await response.arrayBuffer());
    } catch {
      throw new PaymentPlatformError("transport", `WeChat Pay ${method} request failed`, true);
    }
    const headers: Record<string, string> = {};
    response.headers.forEach((value, key) => {
      headers[key] = value;
    });
    let verified = true;
    try {
      verifyWechatHeaders(headers, raw, this.#c.platformKeys, this.#now());
    } catch {
      verified = false;
    }
    const ok = response.status >= 200 && response.status < 300;
    if (ok && !verified) throw new PaymentPlatformError("bad_response_signature", "WeChat Pay answer signature invalid", true);
    let json: unknown;
    if (raw.length) {
      try {
        json = JSON.parse(raw.toString("utf8"));
      } catch {
        if (ok) throw new PaymentPlatformError("bad_response", "WeChat Pay answer is not JSON", true);
      }
    }
    const error = !ok && verified ? ErrorSchema.safeParse(json) : undefined;
    return { status: response.status, json, ...(error?.success ? { errorCode: error.data.code } : {}) };
  }
}

interface Answer {
  status: number;
  json: unknown;
  /** The error code of a non-2xx answer, only when the answer's signature checked out. */
  errorCode?: string;
}

function parseJson<T>(bytes: Buffer, schema: z.ZodType<T>): T {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new PaymentVerificationError("malformed");
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new PaymentVerificationError("malformed");
  return parsed.data;
}
