/**
 * Observability: business counters in the Prometheus text (/metrics on the internal listener,
 * lib/health-server.ts; never on the gateway's public port), counted only after a commit;
 * request ids (X-Request-Id in and out, the access log line, `requestId` on log lines
 * written inside actions, calls without parentCtx continuing the request); tracing across
 * two nodes over a real RabbitMQ vhost (protobuf serializer), with the spans posted to an
 * in-process stand-in for Zipkin.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import { ServiceBroker, type Context } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import { http as request, startTestApp, type TestApp } from "../test/support/app";
import { createVhost, type RabbitVhost } from "../test/support/rabbitmq";
import { REDIS_URL, uniqueNamespace } from "../test/support/servers";
import { configProblems } from "../test/support/config";
import { loadConfig } from "./config";
import type { LogDestination } from "./logger";
import { startHealthServer } from "./health-server";
import { countBusiness, prometheusText } from "./metrics";
import { isCancelled } from "./cancellation";
import { tracingOptions, zipkinId } from "./tracing";
import { SHIPPING_ADDRESS } from "../test/support/fixtures";

/**
 * The value of one series in Prometheus text, by its labels (any order). The reporter's
 * default labels (`namespace`, `nodeID`: on every series) are not compared.
 */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries(
      (m[3] ?? "")
        .split(",")
        .filter(Boolean)
        .map((kv) => {
          const [k, v] = kv.split("=");
          return [k, JSON.parse(v)];
        })
        .filter(([k]) => k !== "namespace" && k !== "nodeID"),
    );
    if (Object.keys(labels).length === Object.keys(got).length && Object.entries(labels).every(([k, v]) => got[k] === v))
      return Number(m[4]);
  }
  return undefined;
}

/** Collects the log lines a broker writes (its destination, lib/logger.ts). */
function captureLog(): { lines: string[]; destination: LogDestination } {
  const lines: string[] = [];
  return { lines, destination: { write: (chunk: string) => void lines.push(...chunk.split("\n").filter(Boolean)) } };
}

const jsonLines = (lines: string[]) =>
  lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, any>];
    } catch {
      return [];
    }
  });

async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("tracing configuration", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-obs-cfg-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const problems = (env: Record<string, string>) => configProblems(() => loadConfig({ DATA_DIR: dir, ...env }));

  it("off by default; zipkin needs ZIPKIN_URL; the sample rate is 0..1; spans never carry params", () => {
    const off = loadConfig({ DATA_DIR: dir });
    assert.deepEqual(off.tracing, { exporter: "none", zipkinUrl: undefined, sampleRate: 1 });
    assert.deepEqual(tracingOptions(off), { enabled: false });
    assert.deepEqual(problems({ TRACING_EXPORTER: "zipkin" }), ["ZIPKIN_URL: required when TRACING_EXPORTER is zipkin"]);
    assert.deepEqual(problems({ ZIPKIN_URL: "http://zipkin:9411" }), ["ZIPKIN_URL: set without TRACING_EXPORTER=zipkin"]);
    assert.deepEqual(problems({ TRACING_EXPORTER: "jaeger" }).length, 1);
    assert.deepEqual(problems({ TRACING_SAMPLE_RATE: "1.5" }), ["TRACING_SAMPLE_RATE: must be from 0 to 1"]);
    assert.deepEqual(problems({ TRACING_SAMPLE_RATE: "lots" }).length, 1);
    const on = loadConfig({ DATA_DIR: dir, TRACING_EXPORTER: "zipkin", ZIPKIN_URL: "http://zipkin:9411/", TRACING_SAMPLE_RATE: "0.25" });
    assert.deepEqual(on.tracing, { exporter: "zipkin", zipkinUrl: "http://zipkin:9411", sampleRate: 0.25 });
    const opts = tracingOptions(on) as any;
    assert.equal(opts.enabled, true);
    assert.deepEqual(opts.sampling, { rate: 0.25 });
    assert.equal(opts.tags.action.params, false);
    assert.equal(opts.tags.event.params, false);
    assert.ok(!opts.errorFields.includes("data") && !opts.errorFields.includes("stack"));
  });

  it("Zipkin ids: Moleculer's UUIDs as its exporter cuts them, anything else hashed, the same everywhere", () => {
    assert.equal(zipkinId("0f8fad5b-d9cb-469f-a165-70867728950e"), "0f8fad5bd9cb469f");
    assert.equal(zipkinId("client-req.1"), zipkinId("client-req.1"));
    assert.match(zipkinId("client-req.1")!, /^[0-9a-f]{16}$/);
    assert.notEqual(zipkinId("client-req.1"), zipkinId("client-req.2"));
    assert.match(zipkinId("abc")!, /^[0-9a-f]{16}$/, "short hex is hashed too");
    assert.equal(zipkinId(null), null);
  });
});

describe("business counters (embedded, SQLite)", () => {
  let app: TestApp;
  before(async () => {
    app = await startTestApp({ services: ["gateway", "product"] });
  });
  after(async () => {
    await app?.stop();
  });

  it("an oversell refusal counts once per refused request, a success not at all; /metrics on the internal listener, 404 on the gateway", async () => {
    const health = await startHealthServer(app.broker, 0);
    try {
      const metrics = async () => {
        const res = await fetch(`http://127.0.0.1:${health.port}/metrics`);
        assert.equal(res.status, 200);
        assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
        return res.text();
      };
      // Registered at start: a label-less counter scrapes as 0 before its first event.
      assert.equal(sample(await metrics(), "meridian_oversell_refused_total"), 0);
      assert.equal(sample(await metrics(), "meridian_orders_created_total"), 0);

      const product = await app.broker.call<{ id: string }, unknown>("product.create", {
        sku: `OBS-${randomBytes(4).toString("hex")}`,
        name: "Counter Lamp",
        description: "A lamp",
        category: "Home",
        brand: "Obs",
        price: { amount: 1000, currency: "EUR" },
        images: [],
        stock: 2,
      });
      await assert.rejects(
        app.broker.call("product.reserve", { orderId: "o-refused-1", lines: [{ productId: product.id, quantity: 3 }] }),
        {
          type: "OUT_OF_STOCK",
        },
      );
      await app.broker.call("product.reserve", { orderId: "o-ok-1", lines: [{ productId: product.id, quantity: 2 }] });
      await assert.rejects(
        app.broker.call("product.reserve", { orderId: "o-refused-2", lines: [{ productId: product.id, quantity: 1 }] }),
        {
          type: "OUT_OF_STOCK",
        },
      );

      const text = await metrics();
      assert.equal(sample(text, "meridian_oversell_refused_total"), 2);
      assert.match(text, /# TYPE meridian_oversell_refused_total counter/);
      // Moleculer's own metrics are there too (request counts per action).
      assert.match(text, /^moleculer_request_total\{[^}]*action="product\.reserve"[^}]*\} 3$/m);
      // ...counted outside Moleculer's registry (lib/request-metrics.ts), in the same families:
      // the two refusals as errors by type, the three calls in the time histogram.
      const reserve = { service: "product", action: "product.reserve", type: "local", caller: "null" };
      assert.equal(
        sample(text, "moleculer_request_error_total", { ...reserve, errorName: "AppError", errorCode: "409", errorType: "OUT_OF_STOCK" }),
        2,
      );
      assert.equal(sample(text, "moleculer_request_active", reserve), 0);
      assert.equal(sample(text, "moleculer_request_time_count", reserve), 3);
      assert.equal(sample(text, "moleculer_request_time_bucket", { ...reserve, le: "+Inf" }), 3);
      const buckets = [...text.matchAll(/^moleculer_request_time_bucket\{[^}]*action="product\.reserve"[^}]*le="([^"]+)"\} (\d+)$/gm)].map(
        (m) => Number(m[2]),
      );
      assert.deepEqual(
        [...buckets].sort((a, b) => a - b),
        buckets,
        "cumulative buckets",
      );
      // Each family once: a second `# TYPE` of a name would make the whole scrape invalid.
      const types = [...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]);
      assert.deepEqual(
        types.filter((t, i) => types.indexOf(t) !== i),
        [],
      );
      // The outbox rows of the product's events went out (in-process relay).
      await eventually(
        "product.created published",
        async () =>
          (sample(await metrics(), "meridian_events_published_total", { service: "product", event: "product.created" }) ?? 0) >= 1,
      );

      // Not on the gateway's public port.
      const publicMetrics = await request(app.baseUrl, "GET", "/metrics");
      assert.equal(publicMetrics.status, 404);
      assert.equal(publicMetrics.body?.error?.code, "NOT_FOUND");
      assert.doesNotMatch(publicMetrics.text, /meridian_|moleculer_/);
    } finally {
      await health.close();
    }
  });

  it("with a transaction, a counter moves only once it commits: not while it is open, never for a rollback", async () => {
    const db = (app.broker.getLocalService("product") as unknown as { db: import("knex").Knex }).db;
    const count = () => sample(prometheusText(app.broker), "meridian_orders_cancelled_total", { reason: "test" }) ?? 0;
    const before = count();
    // A real transaction (the product service's database) that rolls back: never counted.
    await assert.rejects(
      db.transaction(async (trx) => {
        countBusiness(app.broker, "orders_cancelled", { reason: "test" }, trx);
        await trx.raw("select 1");
        throw new Error("roll back");
      }),
      /roll back/,
    );
    // One that commits: not counted while it is open, counted after.
    await db.transaction(async (trx) => {
      countBusiness(app.broker, "orders_cancelled", { reason: "test" }, trx);
      await trx.raw("select 1");
      assert.equal(count(), before, "not counted before the commit");
    });
    await eventually("counted after the commit", async () => count() > before);
    // The rollback settled before the commit began, so its handler has run: exactly one.
    assert.equal(count(), before + 1);
  });
});

describe("business counters through a checkout (every service, embedded)", () => {
  const ADMIN = { email: "root@example.com", password: "admin-password-1" };

  let app: TestApp;
  before(async () => {
    app = await startTestApp({ env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
  });
  after(async () => {
    await app?.stop();
  });

  it("created, paid, failed, cancelled, refunded, refused and the events behind them", async () => {
    const call = (method: string, urlPath: string, opts: Parameters<typeof request>[3] = {}) => request(app.baseUrl, method, urlPath, opts);
    const admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken as string;
    const alice = (
      await call("POST", "/api/auth/register", { body: { email: "alice@example.com", password: "alice password", name: "Alice" } })
    ).body.accessToken as string;
    const p = (
      await call("POST", "/api/products", {
        token: admin,
        body: {
          sku: `OBS-${randomBytes(4).toString("hex")}`,
          name: "Widget",
          description: "",
          category: "widgets",
          price: { amount: 1000, currency: "EUR" },
          stock: 3,
        },
      })
    ).body as { id: string };
    const order = async (quantity: number) =>
      call("POST", "/api/orders", { token: alice, body: { shippingAddress: SHIPPING_ADDRESS, items: [{ productId: p.id, quantity }] } });
    const status = async (id: string) => (await call("GET", `/api/orders/${id}`, { token: alice })).body.status as string;
    const pay = async (orderId: string, outcome: "success" | "failure") => {
      const started = await call("POST", `/api/orders/${orderId}/pay`, { token: alice, body: { provider: "sandbox" } });
      assert.equal(started.status, 200, started.text);
      const token = new URL(started.body.payUrl).searchParams.get("token");
      assert.equal((await call("POST", `/api/payments/sandbox/${started.body.id}/complete`, { body: { outcome, token } })).status, 202);
    };

    const paid = (await order(1)).body as { id: string };
    await pay(paid.id, "failure");
    await eventually(
      "payment failed noted",
      async () => (sample(prometheusText(app.broker), "meridian_payments_failed_total", { provider: "sandbox" }) ?? 0) === 1,
    );
    await pay(paid.id, "success");
    await eventually("PAID", async () => (await status(paid.id)) === "PAID");
    const cancelled = (await order(1)).body as { id: string };
    assert.equal((await call("POST", `/api/orders/${cancelled.id}/cancel`, { token: alice })).status, 200);
    const refused = await order(5);
    assert.equal(refused.status, 409);
    assert.equal(refused.body.error.code, "OUT_OF_STOCK");
    assert.equal((await call("POST", `/api/orders/${paid.id}/refunds`, { token: alice, body: { reason: "changed my mind" } })).status, 202);
    await eventually("REFUNDED", async () => (await status(paid.id)) === "REFUNDED");

    const text = prometheusText(app.broker); // what the internal listener's /metrics serves
    const expected: [string, Record<string, string>, number][] = [
      ["meridian_orders_created_total", {}, 2],
      ["meridian_orders_paid_total", { provider: "sandbox" }, 1],
      ["meridian_orders_cancelled_total", { reason: "user" }, 1],
      ["meridian_payments_succeeded_total", { provider: "sandbox" }, 1],
      ["meridian_payments_failed_total", { provider: "sandbox" }, 1],
      ["meridian_refunds_total", { result: "succeeded" }, 1],
      ["meridian_oversell_refused_total", {}, 1],
      ["meridian_events_applied_total", { service: "order", event: "payment.succeeded" }, 1],
      ["meridian_events_applied_total", { service: "order", event: "refund.succeeded" }, 1],
    ];
    for (const [name, labels, value] of expected) assert.equal(sample(text, name, labels), value, `${name} ${JSON.stringify(labels)}`);
    assert.ok((sample(text, "meridian_events_published_total", { service: "order", event: "order.paid" }) ?? 0) >= 1);
    assert.equal(sample(text, "meridian_events_dead_lettered_total", { service: "order", event: "payment.succeeded" }), undefined);
  });
});

describe("request ids and structured logs", () => {
  it("X-Request-Id is taken when sane, else generated; echoed; one JSON access line per request; never the token", async () => {
    const cap = captureLog(); // from the start: info lines stay out of the test's output
    let app: TestApp | undefined;
    try {
      app = await startTestApp({
        services: ["gateway", "product"],
        env: { LOG_FORMAT: "json", LOG_LEVEL: "info" },
        logDestination: cap.destination,
      });
      const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ";
      const given = "obs-Test_1.req";
      const ok = await request(app.baseUrl, "GET", "/api/products?pageSize=1", { headers: { "x-request-id": given }, token });
      assert.equal(ok.status, 200);
      assert.equal(ok.headers.get("x-request-id"), given);

      const insane = await request(app.baseUrl, "GET", "/api/products/does-not-exist", {
        headers: { "x-request-id": "no spaces allowed" },
      });
      assert.equal(insane.status, 404);
      const generated = insane.headers.get("x-request-id") ?? "";
      assert.match(generated, /^[0-9a-f-]{36}$/);
      assert.equal(
        (await request(app.baseUrl, "GET", "/api/products?pageSize=1", { headers: { "x-request-id": "x".repeat(129) } })).headers.get(
          "x-request-id",
        )?.length,
        36,
      );

      await eventually("access lines", () => jsonLines(cap.lines).filter((l) => l.kind === "access").length >= 3);
      const access = jsonLines(cap.lines).filter((l) => l.kind === "access");
      const first = access.find((l) => l.requestId === given)!;
      assert.ok(first, "an access line carries the client's request id");
      assert.equal(first.method, "GET");
      assert.equal(first.route, "/api/products");
      assert.equal(first.path, "/api/products");
      assert.equal(first.status, 200);
      assert.equal(first.nodeID, app.broker.nodeID);
      assert.equal(typeof first.durationMs, "number");
      assert.equal(first.level, "info");
      const missing = access.find((l) => l.requestId === generated)!;
      assert.equal(missing.status, 404);
      assert.equal(missing.route, "/api/products/:id");
      assert.ok(!cap.lines.some((l) => l.includes(token) || l.includes("c2VjcmV0LXNpZ25hdHVyZQ")), "the bearer token is never logged");
    } finally {
      await app?.stop();
    }
  });

  it("a client that leaves before its answer: the request is cancelled on the node, its access line says 499", async () => {
    const cap = captureLog();
    // Holds product.list until released, so the client can leave while its request runs.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let waiting = 0;
    const gate = {
      name: "Gate",
      localAction(next: (ctx: Context) => Promise<unknown>, action: { name?: string }) {
        if (action.name !== "product.list") return next;
        return async (ctx: Context) => {
          waiting++;
          await held;
          return next(ctx);
        };
      },
    };
    let app: TestApp | undefined;
    try {
      app = await startTestApp({
        services: ["gateway", "product"],
        env: { LOG_FORMAT: "json", LOG_LEVEL: "info" },
        middlewares: [gate],
        logDestination: cap.destination,
      });
      const requestId = `leaves-${randomBytes(4).toString("hex")}`;
      const leave = new AbortController();
      const pending = fetch(`${app.baseUrl}/api/products?pageSize=1`, {
        headers: { "x-request-id": requestId },
        signal: leave.signal,
      }).then(
        () => "answered",
        () => "left",
      );
      await eventually("the request waits at the gate", () => waiting === 1);
      leave.abort();
      assert.equal(await pending, "left");
      await eventually("cancelled on the node", () => isCancelled(app!.broker, requestId));
      release();
      await eventually("its access line", () => jsonLines(cap.lines).some((l) => l.kind === "access" && l.requestId === requestId));
      const line = jsonLines(cap.lines).find((l) => l.kind === "access" && l.requestId === requestId)!;
      assert.equal(line.status, 499);
      assert.equal(line.path, "/api/products");
      // An answered request is not cancelled.
      const answered = await request(app.baseUrl, "GET", "/api/products?pageSize=1");
      assert.equal(answered.status, 200);
      assert.equal(isCancelled(app.broker, answered.headers.get("x-request-id")), false);
    } finally {
      release();
      await app?.stop();
    }
  });

  it("a line logged inside an action carries the request id, also through a call made without parentCtx", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-obs-"));
    const cap = captureLog();
    const broker = new ServiceBroker(
      brokerOptions(
        loadConfig({ DATA_DIR: dataDir, LOG_FORMAT: "json", LOG_LEVEL: "info", NODE_ID: "obs-log", NAMESPACE: uniqueNamespace() }),
        [],
        { logDestination: cap.destination },
      ),
    );
    broker.createService({
      name: "probe",
      actions: {
        async outer(this: any, ctx: Context) {
          this.logger.info("outer here");
          // No parentCtx: RequestScopeMiddleware continues the request anyway.
          const inner = await this.broker.call("probe.inner");
          return { outer: ctx.requestID, inner };
        },
        inner(this: any, ctx: Context) {
          this.logger.info("inner here");
          return ctx.requestID;
        },
      },
    });
    try {
      await broker.start();
      const res = await broker.call("probe.outer", {}, { requestID: "req-inside-42" });
      assert.deepEqual(res, { outer: "req-inside-42", inner: "req-inside-42" });
      const lines = jsonLines(cap.lines);
      for (const msg of ["outer here", "inner here"]) {
        const line = lines.find((l) => l.msg === msg);
        assert.ok(line, `${msg} logged`);
        assert.equal(line.requestId, "req-inside-42");
        assert.equal(line.nodeID, "obs-log");
        assert.equal(line.svc, "probe");
      }
      // Outside any request: no requestId.
      broker.logger.info("outside");
      assert.equal(jsonLines(cap.lines).find((l) => l.msg === "outside")?.requestId, undefined);
    } finally {
      await broker.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("tracing across two nodes over RabbitMQ (protobuf), spans to a Zipkin stand-in", () => {
  let vhost: RabbitVhost;
  let zipkin: http.Server;
  const posts: { path: string; contentType: string; spans: any[] }[] = [];
  let dataDir: string;

  before(async () => {
    vhost = await createVhost();
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-obs-"));
    zipkin = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        posts.push({
          path: req.url ?? "",
          contentType: String(req.headers["content-type"]),
          spans: JSON.parse(Buffer.concat(chunks).toString("utf8")),
        });
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((r) => zipkin.listen(0, "127.0.0.1", r));
  });
  after(async () => {
    await vhost?.destroy().catch(() => undefined);
    await new Promise((r) => zipkin?.close(r));
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("A → B → A: spans from both nodes share one trace id with correct parents; no params in spans", async () => {
    const namespace = uniqueNamespace("obs");
    const env = {
      NAMESPACE: namespace,
      DATA_DIR: dataDir,
      RABBITMQ_URI: vhost.uri,
      JWT_SECRET: randomBytes(32).toString("hex"),
      REDIS_URL,
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
      TRACING_EXPORTER: "zipkin",
      ZIPKIN_URL: `http://127.0.0.1:${(zipkin.address() as AddressInfo).port}/`,
    };
    const configA = loadConfig({ ...env, NODE_ID: `${namespace}-a` });
    assert.equal(configA.serializer, "protobuf");
    const a = new ServiceBroker(brokerOptions(configA));
    const b = new ServiceBroker(brokerOptions(loadConfig({ ...env, NODE_ID: `${namespace}-b` })));
    a.createService({
      name: "alpha",
      actions: {
        start: (ctx: Context<{ password: string }>) => ctx.call("beta.middle", { secret: ctx.params.password }),
        leaf: (ctx: Context) => ({ node: ctx.broker.nodeID, requestID: ctx.requestID }),
      },
    });
    b.createService({
      name: "beta",
      actions: {
        async middle(this: any, ctx: Context) {
          const viaCtx = await ctx.call("alpha.leaf");
          // Without parentCtx: continued by RequestScopeMiddleware (request id and parent span).
          const viaBroker = await this.broker.call("alpha.leaf");
          return { viaCtx, viaBroker };
        },
      },
    });
    let stopped = false;
    try {
      await Promise.all([a.start(), b.start()]);
      await Promise.all([a.waitForServices("beta", 15_000), b.waitForServices("alpha", 15_000)]);
      const requestId = "trace-Test.1";
      const res = (await a.call("alpha.start", { password: "hunter2-secret" }, { requestID: requestId })) as any;
      assert.deepEqual(res.viaCtx, { node: `${namespace}-a`, requestID: requestId });
      assert.deepEqual(res.viaBroker, { node: `${namespace}-a`, requestID: requestId });
      // The calling node counts a call to another node as `remote` (lib/request-metrics.ts's
      // remoteAction), the called node as `local`, each once (over every caller label).
      const calls = (text: string, action: string, type: string) =>
        [...text.matchAll(/^moleculer_request_total\{([^}]*)\} (\d+)$/gm)]
          .filter((m) => m[1].includes(`action="${action}"`) && m[1].includes(`type="${type}"`))
          .reduce((n, m) => n + Number(m[2]), 0);
      assert.equal(calls(prometheusText(a), "beta.middle", "remote"), 1);
      assert.equal(calls(prometheusText(b), "beta.middle", "local"), 1);
      assert.equal(calls(prometheusText(b), "alpha.leaf", "remote"), 2);
      assert.equal(calls(prometheusText(a), "alpha.leaf", "local"), 2);

      // Stopping flushes each node's queued spans (ZipkinExporter.stop).
      await b.stop();
      await a.stop();
      stopped = true;

      assert.ok(posts.length >= 2, "both nodes posted");
      for (const p of posts) {
        assert.equal(p.path, "/api/v2/spans");
        assert.match(p.contentType, /application\/json/);
      }
      const spans = posts.flatMap((p) => p.spans).filter((s) => s.tags?.requestId === requestId);
      const byName = (n: string) => spans.filter((s) => s.name === `action '${n}'`);
      const [start] = byName("alpha.start");
      const [middle] = byName("beta.middle");
      const leaves = byName("alpha.leaf");
      assert.ok(start && middle && leaves.length === 2, `spans: ${spans.map((s) => s.name).join(", ")}`);
      const traceId = zipkinId(requestId)!;
      assert.match(traceId, /^[0-9a-f]{16}$/);
      for (const s of [start, middle, ...leaves]) {
        assert.equal(s.traceId, traceId, `${s.name}: one trace`);
        assert.match(s.id, /^[0-9a-f]{16}$/);
        assert.ok(s.timestamp > 0 && s.duration >= 0);
        assert.ok(
          !Object.keys(s.tags).some((k) => k.startsWith("params") || k.startsWith("meta") || k.startsWith("response")),
          `${s.name}: no params/meta/response tags`,
        );
      }
      assert.equal(start.parentId ?? null, null, "the first span is the root");
      assert.equal(middle.parentId, start.id);
      for (const leaf of leaves) assert.equal(leaf.parentId, middle.id);
      assert.equal(start.tags.nodeID, `${namespace}-a`);
      assert.equal(middle.tags.nodeID, `${namespace}-b`);
      assert.equal(middle.tags.remoteCall, "true");
      assert.equal(middle.localEndpoint.serviceName, "beta");
      for (const leaf of leaves) assert.equal(leaf.tags.nodeID, `${namespace}-a`);
      assert.ok(!JSON.stringify(posts).includes("hunter2-secret"), "params never leave in a span");
    } finally {
      if (!stopped) await Promise.allSettled([b.stop(), a.stop()]);
    }
  });
});
