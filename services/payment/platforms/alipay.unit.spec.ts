/**
 * Alipay callbacks signed for real: with Alipay's documented notify algorithm (sort the
 * parameters except sign and sign_type, join k=v with &, RSA-SHA256, base64) and with
 * alipay-sdk's own signer, using keys generated here in place of Alipay's.
 */
import { AlipaySdk } from "alipay-sdk";
import assert from "node:assert/strict";
import { sign as rsaSign, verify as rsaVerify, type KeyObject } from "node:crypto";
import { it } from "mocha";
import { AlipayPlatform, beijingTimestamp, beijingToIso } from "./alipay";
import { privateKeyPem } from "./keys";
import { PaymentPlatformError, PaymentVerificationError, checkBusiness, type RawNotification } from "./platform";
import { rsaPair } from "./test-support";
import { omit } from "../../../test/support/omit";

const app = rsaPair(); // our application key pair
const alipay = rsaPair(); // stands in for Alipay's key pair
const other = rsaPair(); // someone else's
const APP_ID = "2021000000000001";
const SELLER_ID = "2088000000000002";
const NOW = Date.parse("2025-03-01T04:00:00Z");

const platform = new AlipayPlatform(
  {
    appId: APP_ID,
    sellerId: SELLER_ID,
    privateKey: app.privateKey,
    alipayPublicKey: alipay.publicKey,
    gateway: "https://openapi.alipay.com/gateway.do",
  },
  { now: () => NOW },
);

function baseParams(over: Record<string, string> = {}): Record<string, string> {
  return {
    notify_time: "2025-03-01 12:00:05",
    notify_type: "trade_status_sync",
    notify_id: "2025030100222120005abc",
    charset: "utf-8",
    version: "1.0",
    sign_type: "RSA2",
    app_id: APP_ID,
    seller_id: SELLER_ID,
    trade_no: "2025030122001400000000000001",
    out_trade_no: "pay_0001",
    trade_status: "TRADE_SUCCESS",
    total_amount: "19.99",
    receipt_amount: "19.99",
    subject: "Order ord_1 & 50% off + more",
    gmt_create: "2025-03-01 11:59:50",
    gmt_payment: "2025-03-01 12:00:00",
    ...over,
  };
}

/** Alipay's documented notify signature. */
function alipaySign(params: Record<string, string>, key: KeyObject): string {
  const content = Object.keys(params)
    .filter((k) => k !== "sign" && k !== "sign_type")
    .sort()
    .map((k) => `${k}=${params[k]}`)
    .join("&");
  return rsaSign("sha256", Buffer.from(content, "utf8"), key).toString("base64");
}

function callback(
  params: Record<string, string>,
  key: KeyObject = alipay.privateKey,
  mutate?: (p: Record<string, string>) => void,
): RawNotification {
  const signed = { ...params, sign: alipaySign(params, key) };
  mutate?.(signed);
  return {
    headers: {},
    contentType: "application/x-www-form-urlencoded; charset=utf-8",
    rawBody: Buffer.from(new URLSearchParams(signed).toString()),
  };
}

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof PaymentVerificationError, String(err));
    return err.reason;
  }
  return assert.fail("expected a PaymentVerificationError");
}

it("a real signed TRADE_SUCCESS callback verifies and maps to a succeeded payment", async () => {
  const n = await platform.verifyNotification(callback(baseParams()));
  assert.deepEqual(n, {
    paymentId: "pay_0001",
    providerTxnId: "2025030122001400000000000001",
    amountMinor: 1999,
    currency: "CNY",
    status: "succeeded",
    paidAt: "2025-03-01T04:00:00.000Z",
  });
  checkBusiness(n, { paymentId: "pay_0001", amountMinor: 1999, currency: "CNY" });
});

it("a callback signed by alipay-sdk's own signer verifies too", async () => {
  // An SDK instance holding "Alipay's" private key signs like the SDK signs everything
  // (it adds method/timestamp/sign_type and signs over sign_type too; the notify check
  // accepts both variants).
  const signer = new AlipaySdk({ appId: APP_ID, privateKey: privateKeyPem(alipay.privateKey), keyType: "PKCS8", signType: "RSA2" });
  const rest = omit(baseParams({ trade_status: "TRADE_FINISHED" }), "app_id", "sign_type", "charset", "version");
  const body = signer.sdkExecute("alipay.trade.page.pay.notify", rest);
  const n = await platform.verifyNotification({
    headers: {},
    contentType: "application/x-www-form-urlencoded",
    rawBody: Buffer.from(body),
  });
  assert.equal(n.status, "succeeded");
  assert.equal(n.amountMinor, 1999);
});

it("trade states: WAIT_BUYER_PAY pending, TRADE_CLOSED failed, and TRADE_CLOSED with refund_fee is never a success", async () => {
  assert.equal((await platform.verifyNotification(callback(baseParams({ trade_status: "WAIT_BUYER_PAY" })))).status, "pending");
  const closed = await platform.verifyNotification(callback(baseParams({ trade_status: "TRADE_CLOSED" })));
  assert.equal(closed.status, "failed");
  assert.equal(closed.paidAt, undefined);
  // A refund notice (signed, on the same notify_url) must not record a payment: "failed",
  // the refunded total kept as information only, and no paidAt even with gmt_payment.
  const refunded = await platform.verifyNotification(
    callback(baseParams({ trade_status: "TRADE_CLOSED", refund_fee: "19.99", gmt_refund: "2025-03-02 10:00:00.000" })),
  );
  assert.equal(refunded.status, "failed");
  assert.equal(refunded.refundedMinor, 1999);
  assert.equal(refunded.paidAt, undefined);
  const partly = await platform.verifyNotification(callback(baseParams({ trade_status: "TRADE_CLOSED", refund_fee: "0.01" })));
  assert.equal(partly.status, "failed");
  assert.equal(partly.refundedMinor, 1);
  assert.equal(await reason(platform.verifyNotification(callback(baseParams({ trade_status: "TRADE_PAID_MAYBE" })))), "malformed");
});

it("forged callbacks are refused with a stable reason", async () => {
  // Tampered after signing: the amount, or the signature itself.
  assert.equal(
    await reason(platform.verifyNotification(callback(baseParams(), alipay.privateKey, (p) => (p.total_amount = "0.01")))),
    "bad_signature",
  );
  assert.equal(
    await reason(platform.verifyNotification(callback(baseParams(), alipay.privateKey, (p) => (p.sign = "AAAA" + p.sign.slice(4))))),
    "bad_signature",
  );
  assert.equal(
    await reason(platform.verifyNotification(callback(baseParams(), alipay.privateKey, (p) => (p.sign = "not base64 at all %%%")))),
    "bad_signature",
  );
  assert.equal(await reason(platform.verifyNotification(callback(baseParams(), alipay.privateKey, (p) => delete p.sign))), "bad_signature");
  // Signed with another key (someone's own "Alipay").
  assert.equal(await reason(platform.verifyNotification(callback(baseParams(), other.privateKey))), "bad_signature");
  // Signed with our own APP key (it is not Alipay's).
  assert.equal(await reason(platform.verifyNotification(callback(baseParams(), app.privateKey))), "bad_signature");
});

it("sign_type is pinned to RSA2 before the SDK sees the request", async () => {
  // A genuine RSA (SHA-1) signature by the right key: the SDK alone would accept it.
  const params = baseParams({ sign_type: "RSA" });
  const content = Object.keys(params)
    .filter((k) => k !== "sign_type")
    .sort()
    .map((k) => `${k}=${params[k]}`)
    .join("&");
  const sha1 = rsaSign("sha1", Buffer.from(content), alipay.privateKey).toString("base64");
  const raw: RawNotification = {
    headers: {},
    contentType: "application/x-www-form-urlencoded",
    rawBody: Buffer.from(new URLSearchParams({ ...params, sign: sha1 }).toString()),
  };
  const sdk = new AlipaySdk({
    appId: APP_ID,
    privateKey: privateKeyPem(app.privateKey),
    keyType: "PKCS8",
    alipayPublicKey: alipay.publicKey.export({ type: "spki", format: "pem" }).toString(),
  });
  assert.equal(
    sdk.checkNotifySignV2(Object.fromEntries(new URLSearchParams(raw.rawBody.toString()))),
    true,
    "the SDK follows the request's sign_type",
  );
  assert.equal(await reason(platform.verifyNotification(raw)), "sign_type");
  assert.equal(
    await reason(platform.verifyNotification(callback(baseParams(), alipay.privateKey, (p) => delete p.sign_type))),
    "sign_type",
  );
  assert.equal(await reason(platform.verifyNotification(callback(baseParams({ sign_type: "rsa2" })))), "sign_type");
});

it("signed by Alipay but for another app or merchant, or with a bad amount: refused", async () => {
  assert.equal(await reason(platform.verifyNotification(callback(baseParams({ app_id: "2021000000000999" })))), "app");
  assert.equal(await reason(platform.verifyNotification(callback(baseParams({ seller_id: "2088000000000999" })))), "merchant");
  assert.equal(await reason(platform.verifyNotification(callback(baseParams({ total_amount: "19.9" })))), "malformed");
  const noOrder = omit(baseParams(), "out_trade_no");
  assert.equal(await reason(platform.verifyNotification(callback(noOrder))), "malformed");
  // Valid and signed, but not what the order expects: the service's business check.
  const n = await platform.verifyNotification(callback(baseParams({ total_amount: "0.01" })));
  assert.throws(
    () => checkBusiness(n, { paymentId: "pay_0001", amountMinor: 1999, currency: "CNY" }),
    (e) => e instanceof PaymentVerificationError && e.reason === "amount",
  );
  const unknown = await platform.verifyNotification(callback(baseParams({ out_trade_no: "pay_unknown" })));
  assert.throws(
    () => checkBusiness(unknown, undefined),
    (e) => e instanceof PaymentVerificationError && e.reason === "unknown_order",
  );
});

it("wrong content type, repeated fields and garbage bodies fail normally", async () => {
  const good = callback(baseParams());
  assert.equal(await reason(platform.verifyNotification({ ...good, contentType: "application/json" })), "content_type");
  const twice = Buffer.concat([good.rawBody, Buffer.from("&total_amount=0.01")]);
  assert.equal(await reason(platform.verifyNotification({ ...good, rawBody: twice })), "malformed");
  assert.equal(await reason(platform.verifyNotification({ ...good, rawBody: Buffer.from([0xff, 0xfe, 0x00, 0x25]) })), "sign_type");
});

it("acks: the literal success, fail otherwise", () => {
  assert.deepEqual(platform.ackResponse(), { status: 200, headers: { "content-type": "text/plain; charset=utf-8" }, body: "success" });
  assert.equal(platform.nackResponse(new PaymentVerificationError("bad_signature")).status, 400);
  assert.equal(platform.nackResponse(new Error("db down")).status, 500);
  assert.equal(platform.nackResponse().body, "fail");
});

it("create: a page-pay URL signed RSA2 with our app key, Beijing timestamp, amount in yuan, time_expire", async () => {
  const res = await platform.create({
    paymentId: "pay_0001",
    orderId: "ord_1",
    amountMinor: 1999,
    currency: "CNY",
    subject: "Order ord_1",
    notifyUrl: "https://shop.example/api/payments/notify/alipay",
    returnUrl: "https://shop.example/orders/ord_1",
    expiresAt: NOW + 15 * 60_000,
  });
  assert.equal(res.kind, "redirect");
  assert.ok(res.kind === "redirect");
  const url = new URL(res.url);
  assert.equal(url.origin + url.pathname, "https://openapi.alipay.com/gateway.do");
  const q = Object.fromEntries(url.searchParams);
  assert.equal(q.method, "alipay.trade.page.pay");
  assert.equal(q.sign_type, "RSA2");
  assert.equal(q.app_id, APP_ID);
  assert.equal(q.timestamp, "2025-03-01 12:00:00");
  assert.equal(q.notify_url, "https://shop.example/api/payments/notify/alipay");
  assert.deepEqual(JSON.parse(q.biz_content), {
    out_trade_no: "pay_0001",
    total_amount: "19.99",
    subject: "Order ord_1",
    product_code: "FAST_INSTANT_TRADE_PAY",
    time_expire: "2025-03-01 12:15:00",
  });
  // Alipay's request signature: every parameter but sign, sorted, with our app key.
  const content = Object.keys(q)
    .filter((k) => k !== "sign")
    .sort()
    .map((k) => `${k}=${q[k]}`)
    .join("&");
  assert.ok(rsaVerify("sha256", Buffer.from(content), app.publicKey, Buffer.from(q.sign, "base64")));
  const expiresAt = NOW + 60_000;
  await assert.rejects(
    platform.create({
      paymentId: "pay_1",
      orderId: "o",
      amountMinor: 100,
      currency: "USD",
      subject: "x",
      notifyUrl: "https://x",
      expiresAt,
    }),
    /CNY/,
  );
  await assert.rejects(
    platform.create({
      paymentId: "pay_1",
      orderId: "o",
      amountMinor: 1.5,
      currency: "CNY",
      subject: "x",
      notifyUrl: "https://x",
      expiresAt,
    }),
    /positive integer/,
  );
});

it("create: time_expire is expiresAt in Beijing time, rounded down to the second, from the injected clock", async () => {
  const at = (now: number) =>
    new AlipayPlatform(
      {
        appId: APP_ID,
        sellerId: SELLER_ID,
        privateKey: app.privateKey,
        alipayPublicKey: alipay.publicKey,
        gateway: "https://openapi.alipay.com/gateway.do",
      },
      { now: () => now },
    );
  const input = { paymentId: "pay_0002", orderId: "ord_2", amountMinor: 100, currency: "CNY", subject: "x", notifyUrl: "https://x" };
  const early = at(1_700_000_000_000 - 15 * 60_000);
  const res = await early.create({ ...input, expiresAt: 1_700_000_000_999 });
  assert.ok(res.kind === "redirect");
  const q = Object.fromEntries(new URL(res.url).searchParams);
  assert.equal((JSON.parse(q.biz_content) as { time_expire: string }).time_expire, "2023-11-15 06:13:20");
  assert.equal(q.timestamp, "2023-11-15 05:58:20");
  // The same expiresAt is refused by a platform whose clock is already past it.
  const late = at(1_700_000_000_999);
  await assert.rejects(
    late.create({ ...input, expiresAt: 1_700_000_000_999 }),
    (e) => e instanceof PaymentPlatformError && e.reason === "invalid_request" && !e.retryable && /future/.test(e.message),
  );
  await assert.rejects(
    early.create({ ...input, expiresAt: 1_700_000_000_000.5 }),
    (e) => e instanceof PaymentPlatformError && e.reason === "invalid_request" && /expiresAt/.test(e.message),
  );
});

it("Beijing time helpers", () => {
  assert.equal(beijingTimestamp(Date.parse("2025-12-31T20:30:00Z")), "2026-01-01 04:30:00");
  assert.equal(beijingToIso("2026-01-01 04:30:00"), "2025-12-31T20:30:00.000Z");
  assert.equal(beijingToIso("yesterday", false), undefined);
});
