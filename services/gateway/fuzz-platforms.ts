/**
 * The payment side of the gateway fuzz: Alipay and WeChat Pay enabled with keys made per
 * run (none is real), local stand-ins for their gateways (no platform can be reached from
 * here; a trade's creation, query and close get the documented shapes, signed), and the
 * bodies of POST /api/payments/notify/:provider as each platform sends them — signed with
 * the right key some of the time, so verification passes and the payload's fields (valid,
 * broken, about a real payment or not) reach the parsing and the business checks — or
 * forged one part at a time, or just bytes of any content type.
 */
import { generateKeyPairSync, randomBytes, sign as rsaSign, type KeyObject } from "node:crypto";
import fc from "fast-check";
import { keyId } from "../payment/platforms/keys";
import { SANDBOX_SIGNATURE_PREFIX } from "../payment/platforms/sandbox";
import { PLATFORM_GROUPS } from "../payment/platforms/config";
import { fakeGateway, wechatAnswerHeaders, wechatPlatform, type Received, type Reply } from "../payment/platforms/test-support";
import { paramsArbitrary, type Hints, type ParamsSchema } from "./fuzz-schema";

const rsa = () => generateKeyPairSync("rsa", { modulusLength: 2048 });
const alipayApp = rsa(); // our Alipay application key pair
const alipayKey = rsa(); // stands in for Alipay's own key pair
const wxMerchant = rsa(); // our WeChat Pay merchant key
const wxPlatform = rsa(); // stands in for the WeChat Pay platform key
const stranger = rsa(); // someone else's key: a signature that does not verify

export const ALIPAY_APP_ID = "2021000000000001";
export const ALIPAY_SELLER_ID = "2088000000000002";
export const WX_MCH = "1900000001";
export const WX_APPID = "wxd678efh567hg6787";
const WX_MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const WX_PLATFORM_SERIAL = "PUB_KEY_ID_0114232134912410000000000000";
const WX_API_V3_KEY = "0123456789abcdef0123456789ABCDEF";

const pkcs8 = (k: KeyObject) => k.export({ type: "pkcs8", format: "pem" }).toString();
const spki = (k: KeyObject) => k.export({ type: "spki", format: "pem" }).toString();

/** Alipay's and WeChat Pay's variables, as the payment configuration names them. */
export const PLATFORM_ENV_NAMES = [
  ...PLATFORM_GROUPS.alipay.required,
  ...PLATFORM_GROUPS.alipay.optional,
  ...PLATFORM_GROUPS.wechatpay.required,
  ...PLATFORM_GROUPS.wechatpay.optional,
] as const;

function wxSigned(status: number, body: string): Reply {
  return { status, body, headers: wechatAnswerHeaders(body, wxPlatform.privateKey, WX_PLATFORM_SERIAL) };
}

/** Trades closed at a stand-in: its query says so afterwards, as the platform's would. */
const closedAtWechat = new Set<string>();
const closedAtAlipay = new Set<string>();

/** api.mch.weixin.qq.com's stand-in: Native order → code_url, query → NOTPAY (CLOSED once closed), close → 204, refund → SUCCESS. */
function wechatAnswer(r: Received): Reply {
  if (r.method === "POST" && r.url === "/v3/pay/transactions/native") {
    const req = JSON.parse(r.body.toString()) as { out_trade_no: string };
    return wxSigned(200, JSON.stringify({ code_url: `weixin://wxpay/bizpayurl?pr=${req.out_trade_no.slice(0, 9)}` }));
  }
  if (r.method === "GET" && r.url.startsWith("/v3/pay/transactions/out-trade-no/")) {
    const id = decodeURIComponent(r.url.split("/")[5].split("?")[0]);
    const state = closedAtWechat.has(id) ? "CLOSED" : "NOTPAY";
    return wxSigned(
      200,
      JSON.stringify({
        mchid: WX_MCH,
        appid: WX_APPID,
        out_trade_no: id,
        trade_state: state,
        trade_state_desc: state,
        amount: { currency: "CNY" },
      }),
    );
  }
  if (r.method === "POST" && r.url === "/v3/refund/domestic/refunds") {
    const req = JSON.parse(r.body.toString()) as { out_refund_no: string };
    return wxSigned(
      200,
      JSON.stringify({ refund_id: `50000${randomBytes(6).toString("hex")}`, out_refund_no: req.out_refund_no, status: "SUCCESS" }),
    );
  }
  const close = /^\/v3\/pay\/transactions\/out-trade-no\/([^/]+)\/close$/.exec(r.url);
  if (r.method === "POST" && close) {
    closedAtWechat.add(decodeURIComponent(close[1]));
    return wxSigned(204, "");
  }
  return wxSigned(404, JSON.stringify({ code: "NOT_FOUND", message: "not here" }));
}

/** Alipay's gateway stand-in: query → WAIT_BUYER_PAY (TRADE_CLOSED once closed), close → closed, refund → done, anything else → ACQ.SYSTEM_ERROR. */
function alipayAnswer(r: Received): Reply {
  const url = new URL(r.url, "http://x");
  const p: Record<string, string> = {
    ...Object.fromEntries(url.searchParams),
    ...Object.fromEntries(new URLSearchParams(r.body.toString())),
  };
  const method = p.method ?? "";
  const biz = JSON.parse(p.biz_content || "{}") as Record<string, string>;
  if (method === "alipay.trade.close" && biz.out_trade_no) closedAtAlipay.add(biz.out_trade_no);
  const inner = JSON.stringify(
    method === "alipay.trade.query"
      ? {
          code: "10000",
          msg: "Success",
          trade_no: "t",
          out_trade_no: biz.out_trade_no,
          trade_status: closedAtAlipay.has(biz.out_trade_no ?? "") ? "TRADE_CLOSED" : "WAIT_BUYER_PAY",
        }
      : method === "alipay.trade.close"
        ? { code: "10000", msg: "Success", trade_no: "t", out_trade_no: biz.out_trade_no }
        : method === "alipay.trade.refund"
          ? {
              code: "10000",
              msg: "Success",
              trade_no: "t",
              out_trade_no: biz.out_trade_no,
              fund_change: "Y",
              refund_fee: biz.refund_amount,
            }
          : { code: "40004", msg: "Business Failed", sub_code: "ACQ.SYSTEM_ERROR" },
  );
  const sign = rsaSign("sha256", Buffer.from(inner), alipayKey.privateKey).toString("base64");
  return { body: `{"${method.replaceAll(".", "_")}_response":${inner},"sign":"${sign}"}` };
}

/** Starts both stand-ins; `env` enables the two platforms as production would (by environment). */
export async function startPlatformStandIns(): Promise<{
  env: Record<(typeof PLATFORM_ENV_NAMES)[number], string>;
  close(): Promise<void>;
}> {
  const alipay = await fakeGateway(alipayAnswer);
  const wechat = await fakeGateway(wechatAnswer);
  return {
    env: {
      ALIPAY_APP_ID,
      ALIPAY_SELLER_ID,
      ALIPAY_PRIVATE_KEY: pkcs8(alipayApp.privateKey),
      ALIPAY_PUBLIC_KEY: spki(alipayKey.publicKey),
      ALIPAY_GATEWAY: `${alipay.url}/gateway.do`,
      WECHATPAY_MCH_ID: WX_MCH,
      WECHATPAY_APP_ID: WX_APPID,
      WECHATPAY_SERIAL_NO: WX_MERCHANT_SERIAL,
      WECHATPAY_PRIVATE_KEY: pkcs8(wxMerchant.privateKey),
      WECHATPAY_API_V3_KEY: WX_API_V3_KEY,
      WECHATPAY_PLATFORM_CERTS: JSON.stringify({ [WX_PLATFORM_SERIAL]: spki(wxPlatform.publicKey) }),
      WECHATPAY_BASE_URL: wechat.url,
    },
    close: async () => {
      await alipay.close();
      await wechat.close();
    },
  };
}

// ---- callbacks ----

export interface KnownPayment {
  id: string;
  provider: string;
  amountMinor?: number;
  currency?: string;
}

export interface NotifyRequest {
  /** undefined: no Content-Type header. */
  contentType?: string;
  headers: Record<string, string>;
  body: Buffer;
  /** How it was made, for the failure message. */
  kind: string;
}

/** One way to spoil a signed callback (or none). */
type Forgery = "none" | "stale" | "future" | "wrongKey" | "wrongKeyId" | "missingHeader" | "badBase64" | "signType" | "tampered";
const forgery = fc.oneof(
  { arbitrary: fc.constant<Forgery>("none"), weight: 6 },
  {
    arbitrary: fc.constantFrom<Forgery>("stale", "future", "wrongKey", "wrongKeyId", "missingHeader", "badBase64", "signType", "tampered"),
    weight: 4,
  },
);
const nowS = () => Math.floor(Date.now() / 1000);
const timestampFor = (f: Forgery) => String(nowS() + (f === "stale" ? -3600 : f === "future" ? 3600 : 0));
const signatureFor = (f: Forgery, good: string) => (f === "badBase64" ? "!!not base64!!" : good);

const money = fc.oneof(fc.nat({ max: 10_000_000 }), fc.constantFrom(0, 1, -1, 1.5, 2 ** 53));
/** Yuan as Alipay writes it ("12.30"), and ways not to. */
const yuan = fc.oneof(
  { arbitrary: fc.nat({ max: 10_000_000 }).map((m) => `${Math.floor(m / 100)}.${String(m % 100).padStart(2, "0")}`), weight: 4 },
  {
    arbitrary: fc.constantFrom("", "abc", "-1.00", "1", "1.0", "1.001", "1e5", "0x10", "99999999999999999999.99", " 1.00", "NaN"),
    weight: 1,
  },
);

/** The sandbox's payload fields (sandbox.ts's PayloadSchema) as rules: valid and broken values come from them. */
const SANDBOX_PAYLOAD: ParamsSchema = {
  notifyId: { type: "string", min: 1, max: 100 },
  paymentId: { type: "string", min: 1, max: 200 },
  providerTxnId: { type: "string", min: 1, max: 200 },
  amountMinor: { type: "number", integer: true, min: 0, max: Number.MAX_SAFE_INTEGER },
  currency: { type: "string", pattern: "^[A-Z]{3}$" },
  status: { type: "enum", values: ["succeeded", "failed"] },
  paidAt: { type: "string", min: 1, max: 40 },
};

/** Alipay's notify form fields we read, all strings on the wire. */
const ALIPAY_FORM: ParamsSchema = {
  notify_time: { type: "string", min: 1, max: 19 },
  notify_type: { type: "enum", values: ["trade_status_sync"] },
  notify_id: { type: "string", min: 1, max: 64 },
  charset: { type: "enum", values: ["utf-8"] },
  version: { type: "enum", values: ["1.0"] },
  app_id: { type: "string", min: 1, max: 32 },
  seller_id: { type: "string", min: 1, max: 32 },
  out_trade_no: { type: "string", min: 1, max: 64 },
  trade_no: { type: "string", min: 1, max: 64 },
  total_amount: { type: "string", min: 1, max: 20 },
  trade_status: { type: "enum", values: ["TRADE_SUCCESS", "TRADE_FINISHED", "WAIT_BUYER_PAY", "TRADE_CLOSED"] },
  gmt_payment: { type: "string", min: 1, max: 19 },
  refund_fee: { type: "string", optional: true, max: 20 },
};

/** WeChat Pay's decrypted transaction (wechatpay.ts's TransactionSchema). */
const WECHAT_TRANSACTION: ParamsSchema = {
  mchid: { type: "string", min: 1, max: 32 },
  appid: { type: "string", min: 1, max: 32 },
  out_trade_no: { type: "string", min: 1, max: 32 },
  transaction_id: { type: "string", optional: true, max: 32 },
  trade_state: { type: "enum", values: ["SUCCESS", "NOTPAY", "CLOSED", "REFUND", "PAYERROR", "USERPAYING", "REVOKED"] },
  success_time: { type: "string", min: 1, max: 40 },
  amount: {
    type: "object",
    optional: true,
    props: {
      total: { type: "number", integer: true, min: 0, max: 1e9, optional: true },
      currency: { type: "string", optional: true, max: 8 },
    },
  },
};

const isoNow = () => new Date(Date.now() - 5000).toISOString();
const beijingNow = () => new Date(Date.now() + 8 * 3600_000 - 5000).toISOString().slice(0, 19).replace("T", " ");

/** Values of the real system and of our merchant configuration, by field name. */
function payloadHints(payments: () => KnownPayment[], provider: string): Hints {
  const ofProvider = () => {
    const mine = payments().filter((p) => p.provider === provider);
    return mine.length ? mine : payments();
  };
  const pick = (f: (p: KnownPayment) => unknown) =>
    fc.nat().map((i) => {
      const list = ofProvider();
      return list.length ? f(list[i % list.length]) : "pay_unknown";
    });
  return (field) => {
    switch (field) {
      case "paymentId":
      case "out_trade_no":
        return pick((p) => p.id);
      case "amountMinor":
      case "total":
        return money;
      case "currency":
        return fc.constantFrom("CNY", "USD");
      case "total_amount":
        return yuan;
      case "refund_fee":
        return yuan;
      case "paidAt":
      case "success_time":
        return fc.oneof(
          { arbitrary: fc.constant(isoNow()), weight: 4 },
          { arbitrary: fc.constantFrom("2025-01-01T00:00:00+08:00", "not a date", "2025-13-45T99:99:99Z"), weight: 1 },
        );
      case "notify_time":
      case "gmt_payment":
        return fc.oneof(
          { arbitrary: fc.constant(beijingNow()), weight: 4 },
          { arbitrary: fc.constantFrom("2025-02-30 25:61:61", "yesterday", "2025-01-01T00:00:00"), weight: 1 },
        );
      case "app_id":
        return fc.constant(ALIPAY_APP_ID);
      case "seller_id":
        return fc.constant(ALIPAY_SELLER_ID);
      case "mchid":
        return fc.constant(WX_MCH);
      case "appid":
        return fc.constant(WX_APPID);
      default:
        return undefined;
    }
  };
}

/** A payload: mostly valid fields (real payments), sometimes one broken, sometimes anything; `genuine`: valid only. */
function payload(schema: ParamsSchema, hints: Hints, genuine: boolean) {
  // The platforms' parsers (zod) refuse null where a field is optional, unlike fastest-validator.
  const withoutNulls = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null));
  if (genuine) return paramsArbitrary(schema, { hints, mode: "valid" }).map(withoutNulls);
  return fc.oneof(
    { arbitrary: paramsArbitrary(schema, { hints, mode: "valid" }).map(withoutNulls), weight: 5 },
    { arbitrary: paramsArbitrary(schema, { hints, mode: "broken" }), weight: 3 },
    { arbitrary: paramsArbitrary(schema, { hints, mode: "mixed" }), weight: 1 },
  );
}

/** Most of the time the amount is the named payment's own, as the platform would send it. */
const matching = fc.oneof({ arbitrary: fc.constant(true), weight: 3 }, { arbitrary: fc.constant(false), weight: 1 });
const paymentNamed = (payments: () => KnownPayment[], id: unknown) => payments().find((p) => p.id === id && p.amountMinor !== undefined);
const yuanOf = (minor: number) => `${Math.floor(minor / 100)}.${String(minor % 100).padStart(2, "0")}`;

function sandboxCallback(payments: () => KnownPayment[], sandboxKey: () => KeyObject, genuine: boolean): fc.Arbitrary<NotifyRequest> {
  return fc
    .tuple(
      payload(SANDBOX_PAYLOAD, payloadHints(payments, "sandbox"), genuine),
      genuine ? fc.constant<Forgery>("none") : forgery,
      fc.boolean(),
      genuine ? fc.constant(true) : matching,
    )
    .map(([p, f, pretty, match]) => {
      const known = match ? paymentNamed(payments, p.paymentId) : undefined;
      if (known) Object.assign(p, { amountMinor: known.amountMinor, currency: known.currency });
      const body = Buffer.from(JSON.stringify(p, null, pretty ? 2 : undefined), "utf8");
      const timestamp = timestampFor(f);
      const nonce = randomBytes(8).toString("hex");
      const key = f === "wrongKey" ? stranger.privateKey : sandboxKey();
      const canonical = Buffer.concat([Buffer.from(`${SANDBOX_SIGNATURE_PREFIX}\n${timestamp}\n${nonce}\n`), body, Buffer.from("\n")]);
      const signature = rsaSign("sha256", canonical, key).toString("base64");
      const headers: Record<string, string> = {
        "x-sandbox-timestamp": timestamp,
        "x-sandbox-nonce": nonce,
        "x-sandbox-key-id": f === "wrongKeyId" ? keyId(stranger.privateKey) : keyId(sandboxKey()),
        "x-sandbox-signature": signatureFor(f, signature),
      };
      if (f === "missingHeader") delete headers["x-sandbox-nonce"];
      const sent = f === "tampered" ? Buffer.from(body.toString().replace(/\d/, "9")) : body;
      return { contentType: "application/json", headers, body: sent, kind: `sandbox signed (${f})` };
    });
}

function alipayCallback(payments: () => KnownPayment[], genuine: boolean): fc.Arbitrary<NotifyRequest> {
  return fc
    .tuple(
      payload(ALIPAY_FORM, payloadHints(payments, "alipay"), genuine),
      genuine ? fc.constant<Forgery>("none") : forgery,
      fc.constantFrom("application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8"),
      genuine
        ? fc.constant(null)
        : fc.oneof({ arbitrary: fc.constant(null), weight: 8 }, { arbitrary: fc.constantFrom("RSA", "rsa2", ""), weight: 1 }),
      genuine ? fc.constant(true) : matching,
    )
    .map(([p, f, contentType, signTypeOverride, match]) => {
      const known = match ? paymentNamed(payments, p.out_trade_no) : undefined;
      if (known) p.total_amount = yuanOf(known.amountMinor!);
      // Every value is a string on the wire, whatever the generator made.
      const params: Record<string, string> = Object.fromEntries(
        Object.entries(p).map(([k, v]) => [k, typeof v === "string" ? v : (JSON.stringify(v) ?? "")]),
      );
      params.sign_type = f === "signType" ? "RSA" : (signTypeOverride ?? "RSA2");
      // Alipay's notify signature: every parameter but sign and sign_type, sorted, k=v joined by &, RSA2.
      const content = Object.keys(params)
        .filter((k) => k !== "sign" && k !== "sign_type")
        .sort()
        .map((k) => `${k}=${params[k]}`)
        .join("&");
      params.sign = signatureFor(
        f,
        rsaSign("sha256", Buffer.from(content, "utf8"), f === "wrongKey" ? stranger.privateKey : alipayKey.privateKey).toString("base64"),
      );
      if (f === "missingHeader") delete params.sign;
      if (f === "tampered" && params.total_amount) params.total_amount += "1";
      return { contentType, headers: {}, body: Buffer.from(new URLSearchParams(params).toString()), kind: `alipay signed (${f})` };
    });
}

function wechatCallback(payments: () => KnownPayment[], genuine: boolean): fc.Arbitrary<NotifyRequest> {
  return fc
    .tuple(
      payload(WECHAT_TRANSACTION, payloadHints(payments, "wechatpay"), genuine),
      genuine ? fc.constant<Forgery>("none") : forgery,
      genuine ? fc.constant("TRANSACTION.SUCCESS") : fc.constantFrom("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESS", "REFUND.SUCCESS", ""),
      fc.boolean(),
      fc.constantFrom("transaction", "", "other"),
      genuine ? fc.constant(true) : matching,
    )
    .map(([txn, f, eventType, badCiphertext, associatedData, match]) => {
      const known = match ? paymentNamed(payments, txn.out_trade_no) : undefined;
      if (known) txn.amount = { total: known.amountMinor, currency: "CNY" };
      // As WeChat Pay encrypts and signs (wechatpay-axios-plugin: test-support's wechatPlatform).
      const resource = wechatPlatform.resource(JSON.stringify(txn), WX_API_V3_KEY, { associatedData });
      if (badCiphertext && f !== "none") {
        const ct = Buffer.from(resource.ciphertext, "base64");
        ct[3] = ct[3] ^ 1;
        resource.ciphertext = ct.toString("base64");
      }
      const body = Buffer.from(
        JSON.stringify({
          id: randomBytes(8).toString("hex"),
          create_time: isoNow(),
          resource_type: "encrypt-resource",
          event_type: eventType,
          resource,
        }),
      );
      const timestamp = timestampFor(f);
      const nonce = randomBytes(16).toString("hex");
      const headers: Record<string, string> = {
        "wechatpay-timestamp": timestamp,
        "wechatpay-nonce": nonce,
        "wechatpay-serial": f === "wrongKeyId" ? "UNKNOWN_SERIAL" : WX_PLATFORM_SERIAL,
        "wechatpay-signature-type": f === "signType" ? "WECHATPAY2-SHA1" : "WECHATPAY2-SHA256-RSA2048",
        "wechatpay-signature": signatureFor(
          f,
          wechatPlatform.sign(timestamp, nonce, body.toString(), f === "wrongKey" ? stranger.privateKey : wxPlatform.privateKey),
        ),
      };
      if (f === "missingHeader") delete headers["wechatpay-timestamp"];
      const sent = f === "tampered" ? Buffer.from(body.toString().replace("TRANSACTION", "TRANSACTIOM")) : body;
      return { contentType: "application/json", headers, body: sent, kind: `wechatpay signed (${f})` };
    });
}

/** Bytes, of any content type (or none), with a platform's header names sometimes. */
const anyBytes: fc.Arbitrary<NotifyRequest> = fc
  .tuple(
    fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      fc.string({ unit: "binary", maxLength: 200 }).map((s) => Buffer.from(s)),
      fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? "")),
    ),
    fc.option(
      fc.constantFrom(
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "text/xml",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "application/json; charset=gbk",
        "",
      ),
      { nil: undefined },
    ),
    fc.dictionary(
      fc.constantFrom(
        "x-sandbox-timestamp",
        "x-sandbox-signature",
        "x-sandbox-key-id",
        "x-sandbox-nonce",
        "wechatpay-timestamp",
        "wechatpay-serial",
        "wechatpay-signature",
        "wechatpay-nonce",
        "wechatpay-signature-type",
      ),
      fc.oneof(fc.string({ maxLength: 30 }), fc.constant(String(nowS()))),
      { maxKeys: 4, noNullPrototype: true },
    ),
  )
  .map(([body, contentType, headers]) => ({ contentType, headers, body, kind: "bytes" }));

/**
 * A callback body for `provider` (a real one, or whatever the path said). `genuine`: what the
 * platform itself would send — signed right, valid fields, about one of its payments, its amount.
 */
export function notifyRequest(
  provider: string,
  payments: () => KnownPayment[],
  sandboxKey: () => KeyObject,
  opts: { genuine?: boolean } = {},
): fc.Arbitrary<NotifyRequest> {
  const g = opts.genuine === true;
  const shaped =
    provider === "sandbox"
      ? sandboxCallback(payments, sandboxKey, g)
      : provider === "alipay"
        ? alipayCallback(payments, g)
        : provider === "wechatpay"
          ? wechatCallback(payments, g)
          : undefined;
  if (g) return shaped ?? anyBytes;
  return shaped ? fc.oneof({ arbitrary: shaped, weight: 4 }, { arbitrary: anyBytes, weight: 1 }) : anyBytes;
}
