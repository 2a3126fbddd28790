/**
 * The gRPC edge under the REST edge's limits (one door, lib/auth/edge-door.ts): the request
 * budgets (RATE_LIMITS=on, small budgets) answer RESOURCE_EXHAUSTED with google.rpc.RetryInfo
 * and the catalog code RATE_LIMITED, sign-ups per client address (the peer's, or
 * x-forwarded-for's entry per TRUST_PROXY), and a message above BODY_LIMIT_BYTES is refused.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { startTestApp, type TestApp } from "../../test/support/app";
import { MeridianGrpc } from "../../test/support/grpc-client";

const U = "meridian.user.v1.UserService";

describe("gRPC edge limits (RATE_LIMITS=on: sign-ups 2/600 per address, 6/60 per user; BODY_LIMIT_BYTES 4096)", () => {
  let app: TestApp;
  let g: MeridianGrpc;
  before(async () => {
    app = await startTestApp({
      services: ["grpc", "user", "product"],
      env: {
        RATE_LIMITS: "on",
        RATE_LIMIT_SIGNUP: "2/600",
        RATE_LIMIT_USER: "6/60",
        RATE_LIMIT_IP: "100/60",
        TRUST_PROXY: "1",
        BODY_LIMIT_BYTES: "4096",
      },
    });
    g = new MeridianGrpc(app.grpcAddress);
  });
  after(async () => {
    g?.close();
    await app?.stop();
  });

  it("sign-ups per client address: the 3rd from one address is RESOURCE_EXHAUSTED with RetryInfo; another address still signs up", async () => {
    const from = (ip: string) => ({ metadata: { "x-forwarded-for": ip } });
    const register = (email: string, ip: string) => g.call(U, "Register", { email, password: "limits password", name: "L" }, from(ip));
    await register("l1@example.com", "198.51.100.7");
    await register("l2@example.com", "198.51.100.7");
    const f = await g.fail(U, "Register", { email: "l3@example.com", password: "limits password", name: "L" }, from("198.51.100.7"));
    assert.equal(f.code, "RESOURCE_EXHAUSTED");
    assert.equal(f.reason, "RATE_LIMITED");
    const delay = f.details["google.rpc.RetryInfo"]?.retry_delay?.seconds;
    assert.ok(delay >= 1 && delay <= 600, `RetryInfo ${JSON.stringify(f.details["google.rpc.RetryInfo"])}`);
    // Nothing was created: the address is free for the first address-less sign-up elsewhere.
    assert.equal(
      (await g.fail(U, "Login", { email: "l3@example.com", password: "limits password" }, from("203.0.113.1"))).code,
      "UNAUTHENTICATED",
    );
    await register("l3@example.com", "198.51.100.8");
  });

  it("the general budget per signed-in user: the 7th call in the window is refused, whoever the address", async () => {
    const s = (
      await g.call(
        U,
        "Register",
        { email: "budget@example.com", password: "limits password", name: "B" },
        { metadata: { "x-forwarded-for": "192.0.2.50" } },
      )
    ).value;
    let refused;
    for (let i = 0; i < 8 && !refused; i++) {
      try {
        await g.call(U, "Me", {}, { token: s.accessToken, metadata: { "x-forwarded-for": `192.0.2.${i + 1}` } });
      } catch (err) {
        refused = err;
      }
    }
    assert.ok(refused, "refused within 8 calls");
    const f = await g.fail(U, "Me", {}, { token: s.accessToken });
    assert.equal(f.code, "RESOURCE_EXHAUSTED");
    assert.ok(f.details["google.rpc.RetryInfo"], "with RetryInfo");
  });

  it("a message above BODY_LIMIT_BYTES is RESOURCE_EXHAUSTED; one below is read", async () => {
    const big = await g.fail(U, "Register", { email: "big@example.com", password: "x".repeat(5000), name: "Big" });
    assert.equal(big.code, "RESOURCE_EXHAUSTED");
    const ok = await g.fail(
      U,
      "Register",
      { email: "small@example.com", password: "x".repeat(2000), name: "Small" },
      { metadata: { "x-forwarded-for": "198.51.100.99" } },
    );
    // Read and judged by the action: a password over its own limit, not a transport refusal.
    assert.equal(ok.code, "INVALID_ARGUMENT");
  });
});
