/**
 * The payment service through the gateway and the broker, on SQLite (embedded) and on the
 * real MariaDB + Redis: the sandbox end to end over HTTP (pay page, complete, the signed
 * callback arriving over HTTP), exactly-once recording under repeated and concurrent
 * callbacks, forged callbacks, access, refunds, and reconciliation.
 */
import assert from "node:assert/strict";
import { createPrivateKey, randomBytes, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { keyId } from "./platforms/keys";
import { signSandboxNotification, type SandboxNotificationPayload } from "./platforms/sandbox";
import { rsaPair } from "./platforms/test-support";
import { eventually } from "../../test/support/eventually";
import { untilQuiet } from "../../test/support/quiet";

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
const SERVICES = ["gateway", "user", "payment"] as const;
const waitFor = <T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 10_000) =>
  eventually(what, check, timeoutMs, 25);

interface Harness {
  app: TestApp;
  db(): any;
  key(): KeyObject;
  create(over?: Record<string, unknown>): Promise<any>;
  events(name: string, id: string, field?: string): Promise<any[]>;
  status(id: string): Promise<string>;
  notify(
    signed: { headers: Record<string, string>; body: string },
    provider?: string,
  ): Promise<{ status: number; text: string; headers: Headers }>;
  /** Until no sandbox callback is being sent and no reconciliation pass runs: the payment service has nothing left to do. */
  quiet(): Promise<void>;
}

function harness(getApp: () => TestApp, userId: () => string): Harness {
  const h: Harness = {
    get app() {
      return getApp();
    },
    db: () => (getApp().broker.getLocalService("payment") as any).db,
    key: () => createPrivateKey(fs.readFileSync(path.join(getApp().config.dataDir, "sandbox-pay-key.pem"), "utf8")),
    create: (over = {}) =>
      getApp().broker.call("payment.create", {
        orderId: `ord-${randomBytes(6).toString("hex")}`,
        userId: userId(),
        provider: "sandbox",
        amount: { amount: 1999, currency: "CNY" },
        subject: "Order #1",
        expiresAt: Date.now() + 900_000,
        ...over,
      }),
    events: async (name, id, field = "paymentId") =>
      ((await h.db()("outbox").where({ event: name })) as { payload: string }[])
        .map((r) => JSON.parse(r.payload))
        .filter((p) => p[field] === id),
    status: async (id) =>
      (
        await getApp().broker.call<any[], unknown>("payment.listForOrder", {
          orderId: (await h.db()("payments").where({ id }).first()).order_id,
        })
      ).find((p) => p.id === id).status,
    notify: async (signed, provider = "sandbox") => {
      const res = await fetch(`${getApp().baseUrl}/api/payments/notify/${provider}`, {
        method: "POST",
        headers: signed.headers,
        body: signed.body,
      });
      return { status: res.status, text: await res.text(), headers: res.headers };
    },
    quiet: () => {
      const svc = getApp().broker.getLocalService("payment") as unknown as {
        deliveries: Set<unknown>;
        reconciler?: { running?: Promise<void> };
      };
      return untilQuiet("the payment service", {
        "sandbox callbacks being sent": () => svc.deliveries.size,
        "reconciliation passes running": () => (svc.reconciler?.running ? 1 : 0),
      });
    },
  };
  return h;
}

const successPayload = (
  p: { id: string; amount: { amount: number; currency: string } },
  over: Partial<SandboxNotificationPayload> = {},
): SandboxNotificationPayload => ({
  notifyId: `sbn_${randomBytes(6).toString("hex")}`,
  paymentId: p.id,
  providerTxnId: `sbx_${randomBytes(6).toString("hex")}`,
  amountMinor: p.amount.amount,
  currency: p.amount.currency,
  status: "succeeded",
  paidAt: new Date().toISOString(),
  ...over,
});

for (const storage of ["sqlite", "mariadb"] as const) {
  describe(`payment service (${storage})`, () => {
    let app: TestApp;
    let alice = { id: "", token: "" };
    let bob = { id: "", token: "" };
    let admin = "";
    const h = harness(
      () => app,
      () => alice.id,
    );
    const call = (method: string, p: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, p, opts);

    before(async () => {
      app = await startTestApp({
        db: storage,
        redis: storage === "mariadb",
        services: [...SERVICES],
        env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password },
      });
      admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken;
      for (const [who, email] of [
        ["alice", "alice@example.com"],
        ["bob", "bob@example.com"],
      ] as const) {
        const reg = await call("POST", "/api/auth/register", { body: { email, password: "customer password", name: who } });
        assert.equal(reg.status, 201, reg.text);
        const u = { id: reg.body.user.id, token: reg.body.accessToken };
        if (who === "alice") alice = u;
        else bob = u;
      }
    });
    after(async () => app?.stop());

    it("create: the payment view, 32-hex id, idempotent re-pay, 422 for a disabled or unknown provider", async () => {
      const p = await h.create();
      assert.match(p.id, /^[0-9a-f]{32}$/);
      assert.equal(p.status, "PENDING");
      assert.deepEqual(p.amount, { amount: 1999, currency: "CNY" });
      assert.equal(p.userId, alice.id);
      assert.ok(p.payUrl.startsWith(`${app.baseUrl}/sandbox/pay/${p.id}?token=`), p.payUrl);
      assert.deepEqual(Object.keys(p).sort(), [
        "amount",
        "createdAt",
        "id",
        "orderId",
        "payUrl",
        "provider",
        "status",
        "updatedAt",
        "userId",
      ]);
      // The same order, provider and amount: the same PENDING payment (also when concurrent).
      const again = await Promise.all(Array.from({ length: 5 }, () => h.create({ orderId: p.orderId })));
      for (const a of again) assert.equal(a.id, p.id);
      const other = await h.create({ orderId: p.orderId, amount: { amount: 2999, currency: "CNY" } });
      assert.notEqual(other.id, p.id);
      const list = await app.broker.call<any[], unknown>("payment.listForOrder", { orderId: p.orderId });
      assert.deepEqual(
        list.map((x) => x.id),
        [p.id, other.id],
        "oldest first",
      );
      await assert.rejects(h.create({ provider: "alipay" }), { code: 422, type: "VALIDATION_ERROR" });
      await assert.rejects(h.create({ provider: "paypal" }), { code: 422 });
      await assert.rejects(h.create({ amount: { amount: 0, currency: "CNY" } }), { code: 422 });
    });

    it("sandbox end to end over HTTP: pay page → complete success → signed callback → SUCCEEDED, one event", async () => {
      const p = await h.create();
      const pageUrl = new URL(p.payUrl);
      const page = await call("GET", pageUrl.pathname + pageUrl.search);
      assert.equal(page.status, 200);
      assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
      assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'none'/);
      assert.ok(page.text.includes(p.id) && page.text.includes("19.99 CNY"));
      assert.doesNotMatch(page.text, /https?:\/\//, "no external assets");
      const token = pageUrl.searchParams.get("token")!;
      assert.equal((await call("GET", `/sandbox/pay/${p.id}?token=${"x".repeat(token.length)}`)).status, 404);
      assert.equal(
        (await call("POST", `/api/payments/sandbox/${p.id}/complete`, { body: { outcome: "success", token: "wrong" } })).status,
        404,
      );

      const done = await call("POST", `/api/payments/sandbox/${p.id}/complete`, { body: { outcome: "success", token } });
      assert.equal(done.status, 202, done.text);
      const paid = await waitFor("SUCCEEDED", async () => {
        const r = await call("GET", `/api/payments/${p.id}`, { token: alice.token });
        return r.body.status === "SUCCEEDED" && r.body;
      });
      assert.match(paid.providerTxnId, /^sbx_/);
      assert.ok(paid.paidAt);
      // Counted once the callback sender is done: a second delivery would have landed by then.
      await h.quiet();
      const events = await h.events("payment.succeeded", p.id);
      assert.equal(events.length, 1);
      const e = events[0];
      assert.deepEqual(
        { ...e, paidAt: undefined, occurredAt: undefined },
        {
          paymentId: p.id,
          orderId: p.orderId,
          userId: alice.id,
          provider: "sandbox",
          amount: { amount: 1999, currency: "CNY" },
          providerTxnId: paid.providerTxnId,
          paidAt: undefined,
          occurredAt: undefined,
        },
      );
      assert.ok(Date.parse(e.paidAt) && Date.parse(e.occurredAt));
      // Paid: the order cannot be paid again.
      await assert.rejects(h.create({ orderId: p.orderId }), { code: 409, type: "CONFLICT" });
    });

    it("failure path: FAILED with one payment.failed; the order may pay again; a late success still counts", async () => {
      const p = await h.create();
      const token = new URL(p.payUrl).searchParams.get("token")!;
      assert.equal((await call("POST", `/api/payments/sandbox/${p.id}/complete`, { body: { outcome: "failure", token } })).status, 202);
      await waitFor("FAILED", async () => (await h.status(p.id)) === "FAILED");
      await h.quiet();
      const failed = await h.events("payment.failed", p.id);
      assert.equal(failed.length, 1);
      assert.equal(failed[0].reason, "declined");
      assert.deepEqual(Object.keys(failed[0]).sort(), ["occurredAt", "orderId", "paymentId", "provider", "reason", "userId"]);
      const retry = await h.create({ orderId: p.orderId });
      assert.notEqual(retry.id, p.id);
      assert.equal(retry.status, "PENDING");
      // The buyer paid after all on the first payment: money was taken, so it is recorded.
      assert.equal((await call("POST", `/api/payments/sandbox/${p.id}/complete`, { body: { outcome: "success", token } })).status, 202);
      await waitFor("late SUCCEEDED", async () => (await h.status(p.id)) === "SUCCEEDED");
      await h.quiet();
      assert.equal((await h.events("payment.succeeded", p.id)).length, 1);
      assert.equal((await h.events("payment.failed", p.id)).length, 1);
    });

    it("the same signed callback 10 times concurrently, then 10 times in a row: one transition, one event", async () => {
      const p = await h.create();
      const signed = signSandboxNotification(successPayload(p), h.key(), Date.now());
      const replies = await Promise.all(Array.from({ length: 10 }, () => h.notify(signed)));
      for (const r of replies) {
        assert.equal(r.status, 200);
        assert.equal(r.text, "success");
        assert.match(r.headers.get("content-type") ?? "", /^text\/plain/);
      }
      for (let i = 0; i < 10; i++) assert.equal((await h.notify(signed)).text, "success");
      assert.equal(await h.status(p.id), "SUCCEEDED");
      await h.quiet();
      assert.equal((await h.events("payment.succeeded", p.id)).length, 1);
      // A failure callback after the success changes nothing either.
      const late = signSandboxNotification(successPayload(p, { status: "failed", paidAt: undefined }), h.key(), Date.now());
      assert.equal((await h.notify(late)).status, 200);
      assert.equal(await h.status(p.id), "SUCCEEDED");
      assert.equal((await h.events("payment.failed", p.id)).length, 0);
    });

    it("forged callbacks: 400, the platform's nack, nothing changes", async () => {
      const p = await h.create();
      const key = h.key();
      const otherKey = rsaPair().privateKey;
      const good = signSandboxNotification(successPayload(p), key, Date.now());
      const forgedWithRightKeyId = signSandboxNotification(successPayload(p), otherKey, Date.now());
      forgedWithRightKeyId.headers["x-sandbox-key-id"] = keyId(key);
      const cases: [string, { headers: Record<string, string>; body: string }][] = [
        [
          "bad signature (body changed after signing)",
          { headers: good.headers, body: good.body.replace(`"amountMinor":1999`, `"amountMinor":1998`) },
        ],
        ["other key", signSandboxNotification(successPayload(p), otherKey, Date.now())],
        ["other key, our key id", forgedWithRightKeyId],
        ["timestamp 6 min old", signSandboxNotification(successPayload(p), key, Date.now() - 6 * 60_000)],
        ["timestamp 6 min ahead", signSandboxNotification(successPayload(p), key, Date.now() + 6 * 60_000)],
        ["wrong amount", signSandboxNotification(successPayload(p, { amountMinor: 1 }), key, Date.now())],
        ["wrong currency", signSandboxNotification(successPayload(p, { currency: "USD" }), key, Date.now())],
        [
          "unknown payment",
          signSandboxNotification(successPayload({ id: randomBytes(16).toString("hex"), amount: p.amount }), key, Date.now()),
        ],
        ["no signature headers", { headers: { "content-type": "application/json" }, body: good.body }],
        ["not JSON", { headers: { ...good.headers, "content-type": "text/plain" }, body: good.body }],
      ];
      for (const [name, signed] of cases) {
        const r = await h.notify(signed);
        assert.equal(r.status, 400, `${name}: ${r.text}`);
        assert.equal(r.text, "fail", name);
        assert.doesNotMatch(r.text, /at .*\.ts/, "no stack");
      }
      assert.equal(await h.status(p.id), "PENDING");
      assert.equal((await h.events("payment.succeeded", p.id)).length, 0);
      assert.equal((await h.events("payment.failed", p.id)).length, 0);
      // A provider that does not exist or is not enabled; an oversized body.
      assert.equal((await h.notify(good, "paypal")).status, 404);
      assert.equal((await h.notify(good, "alipay")).status, 404);
      const big = await h.notify({ headers: good.headers, body: "x".repeat(app.config.bodyLimitBytes + 1) });
      assert.equal(big.status, 413);
      // Past the gateway's reader (another node, a direct call), the action holds the
      // configured limit too: its contract's rule is only the largest setting's.
      const tooBig = Buffer.alloc(app.config.bodyLimitBytes + 16, "x").toString("base64"); // past base64's slack
      await assert.rejects(
        app.broker.call("payment.notify", { provider: "sandbox", rawBody: tooBig, contentType: "application/json", headers: [] }),
        (e: { code?: number; type?: string }) => e.code === 422 && e.type === "VALIDATION_ERROR",
      );
      // The genuine one still goes through.
      assert.equal((await h.notify(good)).text, "success");
      assert.equal(await h.status(p.id), "SUCCEEDED");
    });

    it("GET /api/payments/:id: owner and admin 200, another user 404, anonymous 401", async () => {
      const p = await h.create();
      const own = await call("GET", `/api/payments/${p.id}`, { token: alice.token });
      assert.equal(own.status, 200);
      assert.deepEqual(own.body, p);
      assert.equal((await call("GET", `/api/payments/${p.id}`, { token: admin })).status, 200);
      const foreign = await call("GET", `/api/payments/${p.id}`, { token: bob.token });
      assert.equal(foreign.status, 404);
      assert.equal(foreign.body.error.code, "NOT_FOUND");
      // A smuggled userId is dropped: ownership alone decides.
      assert.equal((await call("GET", `/api/payments/${p.id}?userId=${alice.id}`, { token: bob.token })).status, 404, "no smuggled userId");
      assert.equal((await call("GET", `/api/payments/${p.id}`)).status, 401);
      assert.equal((await call("GET", `/api/payments/${randomBytes(16).toString("hex")}`, { token: alice.token })).status, 404);
    });

    it("refunds: idempotent by refundId, never above the payment, one event each", async () => {
      const paid = async (amount: number) => {
        // Through the sandbox's own flow: its records must know the payment to refund it.
        const p = await h.create({ amount: { amount, currency: "CNY" } });
        const token = new URL(p.payUrl).searchParams.get("token")!;
        assert.equal((await call("POST", `/api/payments/sandbox/${p.id}/complete`, { body: { outcome: "success", token } })).status, 202);
        await waitFor("SUCCEEDED", async () => (await h.status(p.id)) === "SUCCEEDED");
        return p;
      };
      const refund = (p: any, refundId: string, amount: number) =>
        app.broker.call<any, unknown>("payment.refund", {
          refundId,
          orderId: p.orderId,
          paymentId: p.id,
          amount: { amount, currency: "CNY" },
          reason: "changed my mind",
        });

      const p = await paid(1999);
      const r1 = await refund(p, "rf-1", 1000);
      assert.equal(r1.status, "SUCCEEDED");
      assert.deepEqual(
        { ...r1, providerRefundId: undefined },
        { refundId: "rf-1", paymentId: p.id, status: "SUCCEEDED", amount: { amount: 1000, currency: "CNY" }, providerRefundId: undefined },
      );
      assert.match(r1.providerRefundId, /^sbr_/);
      assert.deepEqual(await refund(p, "rf-1", 1000), r1, "a replay answers the stored result");
      assert.deepEqual(await Promise.all([refund(p, "rf-1", 1000), refund(p, "rf-1", 1000)]), [r1, r1]);
      await assert.rejects(refund(p, "rf-1", 500), { code: 409 }, "the same refundId for another refund");
      await assert.rejects(refund(p, "rf-2", 1000), { code: 422, type: "VALIDATION_ERROR" }, "1000 + 1000 > 1999");
      assert.equal((await refund(p, "rf-3", 999)).status, "SUCCEEDED");
      await assert.rejects(refund(p, "rf-4", 1), { code: 422 });
      await h.quiet();
      const events = await h.events("refund.succeeded", p.id);
      assert.deepEqual(events.map((e) => e.refundId).sort(), ["rf-1", "rf-3"]);
      assert.deepEqual(Object.keys(events[0]).sort(), ["amount", "occurredAt", "orderId", "paymentId", "refundId"]);
      assert.equal((await h.db()("sandbox_refunds").where({ payment_id: p.id })).length, 2, "the platform refunded twice, not more");

      // Concurrent refunds of one payment: the sum never exceeds it.
      const q = await paid(1000);
      const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => refund(q, `rf-c${i}-${q.id}`, 400)));
      assert.equal(results.filter((r) => r.status === "fulfilled").length, 2);
      for (const r of results) if (r.status === "rejected") assert.equal((r.reason as { code: number }).code, 422);

      // The platform refuses (the sandbox never took this money: paid by a signed callback
      // alone): FAILED, with one refund.failed; a failed refund does not count against the amount.
      const direct = await h.create();
      assert.equal((await h.notify(signSandboxNotification(successPayload(direct), h.key(), Date.now()))).text, "success");
      assert.equal((await refund(direct, "rf-f", 1999)).status, "FAILED");
      assert.equal((await refund(direct, "rf-f", 1999)).status, "FAILED");
      assert.equal((await h.events("refund.failed", "rf-f", "refundId")).length, 1);
      assert.equal((await refund(direct, "rf-f2", 1999)).status, "FAILED");

      // Not paid: 409; another order's payment or an unknown one: 404.
      const pending = await h.create();
      await assert.rejects(refund(pending, "rf-p", 1), { code: 409 });
      await assert.rejects(refund({ ...q, orderId: "someone-else" }, "rf-x", 1), { code: 404 });
      await assert.rejects(refund({ ...q, id: "0".repeat(32) }, "rf-y", 1), { code: 404 });
    });
  });

  describe(`payment reconciliation (${storage})`, () => {
    let app: TestApp;
    const h = harness(
      () => app,
      () => "u-1",
    );
    before(async () => {
      app = await startTestApp({
        db: storage,
        redis: storage === "mariadb",
        services: [...SERVICES],
        // The sandbox's callbacks go to a dead address: only the sweep can settle these payments.
        env: { PUBLIC_URL: "http://127.0.0.1:9", PAYMENT_PENDING_TIMEOUT_S: "1", PAYMENT_RECONCILE_INTERVAL_MS: "100" },
      });
    });
    after(async () => app?.stop());

    it("the sweep settles stale PENDING payments from the platform's records, each once", async () => {
      // Each callback the sandbox tries to send, and how it ended. Its sender takes the global
      // fetch when the service first sends one (in this test: the app is this describe's own).
      const attempts: { paymentId: string; outcome: string }[] = [];
      const realFetch = globalThis.fetch;
      globalThis.fetch = async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
        const url = input instanceof Request ? input.url : String(input);
        if (!url.endsWith("/api/payments/notify/sandbox")) return realFetch(input, init);
        // The sandbox posts its JSON as a string.
        const paymentId = (JSON.parse(init?.body as string) as { paymentId: string }).paymentId;
        try {
          const res = await realFetch(input, init);
          attempts.push({ paymentId, outcome: `HTTP ${res.status}` });
          return res;
        } catch (err) {
          attempts.push({ paymentId, outcome: "no connection" });
          throw err;
        }
      };
      try {
        const paid = await h.create();
        const declined = await h.create();
        const abandoned = await h.create();
        for (const [p, outcome] of [
          [paid, "success"],
          [declined, "failure"],
        ] as const) {
          const token = new URL(p.payUrl).searchParams.get("token")!;
          const r = await http(app.baseUrl, "POST", `/api/payments/sandbox/${p.id}/complete`, { body: { outcome, token } });
          assert.equal(r.status, 202, r.text);
        }
        // Polled, not slept: the sandbox has tried to call back for both, and reached nothing.
        await waitFor("the sandbox's first callbacks tried", async () =>
          [paid, declined].every((p) => attempts.some((a) => a.paymentId === p.id)),
        );
        assert.deepEqual(
          [...new Set(attempts.map((a) => a.outcome))],
          ["no connection"],
          "the callbacks cannot arrive: whatever settles these is the sweep",
        );
        await waitFor("all settled", async () => {
          const s = await Promise.all([paid, declined, abandoned].map((p) => h.status(p.id)));
          return !s.includes("PENDING");
        });
        assert.equal(await h.status(paid.id), "SUCCEEDED");
        assert.equal(await h.status(declined.id), "FAILED");
        assert.equal(await h.status(abandoned.id), "FAILED");
        // Extra passes, also racing, change nothing.
        await Promise.all(Array.from({ length: 5 }, () => app.broker.call("payment.reconcile", { now: Date.now() + 3_600_000 })));
        assert.equal((await h.events("payment.succeeded", paid.id)).length, 1);
        assert.equal((await h.events("payment.failed", declined.id))[0].reason, "closed");
        assert.equal((await h.events("payment.failed", abandoned.id))[0].reason, "not_found");
        for (const p of [paid, declined, abandoned]) {
          assert.equal((await h.events("payment.succeeded", p.id)).length + (await h.events("payment.failed", p.id)).length, 1);
        }

        // The abandoned one is paid after all, and its callback is lost (dead address): a later
        // pass asks again and records the money; the declined one (closed) stays as it is.
        const token = new URL(abandoned.payUrl).searchParams.get("token")!;
        assert.equal(
          (await http(app.baseUrl, "POST", `/api/payments/sandbox/${abandoned.id}/complete`, { body: { outcome: "success", token } }))
            .status,
          202,
        );
        await Promise.all(Array.from({ length: 3 }, () => app.broker.call("payment.reconcile", { now: Date.now() + 7_200_000 })));
        assert.equal(await h.status(abandoned.id), "SUCCEEDED", "a late payment whose callback was lost is recorded");
        assert.equal((await h.events("payment.succeeded", abandoned.id)).length, 1);
        assert.equal(await h.status(declined.id), "FAILED");
      } finally {
        globalThis.fetch = realFetch;
      }
    });
  });
}
