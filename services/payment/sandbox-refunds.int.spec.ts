/**
 * The sandbox platform's refund store on MariaDB (payment.repo.ts sandboxRecordRefund, the
 * store the payment service runs the sandbox on): refunds of one payment never exceed its
 * amount in total, across refund ids and under concurrent calls, as Alipay and WeChat Pay
 * refuse an over-refund. The payment service bounds refunds itself before calling the
 * platform, so its own tests never reach this bound; the checkout invariants
 * (lib/invariants.ts) rely on it when they read the sandbox's refunds as the money
 * that went back. The same rule on the in-memory store: platforms/sandbox.unit.spec.ts.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import type { Knex } from "knex";
import { createKnex, dropDatabase, ensureDatabase, migrateLatest } from "../../lib/db";
import { testConfig } from "../../test/support/app";
import { sandboxRecordRefund } from "./payment.repo";

const NOW = 1_700_000_000_000;

describe("sandbox refunds on MariaDB: never more than the payment in total", () => {
  const config = testConfig({ db: "mariadb" });
  let db: Knex;
  let ids = 0;
  const newId = () => `sbr_${++ids}`;
  const charge = async (paymentId: string, amount: number) =>
    db("sandbox_payments").insert({
      payment_id: paymentId,
      amount,
      currency: "CNY",
      status: "succeeded",
      provider_txn_id: `sbx_${paymentId}`,
      paid_at: NOW,
      updated_at: NOW,
    });
  const refunded = async (paymentId: string) =>
    Number((await db("sandbox_refunds").where({ payment_id: paymentId }).sum({ s: "amount" }))[0].s ?? 0);

  before(async () => {
    await ensureDatabase(config, "payment");
    db = createKnex(config, "payment");
    await migrateLatest(db, path.join(__dirname, "migrations"));
  });
  after(async () => {
    await db?.destroy();
    await dropDatabase(config, "payment");
  });

  it("across refund ids: up to the amount exactly, one unit more refused; a replay answers as the first time", async () => {
    await charge("p1", 1999);
    const refund = (refundId: string, amountMinor: number) =>
      sandboxRecordRefund(db, { paymentId: "p1", refundId, amountMinor, totalMinor: 1999 }, newId, NOW);
    const first = await refund("r1", 1000);
    assert.equal(first.status, "recorded");
    assert.deepEqual(await refund("r2", 1000), { status: "refused", failureCode: "REFUND_AMOUNT_EXCEEDED" });
    assert.equal((await refund("r3", 999)).status, "recorded");
    assert.deepEqual(await refund("r4", 1), { status: "refused", failureCode: "REFUND_AMOUNT_EXCEEDED" });
    assert.deepEqual(await refund("r1", 1000), first, "a replay is not a second refund");
    assert.equal(await refunded("p1"), 1999);
    assert.equal(
      await db("sandbox_refunds")
        .where({ payment_id: "p1" })
        .count({ n: "*" })
        .then((r) => Number(r[0].n)),
      2,
    );
  });

  it("a full refund asked twice under two refund ids at once (a double auto-refund): one recorded, the total is the amount", async () => {
    await charge("p2", 2000);
    const results = await Promise.all(
      ["auto-a", "auto-b"].map((refundId) =>
        sandboxRecordRefund(db, { paymentId: "p2", refundId, amountMinor: 2000, totalMinor: 2000 }, newId, NOW),
      ),
    );
    assert.deepEqual(results.map((r) => r.status).sort(), ["recorded", "refused"]);
    assert.equal(await refunded("p2"), 2000);
  });

  it("6 concurrent refunds of 400 on 1000: 2 recorded, the total never above the amount", async () => {
    await charge("p3", 1000);
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        sandboxRecordRefund(db, { paymentId: "p3", refundId: `c${i}`, amountMinor: 400, totalMinor: 1000 }, newId, NOW),
      ),
    );
    assert.equal(results.filter((r) => r.status === "recorded").length, 2);
    assert.equal(await refunded("p3"), 800);
  });
});
