/**
 * lib/auth/tokens.ts: what verification refuses, and that a remembered verification
 * (the cache of verified tokens) refuses the same things: an expired token the second after
 * its `exp` although it verified before, and any change to a remembered token's text.
 */
import assert from "node:assert/strict";
import { install, type Clock } from "@sinonjs/fake-timers";
import { afterEach, describe, it } from "mocha";
import { accessTokens, InvalidTokenError } from "./tokens";

const SECRET = "s".repeat(40);
const user = { id: "u-1", role: "customer" as const, sessionId: "sid-1" };

describe("access tokens", () => {
  let clock: Clock | undefined;
  afterEach(() => {
    clock?.uninstall();
    clock = undefined;
  });

  it("a remembered token stops working at its exp, as a fresh verification would", async () => {
    clock = install({ toFake: ["Date"], now: 1_800_000_000_000 });
    const tokens = accessTokens(SECRET, 60);
    const token = await tokens.sign(user);
    const first = await tokens.verify(token);
    assert.equal(first.id, "u-1");
    assert.equal(await tokens.verify(token), first, "the second verification is the remembered one");
    clock.tick(59_999);
    assert.equal((await tokens.verify(token)).id, "u-1");
    clock.tick(1);
    await assert.rejects(tokens.verify(token), InvalidTokenError);
    // A process that never saw it refuses it too.
    await assert.rejects(accessTokens(SECRET, 60).verify(token), InvalidTokenError);
  });

  it("a remembered token's text changed in any part is verified afresh and refused", async () => {
    const tokens = accessTokens(SECRET, 60);
    const token = await tokens.sign(user);
    await tokens.verify(token);
    const [h, p, sig] = token.split(".") as [string, string, string];
    const other = accessTokens("o".repeat(40), 60);
    const forged = await other.sign(user);
    const flip = (s: string) => (s[0] === "A" ? "B" : "A") + s.slice(1);
    for (const bad of [`${h}.${p}.${flip(sig)}`, `${h}.${flip(p)}.${sig}`, `${flip(h)}.${p}.${sig}`, forged, `${h}.${p}.`])
      await assert.rejects(tokens.verify(bad), InvalidTokenError, bad);
    // The one signed with another secret is fine where that secret is the key.
    assert.equal((await other.verify(forged)).id, "u-1");
  });

  it("claims are pinned: another issuer's token with the same secret is refused", async () => {
    const { SignJWT } = await import("jose");
    const key = new TextEncoder().encode(SECRET);
    const foreign = await new SignJWT({ role: "admin", sid: "x" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("u-2")
      .setIssuer("elsewhere")
      .setAudience("meridian-api")
      .setJti("j")
      .setIssuedAt()
      .setExpirationTime("60s")
      .sign(key);
    await assert.rejects(accessTokens(SECRET, 60).verify(foreign), InvalidTokenError);
  });
});
