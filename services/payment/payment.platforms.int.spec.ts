/**
 * Alipay and WeChat Pay (APIv3) end to end THROUGH THE GATEWAY, embedded (every service in
 * one broker, SQLite), with both platforms enabled by environment exactly as in production
 * (ALIPAY_* / WECHATPAY_* read from process.env when the payment service is created).
 *
 * No platform can be reached from here, so:
 * - the keys are generated per run: our Alipay app key, "Alipay's" key (signs callbacks and
 *   answers), the WeChat Pay merchant key and the "WeChat Pay platform" key;
 * - ALIPAY_GATEWAY / WECHATPAY_BASE_URL point at local node:http servers (test-support's
 *   fakeGateway) that check our request signatures and answer with the documented shapes,
 *   signed like the platforms sign them;
 * - the callbacks are built here with the platforms' documented algorithms, independently of
 *   the code under test (Alipay: sort params except sign/sign_type, k=v&…, RSA-SHA256, base64,
 *   and also alipay-sdk's own signer; WeChat: AEAD_AES_256_GCM under the APIv3 key, and
 *   RSA-SHA256 over `timestamp\nnonce\nbody\n` with the platform key, both by
 *   wechatpay-axios-plugin, which also checks our requests' signatures), and posted to
 *   POST /api/payments/notify/:provider over HTTP, raw bytes.
 *
 * What is proved: a user orders (CNY), pays (Alipay: a signed pay URL; WeChat: the Native
 * code_url), the genuine callback answers the platform's ack and the order becomes PAID;
 * forged callbacks each answer 400 and change nothing; the same genuine callback 10 times
 * concurrently makes one transition (one payment.succeeded, one order.paid).
 */
import assert from "node:assert/strict";
import { randomBytes, sign as rsaSign, verify as rsaVerify, type KeyObject } from "node:crypto";
import { after, before, describe, it } from "mocha";
import { AlipaySdk } from "alipay-sdk";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { fakeGateway, rsaPair, wechatAnswerHeaders, wechatPlatform, type Received, type Reply } from "./platforms/test-support";
import { decryptResource } from "./platforms/wechatpay";
import { eventually } from "../../test/support/eventually";
import { untilQuiet, unsentOutbox } from "../../test/support/quiet";
import { diagnostic } from "../../test/support/diagnostic";
import { omit } from "../../test/support/omit";
import { SHIPPING_ADDRESS } from "../../test/support/fixtures";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
// ---- keys and merchant identities (generated here; none is real) ----

const alipayApp = rsaPair(); // our Alipay application key pair
const alipayKey = rsaPair(); // stands in for Alipay's own key pair
const wxMerchant = rsaPair(); // our WeChat Pay merchant API key
const wxPlatform = rsaPair(); // stands in for the WeChat Pay platform key
const stranger = rsaPair(); // someone else's key

const ALIPAY_APP_ID = "2021000000000001";
const ALIPAY_SELLER_ID = "2088000000000002";
const WX_MCH = "1900000001";
const WX_APPID = "wxd678efh567hg6787";
const WX_MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const WX_PLATFORM_SERIAL = "PUB_KEY_ID_0114232134912410000000000000";
const WX_API_V3_KEY = "0123456789abcdef0123456789ABCDEF"; // 32 ASCII bytes

const pkcs8 = (k: KeyObject) => k.export({ type: "pkcs8", format: "pem" }).toString();
const spki = (k: KeyObject) => k.export({ type: "spki", format: "pem" }).toString();
const yuan = (minor: number) => `${Math.floor(minor / 100)}.${String(minor % 100).padStart(2, "0")}`;
/** "yyyy-MM-dd HH:mm:ss", Beijing time, as Alipay writes its times. */
const beijing = (ms: number) => new Date(ms + 8 * 3600_000).toISOString().slice(0, 19).replace("T", " ");

// ---- Alipay: the documented notify signature, and the gateway stand-in ----

/** Alipay's async notification signature: every parameter but sign and sign_type, sorted, k=v joined by &, RSA2 (SHA-256), base64. */
function alipayNotifySign(params: Record<string, string>, key: KeyObject, algorithm: "sha256" | "sha1" = "sha256"): string {
  const content = Object.keys(params)
    .filter((k) => k !== "sign" && k !== "sign_type")
    .sort()
    .map((k) => `${k}=${params[k]}`)
    .join("&");
  return rsaSign(algorithm, Buffer.from(content, "utf8"), key).toString("base64");
}

function alipayParams(paymentId: string, amountMinor: number, over: Record<string, string> = {}): Record<string, string> {
  const now = Date.now();
  return {
    notify_time: beijing(now),
    notify_type: "trade_status_sync",
    notify_id: `2025${randomBytes(10).toString("hex")}`,
    charset: "utf-8",
    version: "1.0",
    sign_type: "RSA2",
    app_id: ALIPAY_APP_ID,
    seller_id: ALIPAY_SELLER_ID,
    auth_app_id: ALIPAY_APP_ID,
    buyer_id: "2088102177846880",
    trade_no: `2025${Date.now()}22001${randomBytes(4).toString("hex")}`,
    out_trade_no: paymentId,
    trade_status: "TRADE_SUCCESS",
    total_amount: yuan(amountMinor),
    receipt_amount: yuan(amountMinor),
    buyer_pay_amount: yuan(amountMinor),
    subject: "Meridian order & 50% off + more",
    gmt_create: beijing(now - 10_000),
    gmt_payment: beijing(now - 5_000),
    ...over,
  };
}

/** A form body as Alipay posts it, signed by `key` (Alipay's by default); `mutate` runs after signing. */
function alipayForm(
  params: Record<string, string>,
  key: KeyObject = alipayKey.privateKey,
  mutate?: (p: Record<string, string>) => void,
): string {
  const signed = { ...params, sign: alipayNotifySign(params, key) };
  mutate?.(signed);
  return new URLSearchParams(signed).toString();
}

/** A request to the Alipay stand-in: its parameters (query and form), and whether our app key signed them RSA2. */
function alipayRequest(r: Received): { params: Record<string, string>; signed: boolean } {
  const url = new URL(r.url, "http://x");
  const p: Record<string, string> = {
    ...Object.fromEntries(url.searchParams),
    ...Object.fromEntries(new URLSearchParams(r.body.toString())),
  };
  const content = Object.keys(p)
    .filter((k) => k !== "sign")
    .sort()
    .map((k) => `${k}=${p[k]}`)
    .join("&");
  return {
    params: p,
    signed: p.sign_type === "RSA2" && rsaVerify("sha256", Buffer.from(content), alipayApp.publicKey, Buffer.from(p.sign ?? "", "base64")),
  };
}

/** The Alipay OpenAPI gateway stand-in: checks our RSA2 request signature, answers trade.query "WAIT_BUYER_PAY", signed by "Alipay". */
function alipayGatewayAnswer(r: Received): Reply {
  const { params: p, signed } = alipayRequest(r);
  if (!signed) {
    return { body: JSON.stringify({ error_response: { code: "40002", msg: "Invalid Arguments", sub_code: "isv.invalid-signature" } }) };
  }
  const method = p.method ?? "";
  const biz = JSON.parse(p.biz_content ?? "{}") as Record<string, string>;
  const inner = JSON.stringify(
    method === "alipay.trade.query"
      ? { code: "10000", msg: "Success", trade_no: "t", out_trade_no: biz.out_trade_no, trade_status: "WAIT_BUYER_PAY" }
      : { code: "40004", msg: "Business Failed", sub_code: "ACQ.SYSTEM_ERROR" },
  );
  const sign = rsaSign("sha256", Buffer.from(inner), alipayKey.privateKey).toString("base64");
  return { body: `{"${method.replaceAll(".", "_")}_response":${inner},"sign":"${sign}"}` };
}

// ---- WeChat Pay APIv3: encryption, signatures, and the api.mch.weixin.qq.com stand-in ----

/** AEAD_AES_256_GCM as WeChat Pay uses it (wechatpay-axios-plugin: test-support's `wechatPlatform`). */
function wxEncrypt(plaintext: string, nonce?: string, associatedData?: string) {
  return wechatPlatform.resource(plaintext, WX_API_V3_KEY, { nonce, associatedData });
}

/** WeChat Pay's signature on callbacks and answers (wechatpay-axios-plugin). */
function wxSign(timestamp: string, nonce: string, body: string, key: KeyObject): string {
  return wechatPlatform.sign(timestamp, nonce, body, key);
}

function wxTransaction(paymentId: string, amountMinor: number, over: Record<string, unknown> = {}) {
  return {
    mchid: WX_MCH,
    appid: WX_APPID,
    out_trade_no: paymentId,
    transaction_id: `42000000002025${randomBytes(7).toString("hex")}`,
    trade_type: "NATIVE",
    trade_state: "SUCCESS",
    trade_state_desc: "支付成功",
    bank_type: "OTHERS",
    attach: "",
    success_time: new Date(Date.now() - 5_000).toISOString().replace(/\.\d{3}Z$/, "+00:00"),
    payer: { openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
    amount: { total: amountMinor, payer_total: amountMinor, currency: "CNY", payer_currency: "CNY" },
    ...over,
  };
}

interface WxCallback {
  headers: Record<string, string>;
  body: string;
}

/** A callback as WeChat Pay posts it. Options forge one part at a time. */
function wxCallback(
  txn: Record<string, unknown>,
  opts: {
    key?: KeyObject;
    serial?: string;
    timestampOffsetS?: number;
    signature?: string;
    tamperCiphertext?: boolean;
    pretty?: boolean;
  } = {},
): WxCallback {
  const resource = wxEncrypt(JSON.stringify(txn));
  if (opts.tamperCiphertext) {
    const bytes = Buffer.from(resource.ciphertext, "base64");
    bytes[5] = bytes[5] ^ 0x01;
    resource.ciphertext = bytes.toString("base64");
  }
  const notification = {
    id: randomBytes(16).toString("hex"),
    create_time: new Date().toISOString().replace(/\.\d{3}Z$/, "+00:00"),
    resource_type: "encrypt-resource",
    event_type: "TRANSACTION.SUCCESS",
    summary: "支付成功",
    resource,
  };
  // Signed over the exact bytes: an indented body (any JSON layout) must verify as sent.
  const body = JSON.stringify(notification, null, opts.pretty ? 2 : undefined);
  const timestamp = String(Math.floor(Date.now() / 1000) + (opts.timestampOffsetS ?? 0));
  const nonce = randomBytes(16).toString("hex").toUpperCase();
  return {
    body,
    headers: {
      "content-type": "application/json",
      "wechatpay-timestamp": timestamp,
      "wechatpay-nonce": nonce,
      "wechatpay-serial": opts.serial ?? WX_PLATFORM_SERIAL,
      "wechatpay-signature-type": "WECHATPAY2-SHA256-RSA2048",
      "wechatpay-signature": opts.signature ?? wxSign(timestamp, nonce, body, opts.key ?? wxPlatform.privateKey),
    },
  };
}

/** Whether a request to the WeChat Pay stand-in carries our merchant's valid APIv3 signature (Authorization header). */
function wxAuthorized(r: Received): boolean {
  const m = /^WECHATPAY2-SHA256-RSA2048 mchid="(\d+)",nonce_str="(\w+)",signature="([^"]+)",timestamp="(\d+)",serial_no="(\w+)"$/.exec(
    String(r.headers.authorization),
  );
  return (
    !!m &&
    m[1] === WX_MCH &&
    m[5] === WX_MERCHANT_SERIAL &&
    wechatPlatform.verifyRequest({ method: r.method, url: r.url, body: r.body.toString() }, m[4], m[2], m[3], wxMerchant.publicKey)
  );
}

/**
 * The platform APIs our code may call, as the platforms document them. WeChat Pay APIv3:
 * Native 下单, 查询订单 (by out-trade-no, with mchid), 关闭订单, 申请退款. Alipay OpenAPI:
 * trade.query, trade.close, trade.cancel, trade.refund, trade.fastpay.refund.query.
 */
const WX_DOCUMENTED = [
  /^POST \/v3\/pay\/transactions\/native$/,
  /^GET \/v3\/pay\/transactions\/out-trade-no\/[^/?]+\?mchid=\d+$/,
  /^POST \/v3\/pay\/transactions\/out-trade-no\/[^/?]+\/close$/,
  /^POST \/v3\/refund\/domestic\/refunds$/,
];
const ALIPAY_DOCUMENTED = [
  "alipay.trade.query",
  "alipay.trade.close",
  "alipay.trade.cancel",
  "alipay.trade.refund",
  "alipay.trade.fastpay.refund.query",
];

/** The api.mch.weixin.qq.com stand-in: checks our Authorization header; Native order → code_url; query → NOTPAY; signed answers. */
function wechatGatewayAnswer(r: Received): Reply {
  const authorized = wxAuthorized(r);
  let status = 200;
  let payload: unknown;
  if (!authorized) {
    status = 401;
    payload = { code: "SIGN_ERROR", message: "签名错误" };
  } else if (r.method === "POST" && r.url === "/v3/pay/transactions/native") {
    const req = JSON.parse(r.body.toString()) as { out_trade_no: string };
    payload = { code_url: `weixin://wxpay/bizpayurl?pr=${req.out_trade_no.slice(0, 9)}` };
  } else if (r.method === "GET" && r.url.startsWith("/v3/pay/transactions/out-trade-no/")) {
    const id = decodeURIComponent(r.url.split("/")[5].split("?")[0]);
    payload = {
      mchid: WX_MCH,
      appid: WX_APPID,
      out_trade_no: id,
      trade_state: "NOTPAY",
      trade_state_desc: "订单未支付",
      amount: { currency: "CNY" },
    };
  } else {
    status = 404;
    payload = { code: "NOT_FOUND", message: "not here" };
  }
  const body = JSON.stringify(payload);
  return {
    status,
    body,
    headers: { "request-id": randomBytes(8).toString("hex"), ...wechatAnswerHeaders(body, wxPlatform.privateKey, WX_PLATFORM_SERIAL) },
  };
}

// ---- the app ----

const PLATFORM_ENV = [
  "ALIPAY_APP_ID",
  "ALIPAY_SELLER_ID",
  "ALIPAY_PRIVATE_KEY",
  "ALIPAY_PUBLIC_KEY",
  "ALIPAY_GATEWAY",
  "WECHATPAY_MCH_ID",
  "WECHATPAY_APP_ID",
  "WECHATPAY_SERIAL_NO",
  "WECHATPAY_PRIVATE_KEY",
  "WECHATPAY_API_V3_KEY",
  "WECHATPAY_PLATFORM_CERTS",
  "WECHATPAY_BASE_URL",
] as const;

describe("Alipay and WeChat Pay through the gateway (embedded, SQLite; platforms enabled by environment)", () => {
  let app: TestApp;
  let alipayGateway: Awaited<ReturnType<typeof fakeGateway>>;
  let wechatGateway: Awaited<ReturnType<typeof fakeGateway>>;
  const saved: Record<string, string | undefined> = {};
  let admin = "";
  let alice = "";
  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
  const db = (service: "payment" | "order") => (app.broker.getLocalService(service) as unknown as { db: import("knex").Knex }).db;
  /** Outbox rows of `event` in `service`'s database whose payload[field] is `id`. */
  const outbox = async (service: "payment" | "order", event: string, field: string, id: string) =>
    ((await db(service)("outbox").where({ event })) as { payload: string }[])
      .map((r) => JSON.parse(r.payload) as Record<string, unknown>)
      .filter((p) => p[field] === id);
  const paymentStatus = async (id: string) => (await call("GET", `/api/payments/${id}`, { token: alice })).body.status as string;
  const getOrder = async (id: string) => (await call("GET", `/api/orders/${id}`, { token: alice })).body;
  const notify = async (provider: string, c: { headers: Record<string, string>; body: string }) => {
    const res = await fetch(`${app.baseUrl}/api/payments/notify/${provider}`, { method: "POST", headers: c.headers, body: c.body });
    return { status: res.status, text: await res.text(), headers: res.headers };
  };
  /** The reasons the payment service logged for refused callbacks (its nack body does not carry them for Alipay). */
  const refusals: string[] = [];
  const alipayPost = (body: string, contentType = "application/x-www-form-urlencoded; charset=utf-8") =>
    notify("alipay", { headers: { "content-type": contentType }, body });

  /** A CNY product, an order of it by Alice, and its payment with `provider`. */
  async function orderAndPay(provider: "alipay" | "wechatpay", price: number, quantity = 2) {
    const product = await call("POST", "/api/products", {
      token: admin,
      body: {
        sku: `PP-${randomBytes(4).toString("hex")}`,
        name: "Platform Widget",
        description: "",
        category: "widgets",
        price: { amount: price, currency: "CNY" },
        stock: 10,
      },
    });
    assert.equal(product.status, 201, product.text);
    const created = await call("POST", "/api/orders", {
      token: alice,
      body: { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: product.body.id, quantity }] },
    });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.status, "PENDING_PAYMENT");
    assert.deepEqual(created.body.total, { amount: price * quantity, currency: "CNY" });
    const pay = await call("POST", `/api/orders/${created.body.id}/pay`, { token: alice, body: { provider } });
    assert.equal(pay.status, 200, pay.text);
    assert.equal(pay.body.provider, provider);
    assert.equal(pay.body.status, "PENDING");
    assert.deepEqual(pay.body.amount, { amount: price * quantity, currency: "CNY" });
    return {
      order: created.body as { id: string },
      payment: pay.body as { id: string; payUrl?: string; form?: string; codeUrl?: string },
      productId: product.body.id as string,
      amount: price * quantity,
    };
  }

  /** Until the payment and order outboxes are delivered (in-process) and no callback is being sent or swept. */
  const quiet = () => {
    const payment = app.broker.getLocalService("payment") as unknown as {
      deliveries: Set<unknown>;
      reconciler?: { running?: Promise<void> };
    };
    return untilQuiet("payment and order", {
      "unsent payment outbox rows": () => unsentOutbox(db("payment")),
      "unsent order outbox rows": () => unsentOutbox(db("order")),
      "sandbox callbacks being sent": () => payment.deliveries.size,
      "reconciliation passes running": () => (payment.reconciler?.running ? 1 : 0),
    });
  };

  /** Nothing changed: payment PENDING, order PENDING_PAYMENT, no payment event, no order.paid. */
  async function assertUnchanged(what: string, paymentId: string, orderId: string) {
    assert.equal(await paymentStatus(paymentId), "PENDING", `${what}: payment`);
    assert.equal((await getOrder(orderId)).status, "PENDING_PAYMENT", `${what}: order`);
    assert.equal((await outbox("payment", "payment.succeeded", "paymentId", paymentId)).length, 0, `${what}: payment.succeeded`);
    assert.equal((await outbox("payment", "payment.failed", "paymentId", paymentId)).length, 0, `${what}: payment.failed`);
    assert.equal((await outbox("order", "order.paid", "orderId", orderId)).length, 0, `${what}: order.paid`);
  }

  /** PAID, and exactly one payment.succeeded / order.paid, after the in-process events have settled. */
  async function assertPaidOnce(paymentId: string, orderId: string, providerTxnId: string) {
    const paid = await eventually("order PAID", async () => {
      const o = await getOrder(orderId);
      return o.status === "PAID" && o;
    });
    assert.deepEqual(
      paid.history.map((h: { status: string }) => h.status),
      ["PENDING_PAYMENT", "PAID"],
    );
    assert.deepEqual(paid.refunds ?? [], [], "no automatic refund (the success matched the order)");
    const p = (await call("GET", `/api/payments/${paymentId}`, { token: alice })).body;
    assert.equal(p.status, "SUCCEEDED");
    assert.equal(p.providerTxnId, providerTxnId);
    assert.ok(p.paidAt);
    // Counted once the in-process events have been delivered and nothing is being sent or swept.
    await quiet();
    assert.equal((await outbox("payment", "payment.succeeded", "paymentId", paymentId)).length, 1, "one payment.succeeded");
    assert.equal((await outbox("payment", "payment.failed", "paymentId", paymentId)).length, 0, "no payment.failed");
    assert.equal((await outbox("order", "order.paid", "orderId", orderId)).length, 1, "one order.paid");
  }

  before(async () => {
    alipayGateway = await fakeGateway(alipayGatewayAnswer);
    wechatGateway = await fakeGateway(wechatGatewayAnswer);
    for (const name of PLATFORM_ENV) saved[name] = process.env[name];
    // The payment service reads the platforms' configuration from process.env when it is created.
    Object.assign(process.env, {
      ALIPAY_APP_ID,
      ALIPAY_SELLER_ID,
      ALIPAY_PRIVATE_KEY: pkcs8(alipayApp.privateKey),
      ALIPAY_PUBLIC_KEY: spki(alipayKey.publicKey),
      ALIPAY_GATEWAY: `${alipayGateway.url}/gateway.do`,
      WECHATPAY_MCH_ID: WX_MCH,
      WECHATPAY_APP_ID: WX_APPID,
      WECHATPAY_SERIAL_NO: WX_MERCHANT_SERIAL,
      WECHATPAY_PRIVATE_KEY: pkcs8(wxMerchant.privateKey),
      WECHATPAY_API_V3_KEY: WX_API_V3_KEY,
      WECHATPAY_PLATFORM_CERTS: JSON.stringify({ [WX_PLATFORM_SERIAL]: spki(wxPlatform.publicKey) }),
      WECHATPAY_BASE_URL: wechatGateway.url,
    });
    app = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    const enabled = (app.broker.getLocalService("payment") as unknown as { paymentConfig: { enabled: string[] } }).paymentConfig.enabled;
    assert.deepEqual(enabled, ["sandbox", "alipay", "wechatpay"]);
    const logger = (app.broker.getLocalService("payment") as unknown as { logger: { warn: (...a: unknown[]) => void } }).logger;
    const warn = logger.warn.bind(logger);
    logger.warn = (...a: unknown[]) => {
      const m = /^Refused a (\w+) callback: (\w+)$/.exec(String(a[0]));
      if (m) refusals.push(`${m[1]}:${m[2]}`);
      warn(...a);
    };
    admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
    alice = (await call("POST", "/api/auth/register", { body: { email: "alice@example.com", password: "alice password", name: "Alice" } }))
      .body.accessToken;
    assert.ok(admin && alice);
  });

  after(async () => {
    await app?.stop();
    for (const name of PLATFORM_ENV) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
    await alipayGateway?.close();
    await wechatGateway?.close();
  });

  describe("Alipay", () => {
    it("pay: a pay URL to the configured gateway, signed RSA2 with our app key, our notify route in it", async () => {
      const { payment, amount } = await orderAndPay("alipay", 1250);
      assert.ok(payment.payUrl || payment.form, "payUrl or form");
      const url = new URL(payment.payUrl!);
      assert.equal(`${url.origin}${url.pathname}`, `${alipayGateway.url}/gateway.do`);
      const p = Object.fromEntries(url.searchParams);
      assert.equal(p.method, "alipay.trade.page.pay");
      assert.equal(p.app_id, ALIPAY_APP_ID);
      assert.equal(p.sign_type, "RSA2");
      assert.equal(p.notify_url, `${app.baseUrl}/api/payments/notify/alipay`);
      const biz = JSON.parse(p.biz_content);
      assert.equal(biz.out_trade_no, payment.id);
      assert.equal(biz.total_amount, yuan(amount));
      assert.equal(biz.product_code, "FAST_INSTANT_TRADE_PAY");
      const content = Object.keys(p)
        .filter((k) => k !== "sign")
        .sort()
        .map((k) => `${k}=${p[k]}`)
        .join("&");
      assert.ok(
        rsaVerify("sha256", Buffer.from(content), alipayApp.publicKey, Buffer.from(p.sign, "base64")),
        "the gateway would accept our signature",
      );
    });

    it("forged callbacks: each 400 'fail', nothing changes; then the genuine one: 'success', SUCCEEDED, order PAID", async () => {
      const { order, payment, amount } = await orderAndPay("alipay", 1999);
      const genuine = alipayParams(payment.id, amount);
      const rsaSha1 = (() => {
        // A correct signature by Alipay's own key, but RSA (SHA-1): alipay-sdk alone would follow the request's sign_type and accept it.
        const params = { ...genuine, sign_type: "RSA" };
        const content = Object.keys(params)
          .filter((k) => k !== "sign" && k !== "sign_type")
          .sort()
          .map((k) => `${k}=${params[k as keyof typeof params]}`)
          .join("&");
        return new URLSearchParams({
          ...params,
          sign: rsaSign("sha1", Buffer.from(content), alipayKey.privateKey).toString("base64"),
        }).toString();
      })();
      // [case, body, the refusal reason the service must log, content type]
      const cases: [string, string, string, string?][] = [
        [
          "bad signature (bytes flipped)",
          alipayForm(
            genuine,
            alipayKey.privateKey,
            (p) => (p.sign = Buffer.from(Buffer.from(p.sign, "base64").map((b, i) => (i === 10 ? b ^ 0xff : b))).toString("base64")),
          ),
          "bad_signature",
        ],
        [
          "bad signature (amount changed after signing)",
          alipayForm(genuine, alipayKey.privateKey, (p) => (p.total_amount = "0.01")),
          "bad_signature",
        ],
        ["no signature", alipayForm(genuine, alipayKey.privateKey, (p) => delete p.sign), "bad_signature"],
        ["signed with another key", alipayForm(genuine, stranger.privateKey), "bad_signature"],
        ["signed with our own app key (not Alipay's)", alipayForm(genuine, alipayApp.privateKey), "bad_signature"],
        ["sign_type=RSA (SHA-1), correctly signed by Alipay's key", rsaSha1, "sign_type"],
        ["no sign_type", alipayForm(genuine, alipayKey.privateKey, (p) => delete p.sign_type), "sign_type"],
        ["wrong app_id (signed by Alipay)", alipayForm({ ...genuine, app_id: "2021000000000999" }), "app"],
        ["wrong seller_id (signed by Alipay)", alipayForm({ ...genuine, seller_id: "2088000000000999" }), "merchant"],
        [
          "no seller_id (signed by Alipay)",
          alipayForm(Object.fromEntries(Object.entries(genuine).filter(([k]) => k !== "seller_id"))),
          "merchant",
        ],
        [
          "wrong total_amount (signed by Alipay)",
          alipayForm({ ...genuine, total_amount: yuan(amount - 1), receipt_amount: yuan(amount - 1), buyer_pay_amount: yuan(amount - 1) }),
          "amount",
        ],
        ["total_amount 0.01 (signed by Alipay)", alipayForm({ ...genuine, total_amount: "0.01" }), "amount"],
        [
          "unknown out_trade_no (signed by Alipay)",
          alipayForm({ ...genuine, out_trade_no: randomBytes(16).toString("hex") }),
          "unknown_order",
        ],
        [
          "a JSON body",
          JSON.stringify({ ...genuine, sign: alipayNotifySign(genuine, alipayKey.privateKey) }),
          "content_type",
          "application/json",
        ],
      ];
      for (const [name, body, reason, type] of cases) {
        refusals.length = 0;
        const r = await alipayPost(body, type);
        assert.equal(r.status, 400, `${name}: ${r.status} ${r.text}`);
        assert.equal(r.text, "fail", name);
        assert.deepEqual(refusals, [`alipay:${reason}`], `${name}: refused for the expected reason`);
      }
      await assertUnchanged("after the forgeries", payment.id, order.id);

      const ok = await alipayPost(alipayForm(genuine));
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.text, "success", "Alipay stops re-sending only on the literal body 'success'");
      assert.match(ok.headers.get("content-type") ?? "", /^text\/plain/);
      await assertPaidOnce(payment.id, order.id, genuine.trade_no);
      // A forgery after the success changes nothing either (e.g. a "closed" for the same trade by another key).
      assert.equal((await alipayPost(alipayForm({ ...genuine, trade_status: "TRADE_CLOSED" }, stranger.privateKey))).status, 400);
      assert.equal(await paymentStatus(payment.id), "SUCCEEDED");
    });

    it("the same genuine callback (signed by alipay-sdk's own signer) 10 times concurrently: 'success' each time, one transition", async () => {
      const { order, payment, amount, productId } = await orderAndPay("alipay", 888, 3);
      // An alipay-sdk instance holding "Alipay's" private key signs the way the SDK signs
      // (it adds method/timestamp and signs over sign_type too; Alipay's notify check accepts both).
      const signer = new AlipaySdk({ appId: ALIPAY_APP_ID, privateKey: pkcs8(alipayKey.privateKey), keyType: "PKCS8", signType: "RSA2" });
      const rest = omit(alipayParams(payment.id, amount), "app_id", "sign_type", "charset", "version");
      const body = signer.sdkExecute("alipay.trade.page.pay.notify", rest);
      assert.equal(new URLSearchParams(body).get("sign_type"), "RSA2");
      const replies = await Promise.all(Array.from({ length: 10 }, () => alipayPost(body)));
      for (const r of replies) {
        assert.equal(r.status, 200, r.text);
        assert.equal(r.text, "success");
      }
      await assertPaidOnce(payment.id, order.id, rest.trade_no);
      // And again, in a row: still acknowledged, still one of each.
      for (let i = 0; i < 3; i++) assert.equal((await alipayPost(body)).text, "success");
      await quiet();
      assert.equal((await outbox("payment", "payment.succeeded", "paymentId", payment.id)).length, 1);
      assert.equal((await outbox("order", "order.paid", "orderId", order.id)).length, 1);
      // One decrement of stock.
      const stock = (await call("GET", `/api/products/${productId}`)).body.stock;
      assert.deepEqual(stock, { onHand: 7, reserved: 0, available: 7 });
    });
  });

  describe("WeChat Pay APIv3", () => {
    it("pay: the Native order is signed with our merchant key and its code_url comes back", async () => {
      const before = wechatGateway.received.length;
      const { payment, amount } = await orderAndPay("wechatpay", 1500, 1);
      assert.match(payment.codeUrl ?? "", /^weixin:\/\/wxpay\/bizpayurl\?pr=/);
      const sent = wechatGateway.received.slice(before).filter((r) => r.url === "/v3/pay/transactions/native");
      assert.equal(sent.length, 1);
      const req = JSON.parse(sent[0].body.toString());
      assert.deepEqual(
        { appid: req.appid, mchid: req.mchid, out_trade_no: req.out_trade_no, notify_url: req.notify_url, amount: req.amount },
        {
          appid: WX_APPID,
          mchid: WX_MCH,
          out_trade_no: payment.id,
          notify_url: `${app.baseUrl}/api/payments/notify/wechatpay`,
          amount: { total: amount, currency: "CNY" },
        },
      );
      assert.equal(payment.codeUrl, `weixin://wxpay/bizpayurl?pr=${payment.id.slice(0, 9)}`);
    });

    it("forged notifications: each 4xx, nothing changes; then the genuine one: 2xx, SUCCEEDED, order PAID; repeats change nothing", async () => {
      const { order, payment, amount } = await orderAndPay("wechatpay", 2599, 1);
      const txn = wxTransaction(payment.id, amount);
      // [case, notification, the reason the service must give (WeChat's nack carries it as `message`)]
      const changed = wxCallback(txn);
      const cases: [string, WxCallback, string][] = [
        // WeChat's own probe: a deliberately wrong signature that starts with WECHATPAY/SIGNTEST/.
        [
          "signature probe (WECHATPAY/SIGNTEST/)",
          wxCallback(txn, { signature: `WECHATPAY/SIGNTEST/${randomBytes(32).toString("base64")}` }),
          "bad_signature",
        ],
        ["signed with another key", wxCallback(txn, { key: stranger.privateKey }), "bad_signature"],
        ["signed with our merchant key", wxCallback(txn, { key: wxMerchant.privateKey }), "bad_signature"],
        [
          "body changed after signing",
          { headers: changed.headers, body: changed.body.replace("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESS ") },
          "bad_signature",
        ],
        [
          "unknown serial (signed by the platform key)",
          wxCallback(txn, { serial: "PUB_KEY_ID_0000000000000000000000000000" }),
          "unknown_serial",
        ],
        [
          "unknown serial (signed with another key)",
          wxCallback(txn, { serial: "7132D72A03E93CDDF8C03BBD1F37EEDF", key: stranger.privateKey }),
          "unknown_serial",
        ],
        ["timestamp 6 minutes old", wxCallback(txn, { timestampOffsetS: -360 }), "timestamp"],
        ["timestamp 6 minutes ahead", wxCallback(txn, { timestampOffsetS: 360 }), "timestamp"],
        ["tampered ciphertext (re-signed by the platform key)", wxCallback(txn, { tamperCiphertext: true }), "decrypt"],
        ["wrong mchid", wxCallback({ ...txn, mchid: "1900000999" }), "merchant"],
        ["wrong appid", wxCallback({ ...txn, appid: "wx0000000000000999" }), "app"],
        [
          "wrong amount",
          wxCallback({ ...txn, amount: { total: amount - 1, payer_total: amount - 1, currency: "CNY", payer_currency: "CNY" } }),
          "amount",
        ],
        [
          "wrong currency",
          wxCallback({ ...txn, amount: { total: amount, payer_total: amount, currency: "USD", payer_currency: "USD" } }),
          "currency",
        ],
        ["unknown out_trade_no", wxCallback({ ...txn, out_trade_no: randomBytes(16).toString("hex") }), "unknown_order"],
      ];
      for (const [name, c, reason] of cases) {
        const r = await notify("wechatpay", c);
        assert.equal(r.status, 400, `${name}: ${r.status} ${r.text}`);
        assert.deepEqual(JSON.parse(r.text), { code: "FAIL", message: reason }, name);
      }
      await assertUnchanged("after the forgeries", payment.id, order.id);

      const genuine = wxCallback(txn);
      const ok = await notify("wechatpay", genuine);
      assert.ok(ok.status >= 200 && ok.status < 300, `${ok.status} ${ok.text}`);
      await assertPaidOnce(payment.id, order.id, txn.transaction_id);
      // WeChat re-sends until acknowledged: the same one (and a fresh copy) again, also concurrently.
      const again = await Promise.all([
        ...Array.from({ length: 5 }, () => notify("wechatpay", genuine)),
        ...Array.from({ length: 5 }, () => notify("wechatpay", wxCallback(txn))),
      ]);
      for (const r of again) assert.ok(r.status >= 200 && r.status < 300, `${r.status} ${r.text}`);
      await quiet();
      assert.equal((await outbox("payment", "payment.succeeded", "paymentId", payment.id)).length, 1);
      assert.equal((await outbox("order", "order.paid", "orderId", order.id)).length, 1);
    });

    it("the same genuine notification 10 times concurrently: 2xx each time, one transition", async () => {
      const { order, payment, amount } = await orderAndPay("wechatpay", 100, 1);
      const txn = wxTransaction(payment.id, amount);
      const genuine = wxCallback(txn, { pretty: true });
      assert.ok(genuine.body.includes("\n  "), "indented, not our JSON.stringify layout");
      const replies = await Promise.all(Array.from({ length: 10 }, () => notify("wechatpay", genuine)));
      for (const r of replies) assert.ok(r.status >= 200 && r.status < 300, `${r.status} ${r.text}`);
      await assertPaidOnce(payment.id, order.id, txn.transaction_id);
    });
  });

  // In a describe of its own, after the others: mocha runs a suite's own tests before its
  // nested suites, and this one audits the calls the suites above made.
  describe("the calls the tests above made", () => {
    it("every call that reached the fake platforms was signed with our key and named an API the platform documents; the test's AEAD helper round-trips", () => {
      diagnostic(`calls received: WeChat Pay ${wechatGateway.received.length}, Alipay ${alipayGateway.received.length}`);
      // The Native orders of the WeChat tests above at least (the pay page's URL is signed, not called).
      assert.ok(wechatGateway.received.length >= 3);
      for (const r of wechatGateway.received) {
        assert.ok(wxAuthorized(r), `${r.method} ${r.url}: our merchant signature`);
        assert.ok(
          WX_DOCUMENTED.some((re) => re.test(`${r.method} ${r.url}`)),
          `${r.method} ${r.url}: a documented WeChat Pay API`,
        );
      }
      for (const r of alipayGateway.received) {
        const { params, signed } = alipayRequest(r);
        assert.ok(signed, `${params.method}: signed RSA2 with our app key`);
        assert.ok(ALIPAY_DOCUMENTED.includes(params.method ?? ""), `${params.method}: a documented Alipay API`);
      }
      // The independent implementation's resource is what our module decrypts (interoperation, not a round trip of one helper).
      assert.equal(decryptResource(wxEncrypt("hello"), Buffer.from(WX_API_V3_KEY, "utf8")).toString(), "hello");
    });
  });
});
