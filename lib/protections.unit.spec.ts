/** The "break it yourself" switches (lib/protections.ts): off only where named, never in production. */
import assert from "node:assert/strict";
import { afterEach, it } from "mocha";
import { PROTECTIONS, protectionOff } from "./protections";

const saved = { BREAK_PROTECTION: process.env.BREAK_PROTECTION, NODE_ENV: process.env.NODE_ENV };
afterEach(() => {
  for (const [k, v] of Object.entries(saved))
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
});

it("unset, every protection is on; named, only those are off (read at each use)", () => {
  delete process.env.BREAK_PROTECTION;
  for (const p of Object.keys(PROTECTIONS) as (keyof typeof PROTECTIONS)[]) assert.equal(protectionOff(p), false);
  process.env.BREAK_PROTECTION = " inbox ,idempotency-key";
  assert.equal(protectionOff("inbox"), true);
  assert.equal(protectionOff("idempotency-key"), true);
  assert.equal(protectionOff("stock-guard"), false);
  process.env.BREAK_PROTECTION = "stock-guard";
  assert.equal(protectionOff("inbox"), false);
});

it("under NODE_ENV=production no protection is off, whatever BREAK_PROTECTION says", () => {
  process.env.BREAK_PROTECTION = "stock-guard,inbox,idempotency-key";
  process.env.NODE_ENV = "production";
  for (const p of Object.keys(PROTECTIONS) as (keyof typeof PROTECTIONS)[]) assert.equal(protectionOff(p), false);
});
