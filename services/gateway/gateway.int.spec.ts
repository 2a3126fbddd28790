/**
 * Gateway conventions that hold for every route (API.md "Conventions"), checked on a real
 * gateway with the real services in this process.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { listDocsOperations } from "../../test/support/chromium";
import { freePort } from "../../test/support/ports";
import { startHealthServer } from "../../lib/health-server";
import { API_ALIASES } from "./api.service";

function assertError(r: { status: number; body: any; text: string }, status: number, code: string) {
  assert.equal(r.status, status, r.text);
  assert.deepEqual(Object.keys(r.body), ["error"], r.text);
  assert.equal(r.body.error.code, code, r.text);
  assert.equal(typeof r.body.error.message, "string");
  assert.ok(Array.isArray(r.body.error.details));
  assert.doesNotMatch(r.text, /at .+\(.*:\d+:\d+\)|node_modules|Error:/, "no stack traces in responses");
}

/** Sends raw bytes and returns the status line (for requests fetch() refuses to send). */
function rawRequest(port: number, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.end(data));
    let out = "";
    socket.on("data", (d) => (out += d.toString()));
    socket.on("close", () => resolve(out.split("\r\n")[0]));
    socket.on("error", reject);
    socket.setTimeout(5000, () => socket.destroy(new Error("raw request timed out")));
  });
}

describe("gateway conventions", () => {
  let app: TestApp;
  let token = "";
  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);

  before(async () => {
    app = await startTestApp({ env: { BODY_LIMIT_BYTES: "4096" } });
    const r = await call("POST", "/api/auth/register", { body: { email: "gw@example.com", password: "gateway password", name: "G" } });
    token = r.body.accessToken;
  });
  after(async () => app?.stop());

  it("unknown routes and non-aliased actions are 404 in the error shape (mappingPolicy restrict)", async () => {
    for (const path of [
      "/nope",
      "/api/nope",
      "/api/user/me",
      "/api/user.me",
      "/api/user/get",
      "/api/api/live",
      "/api/~node/health",
      "/api/$node/list",
      "/api/list-aliases",
    ])
      assertError(await call("GET", path, { token }), 404, "NOT_FOUND");
    assertError(await call("PUT", "/api/users/me", { token, body: {} }), 404, "NOT_FOUND");
  });

  it("malformed JSON is 400, never 500", async () => {
    for (const raw of ["{", '{"email":', "nul", "[1,2", '{"a":1}}', "\u0000\u0001", '{"a":"\\ud800"}x'])
      assertError(await call("POST", "/api/auth/login", { raw, headers: { "content-type": "application/json" } }), 400, "VALIDATION_ERROR");
    // Valid JSON that is not an object is refused the same way.
    for (const raw of ["[]", "42", '"text"', "null"])
      assertError(await call("POST", "/api/auth/login", { raw, headers: { "content-type": "application/json" } }), 400, "VALIDATION_ERROR");
  });

  it("a body over the limit is 413", async () => {
    const big = JSON.stringify({ email: "x@example.com", password: "p".repeat(5000) });
    assertError(
      await call("POST", "/api/auth/login", { raw: big, headers: { "content-type": "application/json" } }),
      413,
      "PAYLOAD_TOO_LARGE",
    );
    // Also when streamed without a Content-Length (chunked).
    const port = Number(new URL(app.baseUrl).port);
    const chunk = "x".repeat(5000);
    const status = await rawRequest(
      port,
      `POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`,
    );
    assert.match(status, / 413 /);
  });

  it("__proto__, constructor and prototype keys are rejected at any depth, in body and query", async () => {
    const bodies = [
      '{"__proto__": {"role": "admin"}}',
      '{"email": "a@b.c", "password": "x", "nested": {"constructor": {"prototype": {"polluted": true}}}}',
      '{"\\u005f_proto__": {"x": 1}}',
      '{"list": [{"prototype": 1}]}',
    ];
    for (const raw of bodies)
      assertError(
        await call("POST", "/api/auth/register", { raw, headers: { "content-type": "application/json" } }),
        400,
        "VALIDATION_ERROR",
      );
    for (const q of ["?__proto__[role]=admin", "?a[constructor][prototype][x]=1", "?prototype=1", "?x.__proto__.y=1"])
      assertError(await call("GET", `/api/users/me${q}`, { token }), 400, "VALIDATION_ERROR");
    assert.equal(({} as Record<string, unknown>).role, undefined, "Object.prototype untouched");
  });

  it("a body that is not JSON is 415", async () => {
    assertError(
      await call("POST", "/api/auth/login", {
        raw: "email=a&password=b",
        headers: { "content-type": "application/x-www-form-urlencoded" },
      }),
      415,
      "UNSUPPORTED_MEDIA_TYPE",
    );
    assertError(
      await call("POST", "/api/auth/login", { raw: "{}", headers: { "content-type": "text/plain" } }),
      415,
      "UNSUPPORTED_MEDIA_TYPE",
    );
    // An empty body on POST is an empty object, which then fails validation (422), not a crash.
    assertError(await call("POST", "/api/auth/login"), 422, "VALIDATION_ERROR");
  });

  it("identity comes only from the token: params, headers and bodies cannot set it", async () => {
    const other = await call("POST", "/api/auth/register", { body: { email: "other@example.com", password: "other password", name: "O" } });
    const otherId = other.body.user.id;
    const me = await call("GET", `/api/users/me?id=${otherId}&userId=${otherId}&user[id]=${otherId}`, {
      token,
      headers: { "x-user-id": otherId, "x-forwarded-user": otherId },
    });
    assert.equal(me.status, 200);
    assert.equal(me.body.email, "gw@example.com");
    const noToken = await call("GET", "/api/users/me", { headers: { "x-user-id": otherId } });
    assertError(noToken, 401, "UNAUTHORIZED");
    assert.equal(noToken.headers.get("www-authenticate"), 'Bearer realm="meridian"');
    assertError(await call("PATCH", "/api/users/me", { token, body: { user: { id: otherId }, name: "Hijack" } }), 422, "VALIDATION_ERROR");
    assert.equal((await call("GET", "/api/users/me", { token: other.body.accessToken })).body.name, "O");
  });

  it("an action without a declared auth level is admin-only (fails closed)", async () => {
    const gateway = app.broker.getLocalService("api") as any;
    const ctx = { meta: { user: { id: "u1", role: "customer" } } };
    await assert.rejects(async () => gateway.authorize(ctx, {}, { $action: { name: "x.y" } }), { type: "FORBIDDEN" });
    await assert.rejects(async () => gateway.authorize({ meta: {} }, {}, { $action: { name: "x.y" } }), { type: "UNAUTHORIZED" });
    assert.equal(await gateway.authorize({ meta: { user: { id: "a", role: "admin" } } }, {}, { $action: { name: "x.y" } }), undefined);
  });

  it("responses carry X-Request-Id; a client-given one is kept", async () => {
    const r = await call("GET", "/health/live", { headers: { "x-request-id": "trace-123" } });
    assert.equal(r.headers.get("x-request-id"), "trace-123");
    assert.ok((await call("GET", "/nope")).status === 404);
  });

  it("health and readiness on the gateway; Prometheus metrics only on the internal listener (404 on the public port)", async () => {
    assert.deepEqual((await call("GET", "/health/live")).body, { status: "ok" });
    const ready = await call("GET", "/health/ready");
    assert.equal(ready.status, 200);
    // Every local dependency is listed and up: the node, each service's database, the search index.
    for (const check of ["node", "database:user", "database:product", "database:order", "database:payment", "search:index"])
      assert.equal(ready.body.checks[check], "up", check);
    assert.ok(
      Object.values(ready.body.checks).every((v) => v === "up"),
      JSON.stringify(ready.body.checks),
    );
    // Metrics reveal internal addresses and volumes: never on the public port, whoever asks.
    for (const path of ["/metrics", "/metrics/", "/api/metrics"]) {
      assertError(await call("GET", path), 404, "NOT_FOUND");
      assertError(await call("GET", path, { token }), 404, "NOT_FOUND");
    }
    // The internal listener (bin/start.ts starts it on METRICS_PORT) serves the Prometheus text.
    const health = await startHealthServer(app.broker, 0);
    try {
      const metrics = await fetch(`http://127.0.0.1:${health.port}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain/);
      const text = await metrics.text();
      assert.match(text, /^# TYPE moleculer_request_total counter$/m);
      assert.match(text, /moleculer_request_total\{[^}]*action="user\.register"/);
    } finally {
      await health.close();
    }
  });

  it("GET /api/openapi.json is generated from the actions and is valid OpenAPI 3", async () => {
    const r = await call("GET", "/api/openapi.json");
    assert.equal(r.status, 200);
    const { Validator } = await import("@seriousme/openapi-schema-validator");
    const result = await new Validator().validate(structuredClone(r.body));
    assert.equal(result.valid, true, JSON.stringify(result.errors));
    const operations = Object.entries(r.body.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    for (const alias of Object.keys(API_ALIASES)) {
      const [method, path] = alias.split(" ");
      assert.ok(operations.includes(`${method} /api${path.replace(/:(\w+)/g, "{$1}")}`), `${alias} documented`);
    }
    for (const ops of ["GET /health/live", "GET /health/ready"]) assert.ok(operations.includes(ops), ops);
    assert.ok(!operations.includes("GET /metrics"), "/metrics is not a public operation");
    // Generated from the parameter schemas: register's body lists the validator's fields and limits.
    const body = r.body.paths["/api/auth/register"].post.requestBody.content["application/json"].schema;
    assert.deepEqual([...body.required].sort(), ["email", "name", "password"]);
    assert.equal(body.properties.name.maxLength, 100);
    assert.equal(body.additionalProperties, false);
  });

  it("GET /docs renders in headless Chromium from local assets and lists the user routes", async () => {
    const report = await listDocsOperations(`${app.baseUrl}/docs`);
    assert.deepEqual(report.failedRequests, [], "no external or failed requests (no CDN)");
    assert.deepEqual(report.consoleErrors, []);
    for (const op of ["POST /api/auth/register", "POST /api/auth/login", "GET /api/users/me", "PATCH /api/users/me/addresses/{id}"])
      assert.ok(report.operations.includes(op), `${op} in ${report.operations.join(", ")}`);
  });
});

describe("a routed service that no node offers", () => {
  it("answers 503 SERVICE_UNAVAILABLE on its routes; the gateway stays ready", async () => {
    const app = await startTestApp({ services: ["gateway"] });
    try {
      assertError(await http(app.baseUrl, "GET", "/api/users/me"), 503, "SERVICE_UNAVAILABLE");
      assertError(
        await http(app.baseUrl, "POST", "/api/auth/login", { body: { email: "a@b.co", password: "x" } }),
        503,
        "SERVICE_UNAVAILABLE",
      );
      assert.equal((await http(app.baseUrl, "GET", "/health/ready")).status, 200);
    } finally {
      await app.stop();
    }
  });
});

describe("readiness names the dependency that is down", () => {
  it("a Redis that does not answer makes /health/ready 503 naming the cache", async () => {
    const deadPort = await freePort();
    const app = await startTestApp({ env: { REDIS_URL: `redis://127.0.0.1:${deadPort}` } });
    try {
      const r = await http(app.baseUrl, "GET", "/health/ready");
      assertError(r, 503, "SERVICE_UNAVAILABLE");
      assert.deepEqual(
        r.body.error.details.map((d: any) => d.dependency),
        ["cache"],
      );
      assert.equal((await http(app.baseUrl, "GET", "/health/live")).status, 200);
    } finally {
      await app.stop().catch(() => undefined);
    }
  });
});
