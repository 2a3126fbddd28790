/**
 * Alipay (支付宝) through the official `alipay-sdk` (OpenAPI v2 gateway: page pay,
 * trade.query, trade.refund, trade.close and the async notification).
 *
 * The SDK does the signing and the signature checks; this module adds what the SDK
 * leaves to us (docs/checkout-details.md, "Checkout"): it pins RSA2 (the SDK's notify check takes
 * sign_type from the request, so a forged "RSA" would make it verify with SHA-1), checks
 * app_id, seller_id, out_trade_no and total_amount, and maps trade_status. Only
 * TRADE_SUCCESS and TRADE_FINISHED mean paid: TRADE_CLOSED is "failed" even when it
 * carries refund_fee (a refund notice must never record a payment).
 *
 * Every page-pay trade carries time_expire (our expiresAt), so Alipay stops taking money
 * at that time even if we never call again; close() ends it earlier or confirms it ended.
 */
import { AlipaySdk, type AlipaySdkCommonResult } from "alipay-sdk";
import type { KeyObject } from "node:crypto";
import { privateKeyPem, publicKeyPem } from "./keys";
import {
  PaymentPlatformError,
  PaymentVerificationError,
  assertCreateInput,
  assertRefundInput,
  beijingWallClock,
  mediaType,
  minorToYuan,
  nackStatus,
  yuanToMinor,
  type CloseResult,
  type CreatePaymentInput,
  type CreatePaymentResult,
  type PaymentPlatform,
  type PlatformHttpResponse,
  type PlatformNotification,
  type QueryResult,
  type RawNotification,
  type RefundInput,
  type RefundResult,
} from "./platform";

export interface AlipayConfig {
  appId: string;
  /** The merchant's PID (2088…), which Alipay sends back as seller_id. */
  sellerId: string;
  /** Our application private key (RSA 2048). */
  privateKey: KeyObject;
  /** Alipay's public key ("支付宝公钥"), which signs callbacks and answers. */
  alipayPublicKey: KeyObject;
  /** https://openapi.alipay.com/gateway.do (production), the sandbox gateway, or a test server. */
  gateway: string;
  timeoutMs?: number;
}

export interface AlipayDeps {
  /** Milliseconds since the epoch; injected for tests. */
  now?: () => number;
}

/** Only these trade states mean the buyer's money arrived (TRADE_FINISHED = paid, no refunds possible any more). */
const PAID_STATES = new Set(["TRADE_SUCCESS", "TRADE_FINISHED"]);
/**
 * alipay.trade.close's documented refusals meaning "the trade is not waiting for the
 * buyer" (ACQ.TRADE_STATUS_ERROR 交易状态不合法: only WAIT_BUYER_PAY can be closed;
 * ACQ.REASON_ILLEGAL_STATUS / ACQ.REASON_TRADE_STATUS_INVALID 交易状态异常: 非待支付状态下不支持关单操作).
 * The trade is then paid, finished or already closed: query() says which.
 */
const CLOSE_STATUS_CODES = new Set(["ACQ.TRADE_STATUS_ERROR", "ACQ.REASON_ILLEGAL_STATUS", "ACQ.REASON_TRADE_STATUS_INVALID"]);
/**
 * 40004 sub codes that are not a business refusal: Alipay's trade APIs document
 * ACQ.SYSTEM_ERROR as 系统异常/系统错误 with "重新发起请求" / "请使用相同的参数再次调用"
 * (alipay.trade.close, alipay.trade.cancel). The outcome is unknown: retry.
 */
const RETRY_SUB_CODES = new Set(["ACQ.SYSTEM_ERROR"]);
/** Alipay's out_trade_no: up to 64 letters, digits and underscores (we also allow "-"). */
const OUT_TRADE_NO = /^[A-Za-z0-9_-]{1,64}$/;

export class AlipayPlatform implements PaymentPlatform {
  readonly name = "alipay" as const;
  readonly #sdk: AlipaySdk;
  readonly #appId: string;
  readonly #sellerId: string;
  readonly #now: () => number;

  constructor(config: AlipayConfig, deps: AlipayDeps = {}) {
    this.#appId = config.appId;
    this.#sellerId = config.sellerId;
    this.#now = deps.now ?? Date.now;
    this.#sdk = new AlipaySdk({
      appId: config.appId,
      // KeyObjects are normalised to PKCS#8 here, so the SDK's PKCS#1 default never guesses wrong.
      privateKey: privateKeyPem(config.privateKey),
      keyType: "PKCS8",
      alipayPublicKey: publicKeyPem(config.alipayPublicKey),
      signType: "RSA2",
      gateway: config.gateway,
      timeout: config.timeoutMs ?? 10_000,
      // Keep Alipay's documented snake_case field names in answers.
      camelcase: false,
    });
  }

  toString(): string {
    return `AlipayPlatform(appId=${this.#appId})`;
  }

  async create(input: CreatePaymentInput): Promise<CreatePaymentResult> {
    const now = this.#now();
    assertCreateInput(input, now);
    if (input.currency !== "CNY") throw new PaymentPlatformError("invalid_request", "Alipay takes CNY only", false);
    if (!OUT_TRADE_NO.test(input.paymentId))
      throw new PaymentPlatformError("invalid_request", "paymentId does not fit Alipay's out_trade_no", false);
    const url = this.#sdk.pageExecute("alipay.trade.page.pay", "GET", {
      bizContent: {
        out_trade_no: input.paymentId,
        total_amount: minorToYuan(input.amountMinor),
        subject: truncate(input.subject, 128) || input.orderId,
        product_code: "FAST_INSTANT_TRADE_PAY",
        // Absolute deadline, "yyyy-MM-dd HH:mm:ss" read in Beijing time (page pay docs:
        // time_expire 订单绝对超时时间; older versions of the page documented minutes
        // only, "yyyy-MM-dd HH:mm"). Preferred over timeout_express, which counts from
        // when the buyer opens the cashier page, not from our order. Alipay applies it
        // by its own clock: a skew between our clocks moves the deadline by as much.
        time_expire: beijingTimestamp(input.expiresAt),
      },
      notify_url: input.notifyUrl,
      ...(input.returnUrl ? { return_url: input.returnUrl } : {}),
      timestamp: beijingTimestamp(now),
    });
    return { kind: "redirect", url };
  }

  async verifyNotification(raw: RawNotification): Promise<PlatformNotification> {
    // Alipay posts its notification as an HTML form.
    if (mediaType(raw.contentType) !== "application/x-www-form-urlencoded") throw new PaymentVerificationError("content_type");
    const params = parseForm(raw.rawBody);
    // Pin RSA2 BEFORE the SDK sees the request: checkNotifySign picks its algorithm from
    // the request's own sign_type, and "RSA" would mean SHA-1.
    if (params.sign_type !== "RSA2") throw new PaymentVerificationError("sign_type");
    if (!params.sign) throw new PaymentVerificationError("bad_signature");
    let valid: boolean;
    try {
      // V2 = sign over the values as received: URLSearchParams has already decoded them
      // once, and decoding twice corrupts a literal "%" (alipay-sdk-nodejs-all issue #45).
      valid = this.#sdk.checkNotifySignV2(params);
    } catch {
      valid = false;
    }
    if (!valid) throw new PaymentVerificationError("bad_signature");

    // Signed by Alipay, but possibly for another app or merchant of ours.
    if (params.app_id !== this.#appId) throw new PaymentVerificationError("app");
    if (params.seller_id !== this.#sellerId) throw new PaymentVerificationError("merchant");
    const paymentId = params.out_trade_no;
    const providerTxnId = params.trade_no;
    if (!paymentId || !providerTxnId || !params.total_amount || !params.trade_status) throw new PaymentVerificationError("malformed");
    const amountMinor = parseAmount(params.total_amount);
    const refundedMinor = params.refund_fee ? parseAmount(params.refund_fee) : undefined;

    let status: PlatformNotification["status"];
    if (PAID_STATES.has(params.trade_status)) status = "succeeded";
    else if (params.trade_status === "WAIT_BUYER_PAY") status = "pending";
    else if (params.trade_status === "TRADE_CLOSED") {
      // Closed unpaid (expired or closed by us), or closed after a full refund (Alipay
      // notifies refunds on the same URL). Never a success: the payment's success comes
      // from its own TRADE_SUCCESS notice or from query(), and a success already
      // recorded is not undone by "failed" (the service refuses that transition).
      status = "failed";
    } else throw new PaymentVerificationError("malformed");

    const paidAt = status === "succeeded" && params.gmt_payment ? beijingToIso(params.gmt_payment) : undefined;
    return {
      paymentId,
      providerTxnId,
      amountMinor,
      currency: "CNY",
      status,
      ...(paidAt ? { paidAt } : {}),
      ...(refundedMinor !== undefined ? { refundedMinor } : {}),
    };
  }

  /** Alipay stops re-sending only on the literal body "success". */
  ackResponse(): PlatformHttpResponse {
    return { status: 200, headers: { "content-type": "text/plain; charset=utf-8" }, body: "success" };
  }

  nackResponse(err?: unknown): PlatformHttpResponse {
    return { status: nackStatus(err), headers: { "content-type": "text/plain; charset=utf-8" }, body: "fail" };
  }

  async query(paymentId: string): Promise<QueryResult> {
    const res = await this.#exec("alipay.trade.query", { out_trade_no: paymentId });
    if (res.code !== "10000") {
      if (res.sub_code === "ACQ.TRADE_NOT_EXIST") return { status: "not_found", paymentId };
      throw failure(res);
    }
    if (res.out_trade_no !== undefined && res.out_trade_no !== paymentId) {
      throw new PaymentPlatformError("bad_response", "Alipay answered about another trade", true);
    }
    const state = str(res.trade_status);
    const amountMinor = res.total_amount !== undefined ? parseResponseAmount(res.total_amount) : undefined;
    const status = PAID_STATES.has(state)
      ? "succeeded"
      : state === "WAIT_BUYER_PAY"
        ? "pending"
        : state === "TRADE_CLOSED"
          ? "failed"
          : undefined;
    if (!status) throw new PaymentPlatformError("bad_response", "unknown trade_status from Alipay", true);
    const paidAt = status === "succeeded" && typeof res.send_pay_date === "string" ? beijingToIso(res.send_pay_date, false) : undefined;
    return {
      status,
      paymentId,
      ...(typeof res.trade_no === "string" ? { providerTxnId: res.trade_no } : {}),
      ...(amountMinor !== undefined ? { amountMinor, currency: "CNY" } : {}),
      ...(paidAt ? { paidAt } : {}),
    };
  }

  async refund(input: RefundInput): Promise<RefundResult> {
    assertRefundInput(input);
    if (input.currency && input.currency !== "CNY") throw new PaymentPlatformError("invalid_request", "Alipay takes CNY only", false);
    const res = await this.#exec("alipay.trade.refund", {
      out_trade_no: input.paymentId,
      refund_amount: minorToYuan(input.amountMinor),
      // Our refund id as out_request_no: Alipay treats a repeat as the same refund.
      out_request_no: input.refundId,
      refund_reason: truncate(input.reason, 256),
    });
    if (res.code === "10000") {
      // Alipay: fund_change "Y" = money moved now; "N" (e.g. a repeat of a refund already
      // done, or still processing) is not a failure — query before deciding.
      return { status: res.fund_change === "Y" ? "succeeded" : "pending" };
    }
    // 40004 = the business refused (trade not paid, amount too large…): final, except
    // ACQ.SYSTEM_ERROR, a system error under the same code: the refund may have gone
    // through, so calling it failed could lose track of moved money. Retry instead.
    if (res.code === "40004" && !RETRY_SUB_CODES.has(str(res.sub_code)))
      return { status: "failed", failureCode: str(res.sub_code) || "40004" };
    throw failure(res);
  }

  /**
   * alipay.trade.close by out_trade_no. Its documented answers (open.alipay.com,
   * alipay.trade.close 统一收单交易关闭接口, 业务错误码): 10000 = closed (only a
   * WAIT_BUYER_PAY trade can be); ACQ.TRADE_NOT_EXIST = no such trade (page pay creates
   * it only when the buyer opens the page); ACQ.TRADE_STATUS_ERROR (and the
   * REASON_*_STATUS variants) = not waiting for payment, i.e. paid, finished or already
   * closed, told apart by query(); ACQ.SYSTEM_ERROR = retry; ACQ.INVALID_PARAMETER =
   * our request, final.
   */
  async close(paymentId: string): Promise<CloseResult> {
    if (!OUT_TRADE_NO.test(paymentId)) return { status: "not_found" };
    const res = await this.#exec("alipay.trade.close", { out_trade_no: paymentId });
    if (res.code === "10000") {
      if (res.out_trade_no !== undefined && res.out_trade_no !== paymentId) {
        throw new PaymentPlatformError("bad_response", "Alipay answered about another trade", true);
      }
      return { status: "closed" };
    }
    const sub = str(res.sub_code);
    if (sub === "ACQ.TRADE_NOT_EXIST") return { status: "not_found" };
    if (!CLOSE_STATUS_CODES.has(sub)) throw failure(res);
    const q = await this.query(paymentId);
    if (q.status === "succeeded") return { status: "paid" };
    if (q.status === "failed") return { status: "closed" };
    // WAIT_BUYER_PAY after "not waiting", or no trade after "wrong status": the two
    // answers contradict each other (a race with the buyer, or a lagging replica).
    throw new PaymentPlatformError("bad_response", `Alipay close: trade state unclear (${q.status})`, true, sub);
  }

  /** One gateway call; every failure becomes a PaymentPlatformError without SDK internals. */
  async #exec(method: string, bizContent: Record<string, string>): Promise<AlipaySdkCommonResult> {
    let res: AlipaySdkCommonResult;
    try {
      // validateSign: the answer must carry Alipay's RSA2 signature over the response
      // object (checked by the SDK with the pinned signType).
      res = await this.#sdk.exec(method, { bizContent, timestamp: beijingTimestamp(this.#now()) }, { validateSign: true });
    } catch (err) {
      const message = err instanceof Error ? err.message : "";
      // The SDK's messages are Chinese and carry the raw answer: keep only the class of failure.
      if (message.includes("验签"))
        throw new PaymentPlatformError("bad_response_signature", `Alipay ${method}: answer signature invalid`, true);
      if (message.includes("HTTP 请求错误")) throw new PaymentPlatformError("http_status", `Alipay ${method}: HTTP error`, true);
      if (message.includes("格式错误")) throw new PaymentPlatformError("bad_response", `Alipay ${method}: malformed answer`, true);
      throw new PaymentPlatformError("transport", `Alipay ${method}: request failed`, true);
    }
    if (typeof res !== "object" || res === null || typeof res.code !== "string") {
      throw new PaymentPlatformError("bad_response", `Alipay ${method}: malformed answer`, true);
    }
    return res;
  }
}

function failure(res: AlipaySdkCommonResult): PaymentPlatformError {
  // 20000 = service temporarily unavailable, ACQ.SYSTEM_ERROR = documented "retry":
  // retryable. Other codes are our request or our configuration (missing permission,
  // bad app id…): retrying the same call will not help.
  const code = str(res.sub_code) || str(res.code);
  return new PaymentPlatformError(
    "bad_response",
    `Alipay answered ${code}`,
    res.code === "20000" || RETRY_SUB_CODES.has(str(res.sub_code)),
    code,
  );
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

function truncate(text: string, max: number): string {
  return [...text].slice(0, max).join("");
}

function parseAmount(text: string): number {
  try {
    return yuanToMinor(text);
  } catch {
    throw new PaymentVerificationError("malformed");
  }
}

function parseResponseAmount(value: unknown): number {
  try {
    return yuanToMinor(String(value));
  } catch {
    throw new PaymentPlatformError("bad_response", "malformed amount from Alipay", true);
  }
}

/**
 * Parses the form body, refusing a repeated field: URLSearchParams would keep one of the
 * two and the signature check and our checks could then read different values.
 */
export function parseForm(rawBody: Buffer): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [key, value] of new URLSearchParams(rawBody.toString("utf8"))) {
    if (key in out) throw new PaymentVerificationError("malformed");
    out[key] = value;
  }
  return out;
}

/**
 * "yyyy-MM-dd HH:mm:ss" in Beijing time, milliseconds dropped. Alipay reads the request
 * timestamp and time_expire in UTC+8, and the SDK would format the server's LOCAL time
 * (wrong on a UTC server), so we pass our own.
 */
export function beijingTimestamp(ms: number): string {
  return beijingWallClock(ms).replace("T", " ");
}

/** Alipay's "2024-05-01 12:00:00" (Beijing time) → ISO 8601 UTC; undefined when unreadable. */
export function beijingToIso(text: string, strict = true): string | undefined {
  const m = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})$/.exec(text);
  if (!m) {
    if (strict) throw new PaymentVerificationError("malformed");
    return undefined;
  }
  const ms = Date.parse(`${m[1]}T${m[2]}+08:00`);
  if (Number.isNaN(ms)) {
    if (strict) throw new PaymentVerificationError("malformed");
    return undefined;
  }
  return new Date(ms).toISOString();
}
