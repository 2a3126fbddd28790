/**
 * The sandbox's callback sender over real HTTP: a local server plays our notify route,
 * verifies with the platform's verifyNotification, and refuses the first attempts.
 */
import assert from "node:assert/strict";
import { it } from "mocha";
import { MemorySandboxStateStore, SandboxNotifier, SandboxPlatform, sandboxOutcomePayload } from "./sandbox";
import { fakeGateway, rsaPair } from "./test-support";

it("notifier → notify route over HTTP: verified, retried until success", async () => {
  const keys = rsaPair();
  const platform = new SandboxPlatform({ ...keys, publicUrl: "http://localhost:3000" }, { store: new MemorySandboxStateStore() });
  let seen = 0;
  const route = await fakeGateway(async (req) => {
    seen++;
    try {
      const n = await platform.verifyNotification({ headers: req.headers, rawBody: req.body, contentType: req.headers["content-type"] });
      assert.equal(n.paymentId, "pay_1");
      // The first delivery "crashes" on our side: the platform must try again.
      const reply = seen === 1 ? platform.nackResponse(new Error("db busy")) : platform.ackResponse();
      return { status: reply.status, headers: reply.headers, body: reply.body };
    } catch (err) {
      const reply = platform.nackResponse(err);
      return { status: reply.status, headers: reply.headers, body: reply.body };
    }
  });
  try {
    const notifier = new SandboxNotifier({ privateKey: keys.privateKey, baseDelayMs: 10 });
    const result = await notifier.deliver(
      `${route.url}/api/payments/notify/sandbox`,
      sandboxOutcomePayload({ paymentId: "pay_1", amountMinor: 1999, currency: "CNY" }, "success", Date.now()),
    );
    assert.deepEqual(result, { delivered: true, attempts: 2, lastStatus: 200 });
    assert.equal(route.received.length, 2);

    // A notifier holding another key never gets through.
    const impostor = new SandboxNotifier({ privateKey: rsaPair().privateKey, baseDelayMs: 1, maxAttempts: 3 });
    const denied = await impostor.deliver(
      `${route.url}/api/payments/notify/sandbox`,
      sandboxOutcomePayload({ paymentId: "pay_1", amountMinor: 1999, currency: "CNY" }, "success", Date.now()),
    );
    assert.deepEqual(denied, { delivered: false, attempts: 3, lastStatus: 400, lastError: "HTTP 400" });
  } finally {
    await route.close();
  }
});
