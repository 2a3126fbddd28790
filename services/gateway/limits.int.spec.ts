/**
 * The gateway's request budgets (RATE_LIMITS=on, lib/request-limits.ts) through HTTP, with
 * small budgets: sign-ups per client address, the general budget per signed-in user and per
 * address for anonymous requests, the RateLimit-* headers on answers that pass, and
 * RATE_LIMITS=off turning all of them off but login's. Order and refund limits: the order
 * service's tests.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../../test/support/app";

type Response = Awaited<ReturnType<typeof http>>;

const BUDGETS = { RATE_LIMIT_SIGNUP: "3/600", RATE_LIMIT_USER: "20/60", RATE_LIMIT_IP: "15/60", TRUST_PROXY: "1" };

function assertError(r: Response, status: number, code: string) {
  assert.equal(r.status, status, r.text);
  assert.deepEqual(Object.keys(r.body ?? {}), ["error"], r.text);
  assert.equal(r.body.error.code, code, r.text);
  assert.ok(Array.isArray(r.body.error.details));
}

function seconds(r: Response, header: string, max: number): number {
  const raw = r.headers.get(header);
  assert.match(raw ?? "", /^\d+$/, `${header}: ${raw}`);
  const n = Number(raw);
  assert.ok(n >= 1 && n <= max, `${header}: ${raw} (1..${max})`);
  return n;
}

/** An answer that passed a budget of `limit` per `windowS`, with `remaining` left. */
function assertBudget(r: Response, limit: number, remaining: number, windowS: number) {
  assert.equal(r.headers.get("ratelimit-limit"), String(limit), `RateLimit-Limit (${r.status} ${r.text.slice(0, 200)})`);
  assert.equal(r.headers.get("ratelimit-remaining"), String(remaining), "RateLimit-Remaining");
  seconds(r, "ratelimit-reset", windowS);
}

/** A refusal by a budget of `limit` per `windowS`. */
function assertRefused(r: Response, limit: number, windowS: number) {
  assertError(r, 429, "RATE_LIMITED");
  seconds(r, "retry-after", windowS);
  assertBudget(r, limit, 0, windowS);
}

const noBudgetHeaders = (r: Response) =>
  assert.deepEqual(
    ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"].map((h) => r.headers.get(h)),
    [null, null, null],
  );

describe("request limits (RATE_LIMITS=on: sign-ups 3/600 per address, 20/60 per user, 15/60 per anonymous address)", () => {
  let app: TestApp;
  const from = (ip: string) => ({ "x-forwarded-for": ip });
  const register = (email: string, ip: string) =>
    http(app.baseUrl, "POST", "/api/auth/register", { body: { email, password: "limits password", name: "Limited" }, headers: from(ip) });

  before(async () => {
    app = await startTestApp({ services: ["gateway", "user", "product"], env: { RATE_LIMITS: "on", ...BUDGETS } });
    assert.equal(app.config.rateLimits.enabled, true);
  });
  after(async () => app?.stop());

  it("sign-ups per client address: the 4th is 429 (Retry-After, RateLimit-*) and creates nothing; another address still signs up", async () => {
    for (let i = 0; i < 3; i++) {
      const r = await register(`signup-${i}@example.com`, "198.51.100.10");
      assert.equal(r.status, 201, r.text);
      // The tightest budget is reported: the sign-up one.
      assertBudget(r, 3, 2 - i, 600);
    }
    assertRefused(await register("signup-3@example.com", "198.51.100.10"), 3, 600);
    // Refused before the work: no account was made (its login is the unknown-account 401).
    const login = await http(app.baseUrl, "POST", "/api/auth/login", {
      body: { email: "signup-3@example.com", password: "limits password" },
      headers: from("198.51.100.12"),
    });
    assertError(login, 401, "UNAUTHORIZED");
    const other = await register("signup-3@example.com", "198.51.100.11");
    assert.equal(other.status, 201, other.text);
    assertBudget(other, 3, 2, 600);
  });

  it("IPv6 clients count by their /64: rotating addresses inside one /64 gets no more sign-ups; another /64 does", async () => {
    for (let i = 0; i < 3; i++) assert.equal((await register(`v6-${i}@example.com`, `2001:db8:aa:bb::${i + 1}`)).status, 201);
    assertRefused(await register("v6-3@example.com", "2001:db8:aa:bb:ffff:1234:5678:9abc"), 3, 600);
    assert.equal((await register("v6-3@example.com", "2001:db8:aa:bc::1")).status, 201);
  });

  it("a signed-in user's budget runs out at 20 (429); another user behind the same address is unaffected", async () => {
    const a = (await register("budget-a@example.com", "198.51.100.20")).body.accessToken as string;
    const b = (await register("budget-b@example.com", "198.51.100.21")).body.accessToken as string;
    assert.ok(a && b);
    const me = (token: string) => http(app.baseUrl, "GET", "/api/users/me", { token, headers: from("203.0.113.40") });
    for (let i = 0; i < 20; i++) {
      const r = await me(a);
      assert.equal(r.status, 200, r.text);
      assertBudget(r, 20, 19 - i, 60);
    }
    assertRefused(await me(a), 20, 60);
    const other = await me(b);
    assert.equal(other.status, 200, other.text);
    assertBudget(other, 20, 19, 60);
  });

  it("anonymous requests per address (GET /api/products): the 16th is 429, also with forged leftmost entries; another address is unaffected", async () => {
    const products = (forwardedFor: string) => http(app.baseUrl, "GET", "/api/products", { headers: { "x-forwarded-for": forwardedFor } });
    for (let i = 0; i < 15; i++) {
      const r = await products("203.0.113.30");
      assert.equal(r.status, 200, r.text);
      assertBudget(r, 15, 14 - i, 60);
    }
    assertRefused(await products("203.0.113.30"), 15, 60);
    assertRefused(await products("192.0.2.1, 203.0.113.30"), 15, 60);
    const other = await products("203.0.113.31");
    assert.equal(other.status, 200, other.text);
    assertBudget(other, 15, 14, 60);
  });

  it("a signed-in shopper on a public route spends their own budget, not the address's: an office behind one address is not throttled as one", async () => {
    const office = "203.0.113.50";
    const token = (await register("office-worker@example.com", "198.51.100.50")).body.accessToken as string;
    const anonymous = () => http(app.baseUrl, "GET", "/api/products", { headers: from(office) });
    for (let i = 0; i < 15; i++) assert.equal((await anonymous()).status, 200);
    assertRefused(await anonymous(), 15, 60);
    // The same address, signed in: the user's budget (20), not the spent anonymous one.
    const signedIn = await http(app.baseUrl, "GET", "/api/products", { token, headers: from(office) });
    assert.equal(signedIn.status, 200, signedIn.text);
    assertBudget(signedIn, 20, 19, 60);
    // A token that does not verify spends the address's budget, like any anonymous request.
    assertRefused(await http(app.baseUrl, "GET", "/api/products", { token: `${token}x`, headers: from(office) }), 15, 60);
  });
});

describe("RATE_LIMITS=off: no request limit applies, login's still does", () => {
  let app: TestApp;
  before(async () => {
    app = await startTestApp({ services: ["gateway", "user", "product"], env: { RATE_LIMITS: "off", ...BUDGETS } });
    assert.equal(app.config.rateLimits.enabled, false);
  });
  after(async () => app?.stop());

  it("sign-ups, a user's requests and anonymous requests past their budgets pass without RateLimit-* headers; the 11th wrong password is 429", async () => {
    const headers = { "x-forwarded-for": "198.51.100.50" };
    let token = "";
    for (let i = 0; i < 5; i++) {
      const r = await http(app.baseUrl, "POST", "/api/auth/register", {
        body: { email: `off-${i}@example.com`, password: "limits password", name: "Off" },
        headers,
      });
      assert.equal(r.status, 201, r.text);
      noBudgetHeaders(r);
      token = r.body.accessToken;
    }
    for (let i = 0; i < 25; i++) {
      const r = await http(app.baseUrl, "GET", "/api/users/me", { token, headers });
      assert.equal(r.status, 200, r.text);
      noBudgetHeaders(r);
    }
    for (let i = 0; i < 20; i++) {
      const r = await http(app.baseUrl, "GET", "/api/products", { headers });
      assert.equal(r.status, 200, r.text);
      noBudgetHeaders(r);
    }
    const statuses: number[] = [];
    for (let i = 0; i < 11; i++)
      statuses.push(
        (await http(app.baseUrl, "POST", "/api/auth/login", { body: { email: "off-0@example.com", password: "wrong password!" }, headers }))
          .status,
      );
    assert.deepEqual(statuses, [...Array(10).fill(401), 429]);
  });
});
