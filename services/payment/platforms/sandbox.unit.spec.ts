import assert from "node:assert/strict";
import { it } from "mocha";
import { PaymentPlatformError, PaymentVerificationError, checkBusiness } from "./platform";
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
import { omit } from "../../../test/support/omit";

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

const raw = (signed: { headers: Record<string, string>; body: string }) => ({
  headers: signed.headers,
  rawBody: Buffer.from(signed.body),
  contentType: signed.headers["content-type"],
});

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof PaymentVerificationError, String(err));
    return err.reason;
  }
  return assert.fail("expected a PaymentVerificationError");
}

it("sign → verify round trip; the platform maps it to a notification", async () => {
  const signed = signSandboxNotification(payload, sandboxKeys.privateKey, NOW);
  assert.deepEqual(verifySandboxNotification(raw(signed), sandboxKeys.publicKey, NOW), payload);
  const n = await platform.verifyNotification(raw(signed));
  assert.deepEqual(n, {
    paymentId: "pay_1",
    providerTxnId: "sbx_1",
    amountMinor: 1999,
    currency: "CNY",
    status: "succeeded",
    paidAt: "2025-03-01T04:00:00.000Z",
  });
  checkBusiness(n, { paymentId: "pay_1", amountMinor: 1999, currency: "CNY" });
});

it("forgeries: other key, tampered body, bad signature, stale or future timestamp, missing headers", async () => {
  assert.equal(await reason(platform.verifyNotification(raw(signSandboxNotification(payload, other.privateKey, NOW)))), "unknown_serial");
  // Other key but claiming our key id.
  const forged = signSandboxNotification(payload, other.privateKey, NOW);
  const ours = signSandboxNotification(payload, sandboxKeys.privateKey, NOW);
  assert.equal(
    await reason(
      platform.verifyNotification(raw({ ...forged, headers: { ...forged.headers, "x-sandbox-key-id": ours.headers["x-sandbox-key-id"] } })),
    ),
    "bad_signature",
  );
  assert.equal(await reason(platform.verifyNotification(raw({ ...ours, body: ours.body.replace("1999", "1") }))), "bad_signature");
  assert.equal(
    await reason(platform.verifyNotification(raw({ ...ours, headers: { ...ours.headers, "x-sandbox-signature": "garbage!!" } }))),
    "bad_signature",
  );
  assert.equal(
    await reason(platform.verifyNotification(raw(signSandboxNotification(payload, sandboxKeys.privateKey, NOW - 6 * 60_000)))),
    "timestamp",
  );
  assert.equal(
    await reason(platform.verifyNotification(raw(signSandboxNotification(payload, sandboxKeys.privateKey, NOW + 6 * 60_000)))),
    "timestamp",
  );
  assert.ok(await platform.verifyNotification(raw(signSandboxNotification(payload, sandboxKeys.privateKey, NOW - 4 * 60_000))));
  const noNonce = omit(ours.headers, "x-sandbox-nonce");
  assert.equal(await reason(platform.verifyNotification(raw({ ...ours, headers: noNonce }))), "missing_header");
  assert.equal(await reason(platform.verifyNotification({ ...raw(ours), contentType: "text/plain" })), "content_type");
  // Signed but not a payload we understand.
  const odd = signSandboxNotification({ ...payload, amountMinor: 19.99 }, sandboxKeys.privateKey, NOW);
  assert.equal(await reason(platform.verifyNotification(raw(odd))), "malformed");
});

it("create: a redirect to the pay page on our gateway, with an unguessable token; expiresAt checked against the clock", async () => {
  const input = {
    paymentId: "pay_1",
    orderId: "ord_1",
    amountMinor: 1999,
    currency: "CNY",
    subject: "Order",
    notifyUrl: "http://localhost:3000/api/payments/notify/sandbox",
  };
  // The payUrl carries no expiry (the service enforces it), but the input is checked like the others'.
  await assert.rejects(
    platform.create({ ...input, expiresAt: NOW }),
    (e) => e instanceof PaymentPlatformError && e.reason === "invalid_request" && /future/.test(e.message),
  );
  await assert.rejects(
    platform.create({ ...input, expiresAt: NOW + 0.5 }),
    (e) => e instanceof PaymentPlatformError && e.reason === "invalid_request",
  );
  const res = await platform.create({ ...input, expiresAt: NOW + 1 });
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

it("outcome payloads", () => {
  const ok = sandboxOutcomePayload({ paymentId: "p", amountMinor: 5, currency: "CNY" }, "success", NOW);
  assert.equal(ok.status, "succeeded");
  assert.equal(ok.paidAt, "2025-03-01T04:00:00.000Z");
  const ko = sandboxOutcomePayload({ paymentId: "p", amountMinor: 5, currency: "CNY" }, "failure", NOW);
  assert.equal(ko.status, "failed");
  assert.equal(ko.paidAt, undefined);
  assert.notEqual(ok.providerTxnId, ko.providerTxnId);
});

it('notifier: retries with exponential backoff until a 2xx "success", re-signing each attempt', async () => {
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
      // The notifier posts its signed JSON (a string) to its notify URL (a string).
      calls.push({ url: url as string, headers: init?.headers as Record<string, string>, body: init?.body as string });
      return replies[calls.length - 1]();
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
    assert.deepEqual(
      verifySandboxNotification(
        { headers: c.headers, rawBody: Buffer.from(c.body), contentType: "application/json" },
        sandboxKeys.publicKey,
        ts,
      ),
      payload,
    );
  }
  assert.notEqual(calls[0].headers["x-sandbox-timestamp"], calls[3].headers["x-sandbox-timestamp"]);
});

it("notifier: gives up after maxAttempts; delays are capped", async () => {
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
  assert.deepEqual(await notifier.deliver("http://x/notify", payload), {
    delivered: false,
    attempts: 5,
    lastStatus: 400,
    lastError: "HTTP 400",
  });
  assert.deepEqual(sleeps, [1000, 2000, 4000, 5000]);
  // Jitter stays within ±25 %.
  const jittered = new SandboxNotifier({ privateKey: sandboxKeys.privateKey, random: () => 0 }).delayFor(3);
  assert.equal(jittered, 3000);
});

it("query and refund answer from the state store; refunds are idempotent on refundId", async () => {
  assert.deepEqual(await platform.query("nope"), { status: "not_found", paymentId: "nope" });
  store.payments.set("pay_1", {
    paymentId: "pay_1",
    amountMinor: 1999,
    currency: "CNY",
    status: "succeeded",
    providerTxnId: "sbx_1",
    paidAt: "2025-03-01T04:00:00.000Z",
  });
  store.payments.set("pay_2", { paymentId: "pay_2", amountMinor: 500, currency: "CNY", status: "pending" });
  assert.deepEqual(await platform.query("pay_1"), {
    status: "succeeded",
    paymentId: "pay_1",
    amountMinor: 1999,
    currency: "CNY",
    providerTxnId: "sbx_1",
    paidAt: "2025-03-01T04:00:00.000Z",
  });
  assert.equal((await platform.query("pay_2")).status, "pending");

  const input = { paymentId: "pay_1", refundId: "ref_1", amountMinor: 500, totalMinor: 1999, reason: "x" };
  const first = await platform.refund(input);
  assert.equal(first.status, "succeeded");
  assert.deepEqual(await platform.refund(input), first);
  assert.equal(store.refunds.size, 1);
  assert.deepEqual(await platform.refund({ ...input, paymentId: "pay_2", refundId: "ref_2", totalMinor: 500 }), {
    status: "failed",
    failureCode: "TRADE_NOT_PAID",
  });
  assert.deepEqual(await platform.refund({ ...input, paymentId: "pay_9", refundId: "ref_3" }), {
    status: "failed",
    failureCode: "TRADE_NOT_EXIST",
  });
  assert.deepEqual(await platform.refund({ ...input, refundId: "ref_4", amountMinor: 2000, totalMinor: 2000 }), {
    status: "failed",
    failureCode: "AMOUNT_INVALID",
  });
});

it("close: no choice, pending or failed → closed (and stays so); succeeded → paid and untouched", async () => {
  const s = new MemorySandboxStateStore();
  const p = new SandboxPlatform({ ...sandboxKeys, publicUrl: "http://localhost:3000" }, { store: s, now: () => NOW });
  // Never opened: closed without an amount; query says failed, refund says not paid.
  assert.deepEqual(await p.close("pay_a"), { status: "closed" });
  assert.deepEqual(await p.query("pay_a"), { status: "failed", paymentId: "pay_a" });
  assert.deepEqual(await p.refund({ paymentId: "pay_a", refundId: "r_a", amountMinor: 1, totalMinor: 1, reason: "x" }), {
    status: "failed",
    failureCode: "TRADE_NOT_PAID",
  });
  // A closed trade takes no later choice: the buyer cannot pay it any more.
  const after = await s.recordChoice({
    paymentId: "pay_a",
    amountMinor: 500,
    currency: "CNY",
    status: "succeeded",
    providerTxnId: "sbx_a",
    paidAt: "2025-03-01T04:00:00.000Z",
  });
  assert.equal(after.status, "closed");
  assert.equal((await p.query("pay_a")).status, "failed");
  assert.deepEqual(await p.close("pay_a"), { status: "closed" });

  // Failed first (a success could still replace it), then closed: the success is refused.
  await s.recordChoice({ paymentId: "pay_b", amountMinor: 500, currency: "CNY", status: "failed", providerTxnId: "sbx_b1" });
  assert.deepEqual(await p.close("pay_b"), { status: "closed" });
  assert.deepEqual(await p.query("pay_b"), {
    status: "failed",
    paymentId: "pay_b",
    amountMinor: 500,
    currency: "CNY",
    providerTxnId: "sbx_b1",
  });
  assert.equal(
    (
      await s.recordChoice({
        paymentId: "pay_b",
        amountMinor: 500,
        currency: "CNY",
        status: "succeeded",
        providerTxnId: "sbx_b2",
        paidAt: "2025-03-01T04:00:00.000Z",
      })
    ).status,
    "closed",
  );
  // Without the close, the same success would have replaced the failure.
  await s.recordChoice({ paymentId: "pay_c", amountMinor: 500, currency: "CNY", status: "failed", providerTxnId: "sbx_c1" });
  assert.equal(
    (await s.recordChoice({ paymentId: "pay_c", amountMinor: 500, currency: "CNY", status: "succeeded", providerTxnId: "sbx_c2" })).status,
    "succeeded",
  );

  s.payments.set("pay_d", { paymentId: "pay_d", amountMinor: 700, currency: "CNY", status: "pending" });
  assert.deepEqual(await p.close("pay_d"), { status: "closed" });
  assert.deepEqual(await p.query("pay_d"), { status: "failed", paymentId: "pay_d", amountMinor: 700, currency: "CNY" });

  // Paid before the close: "paid", and the payment stays as it was (refundable).
  assert.deepEqual(await p.close("pay_c"), { status: "paid" });
  assert.equal((await p.query("pay_c")).status, "succeeded");
  assert.equal(
    (await p.refund({ paymentId: "pay_c", refundId: "r_c", amountMinor: 500, totalMinor: 500, reason: "x" })).status,
    "succeeded",
  );
});

it("refunds: bounded by the payment's amount in total across refund ids; a replay answers the first result", async () => {
  const s = new MemorySandboxStateStore();
  const p = new SandboxPlatform({ ...sandboxKeys, publicUrl: "http://localhost:3000" }, { store: s, now: () => NOW });
  s.payments.set("pay_r", { paymentId: "pay_r", amountMinor: 1999, currency: "CNY", status: "succeeded", providerTxnId: "sbx_r" });
  s.payments.set("pay_o", { paymentId: "pay_o", amountMinor: 1999, currency: "CNY", status: "succeeded", providerTxnId: "sbx_o" });
  const refund = (refundId: string, amountMinor: number, paymentId = "pay_r") =>
    p.refund({ paymentId, refundId, amountMinor, totalMinor: 1999, reason: "x" });

  const first = await refund("r1", 1000);
  assert.equal(first.status, "succeeded");
  // 1000 + 1000 > 1999: refused, nothing recorded.
  assert.deepEqual(await refund("r2", 1000), { status: "failed", failureCode: "REFUND_AMOUNT_EXCEEDED" });
  assert.equal(s.refunds.has("r2"), false);
  // Exactly up to the amount is allowed; one fen more is not.
  const second = await refund("r3", 999);
  assert.equal(second.status, "succeeded");
  assert.deepEqual(await refund("r4", 1), { status: "failed", failureCode: "REFUND_AMOUNT_EXCEEDED" });
  // Replays answer as the first time: the same provider refund id, nothing counted twice.
  assert.deepEqual(await refund("r1", 1000), first);
  assert.deepEqual(await refund("r3", 999), second);
  assert.deepEqual(await refund("r2", 1000), { status: "failed", failureCode: "REFUND_AMOUNT_EXCEEDED" });
  assert.equal(s.refunds.size, 2);
  // Another payment's refunds do not count against this one.
  assert.equal((await refund("r5", 1999, "pay_o")).status, "succeeded");
});

it("acks: success / fail", () => {
  assert.equal(platform.ackResponse().body, "success");
  assert.equal(platform.nackResponse(new PaymentVerificationError("timestamp")).status, 400);
  assert.equal(platform.nackResponse(new Error("x")).status, 500);
});
