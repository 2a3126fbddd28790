import assert from "node:assert/strict";
import { it } from "mocha";
import {
  mergePreferences,
  normalizeEmail,
  normalizePreferenceList,
  parsePreferences,
  parseRefreshToken,
  passwordProblems,
  pickAddressFields,
  refreshVerdict,
  toPublicUser,
} from "./user.domain";

it("e-mail is trimmed and lower-cased", () => {
  assert.equal(normalizeEmail("  Ada@Example.COM "), "ada@example.com");
});

it("password policy: 8 to 256 code points, not the e-mail", () => {
  assert.deepEqual(passwordProblems("12345678"), []);
  assert.deepEqual(passwordProblems("1234567"), ["must be at least 8 characters"]);
  assert.deepEqual(passwordProblems("🔒🔒🔒🔒🔒🔒🔒🔒"), [], "8 emoji are 8 characters, not 16");
  assert.deepEqual(passwordProblems("x".repeat(257)), ["must be at most 256 characters"]);
  assert.deepEqual(passwordProblems("Ada@Example.com", "ada@example.com"), ["must not be the e-mail address"]);
});

it("preference lists: trimmed, empties and case-insensitive duplicates dropped, capped", () => {
  assert.deepEqual(normalizePreferenceList([" Phones", "phones", "", "  ", "Laptops"]), ["Phones", "Laptops"]);
  assert.equal(normalizePreferenceList(Array.from({ length: 80 }, (_, i) => `c${i}`)).length, 50);
  const current = { categories: ["a"], brands: ["b"] };
  assert.deepEqual(mergePreferences(current, { brands: ["x"] }), { categories: ["a"], brands: ["x"] });
  assert.deepEqual(mergePreferences(current, undefined), current);
});

it("stored preferences parse defensively", () => {
  assert.deepEqual(parsePreferences('{"categories":["a",1],"brands":"x"}'), { categories: ["a"], brands: [] });
  assert.deepEqual(parsePreferences("not json"), { categories: [], brands: [] });
  assert.deepEqual(parsePreferences(null), { categories: [], brands: [] });
});

it("refresh verdict: reuse beats revocation beats expiry", () => {
  const now = 1_000;
  assert.equal(refreshVerdict({ expiresAt: 2_000, usedAt: null, revokedAt: null }, now), "valid");
  assert.equal(refreshVerdict({ expiresAt: 1_000, usedAt: null, revokedAt: null }, now), "expired");
  assert.equal(refreshVerdict({ expiresAt: 2_000, usedAt: null, revokedAt: 900 }, now), "revoked");
  assert.equal(refreshVerdict({ expiresAt: 500, usedAt: 400, revokedAt: 900 }, now), "reused");
});

it("refresh token shape", () => {
  const id = "0f8fad5b-d9cb-469f-a165-70867728950e";
  const secret = "A".repeat(43);
  assert.deepEqual(parseRefreshToken(`${id}.${secret}`), { id, secret });
  for (const bad of ["", "x.y", `${id}.${secret}x`, `${id}${secret}`, `${id}.${"A".repeat(42)}!`])
    assert.equal(parseRefreshToken(bad), null);
});

it("address input: only known fields, trimmed, country upper-cased, nulls only where optional", () => {
  assert.deepEqual(
    pickAddressFields({ recipient: " Ada ", country: "gb", userId: "someone", id: "x", line2: null, city: null, role: "admin" }),
    { recipient: "Ada", country: "GB", line2: null },
  );
});

it("public user: ISO time, no hash", () => {
  const u = toPublicUser({
    id: "1",
    email: "a@b.co",
    name: "A",
    role: "customer",
    preferences: { categories: [], brands: [] },
    createdAt: 0,
    updatedAt: 0,
  });
  assert.equal(u.createdAt, "1970-01-01T00:00:00.000Z");
  assert.deepEqual(Object.keys(u).sort(), ["createdAt", "email", "id", "name", "preferences", "role"]);
});
