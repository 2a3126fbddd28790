/**
 * The order's view in one statement (order.repo.ts `findOrderView`, a UNION ALL of six tables)
 * reads exactly what the per-table readers read, on SQLite and on the real MariaDB (where
 * UNION merges each column's type, so numbers and flags come back as text and must be
 * converted): an order with every part (two items, payments, refunds, a history, returns with
 * each restock value, shipped), and an order with none.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { it } from "mocha";
import { createKnex, dropDatabase, ensureDatabase, migrateLatest } from "../../lib/db";
import { testConfig } from "../../test/support/app";
import type { OrderRecord } from "./order.domain";
import * as repo from "./order.repo";

const MIGRATIONS = path.join(__dirname, "migrations");

for (const engine of ["sqlite", "mariadb"] as const) {
  it(`order view in one statement on ${engine}: the same as the per-table reads`, async () => {
    const config = testConfig({ db: engine });
    await ensureDatabase(config, "order");
    const db = createKnex(config, "order");
    try {
      await migrateLatest(db, MIGRATIONS);
      const order = (id: string, at: number): OrderRecord => ({
        id,
        userId: "u1",
        status: "PENDING_PAYMENT",
        total: { amount: 123_456_789_012, currency: "EUR" },
        items: [
          { productId: "p-b", sku: "B", name: "Bee ünïcode", unitPrice: { amount: 61_728_394_506, currency: "EUR" }, quantity: 2 },
          { productId: "p-a", sku: "A", name: "Ay", unitPrice: { amount: 0, currency: "EUR" }, quantity: 0 },
        ].filter((l) => l.quantity > 0),
        shippingAddress: { recipient: "Ada", phone: "+86 1", line1: "1 Market St", city: "Shanghai", postalCode: "200000", country: "CN" },
        shipment: null,
        paidPaymentId: null,
        paidAmount: 0,
        refundedAmount: 0,
        shipped: false,
        reservationExpiresAt: at + 900_000,
        createdAt: at,
        updatedAt: at,
      });
      const full = order("o-full", 1_700_000_000_000);
      full.items.push({ productId: "p-a", sku: "A", name: "Ay", unitPrice: { amount: 1, currency: "EUR" }, quantity: 1 });
      await db.transaction(async (trx) => {
        await repo.insertOrder(trx, full);
        await repo.insertOrder(trx, order("o-empty", 1_700_000_000_001));
        await repo.setStatus(trx, "o-full", "PENDING_PAYMENT", "PAID", full.createdAt + 10, {
          paid_payment_id: "pay-2",
          paid_amount: full.total.amount,
          reservation_expires_at: null,
        });
        await repo.setStatus(trx, "o-full", "PAID", "SHIPPED", full.createdAt + 20, {
          shipped: true,
          shipment: JSON.stringify({ carrier: "SF", trackingNumber: "T1", shippedAt: "2026-01-01T00:00:00.000Z" }),
        });
        await repo.insertRefund(trx, {
          id: "r-2",
          orderId: "o-full",
          paymentId: "pay-2",
          amount: { amount: 5, currency: "EUR" },
          status: "PENDING",
          reason: "late",
          createdAt: full.createdAt + 40,
          updatedAt: full.createdAt + 41,
        });
        await repo.insertRefund(trx, {
          id: "r-1",
          orderId: "o-full",
          paymentId: "pay-2",
          amount: { amount: 7, currency: "EUR" },
          status: "SUCCEEDED",
          reason: "dent",
          createdAt: full.createdAt + 30,
          updatedAt: full.createdAt + 31,
        });
        for (const [id, at, restock] of [
          ["ret-b", 50, true],
          ["ret-a", 50, false],
          ["ret-c", 45, null],
        ] as const) {
          await repo.insertReturn(trx, {
            id,
            orderId: "o-full",
            userId: "u1",
            status: "REQUESTED",
            items: [{ productId: "p-b", quantity: 1 }],
            reason: `why ${id}`,
            amount: null,
            restock: null,
            refundId: null,
            decisionReason: null,
            createdAt: full.createdAt + at,
            decidedAt: null,
          });
          if (restock !== null)
            await repo.decideReturn(trx, id, {
              status: restock ? "APPROVED" : "REJECTED",
              amount: { amount: 3, currency: "EUR" },
              restock,
              refundId: restock ? "r-1" : undefined,
              decisionReason: "ok",
              decidedAt: full.createdAt + 60,
            });
        }
      });
      await repo.upsertPayment(
        db,
        "o-full",
        { id: "pay-2", provider: "alipay", status: "SUCCEEDED", amount: full.total },
        full.createdAt + 6,
      );
      await repo.upsertPayment(
        db,
        "o-full",
        { id: "pay-1", provider: "sandbox", status: "FAILED", amount: full.total },
        full.createdAt + 5,
      );

      for (const id of ["o-full", "o-empty"]) {
        const expected = {
          order: await repo.findOrder(db, id),
          payments: await repo.paymentsOf(db, id),
          refunds: await repo.refundsOf(db, id),
          history: await repo.historyOf(db, id),
          returns: await repo.returnsOf(db, id),
        };
        assert.deepEqual(await repo.findOrderView(db, id), expected, id);
      }
      const v = (await repo.findOrderView(db, "o-full"))!;
      // What the comparison stands on: every part present, numbers as numbers, flags as booleans.
      assert.deepEqual(
        [
          v.order.items.length,
          v.payments.length,
          v.refunds.length,
          v.history.map((h) => h.status),
          v.returns.map((r) => [r.id, r.restock]),
        ],
        [
          2,
          2,
          2,
          ["PENDING_PAYMENT", "PAID", "SHIPPED"],
          [
            ["ret-c", null],
            ["ret-a", false],
            ["ret-b", true],
          ],
        ],
      );
      assert.equal(v.order.shipped, true);
      assert.equal(v.order.total.amount, 123_456_789_012);
      assert.equal(await repo.findOrderView(db, "no-such-order"), undefined);
    } finally {
      await db.destroy();
      await dropDatabase(config, "order");
    }
  });
}
