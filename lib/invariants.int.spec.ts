/**
 * The checkout invariants (lib/invariants.ts) against a real MariaDB: the order,
 * payment, product and notification databases migrated as the services migrate them, filled
 * with the records of a settled run, then one planted fault at a time. The settled records
 * must give no problem; each planted fault must be named (the negative controls of the kill
 * test and the chaos runs, which rely on this check):
 * - an order id answered 201 that is not in the database;
 * - refunds at the platform or the payment service beyond what was charged or counted: a
 *   second full refund of an auto-refunded charge, a refund of a kept charge its order never
 *   counted, a partial refund more than the order's partial refunds, a payment-side refund
 *   the platform never made;
 * - a charge refunded short of its amount, a charge kept for an order that does not exist,
 *   and a charge at the platform the payment service has no row for.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import type { Knex } from "knex";
import { createKnex, dropDatabase, ensureDatabase, migrateLatest } from "./db";
import { testConfig } from "../test/support/app";
import { checkCheckoutInvariants, type CheckOptions } from "./invariants";

const SERVICES = ["order", "payment", "product", "notification"] as const;
const ROOT = path.resolve(__dirname, "..");

// Ids as the services make them: orders and products UUIDs, payments 32 hex.
const uuid = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
const pay = (c: string) => c.repeat(32);
const P1 = uuid(101);
const P2 = uuid(102);
const U1 = uuid(201);
const U2 = uuid(202);
/** PAID, 2 × P1 for 2000, its payment pA kept; a second charge pA2 refunded in full automatically. */
const A = uuid(1);
/** PAID, 1 × P1 for 1000, its payment pB kept and partly refunded (300). */
const B = uuid(2);
/** CANCELLED, 1 × P2 for 1500: a declined payment, and a late charge pC2 refunded in full. */
const C = uuid(3);
const [pA, pA2, pB, pC, pC2] = [pay("a"), pay("b"), pay("c"), pay("d"), pay("e")];
const INITIAL: Record<string, number> = { [P1]: 100, [P2]: 50 };
const NOW = 1_700_000_000_000;

describe("checkout invariants on MariaDB: a settled run's records pass, each planted fault is named", () => {
  const config = testConfig({ db: "mariadb" });
  const dbs = new Map<string, Knex>();
  const db = (service: string) => dbs.get(service)!;
  const options = (extra: Partial<CheckOptions> = {}): CheckOptions => ({
    products: [{ id: P1 }, { id: P2 }],
    initialStock: (id) => INITIAL[id],
    knownOrderIds: [A, B, C],
    // The runs these records stand for place and pay orders; they never ship or refund.
    finalStatuses: ["PAID", "CANCELLED"],
    ...extra,
  });
  const check = (extra?: Partial<CheckOptions>) => checkCheckoutInvariants(db, options(extra));
  /** Inserts `rows` into a table for the duration of `run`, then removes them. */
  const planted = async <T>(
    service: string,
    table: string,
    rows: Record<string, unknown>[],
    key: string,
    run: () => Promise<T>,
  ): Promise<T> => {
    await db(service)(table).insert(rows);
    try {
      return await run();
    } finally {
      await db(service)(table)
        .whereIn(
          key,
          rows.map((r) => r[key] as string),
        )
        .del();
    }
  };

  /** Changes the rows `where` selects for the duration of `run`, then puts back what they held. */
  const altered = async <T>(
    service: string,
    table: string,
    where: Record<string, string>,
    change: Record<string, unknown>,
    run: () => Promise<T>,
  ): Promise<T> => {
    const before = await db(service)(table).where(where).first<Record<string, unknown>>(Object.keys(change));
    await db(service)(table).where(where).update(change);
    try {
      return await run();
    } finally {
      await db(service)(table).where(where).update(before);
    }
  };

  before(async () => {
    for (const s of SERVICES) {
      await ensureDatabase(config, s);
      dbs.set(s, createKnex(config, s));
      await migrateLatest(db(s), path.join(ROOT, "services", s, "migrations"));
    }
    const order = (id: string, user: string, status: string, total: number, paid: string | null, refunded = 0) => ({
      id,
      user_id: user,
      status,
      total_amount: total,
      currency: "CNY",
      shipping_address: "{}",
      shipment: null,
      shipped: false,
      paid_payment_id: paid,
      paid_amount: paid ? total : 0,
      refunded_amount: refunded,
      reservation_expires_at: null,
      created_at: NOW,
      updated_at: NOW,
    });
    await db("order")("orders").insert([
      order(A, U1, "PAID", 2000, pA),
      order(B, U2, "PAID", 1000, pB, 300),
      order(C, U2, "CANCELLED", 1500, null),
    ]);
    const line = (orderId: string, productId: string, quantity: number, unit: number) => ({
      order_id: orderId,
      product_id: productId,
      sku: `sku-${productId.slice(-3)}`,
      name: "x",
      unit_price: unit,
      quantity,
    });
    await db("order")("order_items").insert([line(A, P1, 2, 1000), line(B, P1, 1, 1000), line(C, P2, 1, 1500)]);
    const orderRefund = (id: string, orderId: string, paymentId: string, amount: number) => ({
      id,
      order_id: orderId,
      payment_id: paymentId,
      amount,
      currency: "CNY",
      status: "SUCCEEDED",
      reason: "x",
      created_at: NOW,
      updated_at: NOW,
    });
    await db("order")("order_refunds").insert([
      orderRefund(`auto${pA2}`, A, pA2, 2000),
      orderRefund("rB", B, pB, 300),
      orderRefund(`auto${pC2}`, C, pC2, 1500),
    ]);

    await db("payment")("payments").insert([
      paymentRow(pA, A, U1, "SUCCEEDED", 2000),
      paymentRow(pA2, A, U1, "SUCCEEDED", 2000),
      paymentRow(pB, B, U2, "SUCCEEDED", 1000),
      paymentRow(pC, C, U2, "FAILED", 1500),
      paymentRow(pC2, C, U2, "SUCCEEDED", 1500),
    ]);
    const sbx = (id: string, status: string, amount: number) => ({
      payment_id: id,
      amount,
      currency: "CNY",
      status,
      provider_txn_id: `sbx_${id.slice(0, 4)}`,
      paid_at: null,
      updated_at: NOW,
    });
    await db("payment")("sandbox_payments").insert([
      sbx(pA, "succeeded", 2000),
      sbx(pA2, "succeeded", 2000),
      sbx(pB, "succeeded", 1000),
      sbx(pC, "failed", 1500),
      sbx(pC2, "succeeded", 1500),
    ]);
    for (const [id, paymentId, orderId, amount] of [
      [`auto${pA2}`, pA2, A, 2000],
      ["rB", pB, B, 300],
      [`auto${pC2}`, pC2, C, 1500],
    ] as const) {
      await db("payment")("refunds").insert(payRefund(id, paymentId, orderId, amount));
      await db("payment")("sandbox_refunds").insert(sbxRefund(id, paymentId, amount));
    }

    await db("product")("products").insert([product(P1, INITIAL[P1] - 3), product(P2, INITIAL[P2])]);
    const hold = (orderId: string, productId: string, quantity: number, status: string) => ({
      order_id: orderId,
      product_id: productId,
      quantity,
      status,
      expires_at: NOW,
      created_at: NOW,
      updated_at: NOW,
    });
    await db("product")("reservations").insert([hold(A, P1, 2, "committed"), hold(B, P1, 1, "committed"), hold(C, P2, 1, "released")]);

    const note = (n: number, user: string, orderId: string) => ({
      id: uuid(900 + n),
      user_id: user,
      type: "payment.succeeded",
      title: "t",
      body: "b",
      data: JSON.stringify({ orderId }),
      created_at: NOW,
      source_message_id: `m${n}`,
    });
    await db("notification")("notifications").insert([note(1, U1, A), note(2, U2, B)]);
  });

  after(async () => {
    for (const k of dbs.values()) await k.destroy();
    for (const s of SERVICES) await dropDatabase(config, s);
  });

  it("a settled run's records: no problem; the figures count them", async () => {
    const r = await check();
    assert.deepEqual(r.problems, []);
    assert.deepEqual(r.figures, {
      orders: 3,
      byStatus: { PAID: 2, CANCELLED: 1 },
      knownOrders: 3,
      payments: 5,
      charges: 4,
      refundedCharges: 2,
      partlyRefundedCharges: 1,
      autoRefunds: 3,
      platformRefunds: 3,
      notified: 2,
      orphanClaims: 0,
      offPlatformPayments: 0,
    });
  });

  it("an order id answered 201 that is not in the database is named", async () => {
    const lost = uuid(999);
    const r = await check({ knownOrderIds: [A, B, C, lost] });
    assert.deepEqual(r.problems, [`order ${lost} answered 201 but is not in the database`]);
    assert.equal(r.figures.knownOrders, 4);
  });

  it("over-refund at the platform: a second full refund of an auto-refunded charge is named", async () => {
    // What "refunded at least its amount" let through: 4000 back for a charge of 2000.
    const r = await planted("payment", "sandbox_refunds", [sbxRefund("auto-again", pA2, 2000)], "refund_id", check);
    assert.deepEqual(r.problems, [
      `platform refund auto-again (payment ${pA2}, 2000): the payment service has no such refund`,
      `payment ${pA2} (order ${A}) over-refunded: 4000 back for a charge of 2000`,
    ]);
  });

  it("over-refund at the platform and the payment service alike: a refund of a kept charge its order does not count is named", async () => {
    const r = await planted("payment", "refunds", [payRefund("rA", pA, A, 500)], "id", () =>
      planted("payment", "sandbox_refunds", [sbxRefund("rA", pA, 500)], "refund_id", check),
    );
    assert.deepEqual(r.problems, [
      `PAID order ${A}: its kept charge ${pA} of 2000 was refunded 500 at the platform, 0 by the order's refunds, and the order counts 0`,
    ]);
  });

  it("partial refunds are summed exactly: one more at the platform and the payment service than the order counts is named", async () => {
    const r = await planted("payment", "refunds", [payRefund("rB2", pB, B, 100)], "id", () =>
      planted("payment", "sandbox_refunds", [sbxRefund("rB2", pB, 100)], "refund_id", check),
    );
    assert.deepEqual(r.problems, [
      `PAID order ${B}: its kept charge ${pB} of 1000 was refunded 400 at the platform, 300 by the order's refunds, and the order counts 300`,
    ]);
  });

  it("over-refund at the payment service: a succeeded refund the platform never made is named", async () => {
    const r = await planted("payment", "refunds", [payRefund("rC", pC2, C, 1500)], "id", check);
    assert.deepEqual(r.problems, [`payment-side refund rC (payment ${pC2}, 1500) SUCCEEDED but the platform made no such refund`]);
  });

  it("a charge refunded one unit short of its amount is named", async () => {
    const pA3 = pay("f");
    const r = await planted("payment", "payments", [paymentRow(pA3, A, U1, "SUCCEEDED", 2000)], "id", () =>
      planted(
        "payment",
        "sandbox_payments",
        [
          {
            payment_id: pA3,
            amount: 2000,
            currency: "CNY",
            status: "succeeded",
            provider_txn_id: "sbx_f",
            paid_at: null,
            updated_at: NOW,
          },
        ],
        "payment_id",
        () =>
          planted("payment", "refunds", [payRefund(`auto${pA3}`, pA3, A, 1999)], "id", () =>
            planted("payment", "sandbox_refunds", [sbxRefund(`auto${pA3}`, pA3, 1999)], "refund_id", check),
          ),
      ),
    );
    assert.equal(r.problems.length, 1, r.problems.join("\n"));
    assert.match(
      r.problems[0],
      new RegExp(`^PAID order ${A}: charge ${pA3} of 2000 kept \\(1999 refunded\\), its paid payment being ${pA} `),
    );
  });

  it("a charge kept for an order that does not exist is named", async () => {
    const pX = pay("0");
    const ghost = uuid(998);
    const r = await planted("payment", "payments", [paymentRow(pX, ghost, U1, "SUCCEEDED", 700)], "id", () =>
      planted(
        "payment",
        "sandbox_payments",
        [{ payment_id: pX, amount: 700, currency: "CNY", status: "succeeded", provider_txn_id: "sbx_0", paid_at: null, updated_at: NOW }],
        "payment_id",
        check,
      ),
    );
    assert.deepEqual(r.problems, [`payment ${pX}: charge of 700 kept (0 refunded) for order ${ghost}, which does not exist`]);
  });

  it("a charge at the platform the payment service has no row for is named", async () => {
    const pY = pay("9");
    const r = await planted(
      "payment",
      "sandbox_payments",
      [{ payment_id: pY, amount: 500, currency: "CNY", status: "succeeded", provider_txn_id: "sbx_9", paid_at: null, updated_at: NOW }],
      "payment_id",
      check,
    );
    assert.deepEqual(r.problems, [`payment ${pY} charged at the platform but unknown to the payment service`]);
  });

  it("every settled status allowed (the REPL's check, which passes no list): a SHIPPED order passes; a run's PAID and CANCELLED name it", async () => {
    const [general, run] = await altered("order", "orders", { id: A }, { status: "SHIPPED" }, async () => [
      await check({ finalStatuses: undefined }),
      await check(),
    ]);
    assert.deepEqual(general.problems, []);
    assert.deepEqual(general.figures.byStatus, { SHIPPED: 1, PAID: 1, CANCELLED: 1 });
    assert.deepEqual(run.problems, [`order ${A} in unexpected status SHIPPED`]);
  });

  it("stock put back (returned) for a PAID order is named, and its sale missing; for a CANCELLED order without a charge it is right", async () => {
    const r = await altered("product", "reservations", { order_id: A }, { status: "returned" }, () => check({ finalStatuses: undefined }));
    assert.deepEqual(r.problems, [
      `PAID order ${A}: no committed reservation`,
      `PAID order ${A}: stock returned but the order is neither REFUNDED nor CANCELLED without a charge`,
    ]);
    // Stock a rolled-back payment handler had committed, back for the order cancelled meanwhile
    // (order.consumers.ts onPaymentSucceeded: returnSoldStock).
    const cancelled = await altered("product", "reservations", { order_id: C }, { status: "returned" }, () =>
      check({ finalStatuses: undefined }),
    );
    assert.deepEqual(cancelled.problems, []);
  });

  it("an Alipay charge, read from the payment service's records: kept by a CANCELLED order it is named; refunded in full there it passes", async () => {
    const pZ = pay("f");
    const alipay = paymentRow(pZ, C, U2, "SUCCEEDED", 700, "alipay");
    const kept = await planted("payment", "payments", [alipay], "id", check);
    assert.equal(kept.problems.length, 1, kept.problems.join("\n"));
    assert.match(
      kept.problems[0],
      new RegExp(`^CANCELLED order ${C}: charge ${pZ} of 700 kept \\(0 refunded\\), its paid payment being none `),
    );
    assert.equal(kept.figures.offPlatformPayments, 1);
    const refunded = await planted("payment", "payments", [alipay], "id", () =>
      planted("payment", "refunds", [payRefund(`auto${pZ}`, pZ, C, 700)], "id", check),
    );
    assert.deepEqual(refunded.problems, []);
  });

  it("stock: on_hand off by one unit, and reserved units no hold accounts for, are named", async () => {
    const lost = await altered("product", "products", { id: P1 }, { on_hand: INITIAL[P1] - 4 }, check);
    assert.deepEqual(lost.problems, [`product ${P1}: on_hand ${INITIAL[P1] - 4}, expected ${INITIAL[P1]} − 3 sold = ${INITIAL[P1] - 3}`]);
    const held = await altered("product", "products", { id: P2 }, { reserved: 1 }, check);
    assert.deepEqual(held.problems, [`product ${P2}: reserved 1 but holds sum to 0`, `product ${P2}: reserved 1 at the end`]);
  });

  it("an order left waiting for payment is named", async () => {
    const r = await altered("order", "orders", { id: C }, { status: "PENDING_PAYMENT" }, check);
    assert.equal(r.problems.length, 1, r.problems.join("\n"));
    assert.match(r.problems[0], new RegExp(`^order ${C} still PENDING_PAYMENT \\(hold expired -?\\d+ ms ago\\)$`));
  });

  it("notifications: a paid order told twice, or not at all, is named", async () => {
    const twice = await planted(
      "notification",
      "notifications",
      [
        {
          ...(await db("notification")("notifications").where({ source_message_id: "m1" }).first()),
          seq: undefined, // its own row number
          id: uuid(950),
          source_message_id: "m1-again",
        },
      ],
      "id",
      check,
    );
    assert.deepEqual(twice.problems, [`PAID order ${A}: 2 payment.succeeded notification(s)`]);
    const never = await altered("notification", "notifications", { source_message_id: "m2" }, { type: "order.created" }, check);
    assert.deepEqual(never.problems, [`PAID order ${B}: 0 payment.succeeded notification(s)`]);
  });

  it("after the planted faults are removed, the records pass again", async () => {
    assert.deepEqual((await check()).problems, []);
  });
});

function paymentRow(id: string, orderId: string, user: string, status: string, amount: number, provider = "sandbox") {
  return {
    id,
    order_id: orderId,
    user_id: user,
    provider,
    status,
    amount,
    currency: "CNY",
    subject: "s",
    reconcile_after: NOW,
    created_at: NOW,
    updated_at: NOW,
  };
}

function payRefund(id: string, paymentId: string, orderId: string, amount: number) {
  return {
    id,
    payment_id: paymentId,
    order_id: orderId,
    status: "SUCCEEDED",
    amount,
    currency: "CNY",
    reason: "x",
    reconcile_after: NOW,
    created_at: NOW,
    updated_at: NOW,
  };
}

function sbxRefund(id: string, paymentId: string, amount: number) {
  return { refund_id: id, payment_id: paymentId, amount, provider_refund_id: `sbr_${id}`, created_at: NOW };
}

function product(id: string, onHand: number) {
  return {
    id,
    sku: `sku-${id.slice(-3)}`,
    name: "x",
    description: "x",
    category: "c",
    brand: null,
    tags: "[]",
    price_amount: 1000,
    price_currency: "CNY",
    images: "[]",
    on_hand: onHand,
    reserved: 0,
    created_at: NOW,
    updated_at: NOW,
    deleted_at: null,
  };
}
