/**
 * WeChat Pay APIv3 callbacks built the way WeChat builds them: the transaction JSON
 * encrypted with AEAD_AES_256_GCM (APIv3 key, nonce, associated_data), the body signed
 * SHA256withRSA over `${timestamp}\n${nonce}\n${body}\n` by a "platform" key generated here;
 * both by an independent implementation (wechatpay-axios-plugin, through test-support's
 * `wechatPlatform`), not by the module's own helpers.
 */
import assert from "node:assert/strict";
import { randomBytes, type KeyObject } from "node:crypto";
import { it } from "mocha";
import { Secret } from "./keys";
import { PaymentVerificationError, type RawNotification } from "./platform";
import { rsaPair, wechatPlatform } from "./test-support";
import { omit } from "../../../test/support/omit";
import { WechatPayPlatform, decryptResource, encryptResource, wechatTimeExpire } from "./wechatpay";

const merchant = rsaPair();
const platformKey = rsaPair();
const other = rsaPair();
const SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const API_V3_KEY = Buffer.from("0123456789abcdef0123456789ABCDEF");
const NOW = Date.parse("2025-03-01T04:00:00Z");
const MCH = "1900000001";
const APPID = "wxd678efh567hg6787";

const platform = new WechatPayPlatform(
  {
    mchId: MCH,
    appId: APPID,
    serialNo: "MERCHANTSERIAL",
    privateKey: merchant.privateKey,
    apiV3Key: new Secret(API_V3_KEY),
    platformKeys: new Map([[SERIAL, platformKey.publicKey]]),
    baseUrl: "https://api.mch.weixin.qq.com",
  },
  { now: () => NOW },
);

const txn = (over: Record<string, unknown> = {}) => ({
  mchid: MCH,
  appid: APPID,
  out_trade_no: "pay0001abc",
  transaction_id: "4200000000202503010000000001",
  trade_type: "NATIVE",
  trade_state: "SUCCESS",
  trade_state_desc: "支付成功",
  bank_type: "OTHERS",
  attach: "",
  success_time: "2025-03-01T12:00:00+08:00",
  payer: { openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
  amount: { total: 1999, payer_total: 1999, currency: "CNY", payer_currency: "CNY" },
  ...over,
});

function encrypt(plain: string, key = API_V3_KEY, nonce?: string, associatedData?: string) {
  return wechatPlatform.resource(plain, key, { nonce, associatedData });
}

interface Opts {
  key?: KeyObject;
  serial?: string;
  timestamp?: number;
  resource?: Record<string, unknown>;
  mutateBody?: (body: string) => string;
  signature?: string;
  eventType?: string;
}

function callback(transaction: Record<string, unknown> = txn(), o: Opts = {}): RawNotification {
  const body = JSON.stringify({
    id: "EV-2018022511223320873",
    create_time: "2025-03-01T12:00:01+08:00",
    resource_type: "encrypt-resource",
    event_type: o.eventType ?? "TRANSACTION.SUCCESS",
    summary: "支付成功",
    resource: o.resource ?? encrypt(JSON.stringify(transaction)),
  });
  const timestamp = String(Math.floor((o.timestamp ?? NOW) / 1000));
  const nonce = randomBytes(16).toString("hex");
  const signature = o.signature ?? wechatPlatform.sign(timestamp, nonce, body, o.key ?? platformKey.privateKey);
  const sent = o.mutateBody ? o.mutateBody(body) : body;
  return {
    headers: {
      "wechatpay-timestamp": timestamp,
      "wechatpay-nonce": nonce,
      "wechatpay-signature": signature,
      "wechatpay-serial": o.serial ?? SERIAL,
      "wechatpay-signature-type": "WECHATPAY2-SHA256-RSA2048",
    },
    contentType: "application/json",
    rawBody: Buffer.from(sent),
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

it("a genuine TRANSACTION.SUCCESS callback: verified, decrypted, mapped", async () => {
  assert.deepEqual(await platform.verifyNotification(callback()), {
    paymentId: "pay0001abc",
    providerTxnId: "4200000000202503010000000001",
    amountMinor: 1999,
    currency: "CNY",
    status: "succeeded",
    paidAt: "2025-03-01T04:00:00.000Z",
  });
});

it("signature probes and forgeries fail normally", async () => {
  // WeChat's own probe: a deliberately wrong signature.
  assert.equal(
    await reason(platform.verifyNotification(callback(txn(), { signature: "WECHATPAY/SIGNTEST/" + randomBytes(64).toString("base64") }))),
    "bad_signature",
  );
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { signature: "%%% not base64" }))), "bad_signature");
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { key: other.privateKey }))), "bad_signature");
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { key: merchant.privateKey }))), "bad_signature");
  assert.equal(
    await reason(
      platform.verifyNotification(callback(txn(), { mutateBody: (b) => b.replace("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESS ") })),
    ),
    "bad_signature",
  );
});

it("serial, timestamp window, headers, algorithm", async () => {
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { serial: "DEADBEEF" }))), "unknown_serial");
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { timestamp: NOW - 6 * 60_000 }))), "timestamp");
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { timestamp: NOW + 6 * 60_000 }))), "timestamp");
  assert.equal((await platform.verifyNotification(callback(txn(), { timestamp: NOW - 4 * 60_000 }))).status, "succeeded");
  const good = callback();
  const noSignature = omit(good.headers, "wechatpay-signature");
  assert.equal(await reason(platform.verifyNotification({ ...good, headers: noSignature })), "missing_header");
  assert.equal(
    await reason(
      platform.verifyNotification({ ...good, headers: { ...good.headers, "wechatpay-signature-type": "WECHATPAY2-SM2-WITH-SM3" } }),
    ),
    "sign_type",
  );
  assert.equal(
    await reason(platform.verifyNotification({ ...good, headers: { ...good.headers, "wechatpay-timestamp": "soon" } })),
    "timestamp",
  );
  assert.equal(await reason(platform.verifyNotification({ ...good, contentType: "text/plain" })), "content_type");
});

it("decryption: tampered ciphertext, wrong key, wrong associated data", async () => {
  const resource = encrypt(JSON.stringify(txn()));
  const ct = Buffer.from(resource.ciphertext, "base64");
  ct[5] = ct[5] ^ 0x01;
  assert.equal(
    await reason(platform.verifyNotification(callback(txn(), { resource: { ...resource, ciphertext: ct.toString("base64") } }))),
    "decrypt",
  );
  assert.equal(
    await reason(platform.verifyNotification(callback(txn(), { resource: encrypt(JSON.stringify(txn()), Buffer.from("x".repeat(32))) }))),
    "decrypt",
  );
  assert.equal(
    await reason(platform.verifyNotification(callback(txn(), { resource: { ...resource, associated_data: "refund" } }))),
    "decrypt",
  );
  assert.equal(
    await reason(platform.verifyNotification(callback(txn(), { resource: { ...resource, algorithm: "AES_128_CBC" } }))),
    "decrypt",
  );
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { resource: { ...resource, ciphertext: "AAAA" } }))), "decrypt");
  assert.equal(
    await reason(platform.verifyNotification(callback(txn(), { resource: { ...resource, ciphertext: undefined } }))),
    "malformed",
  );
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { resource: encrypt("not json") }))), "malformed");
});

it("decrypted, but for another merchant or app, or without the fields we need", async () => {
  assert.equal(await reason(platform.verifyNotification(callback(txn({ mchid: "1900000999" })))), "merchant");
  assert.equal(await reason(platform.verifyNotification(callback(txn({ appid: "wx0000000000000000" })))), "app");
  assert.equal(await reason(platform.verifyNotification(callback(txn({ amount: { total: 19.99, currency: "CNY" } })))), "malformed");
  assert.equal(await reason(platform.verifyNotification(callback(txn({ trade_state: "WHATEVER" })))), "malformed");
  assert.equal(await reason(platform.verifyNotification(callback(txn(), { eventType: "REFUND.SUCCESS" }))), "malformed");
  // The amount is reported as signed; comparing it with the order is checkBusiness's job.
  assert.equal((await platform.verifyNotification(callback(txn({ amount: { total: 1, currency: "CNY" } })))).amountMinor, 1);
  assert.equal((await platform.verifyNotification(callback(txn({ trade_state: "CLOSED", success_time: undefined })))).status, "failed");
  assert.equal((await platform.verifyNotification(callback(txn({ trade_state: "NOTPAY" })))).status, "pending");
});

it("a body that is not JSON, with a valid signature, fails normally", async () => {
  const raw = callback();
  const body = Buffer.from("{not json");
  const ts = raw.headers["wechatpay-timestamp"] as string;
  const nonce = raw.headers["wechatpay-nonce"] as string;
  const signature = wechatPlatform.sign(ts, nonce, body.toString(), platformKey.privateKey);
  assert.equal(
    await reason(platform.verifyNotification({ ...raw, rawBody: body, headers: { ...raw.headers, "wechatpay-signature": signature } })),
    "malformed",
  );
});

it("encryptResource/decryptResource round trip", () => {
  const r = encryptResource('{"a":1}', API_V3_KEY, "abcdefghijkl", "transaction");
  assert.equal(decryptResource(r, API_V3_KEY).toString(), '{"a":1}');
});

it("acks per APIv3: 204 without body; failures 4xx/5xx with {code, message}", () => {
  assert.deepEqual(platform.ackResponse(), { status: 204, headers: {}, body: "" });
  const nack = platform.nackResponse(new PaymentVerificationError("bad_signature"));
  assert.equal(nack.status, 400);
  assert.deepEqual(JSON.parse(nack.body), { code: "FAIL", message: "bad_signature" });
  assert.equal(platform.nackResponse(new Error("secret db password in here")).body, JSON.stringify({ code: "FAIL", message: "internal" }));
});

it("time_expire: RFC 3339 in Beijing time with +08:00, no milliseconds (rounded down)", () => {
  assert.equal(wechatTimeExpire(1_700_000_000_000), "2023-11-15T06:13:20+08:00");
  assert.equal(wechatTimeExpire(1_700_000_000_999), "2023-11-15T06:13:20+08:00");
  // The string names the same instant (to the second) for any RFC 3339 reader.
  assert.equal(Date.parse(wechatTimeExpire(1_700_000_000_999)), 1_700_000_000_000);
});
