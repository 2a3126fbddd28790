/**
 * Alipay query, refund and close through alipay-sdk against a local HTTP server standing in for
 * the gateway (no platform can be reached from here). The server checks our RSA2 request
 * signature and answers in Alipay's documented shape, `{"<method>_response": {...},
 * "sign": "<RSA2 over the inner JSON>"}`, signed with a key generated here for "Alipay".
 */
import assert from "node:assert/strict";
import { sign as rsaSign, verify as rsaVerify, type KeyObject } from "node:crypto";
import { after, before, it } from "mocha";
import { AlipayPlatform, beijingTimestamp } from "./alipay";
import { PaymentPlatformError } from "./platform";
import { fakeGateway, rsaPair, type Received, type Reply } from "./test-support";

const app = rsaPair();
const alipay = rsaPair();
const other = rsaPair();
const APP_ID = "2021000000000001";
const NOW = Date.parse("2025-03-01T04:00:00Z");

type Answer = { inner: Record<string, unknown>; key?: KeyObject; status?: number };
let next: (method: string, biz: Record<string, string>) => Answer;
let gateway: Awaited<ReturnType<typeof fakeGateway>>;
let platform: AlipayPlatform;

function params(r: Received): Record<string, string> {
  const url = new URL(r.url, "http://x");
  return { ...Object.fromEntries(url.searchParams), ...Object.fromEntries(new URLSearchParams(r.body.toString())) };
}

function answer(r: Received): Reply {
  const p = params(r);
  // Our request must be signed RSA2 by our app key over every parameter but sign.
  const content = Object.keys(p)
    .filter((k) => k !== "sign")
    .sort()
    .map((k) => `${k}=${p[k]}`)
    .join("&");
  if (p.sign_type !== "RSA2" || !rsaVerify("sha256", Buffer.from(content), app.publicKey, Buffer.from(p.sign ?? "", "base64"))) {
    return {
      status: 200,
      body: JSON.stringify({ error_response: { code: "40002", msg: "Invalid Arguments", sub_code: "isv.invalid-signature" } }),
    };
  }
  const method = p.method;
  const a = next(method, JSON.parse(p.biz_content ?? "{}") as Record<string, string>);
  const inner = JSON.stringify(a.inner);
  const sign = rsaSign("sha256", Buffer.from(inner), a.key ?? alipay.privateKey).toString("base64");
  return { status: a.status ?? 200, body: `{"${method.replaceAll(".", "_")}_response":${inner},"sign":"${sign}"}` };
}

before(async () => {
  gateway = await fakeGateway(answer);
  platform = new AlipayPlatform(
    {
      appId: APP_ID,
      sellerId: "2088000000000002",
      privateKey: app.privateKey,
      alipayPublicKey: alipay.publicKey,
      gateway: `${gateway.url}/gateway.do`,
    },
    { now: () => NOW },
  );
});
after(() => gateway.close());

it("query: a paid trade, with its amount, in Beijing time", async () => {
  next = (method, biz) => {
    assert.equal(method, "alipay.trade.query");
    assert.deepEqual(biz, { out_trade_no: "pay_0001" });
    return {
      inner: {
        code: "10000",
        msg: "Success",
        trade_no: "2025030122001400000000000001",
        out_trade_no: "pay_0001",
        trade_status: "TRADE_SUCCESS",
        total_amount: "19.99",
        send_pay_date: "2025-03-01 12:00:00",
      },
    };
  };
  assert.deepEqual(await platform.query("pay_0001"), {
    status: "succeeded",
    paymentId: "pay_0001",
    providerTxnId: "2025030122001400000000000001",
    amountMinor: 1999,
    currency: "CNY",
    paidAt: "2025-03-01T04:00:00.000Z",
  });
  assert.equal(params(gateway.received.at(-1)!).timestamp, beijingTimestamp(NOW));
});

it("query: waiting, closed, and a trade Alipay never saw", async () => {
  next = () => ({
    inner: { code: "10000", msg: "Success", trade_no: "t", out_trade_no: "pay_0002", trade_status: "WAIT_BUYER_PAY", total_amount: "5.00" },
  });
  assert.equal((await platform.query("pay_0002")).status, "pending");
  next = () => ({
    inner: { code: "10000", msg: "Success", trade_no: "t", out_trade_no: "pay_0002", trade_status: "TRADE_CLOSED", total_amount: "5.00" },
  });
  assert.equal((await platform.query("pay_0002")).status, "failed");
  next = () => ({ inner: { code: "40004", msg: "Business Failed", sub_code: "ACQ.TRADE_NOT_EXIST", sub_msg: "交易不存在" } });
  assert.deepEqual(await platform.query("pay_0003"), { status: "not_found", paymentId: "pay_0003" });
});

it("query: an answer not signed by Alipay's key, or about another trade, is not trusted", async () => {
  next = () => ({
    inner: { code: "10000", msg: "Success", trade_no: "t", out_trade_no: "pay_0001", trade_status: "TRADE_SUCCESS", total_amount: "19.99" },
    key: other.privateKey,
  });
  await assert.rejects(
    platform.query("pay_0001"),
    (e) => e instanceof PaymentPlatformError && e.reason === "bad_response_signature" && e.retryable,
  );
  next = () => ({
    inner: { code: "10000", msg: "Success", trade_no: "t", out_trade_no: "pay_9999", trade_status: "TRADE_SUCCESS", total_amount: "19.99" },
  });
  await assert.rejects(platform.query("pay_0001"), (e) => e instanceof PaymentPlatformError && e.reason === "bad_response");
  next = () => ({ inner: { code: "20000", msg: "Service Currently Unavailable", sub_code: "aop.ACQ.SYSTEM_ERROR" } });
  await assert.rejects(
    platform.query("pay_0001"),
    (e) => e instanceof PaymentPlatformError && e.retryable && e.platformCode === "aop.ACQ.SYSTEM_ERROR",
  );
  next = () => ({ inner: {}, status: 502 });
  await assert.rejects(platform.query("pay_0001"), (e) => e instanceof PaymentPlatformError && e.reason === "http_status" && e.retryable);
});

it("refund: out_request_no is our refund id, amounts in yuan; fund_change decides done or pending", async () => {
  next = (method, biz) => {
    assert.equal(method, "alipay.trade.refund");
    assert.deepEqual(biz, { out_trade_no: "pay_0001", refund_amount: "5.00", out_request_no: "ref_0001", refund_reason: "damaged" });
    return {
      inner: {
        code: "10000",
        msg: "Success",
        trade_no: "t1",
        out_trade_no: "pay_0001",
        buyer_logon_id: "a***@x.com",
        fund_change: "Y",
        refund_fee: "5.00",
      },
    };
  };
  const input = { paymentId: "pay_0001", refundId: "ref_0001", amountMinor: 500, totalMinor: 1999, reason: "damaged" };
  assert.deepEqual(await platform.refund(input), { status: "succeeded" });
  // The same refund again: Alipay answers fund_change N (nothing moved this time).
  next = () => ({
    inner: { code: "10000", msg: "Success", trade_no: "t1", out_trade_no: "pay_0001", fund_change: "N", refund_fee: "5.00" },
  });
  assert.deepEqual(await platform.refund(input), { status: "pending" });
});

it("refund: a business refusal is final, a system error is retryable", async () => {
  const input = { paymentId: "pay_0001", refundId: "ref_0002", amountMinor: 5000, totalMinor: 1999 + 5000, reason: "x" };
  next = () => ({ inner: { code: "40004", msg: "Business Failed", sub_code: "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", sub_msg: "退款金额超限" } });
  assert.deepEqual(await platform.refund(input), { status: "failed", failureCode: "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL" });
  next = () => ({ inner: { code: "20000", msg: "Service Currently Unavailable", sub_code: "isp.unknow-error" } });
  await assert.rejects(platform.refund(input), (e) => e instanceof PaymentPlatformError && e.retryable);
  await assert.rejects(
    platform.refund({ ...input, amountMinor: 0 }),
    (e) => e instanceof PaymentPlatformError && e.reason === "invalid_request",
  );
});

it('refund: ACQ.SYSTEM_ERROR under 40004 is Alipay\'s "retry with the same parameters", not a refusal', async () => {
  next = () => ({ inner: { code: "40004", msg: "Business Failed", sub_code: "ACQ.SYSTEM_ERROR", sub_msg: "系统错误" } });
  const input = { paymentId: "pay_0001", refundId: "ref_0003", amountMinor: 500, totalMinor: 1999, reason: "x" };
  await assert.rejects(
    platform.refund(input),
    (e) => e instanceof PaymentPlatformError && e.retryable && e.platformCode === "ACQ.SYSTEM_ERROR",
  );
});

const closeAnswer = (sub_code: string, sub_msg: string) => ({ inner: { code: "40004", msg: "Business Failed", sub_code, sub_msg } });
const queryAnswer = (trade_status: string) => ({
  inner: {
    code: "10000",
    msg: "Success",
    trade_no: "2025030122001400000000000001",
    out_trade_no: "pay_0001",
    trade_status,
    total_amount: "19.99",
  },
});

it("close: alipay.trade.close by out_trade_no; 10000 is closed, ACQ.TRADE_NOT_EXIST is not_found", async () => {
  const calls: string[] = [];
  next = (method, biz) => {
    calls.push(method);
    assert.equal(method, "alipay.trade.close");
    assert.deepEqual(biz, { out_trade_no: "pay_0001" });
    return { inner: { code: "10000", msg: "Success", trade_no: "2025030122001400000000000001", out_trade_no: "pay_0001" } };
  };
  assert.deepEqual(await platform.close("pay_0001"), { status: "closed" });
  assert.equal(params(gateway.received.at(-1)!).timestamp, beijingTimestamp(NOW));
  // Page pay creates the trade only when the buyer opens the page.
  next = (method) => (calls.push(method), closeAnswer("ACQ.TRADE_NOT_EXIST", "交易不存在"));
  assert.deepEqual(await platform.close("pay_0001"), { status: "not_found" });
  assert.deepEqual(calls, ["alipay.trade.close", "alipay.trade.close"]);
  // An id Alipay's create would refuse cannot name a trade: no call at all.
  const before = gateway.received.length;
  assert.deepEqual(await platform.close("not a trade id!"), { status: "not_found" });
  assert.equal(gateway.received.length, before);
});

it("close: a trade not waiting for payment is told apart by a query (paid, finished, or already closed)", async () => {
  for (const [sub, state, expected] of [
    ["ACQ.TRADE_STATUS_ERROR", "TRADE_SUCCESS", "paid"],
    ["ACQ.TRADE_STATUS_ERROR", "TRADE_FINISHED", "paid"],
    ["ACQ.TRADE_STATUS_ERROR", "TRADE_CLOSED", "closed"],
    ["ACQ.REASON_TRADE_STATUS_INVALID", "TRADE_SUCCESS", "paid"],
    ["ACQ.REASON_ILLEGAL_STATUS", "TRADE_CLOSED", "closed"],
  ] as const) {
    const calls: string[] = [];
    next = (method) => {
      calls.push(method);
      return method === "alipay.trade.close" ? closeAnswer(sub, "交易状态不合法") : queryAnswer(state);
    };
    assert.deepEqual(await platform.close("pay_0001"), { status: expected }, `${sub} + ${state}`);
    assert.deepEqual(calls, ["alipay.trade.close", "alipay.trade.query"]);
  }
  // "Not waiting" but the query says waiting (or no trade): contradictory, so unknown.
  next = (method) =>
    method === "alipay.trade.close" ? closeAnswer("ACQ.TRADE_STATUS_ERROR", "交易状态不合法") : queryAnswer("WAIT_BUYER_PAY");
  await assert.rejects(
    platform.close("pay_0001"),
    (e) => e instanceof PaymentPlatformError && e.retryable && e.platformCode === "ACQ.TRADE_STATUS_ERROR",
  );
  next = (method) =>
    method === "alipay.trade.close"
      ? closeAnswer("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
      : closeAnswer("ACQ.TRADE_NOT_EXIST", "交易不存在");
  await assert.rejects(platform.close("pay_0001"), (e) => e instanceof PaymentPlatformError && e.retryable);
  // The disambiguating query's own answer must be signed too.
  next = (method) =>
    method === "alipay.trade.close"
      ? closeAnswer("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
      : { ...queryAnswer("TRADE_SUCCESS"), key: other.privateKey };
  await assert.rejects(
    platform.close("pay_0001"),
    (e) => e instanceof PaymentPlatformError && e.reason === "bad_response_signature" && e.retryable,
  );
});

it("close: unknown outcomes are retryable errors, our own mistakes are not; answers must be signed", async () => {
  next = () => closeAnswer("ACQ.SYSTEM_ERROR", "系统异常");
  await assert.rejects(
    platform.close("pay_0001"),
    (e) => e instanceof PaymentPlatformError && e.retryable && e.platformCode === "ACQ.SYSTEM_ERROR",
  );
  next = () => ({ inner: { code: "20000", msg: "Service Currently Unavailable", sub_code: "isp.unknow-error" } });
  await assert.rejects(platform.close("pay_0001"), (e) => e instanceof PaymentPlatformError && e.retryable);
  next = () => closeAnswer("ACQ.INVALID_PARAMETER", "参数无效");
  await assert.rejects(
    platform.close("pay_0001"),
    (e) => e instanceof PaymentPlatformError && !e.retryable && e.platformCode === "ACQ.INVALID_PARAMETER",
  );
  // A forged "closed" (another key) is not believed: the buyer may have paid.
  next = () => ({ inner: { code: "10000", msg: "Success", trade_no: "t", out_trade_no: "pay_0001" }, key: other.privateKey });
  await assert.rejects(
    platform.close("pay_0001"),
    (e) => e instanceof PaymentPlatformError && e.reason === "bad_response_signature" && e.retryable,
  );
  next = () => ({ inner: { code: "10000", msg: "Success", trade_no: "t", out_trade_no: "pay_9999" } });
  await assert.rejects(platform.close("pay_0001"), (e) => e instanceof PaymentPlatformError && e.reason === "bad_response" && e.retryable);
  next = () => ({ inner: {}, status: 502 });
  await assert.rejects(platform.close("pay_0001"), (e) => e instanceof PaymentPlatformError && e.reason === "http_status" && e.retryable);
});

it("transport failure: a gateway that is not there", async () => {
  const dead = new AlipayPlatform(
    {
      appId: APP_ID,
      sellerId: "2088000000000002",
      privateKey: app.privateKey,
      alipayPublicKey: alipay.publicKey,
      gateway: "http://127.0.0.1:1/gateway.do",
      timeoutMs: 2000,
    },
    { now: () => NOW },
  );
  await assert.rejects(
    dead.query("pay_0001"),
    (e) => e instanceof PaymentPlatformError && e.reason === "transport" && e.retryable && !/BEGIN/.test(e.message),
  );
  await assert.rejects(dead.close("pay_0001"), (e) => e instanceof PaymentPlatformError && e.reason === "transport" && e.retryable);
});
