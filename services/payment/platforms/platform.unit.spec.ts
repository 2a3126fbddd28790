import assert from "node:assert/strict";
import { it } from "mocha";
import {
  PaymentPlatformError,
  PaymentVerificationError,
  assertCreateInput,
  beijingWallClock,
  checkBusiness,
  headerOf,
  mediaType,
  minorToYuan,
  yuanToMinor,
  type CreatePaymentInput,
  type PlatformNotification,
} from "./platform";

const reason = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof PaymentVerificationError, String(err));
    return err.reason;
  }
  assert.fail("expected a PaymentVerificationError");
};

it("yuan strings ↔ integer minor units, no float arithmetic", () => {
  assert.equal(yuanToMinor("0.01"), 1);
  assert.equal(yuanToMinor("10.00"), 1000);
  assert.equal(yuanToMinor("0.29"), 29); // 0.29 * 100 in floating point is 28.999999999999996
  assert.equal(yuanToMinor("1234.56"), 123456);
  assert.equal(yuanToMinor("99999999.99"), 9999999999);
  for (const bad of ["1234.5", "10", "10.000", "1e3", "-1.00", " 1.00", "01.00", "1,00", "", "NaN", "0x10.00", "１.00"]) {
    assert.throws(() => yuanToMinor(bad), RangeError, bad);
  }
  assert.equal(minorToYuan(1000), "10.00");
  assert.equal(minorToYuan(1), "0.01");
  assert.equal(minorToYuan(0), "0.00");
  assert.equal(minorToYuan(123456), "1234.56");
  for (const bad of [1.5, -1, Number.NaN, Number.MAX_SAFE_INTEGER + 1]) assert.throws(() => minorToYuan(bad), RangeError);
  for (let m = 0; m < 2000; m += 7) assert.equal(yuanToMinor(minorToYuan(m)), m);
});

it("checkBusiness: the signed amount, currency and payment must be the ones we expect", () => {
  const n: PlatformNotification = { paymentId: "pay_1", providerTxnId: "t1", amountMinor: 1999, currency: "CNY", status: "succeeded" };
  checkBusiness(n, { paymentId: "pay_1", amountMinor: 1999, currency: "CNY" });
  assert.equal(
    reason(() => checkBusiness(n, undefined)),
    "unknown_order",
  );
  assert.equal(
    reason(() => checkBusiness(n, { paymentId: "pay_2", amountMinor: 1999, currency: "CNY" })),
    "unknown_order",
  );
  assert.equal(
    reason(() => checkBusiness(n, { paymentId: "pay_1", amountMinor: 1998, currency: "CNY" })),
    "amount",
  );
  assert.equal(
    reason(() => checkBusiness(n, { paymentId: "pay_1", amountMinor: 1999, currency: "USD" })),
    "currency",
  );
});

it("headers: case-insensitive, a repeated header is malformed; media type without parameters", () => {
  assert.equal(headerOf({ "Wechatpay-Serial": "A1" }, "wechatpay-serial"), "A1");
  assert.equal(headerOf({}, "x"), undefined);
  assert.equal(
    reason(() => headerOf({ a: ["1", "2"] }, "a")),
    "malformed",
  );
  assert.equal(
    reason(() => headerOf({ A: "1", a: "2" }, "a")),
    "malformed",
  );
  assert.equal(mediaType("Application/JSON; charset=utf-8"), "application/json");
  assert.equal(mediaType(undefined), "");
});

it("a verification error says only its code", () => {
  const err = new PaymentVerificationError("bad_signature");
  assert.equal(err.message, "payment notification rejected: bad_signature");
});

it("assertCreateInput: expiresAt must be an integer of epoch ms, after now", () => {
  const now = 1_700_000_000_000;
  const input: CreatePaymentInput = {
    paymentId: "p",
    orderId: "o",
    amountMinor: 1,
    currency: "CNY",
    subject: "s",
    notifyUrl: "https://x",
    expiresAt: now + 1,
  };
  assertCreateInput(input, now);
  const refused = (expiresAt: number) => {
    try {
      assertCreateInput({ ...input, expiresAt }, now);
    } catch (err) {
      assert.ok(err instanceof PaymentPlatformError, String(err));
      assert.equal(err.reason, "invalid_request");
      assert.equal(err.retryable, false);
      return err.message;
    }
    return assert.fail(`expiresAt ${expiresAt} accepted`);
  };
  assert.match(refused(now), /future/);
  assert.match(refused(now - 1), /future/);
  assert.match(refused(Math.floor(now / 1000) + 900), /future/); // seconds, not milliseconds
  assert.match(refused(now * 1000), /integer of epoch milliseconds/); // microseconds
  for (const bad of [now + 0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER + 2])
    assert.match(refused(bad), /integer of epoch milliseconds/);
});

it("Beijing wall clock: UTC+8, milliseconds dropped, across a date line", () => {
  assert.equal(beijingWallClock(1_700_000_000_000), "2023-11-15T06:13:20");
  assert.equal(beijingWallClock(1_700_000_000_999), "2023-11-15T06:13:20");
  assert.equal(beijingWallClock(Date.parse("2025-12-31T16:00:00Z")), "2026-01-01T00:00:00");
});
