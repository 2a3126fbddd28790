/**
 * WeChat Pay create/query/refund/close against a local HTTP server standing in for
 * api.mch.weixin.qq.com (no platform can be reached from here). The server checks our
 * WECHATPAY2-SHA256-RSA2048 Authorization header and answers with the documented shapes,
 * signed with a "platform" key generated here, so answer verification is exercised too.
 */
import assert from "node:assert/strict";
import { randomBytes, type KeyObject } from "node:crypto";
import { after, before, it } from "mocha";
import { Secret } from "./keys";
import { PaymentPlatformError } from "./platform";
import { fakeGateway, rsaPair, wechatAnswerHeaders, wechatPlatform, type Received, type Reply } from "./test-support";
import { WechatPayPlatform } from "./wechatpay";

const merchant = rsaPair();
const platformKey = rsaPair();
const other = rsaPair();
const SERIAL = "PUB_KEY_ID_0114232134912410000000000000";
const MCH = "1900000001";
const APPID = "wxd678efh567hg6787";
const now = Date.parse("2025-03-01T04:00:00Z");

interface Answer {
  status?: number;
  body?: unknown;
  /** How to sign the answer: the platform key (default), another key, or not at all. */
  signWith?: KeyObject | null;
  timestampOffsetS?: number;
}
let next: (r: Received) => Answer;
let gateway: Awaited<ReturnType<typeof fakeGateway>>;
let platform: WechatPayPlatform;

function checkAuthorization(r: Received): boolean {
  const m = /^WECHATPAY2-SHA256-RSA2048 mchid="(\d+)",nonce_str="(\w+)",signature="([^"]+)",timestamp="(\d+)",serial_no="(\w+)"$/.exec(
    String(r.headers.authorization),
  );
  if (!m || m[1] !== MCH || m[5] !== "MERCHANTSERIAL") return false;
  return wechatPlatform.verifyRequest({ method: r.method, url: r.url, body: r.body.toString() }, m[4], m[2], m[3], merchant.publicKey);
}

function answer(r: Received): Reply {
  const a: Answer = checkAuthorization(r) ? next(r) : { status: 401, body: { code: "SIGN_ERROR", message: "签名错误" }, signWith: null };
  const body = a.body === undefined ? "" : JSON.stringify(a.body);
  const headers: Record<string, string> = { "request-id": randomBytes(8).toString("hex") };
  if (a.signWith !== null)
    Object.assign(
      headers,
      wechatAnswerHeaders(body, a.signWith ?? platformKey.privateKey, SERIAL, Math.floor(now / 1000) + (a.timestampOffsetS ?? 0)),
    );
  return { status: a.status ?? 200, headers, body };
}

before(async () => {
  gateway = await fakeGateway(answer);
  platform = new WechatPayPlatform(
    {
      mchId: MCH,
      appId: APPID,
      serialNo: "MERCHANTSERIAL",
      privateKey: merchant.privateKey,
      apiV3Key: new Secret(Buffer.from("0123456789abcdef0123456789ABCDEF")),
      platformKeys: new Map([[SERIAL, platformKey.publicKey]]),
      baseUrl: gateway.url,
    },
    { now: () => now },
  );
});
after(() => gateway.close());

const transaction = (over: Record<string, unknown> = {}) => ({
  appid: APPID,
  mchid: MCH,
  out_trade_no: "pay0001abc",
  transaction_id: "4200000000202503010000000001",
  trade_type: "NATIVE",
  trade_state: "SUCCESS",
  trade_state_desc: "支付成功",
  success_time: "2025-03-01T12:00:00+08:00",
  amount: { total: 1999, payer_total: 1999, currency: "CNY", payer_currency: "CNY" },
  ...over,
});

it("create: Native pay, signed request, code_url back", async () => {
  next = (r) => {
    assert.equal(r.method, "POST");
    assert.equal(r.url, "/v3/pay/transactions/native");
    assert.ok(r.headers["user-agent"]);
    assert.deepEqual(JSON.parse(r.body.toString()), {
      appid: APPID,
      mchid: MCH,
      description: "Order ord_1",
      out_trade_no: "pay0001abc",
      // now (2025-03-01T04:00:00Z) + 15 min + 999 ms, in Beijing time, ms dropped.
      time_expire: "2025-03-01T12:15:00+08:00",
      notify_url: "https://shop.example/api/payments/notify/wechatpay",
      amount: { total: 1999, currency: "CNY" },
    });
    return { body: { code_url: "weixin://wxpay/bizpayurl?pr=p4lpSuKzz" } };
  };
  const input = {
    paymentId: "pay0001abc",
    orderId: "ord_1",
    amountMinor: 1999,
    currency: "CNY",
    subject: "Order ord_1",
    notifyUrl: "https://shop.example/api/payments/notify/wechatpay",
  };
  const res = await platform.create({ ...input, expiresAt: now + 15 * 60_000 + 999 });
  assert.deepEqual(res, { kind: "qr", codeUrl: "weixin://wxpay/bizpayurl?pr=p4lpSuKzz" });
  const sent = gateway.received.length;
  // A dashed UUID (36 chars) does not fit out_trade_no: refused before sending.
  await assert.rejects(
    platform.create({ ...input, paymentId: "0b9f0c1e-8d2e-4c39-9a55-3f4a2f0e1a77", expiresAt: now + 15 * 60_000 }),
    (e) => e instanceof PaymentPlatformError && e.reason === "invalid_request",
  );
  // An expiry in the past, or so close that WeChat would move it to one minute after the
  // order (later than ours): refused before sending.
  await assert.rejects(
    platform.create({ ...input, expiresAt: now - 1 }),
    (e) => e instanceof PaymentPlatformError && e.reason === "invalid_request" && /future/.test(e.message),
  );
  await assert.rejects(
    platform.create({ ...input, expiresAt: now + 60_000 }),
    (e) => e instanceof PaymentPlatformError && e.reason === "invalid_request" && !e.retryable && /one minute/.test(e.message),
  );
  assert.equal(gateway.received.length, sent);
});

it("query: paid, not paid, unknown; the answer's signature is checked", async () => {
  next = (r) => {
    assert.equal(r.method, "GET");
    assert.equal(r.url, `/v3/pay/transactions/out-trade-no/pay0001abc?mchid=${MCH}`);
    assert.equal(r.body.length, 0);
    return { body: transaction() };
  };
  assert.deepEqual(await platform.query("pay0001abc"), {
    status: "succeeded",
    paymentId: "pay0001abc",
    providerTxnId: "4200000000202503010000000001",
    amountMinor: 1999,
    currency: "CNY",
    paidAt: "2025-03-01T04:00:00.000Z",
  });
  next = () => ({ body: transaction({ trade_state: "NOTPAY", transaction_id: undefined, success_time: undefined }) });
  assert.equal((await platform.query("pay0001abc")).status, "pending");
  next = () => ({ body: transaction({ trade_state: "CLOSED" }) });
  assert.equal((await platform.query("pay0001abc")).status, "failed");
  next = () => ({ status: 404, body: { code: "ORDER_NOT_EXIST", message: "订单不存在" } });
  assert.deepEqual(await platform.query("pay0001abc"), { status: "not_found", paymentId: "pay0001abc" });
});

it("query: answers signed by another key, unsigned, stale, or about another merchant are not trusted", async () => {
  next = () => ({ body: transaction(), signWith: other.privateKey });
  await assert.rejects(platform.query("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.reason === "bad_response_signature");
  next = () => ({ body: transaction(), signWith: null });
  await assert.rejects(platform.query("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.reason === "bad_response_signature");
  next = () => ({ body: transaction(), timestampOffsetS: -360 });
  await assert.rejects(platform.query("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.reason === "bad_response_signature");
  next = () => ({ body: transaction({ mchid: "1900000999" }) });
  await assert.rejects(platform.query("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.reason === "bad_response");
  // An unsigned "not found" is not believed: it could make reconciliation fail a paid order.
  next = () => ({ status: 404, body: { code: "ORDER_NOT_EXIST", message: "订单不存在" }, signWith: null });
  await assert.rejects(platform.query("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.reason === "http_status");
  next = () => ({ status: 500, body: { code: "SYSTEM_ERROR", message: "系统错误" } });
  await assert.rejects(platform.query("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.retryable);
});

it("refund: out_refund_no is our refund id; SUCCESS, PROCESSING, refusals, errors", async () => {
  const input = { paymentId: "pay0001abc", refundId: "ref0001", amountMinor: 500, totalMinor: 1999, reason: "damaged" };
  next = (r) => {
    assert.equal(r.url, "/v3/refund/domestic/refunds");
    assert.deepEqual(JSON.parse(r.body.toString()), {
      out_trade_no: "pay0001abc",
      out_refund_no: "ref0001",
      reason: "damaged",
      amount: { refund: 500, total: 1999, currency: "CNY" },
    });
    return {
      body: {
        refund_id: "50000000382019052709732678859",
        out_refund_no: "ref0001",
        transaction_id: "4200000000202503010000000001",
        out_trade_no: "pay0001abc",
        channel: "ORIGINAL",
        user_received_account: "招商银行信用卡0403",
        create_time: "2025-03-02T10:00:00+08:00",
        status: "SUCCESS",
        amount: { total: 1999, refund: 500, payer_total: 1999, payer_refund: 500, currency: "CNY" },
      },
    };
  };
  assert.deepEqual(await platform.refund(input), { status: "succeeded", providerRefundId: "50000000382019052709732678859" });
  next = () => ({ body: { refund_id: "5000", out_refund_no: "ref0001", status: "PROCESSING" } });
  assert.deepEqual(await platform.refund(input), { status: "pending", providerRefundId: "5000" });
  next = () => ({ body: { refund_id: "5000", out_refund_no: "ref0001", status: "ABNORMAL" } });
  assert.deepEqual(await platform.refund(input), { status: "failed", providerRefundId: "5000", failureCode: "ABNORMAL" });
  next = () => ({ status: 400, body: { code: "INVALID_REQUEST", message: "退款金额超过可退金额" } });
  assert.deepEqual(await platform.refund(input), { status: "failed", failureCode: "INVALID_REQUEST" });
  next = () => ({ status: 403, body: { code: "NOT_ENOUGH", message: "基本账户余额不足" } });
  await assert.rejects(platform.refund(input), (e) => e instanceof PaymentPlatformError && e.retryable);
  next = () => ({ status: 429, body: { code: "FREQUENCY_LIMITED", message: "频率限制" } });
  await assert.rejects(platform.refund(input), (e) => e instanceof PaymentPlatformError && e.retryable);
  next = () => ({ body: { refund_id: "5000", out_refund_no: "someone-else", status: "SUCCESS" } });
  await assert.rejects(platform.refund(input), (e) => e instanceof PaymentPlatformError && e.reason === "bad_response");
});

const CLOSE_PATH = "/v3/pay/transactions/out-trade-no/pay0001abc/close";

it("close: POST …/close with {mchid}; a signed 204 is confirmed by a query (closed, paid, or never existed)", async () => {
  for (const [state, expected] of [
    ["CLOSED", "closed"],
    ["SUCCESS", "paid"],
    ["REFUND", "paid"],
  ] as const) {
    const seen: string[] = [];
    next = (r) => {
      seen.push(`${r.method} ${r.url}`);
      if (r.method === "POST") {
        assert.equal(r.url, CLOSE_PATH);
        assert.equal(r.headers["content-type"], "application/json");
        assert.deepEqual(JSON.parse(r.body.toString()), { mchid: MCH });
        return { status: 204 }; // no body; the headers sign the empty body
      }
      return { body: transaction({ trade_state: state }) };
    };
    assert.deepEqual(await platform.close("pay0001abc"), { status: expected }, state);
    assert.deepEqual(seen, [`POST ${CLOSE_PATH}`, `GET /v3/pay/transactions/out-trade-no/pay0001abc?mchid=${MCH}`]);
  }
  // 204 for an out_trade_no WeChat never had: the query says so.
  next = (r) => (r.method === "POST" ? { status: 204 } : { status: 404, body: { code: "ORDER_NOT_EXIST", message: "订单不存在" } });
  assert.deepEqual(await platform.close("pay0001abc"), { status: "not_found" });
  // 204 but the trade still waits for payment: not closed, ask again.
  next = (r) =>
    r.method === "POST"
      ? { status: 204 }
      : { body: transaction({ trade_state: "NOTPAY", transaction_id: undefined, success_time: undefined }) };
  await assert.rejects(platform.close("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.retryable);
  // An id WeChat's create would refuse: no call at all.
  const sent = gateway.received.length;
  assert.deepEqual(await platform.close("short"), { status: "not_found" });
  assert.equal(gateway.received.length, sent);
});

it("close: signed refusals that are outcomes (ORDER_CLOSED, ORDER_NOT_EXIST, ORDERPAID), in both spellings", async () => {
  for (const [status, code, expected] of [
    [400, "ORDER_CLOSED", "closed"],
    [400, "ORDERCLOSED", "closed"],
    [404, "ORDER_NOT_EXIST", "not_found"],
    [404, "ORDERNOTEXIST", "not_found"],
    [400, "ORDERPAID", "paid"],
  ] as const) {
    let calls = 0;
    next = () => (calls++, { status, body: { code, message: "…" } });
    assert.deepEqual(await platform.close("pay0001abc"), { status: expected }, code);
    assert.equal(calls, 1, `${code}: no query needed`);
  }
});

it("close: unknown outcomes are retryable; unsigned answers and our own mistakes are not outcomes", async () => {
  // The buyer is entering the password right now.
  next = () => ({ status: 202, body: { code: "USER_PAYING", message: "用户支付中,需要输入密码" } });
  await assert.rejects(
    platform.close("pay0001abc"),
    (e) => e instanceof PaymentPlatformError && e.retryable && e.platformCode === "USER_PAYING",
  );
  next = () => ({ status: 500, body: { code: "SYSTEM_ERROR", message: "系统错误" } });
  await assert.rejects(platform.close("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.retryable);
  next = () => ({ status: 429, body: { code: "FREQUENCY_LIMITED", message: "频率超限" } });
  await assert.rejects(platform.close("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.retryable);
  // A forged or unsigned "closed" is not believed: the buyer may have paid.
  next = () => ({ status: 400, body: { code: "ORDER_CLOSED", message: "订单已关闭" }, signWith: null });
  await assert.rejects(platform.close("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.retryable);
  next = () => ({ status: 400, body: { code: "ORDER_CLOSED", message: "订单已关闭" }, signWith: other.privateKey });
  await assert.rejects(platform.close("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.retryable);
  next = () => ({ status: 204, signWith: null });
  await assert.rejects(
    platform.close("pay0001abc"),
    (e) => e instanceof PaymentPlatformError && e.reason === "bad_response_signature" && e.retryable,
  );
  next = () => ({ status: 204, signWith: other.privateKey });
  await assert.rejects(platform.close("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.reason === "bad_response_signature");
  // Our configuration: retrying will not help.
  next = () => ({ status: 403, body: { code: "NO_AUTH", message: "商户无权限" } });
  await assert.rejects(
    platform.close("pay0001abc"),
    (e) => e instanceof PaymentPlatformError && !e.retryable && e.platformCode === "NO_AUTH",
  );
});

it("our request signature is what the server checks", async () => {
  const wrongKey = new WechatPayPlatform(
    {
      mchId: MCH,
      appId: APPID,
      serialNo: "MERCHANTSERIAL",
      privateKey: other.privateKey,
      apiV3Key: new Secret(Buffer.from("0123456789abcdef0123456789ABCDEF")),
      platformKeys: new Map([[SERIAL, platformKey.publicKey]]),
      baseUrl: gateway.url,
    },
    { now: () => now },
  );
  next = () => assert.fail("not reached");
  await assert.rejects(
    wrongKey.query("pay0001abc"),
    (e) => e instanceof PaymentPlatformError && e.reason === "http_status" && /401/.test(e.message),
  );
});

it("transport failure is retryable and says nothing secret", async () => {
  const dead = new WechatPayPlatform(
    {
      mchId: MCH,
      appId: APPID,
      serialNo: "MERCHANTSERIAL",
      privateKey: merchant.privateKey,
      apiV3Key: new Secret(Buffer.from("0123456789abcdef0123456789ABCDEF")),
      platformKeys: new Map([[SERIAL, platformKey.publicKey]]),
      baseUrl: "http://127.0.0.1:1",
      timeoutMs: 2000,
    },
    { now: () => now },
  );
  await assert.rejects(dead.query("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.reason === "transport" && e.retryable);
  await assert.rejects(dead.close("pay0001abc"), (e) => e instanceof PaymentPlatformError && e.reason === "transport" && e.retryable);
});
