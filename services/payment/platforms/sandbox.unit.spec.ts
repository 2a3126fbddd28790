import assert from "node:assert/strict";
import { test } from "node:test";
import { PaymentVerificationError, checkBusiness } from "./platform";
import {
  MemorySandboxStateStore,
  SandboxNotifier,
  SandboxPlatform,
  checkSandboxPayToken,
  sandboxOutcomePayload,
  sandboxPayToken,
  signSandboxNotification,
  verifySandboxNotification,
  type SandboxNotificationPayload,
} from "./sandbox";
import { rsaPair } from "./test-support";

const sandboxKeys = rsaPair();
const other = rsaPair();
const NOW = Date.parse("2025-03-01T04:00:00Z");
const store = new MemorySandboxStateStore();
const platform = new SandboxPlatform({ ...sandboxKeys, publicUrl: "http://localhost:3000/" }, { store, now: () => NOW });

const payload: SandboxNotificationPayload = {
  notifyId: "sbn_1",
  paymentId: "pay_1",
  providerTxnId: "sbx_1",
  amountMinor: 1999,
  currency: "CNY",
  status: "succeeded",
  paidAt: "2025-03-01T04:00:00.000Z",
};

const raw = (signed: { headers: Record<string, string>; body: string }) => ({ headers: signed.headers, rawBody: Buffer.from(signed.body), contentType: signed.headers["content-type"] });

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof PaymentVerificationError, String(err));
    return err.reason;
  }
  return assert.fail("expected a PaymentVerificationError");
}

test("sign → verify round trip; the platform maps it to a notification", async () => {
  const signed = signSandboxNotification(payload, sandboxKeys.privateKey, NOW);
  assert.deepEqual(verifySandboxNotification(raw(signed), sandboxKeys.publicKey, NOW), payload);
  const n = await platform.verifyNotification(raw(signed));
  assert.deepEqual(n, { paymentId: "pay_1", providerTxnId: "sbx_1", amountMinor: 1999, currency: "CNY", status: "succeeded", paidAt: "2025-03-01T04:00:00.000Z" });
  checkBusiness(n, { paymentId: "pay_1", amountMinor: 1999, currency: "CNY" });
});

test("forgeries: other key, tampered body, bad signature, stale or future timestamp, missing headers", async () => {
  assert.equal(await reason(platform.verifyNotification(raw(signSandboxNotification(payload, other.privateKey, NOW)))), "unknown_serial");
  // Other key but claiming our key id.
  const forged = signSandboxNotification(payload, other.privateKey, NOW);
  const ours = signSandboxNotification(payload, sandboxKeys.privateKey, NOW);
  assert.equal(await reason(platform.verifyNotification(raw({ ...forged, headers: { ...forged.headers, "x-sandbox-key-id": ours.headers["x-sandbox-key-id"]! } }))), "bad_signature");
  assert.equal(await reason(platform.verifyNotification(raw({ ...ours, body: ours.body.replace("1999", "1") }))), "bad_signature");
  assert.equal(await reason(platform.verifyNotification(raw({ ...ours, headers: { ...ours.headers, "x-sandbox-signature": "garbage!!" } }))), "bad_signature");
  assert.equal(await reason(platform.verifyNotification(raw(signSandboxNotification(payload, sandboxKeys.privateKey, NOW - 6 * 60_000)))), "timestamp");
  assert.equal(await reason(platform.verifyNotification(raw(signSandboxNotification(payload, sandboxKeys.privateKey, NOW + 6 * 60_000)))), "timestamp");
  assert.ok(await platform.verifyNotification(raw(signSandboxNotification(payload, sandboxKeys.privateKey, NOW - 4 * 60_000))));
  const { "x-sandbox-nonce": _n, ...noNonce } = ours.headers;
  assert.equal(await reason(platform.verifyNotification(raw({ ...ours, headers: noNonce }))), "missing_header");
  assert.equal(await reason(platform.verifyNotification({ ...raw(ours), contentType: "text/plain" })), "content_type");
  // Signed but not a payload we understand.
  const odd = signSandboxNotification({ ...payload, amountMinor: 19.99 }, sandboxKeys.privateKey, NOW);
  assert.equal(await reason(platform.verifyNotification(raw(odd))), "malformed");
});

test("create: a redirect to the pay page on our gateway, with an unguessable token", async () => {
  const res = await platform.create({ paymentId: "pay_1", orderId: "ord_1", amountMinor: 1999, currency: "CNY", subject: "Order", notifyUrl: "http://localhost:3000/api/payments/notify/sandbox" });
  assert.ok(res.kind === "redirect");
  const url = new URL(res.url);
  assert.equal(url.origin + url.pathname, "http://localhost:3000/sandbox/pay/pay_1");
  const token = url.searchParams.get("token")!;
  assert.equal(token, sandboxPayToken("pay_1", sandboxKeys.privateKey));
  assert.ok(checkSandboxPayToken("pay_1", token, sandboxKeys.privateKey));
  assert.ok(!checkSandboxPayToken("pay_2", token, sandboxKeys.privateKey));
  assert.ok(!checkSandboxPayToken("pay_1", token, other.privateKey));
  assert.ok(!checkSandboxPayToken("pay_1", "short", sandboxKeys.privateKey));
});

test("outcome payloads", () => {
  const ok = sandboxOutcomePayload({ paymentId: "p", amountMinor: 5, currency: "CNY" }, "success", NOW);
  assert.equal(ok.status, "succeeded");
  assert.equal(ok.paidAt, "2025-03-01T04:00:00.000Z");
  const ko = sandboxOutcomePayload({ paymentId: "p", amountMinor: 5, currency: "CNY" }, "failure", NOW);
  assert.equal(ko.status, "failed");
  assert.equal(ko.paidAt, undefined);
  assert.notEqual(ok.providerTxnId, ko.providerTxnId);
});

test("notifier: retries with exponential backoff until a 2xx \"success\", re-signing each attempt", async () => {
  const sleeps: number[] = [];
  const calls: { url: string; headers: Record<string, string>; body: string }[] = [];
  const replies = [
    () => Promise.reject(new TypeError("fetch failed")),
    () => Promise.resolve(new Response("fail", { status: 500 })),
    () => Promise.resolve(new Response("ok", { status: 200 })), // 2xx but not "success": keep going
    () => Promise.resolve(new Response("success", { status: 200 })),
  ];
  let clock = NOW;
  const notifier = new SandboxNotifier({
    privateKey: sandboxKeys.privateKey,
    fetch: async (url, init) => {
      calls.push({ url: String(url), headers: init?.headers as Record<string, string>, body: String(init?.body) });
      return replies[calls.length - 1]!();
    },
    sleep: async (ms) => {
      sleeps.push(ms);
      clock += ms;
    },
    now: () => clock,
    random: () => 0.5, // no jitter
    baseDelayMs: 1000,
  });
  const result = await notifier.deliver("http://localhost:3000/api/payments/notify/sandbox", payload);
  assert.deepEqual(result, { delivered: true, attempts: 4, lastStatus: 200 });
  assert.deepEqual(sleeps, [1000, 2000, 4000]);
  assert.equal(calls.length, 4);
  // Every attempt carries a fresh, valid signature for the time it was sent.
  for (const c of calls) {
    const ts = Number(c.headers["x-sandbox-timestamp"]) * 1000;
    assert.deepEqual(verifySandboxNotification({ headers: c.headers, rawBody: Buffer.from(c.body), contentType: "application/json" }, sandboxKeys.publicKey, ts), payload);
  }
  assert.notEqual(calls[0]!.headers["x-sandbox-timestamp"], calls[3]!.headers["x-sandbox-timestamp"]);
});

test("notifier: gives up after maxAttempts; delays are capped", async () => {
  const sleeps: number[] = [];
  const notifier = new SandboxNotifier({
    privateKey: sandboxKeys.privateKey,
    fetch: async () => new Response("fail", { status: 400 }),
    sleep: async (ms) => void sleeps.push(ms),
    random: () => 0.5,
    maxAttempts: 5,
    baseDelayMs: 1000,
    maxDelayMs: 5000,
  });
  assert.deepEqual(await notifier.deliver("http://x/notify", payload), { delivered: false, attempts: 5, lastStatus: 400, lastError: "HTTP 400" });
  assert.deepEqual(sleeps, [1000, 2000, 4000, 5000]);
  // Jitter stays within ±25 %.
  const jittered = new SandboxNotifier({ privateKey: sandboxKeys.privateKey, random: () => 0 }).delayFor(3);
  assert.equal(jittered, 3000);
});

test("query and refund answer from the state store; refunds are idempotent on refundId", async () => {
  assert.deepEqual(await platform.query("nope"), { status: "not_found", paymentId: "nope" });
  store.payments.set("pay_1", { paymentId: "pay_1", amountMinor: 1999, currency: "CNY", status: "succeeded", providerTxnId: "sbx_1", paidAt: "2025-03-01T04:00:00.000Z" });
  store.payments.set("pay_2", { paymentId: "pay_2", amountMinor: 500, currency: "CNY", status: "pending" });
  assert.deepEqual(await platform.query("pay_1"), { status: "succeeded", paymentId: "pay_1", amountMinor: 1999, currency: "CNY", providerTxnId: "sbx_1", paidAt: "2025-03-01T04:00:00.000Z" });
  assert.equal((await platform.query("pay_2")).status, "pending");

  const input = { paymentId: "pay_1", refundId: "ref_1", amountMinor: 500, totalMinor: 1999, reason: "x" };
  const first = await platform.refund(input);
  assert.equal(first.status, "succeeded");
  assert.deepEqual(await platform.refund(input), first);
  assert.equal(store.refunds.size, 1);
  assert.deepEqual(await platform.refund({ ...input, paymentId: "pay_2", refundId: "ref_2", totalMinor: 500 }), { status: "failed", failureCode: "TRADE_NOT_PAID" });
  assert.deepEqual(await platform.refund({ ...input, paymentId: "pay_9", refundId: "ref_3" }), { status: "failed", failureCode: "TRADE_NOT_EXIST" });
  assert.deepEqual(await platform.refund({ ...input, refundId: "ref_4", amountMinor: 2000, totalMinor: 2000 }), { status: "failed", failureCode: "AMOUNT_INVALID" });
});

test("acks: success / fail", () => {
  assert.equal(platform.ackResponse().body, "success");
  assert.equal(platform.nackResponse(new PaymentVerificationError("timestamp")).status, 400);
  assert.equal(platform.nackResponse(new Error("x")).status, 500);
});
