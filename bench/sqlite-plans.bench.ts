/**
 * `npm run bench:plans` (#16): two lookups of the checkout whose SQLite plan walked a status
 * index, at a shop's size, with the index that fixes each plan and without it (the schema before
 * its migration, rolled back in the same run):
 *   1. `hasSucceededPayment` of an order not paid yet (what every payment.create asks, twice)
 *      among BENCH_PLANS_PAYMENTS (50,000) SUCCEEDED payments: (order_id, status) against a walk
 *      of (status, order_ack_at), which finds no match and goes to the end;
 *   2. the hoarding check's unpaid orders of a user (`unpaidState`, every order create) among
 *      BENCH_PLANS_PENDING (5,000) PENDING_PAYMENT orders of other users (and 45,000 paid):
 *      (user_id, status) against a walk of (status, reservation_expires_at). Unpaid orders
 *      expire, so this walk grows with the backlog of unpaid orders, not with sales.
 * The reference, measured in the same run: the same table's primary-key read through its repo
 * (`findPayment`, `findOrderHead`: `select *` and the row's mapping, so a lookup of one column
 * may beat it). Each answer is checked against the data, with the index and without it: no
 * succeeded payment for an unpaid order, one for each paid order asked; each user's one unpaid
 * order.
 * MariaDB's statistics chose the selective index before the change (bench/RESULTS.md), so this
 * runs on SQLite, the embedded default, only.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Knex } from "knex";
import { loadConfig } from "../lib/config";
import { createKnex, inTransaction, migrateDownOne, migrateLatest } from "../lib/db";
import { progress } from "../lib/progress";
import { findOrderHead, unpaidState } from "../services/order/order.repo";
import { findPayment, hasSucceededPayment } from "../services/payment/payment.repo";
import { markdownTable } from "./support";

const PAYMENTS = Number(process.env.BENCH_PLANS_PAYMENTS) || 50_000;
const PENDING = Number(process.env.BENCH_PLANS_PENDING) || 5_000;
const PAID = 9 * PENDING;
/** Lookups per case; the walks are slow, so fewer of them. */
const FAST_RUNS = 2_000;
const SLOW_RUNS = 100;

async function timed(label: string, runs: number, work: (i: number) => Promise<void>): Promise<number> {
  for (let i = 0; i < Math.min(50, runs); i++) await work(i);
  const bar = progress(label, runs);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) {
    await work(i);
    bar.update(i + 1);
  }
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / runs;
  bar.stop();
  return us;
}

async function insertInBatches(db: Knex, table: string, rows: Record<string, unknown>[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 500) await db(table).insert(rows.slice(i, i + 500));
}

/** The service's SQLite database in `dir`, migrated to the latest, for `fn`; closed after. */
async function withServiceDb<T>(dir: string, service: string, fn: (db: Knex, migrations: string) => Promise<T>): Promise<T> {
  const migrations = path.join(__dirname, `../services/${service}/migrations`);
  const db = createKnex(loadConfig({ DATA_DIR: dir }), service);
  try {
    await migrateLatest(db, migrations);
    return await fn(db, migrations);
  } finally {
    await db.destroy();
  }
}

async function payments(dir: string): Promise<string[][]> {
  return withServiceDb(dir, "payment", async (db, migrations) => {
    const orders = Array.from({ length: PAYMENTS }, () => randomUUID());
    const ids = orders.map(() => randomUUID().replace(/-/g, ""));
    await insertInBatches(
      db,
      "payments",
      orders.map((orderId, i) => ({
        id: ids[i],
        order_id: orderId,
        user_id: `u${i}`,
        provider: "sandbox",
        status: "SUCCEEDED",
        amount: 100,
        currency: "CNY",
        subject: "s",
        reconcile_after: i,
        paid_at: i,
        order_ack_at: i,
        created_at: i,
        updated_at: i,
      })),
    );
    const pick = (i: number) => (i * 7919) % PAYMENTS;
    // What payment.create asks: an order not paid yet, so no row matches and a walk goes to the end.
    const unpaid = Array.from({ length: 1_000 }, () => randomUUID());
    const check = async (i: number) => {
      const orderId = unpaid[i % unpaid.length];
      if (await hasSucceededPayment(db, orderId)) throw new Error(`a succeeded payment found for the unpaid order ${orderId}`);
    };
    const paidFound = async () => {
      for (let i = 0; i < 20; i++)
        if (!(await hasSucceededPayment(db, orders[pick(i)]))) throw new Error(`no succeeded payment found for order ${orders[pick(i)]}`);
    };
    const reference = await timed("payments: primary-key read", FAST_RUNS, async (i) => {
      if (!(await findPayment(db, ids[pick(i)]))) throw new Error("payment not found");
    });
    const indexed = await timed("payments: hasSucceededPayment, (order_id, status)", FAST_RUNS, check);
    await paidFound();
    await migrateDownOne(db, migrations, "20261207220000_payment_order_status_index.ts");
    const walked = await timed("payments: hasSucceededPayment, before (status walk)", SLOW_RUNS, check);
    await paidFound();
    const row = (name: string, us: number) => [name, us.toFixed(1), `${(us / reference).toFixed(1)}×`];
    return [
      row(`payments: primary-key read (the reference)`, reference),
      row(`hasSucceededPayment of an unpaid order with (order_id, status)`, indexed),
      row(`the same before: walks all ${PAYMENTS.toLocaleString("en")} SUCCEEDED`, walked),
    ];
  });
}

async function orders(dir: string): Promise<string[][]> {
  return withServiceDb(dir, "order", async (db, migrations) => {
    const users = Array.from({ length: PENDING }, () => randomUUID());
    const rows = Array.from({ length: PENDING + PAID }, (_, i) => ({
      id: randomUUID(),
      user_id: i < PENDING ? users[i] : randomUUID(),
      status: i < PENDING ? "PENDING_PAYMENT" : "PAID",
      total_amount: 100,
      currency: "CNY",
      shipping_address: "{}",
      shipped: false,
      paid_amount: i < PENDING ? 0 : 100,
      refunded_amount: 0,
      reservation_expires_at: i,
      created_at: i,
      updated_at: i,
    }));
    await insertInBatches(db, "orders", rows);
    const pick = (i: number) => (i * 7919) % PENDING;
    const check = async (i: number) => {
      const state = await inTransaction(db, (trx) => unpaidState(trx, users[pick(i)], 0));
      if (state.orders !== 1) throw new Error(`user ${users[pick(i)]}: ${state.orders} unpaid orders, expected 1`);
    };
    const reference = await timed("orders: primary-key read", FAST_RUNS, async (i) => {
      if (!(await findOrderHead(db, rows[pick(i)].id))) throw new Error("order not found");
    });
    const indexed = await timed("orders: unpaid of a user, (user_id, status)", FAST_RUNS, check);
    await migrateDownOne(db, migrations, "20261207220000_order_user_status_index.ts");
    const walked = await timed("orders: unpaid of a user, before (status walk)", SLOW_RUNS, check);
    const row = (name: string, us: number) => [name, us.toFixed(1), `${(us / reference).toFixed(1)}×`];
    return [
      row(`orders: primary-key read (the reference)`, reference),
      row(`a user's unpaid orders (in a transaction) with (user_id, status)`, indexed),
      row(`the same before: walks ${PENDING.toLocaleString("en")} PENDING_PAYMENT`, walked),
    ];
  });
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-bench-plans-"));
  try {
    const table = [...(await payments(dir)), ...(await orders(dir))];
    process.stdout.write(
      `\nNode ${process.version}, ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, load ${os.loadavg()[0].toFixed(2)}; SQLite (embedded), ${PAYMENTS.toLocaleString("en")} payments, ${(PENDING + PAID).toLocaleString("en")} orders\n\n` +
        markdownTable(["lookup", "µs per lookup", "vs primary-key read"], table, [false, true, true]) +
        "\n\nChecked: every lookup answered what the data holds, with the index and without it.\n",
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
