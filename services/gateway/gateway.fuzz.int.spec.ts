/**
 * Property-based fuzz of every route (fast-check): random and malformed methods, paths,
 * params, query strings, bodies and headers, with and without a valid token. Property:
 * no response is >= 500 (503 from readiness is not reachable here: every dependency is up),
 * every error has the contract's shape, and the process stays up.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { API_ALIASES, OPS_ALIASES } from "./api.service";

const ROUTES = [
  ...Object.keys(API_ALIASES).map((a) => ({ method: a.split(" ")[0], path: `/api${a.split(" ")[1]}` })),
  ...Object.keys(OPS_ALIASES).map((a) => ({ method: a.split(" ")[0], path: a.split(" ")[1] })),
];
const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);

const jsonish = fc.oneof(
  { arbitrary: fc.dictionary(fc.constantFrom("email", "password", "name", "refreshToken", "preferences", "recipient", "phone", "line1", "city", "postalCode", "country"), fc.oneof(fc.string(), fc.emailAddress(), fc.array(fc.string()), fc.record({ categories: fc.array(fc.string()), brands: fc.anything() }))).map((o) => JSON.stringify(o)), weight: 4 },
  { arbitrary: fc.json(), weight: 1 },
  { arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)), weight: 1 },
  { arbitrary: fc.dictionary(fc.constantFrom("email", "password", "name", "refreshToken", "preferences", "recipient", "phone", "line1", "city", "postalCode", "country", "line2", "province", "id", "role", "__proto__", "constructor", "prototype"), fc.jsonValue()).map((o) => JSON.stringify(o)), weight: 2 },
  { arbitrary: fc.string().map((s) => `{"email": ${s}`), weight: 1 },
  { arbitrary: fc.string({ unit: "binary" }), weight: 1 },
  { arbitrary: fc.constantFrom("", "{", "}", "[]", "null", "{\"a\":1e999999}", "{\"a\":\"\\ud800\"}", "\u0000", "{\"\\u005f_proto__\":{}}", "{".repeat(5000)), weight: 1 },
);
const pathSegment = fc.oneof(fc.string({ maxLength: 40 }), fc.uuid(), fc.constantFrom("..", "%00", "%2e%2e", "%", "a%2Fb", "x".repeat(500)));
const query = fc.array(fc.tuple(fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom("page", "pageSize", "id", "a[b][c]", "__proto__[x]")), fc.string({ maxLength: 30 })), { maxLength: 5 });
const header = fc.record(
  {
    "content-type": fc.oneof(
      { arbitrary: fc.constant("application/json"), weight: 6 },
      { arbitrary: fc.constantFrom("application/json; charset=utf-16", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/vnd.api+json", "", "\t"), weight: 1 },
    ),
    authorization: fc.oneof(fc.constant("VALID"), fc.string({ maxLength: 60 }).map((s) => `Bearer ${s}`), fc.constantFrom("Bearer", "Bearer a.b.c", "Basic x", "bearer VALID")),
    "x-request-id": fc.string({ maxLength: 80 }),
    "content-encoding": fc.constantFrom("gzip", "identity", "br"),
  },
  { requiredKeys: ["content-type"] },
);

/** Cleans header values to what fetch() will send (visible ASCII); the raw-socket test covers the rest. */
const safeHeaderValue = (v: string) => v.replace(/[^\x20-\x7e]/g, "").trim();

describe("gateway fuzz", () => {
  let app: TestApp;
  let token = "";

  before(async () => {
    app = await startTestApp({ env: { LOGIN_RATE_LIMIT: "100000" } });
    const r = await http(app.baseUrl, "POST", "/api/auth/register", { body: { email: "fuzz@example.com", password: "fuzz password", name: "F" } });
    token = r.body.accessToken;
  });
  after(async () => app?.stop());

  test(`${RUNS} random requests over every route: never >= 500, always the error shape`, async () => {
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ROUTES),
        fc.constantFrom("route", "GET", "POST", "PATCH", "DELETE", "PUT"),
        pathSegment,
        query,
        fc.option(jsonish, { nil: undefined }),
        header,
        async (route, methodChoice, segment, q, body, headers) => {
          const method = methodChoice === "route" ? route.method : methodChoice;
          const p = route.path.replace(":id", encodeURIComponent(segment)) + (q.length ? `?${q.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&")}` : "");
          const h: Record<string, string> = {};
          for (const [k, v] of Object.entries(headers)) h[k] = safeHeaderValue(v === "VALID" ? `Bearer ${token}` : v.replace("VALID", token));
          const r = await http(app.baseUrl, method, p, { raw: method === "GET" || method === "DELETE" ? undefined : body, headers: h });
          seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
          assert.ok(r.status < 500, `${method} ${p} ${JSON.stringify(h)} ${JSON.stringify(body)?.slice(0, 200)} → ${r.status} ${r.text.slice(0, 200)}`);
          if (r.status >= 400) {
            assert.equal(typeof r.body?.error?.code, "string", `${method} ${p} → ${r.text.slice(0, 200)}`);
            assert.ok(Array.isArray(r.body.error.details));
          }
        },
      ),
      { numRuns: RUNS, seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined },
    );
    console.log("status counts:", JSON.stringify(Object.fromEntries([...seen].sort())));
  });

  test("raw malformed HTTP (bad headers, lying Content-Length, garbage) never takes the process down", async () => {
    const port = Number(new URL(app.baseUrl).port);
    const requests = [
      "GARBAGE\r\n\r\n",
      "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":1}",
      "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{\"email\":\"x\"}",
      "GET /api/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \u0000\u0001\r\n\r\n",
      "GET /api/users/me HTTP/1.1\r\nHost: x\r\nX-Bad: \xff\xfe\r\n\r\n",
      "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
      "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      `GET /${"a".repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
      "GET /health/live HTTP/1.1\r\n" + "X-Many: y\r\n".repeat(3000) + "\r\n",
    ];
    for (const data of requests) {
      const status = await new Promise<string>((resolve) => {
        const socket = net.connect(port, "127.0.0.1", () => socket.write(data, "latin1"));
        let out = "";
        socket.on("data", (d) => {
          out += d.toString("latin1");
          if (out.includes("\r\n\r\n")) socket.end();
        });
        socket.on("close", () => resolve(out.split("\r\n")[0]));
        socket.on("error", () => resolve(out.split("\r\n")[0]));
        // A request the server waits on (a body that never comes) is cut off by us, not answered.
        socket.setTimeout(2000, () => socket.destroy());
      });
      const code = Number(status.split(" ")[1] ?? 0);
      assert.ok(code < 500, `${JSON.stringify(data.slice(0, 80))} → ${status}`);
    }
    assert.equal((await http(app.baseUrl, "GET", "/health/live")).status, 200, "still up");
  });
});
