/**
 * Data access of the payment service: the only file that knows its tables.
 *
 * Concurrency: a payment changes state through ONE conditional UPDATE
 * (`WHERE id = ? AND status IN (…)`) whose row count says who won; on InnoDB an UPDATE
 * reads the latest committed row and locks it, so of ten concurrent deliveries of one
 * callback exactly one sees 1. Refunds lock their payment row (`FOR UPDATE`) before
 * summing, so two refunds of one payment are serialized. SQLite serializes writers.
 */
import type { Knex } from "knex";
import { inTransaction, isUniqueViolation, param, Statement } from "../../lib/db";
import type { CloseResult, PlatformName, SandboxPaymentState, SandboxRefundRecord, SandboxRefundRequest } from "./platforms";
import type { Money, Outcome, PaymentRecord, PaymentStatus, RefundRecord, RefundStatus } from "./payment.domain";

type Num = number | string;

interface PaymentRow {
  id: string;
  order_id: string;
  user_id: string;
  provider: PlatformName;
  status: PaymentStatus;
  amount: Num;
  currency: string;
  subject: string;
  pay_url: string | null;
  code_url: string | null;
  form: string | null;
  provider_txn_id: string | null;
  failure_reason: string | null;
  pending_key: string | null;
  reconcile_after: Num;
  paid_at: Num | null;
  expires_at: Num | null;
  created_at: Num;
  updated_at: Num;
}

const toPayment = (r: PaymentRow): PaymentRecord => ({
  id: r.id,
  orderId: r.order_id,
  userId: r.user_id,
  provider: r.provider,
  status: r.status,
  amount: { amount: Number(r.amount), currency: r.currency },
  subject: r.subject,
  payUrl: r.pay_url,
  codeUrl: r.code_url,
  form: r.form,
  providerTxnId: r.provider_txn_id,
  failureReason: r.failure_reason,
  reconcileAfter: Number(r.reconcile_after),
  paidAt: r.paid_at === null || r.paid_at === undefined ? null : Number(r.paid_at),
  expiresAt: r.expires_at === null || r.expires_at === undefined ? null : Number(r.expires_at),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

export async function insertPayment(db: Knex, p: PaymentRecord, pendingKey: string): Promise<void> {
  await db("payments").insert({
    id: p.id,
    order_id: p.orderId,
    user_id: p.userId,
    provider: p.provider,
    status: p.status,
    amount: p.amount.amount,
    currency: p.amount.currency,
    subject: p.subject,
    pay_url: p.payUrl,
    code_url: p.codeUrl,
    form: p.form,
    provider_txn_id: p.providerTxnId,
    failure_reason: p.failureReason,
    pending_key: pendingKey,
    reconcile_after: p.reconcileAfter,
    paid_at: p.paidAt,
    expires_at: p.expiresAt,
    created_at: p.createdAt,
    updated_at: p.updatedAt,
  });
}

/** The reads of every checkout's payment, compiled once (lib/db.ts Statement). */
const paymentById = new Statement<{ id: string }, PaymentRow>((db) =>
  db("payments")
    .where({ id: param("id") })
    .first(),
);
const lockPaymentById = new Statement<{ id: string }, PaymentRow>((db) =>
  db("payments")
    .where({ id: param("id") })
    .forUpdate()
    .first(),
);
const succeededOfOrder = new Statement<{ orderId: string }, { id: string }>((db) =>
  db("payments")
    .where({ order_id: param("orderId"), status: "SUCCEEDED" })
    .first("id"),
);

export async function findPayment(db: Knex, id: string): Promise<PaymentRecord | undefined> {
  const row = await paymentById.first(db, { id });
  return row && toPayment(row);
}

export async function findPaymentForUpdate(trx: Knex.Transaction, id: string): Promise<PaymentRecord | undefined> {
  const row = await lockPaymentById.first(trx, { id });
  return row && toPayment(row);
}

export async function findByPendingKey(db: Knex, key: string): Promise<PaymentRecord | undefined> {
  const row = (await db("payments").where({ pending_key: key }).first()) as PaymentRow | undefined;
  return row && toPayment(row);
}

/** The order's payments, oldest first. */
export async function paymentsOfOrder(db: Knex, orderId: string): Promise<PaymentRecord[]> {
  const rows = (await db("payments")
    .where({ order_id: orderId })
    .orderBy([{ column: "created_at" }, { column: "id" }])) as PaymentRow[];
  return rows.map(toPayment);
}

export async function hasSucceededPayment(db: Knex, orderId: string): Promise<boolean> {
  return (await succeededOfOrder.first(db, { orderId })) !== undefined;
}

/**
 * Records an outcome once: the row moves only from the states the outcome may leave
 * (domain `fromStatesFor`). True for the one caller that moved it.
 */
export async function settlePayment(
  trx: Knex.Transaction,
  id: string,
  outcome: Outcome,
  from: PaymentStatus[],
  now: number,
): Promise<boolean> {
  const set: Record<string, unknown> = { pending_key: null, updated_at: now };
  if (outcome.kind === "succeeded") {
    Object.assign(set, {
      status: "SUCCEEDED",
      provider_txn_id: outcome.providerTxnId || null,
      paid_at: outcome.paidAt,
      failure_reason: null,
    });
  } else {
    Object.assign(set, { status: "FAILED", failure_reason: outcome.reason.slice(0, 64) });
    if (outcome.providerTxnId) set.provider_txn_id = outcome.providerTxnId;
  }
  const n = await trx("payments").where({ id }).whereIn("status", from).update(set);
  return n === 1;
}

/**
 * Trades that may still be open at their platform: PENDING ones, and FAILED ones not known
 * to be closed (a buyer can still pay a trade we gave up on for want of an answer, and the
 * sandbox takes a success after a declined attempt).
 */
// (`void` in knex's nested-condition callbacks: each builds on its argument; nothing there is a query to await.)
const possiblyOpen = (q: Knex.QueryBuilder) =>
  q.where(
    (w) => void w.where({ status: "PENDING" }).orWhere((f) => void f.where({ status: "FAILED" }).whereNot({ failure_reason: "closed" })),
  );

/**
 * The order was cancelled: its trades that may still be open are to be closed at their
 * platforms, by reconciliation (due now). Returns how many.
 */
export async function requestClose(db: Knex, orderId: string, now: number): Promise<number> {
  return possiblyOpen(db("payments").where({ order_id: orderId }))
    .whereNull("close_requested_at")
    .update({ close_requested_at: now, reconcile_after: now });
}

/** Trades to close, due now (candidates; claimClose decides). */
export async function dueCloses(db: Knex, now: number, limit: number): Promise<PaymentRecord[]> {
  const rows = (await possiblyOpen(db("payments"))
    .whereNotNull("close_requested_at")
    .where("reconcile_after", "<=", now)
    .orderBy("reconcile_after")
    .limit(limit)) as PaymentRow[];
  return rows.map(toPayment);
}

/** Claims a trade to close for one sweeper (a conditional move of its reconcile time). */
export async function claimClose(db: Knex, id: string, now: number, until: number): Promise<boolean> {
  return (
    (await possiblyOpen(db("payments").where({ id }))
      .whereNotNull("close_requested_at")
      .where("reconcile_after", "<=", now)
      .update({ reconcile_after: until })) === 1
  );
}

/**
 * The close was carried out: the row leaves the close loop (a FAILED one the platform closed
 * is no longer watched; one it did not know stays watched until its time_expire passes).
 */
export async function closeHandled(db: Knex, id: string, closedAtPlatform: boolean, now: number): Promise<void> {
  await db("payments").where({ id }).update({ close_requested_at: null, updated_at: now });
  if (closedAtPlatform) await db("payments").where({ id, status: "FAILED" }).update({ failure_reason: "closed" });
}

/** The order service took this success into account (order.paid, or its refund): reconciliation leaves it. */
export async function acknowledgeByOrder(db: Knex, id: string, now: number): Promise<void> {
  await db("payments").where({ id, status: "SUCCEEDED" }).whereNull("order_ack_at").update({ order_ack_at: now });
}

/**
 * Successes the order service never acknowledged, recorded before `before` and due (the
 * reconcile time doubles as their lease): their `payment.succeeded` was lost to the order
 * (dead-lettered), so reconciliation hands them over again.
 */
export async function dueUnacknowledged(db: Knex, before: number, now: number, limit: number): Promise<PaymentRecord[]> {
  const rows = (await db("payments")
    .where({ status: "SUCCEEDED" })
    .whereNull("order_ack_at")
    .where("updated_at", "<", before)
    .where("reconcile_after", "<=", now)
    .orderBy("updated_at")
    .limit(limit)) as PaymentRow[];
  return rows.map(toPayment);
}

/** Claims an unacknowledged success for one sweeper (one replica gets row count 1). */
export async function claimUnacknowledged(db: Knex, id: string, now: number, until: number): Promise<boolean> {
  return (
    (await db("payments")
      .where({ id, status: "SUCCEEDED" })
      .whereNull("order_ack_at")
      .where("reconcile_after", "<=", now)
      .update({ reconcile_after: until })) === 1
  );
}

/** PENDING payments whose reconciliation time has come (candidates; the claim re-checks). */
/**
 * Payments the reconciliation must ask their platform about: PENDING ones past their time,
 * and ones it FAILED itself for want of an answer (`timeout`, `not_found`) created since
 * `watchSince`: the buyer may still pay such a trade (we cannot close it at the platform),
 * and if the platform's callback is lost too, only asking again records that money.
 */
const dueForReconciliation = (db: Knex, now: number, watchSince: number) =>
  db("payments")
    // A trade to close is the close loop's (dueCloses), not settled here first.
    .whereNull("close_requested_at")
    .where(
      (q) =>
        void q
          .where({ status: "PENDING" })
          .orWhere(
            (w) => void w.where({ status: "FAILED" }).whereIn("failure_reason", WATCHED_FAILURES).where("created_at", ">=", watchSince),
          ),
    )
    .where("reconcile_after", "<=", now);

export const WATCHED_FAILURES = ["timeout", "not_found"];

export async function duePendingPayments(db: Knex, now: number, limit: number, watchSince = now): Promise<PaymentRecord[]> {
  const rows = (await dueForReconciliation(db, now, watchSince).orderBy("reconcile_after").limit(limit)) as PaymentRow[];
  return rows.map(toPayment);
}

/**
 * Claims a due payment for one sweeper: moves its reconcile time to `until` only if it is
 * still due (and still PENDING or watched), so of several replicas exactly one gets a row
 * count of 1.
 */
export async function claimPayment(db: Knex, id: string, now: number, until: number, watchSince = now): Promise<boolean> {
  return (await dueForReconciliation(db, now, watchSince).where({ id }).update({ reconcile_after: until })) === 1;
}

// ---- refunds ----

interface RefundRow {
  id: string;
  payment_id: string;
  order_id: string;
  status: RefundStatus;
  amount: Num;
  currency: string;
  reason: string;
  provider_refund_id: string | null;
  failure_code: string | null;
  reconcile_after: Num;
  created_at: Num;
  updated_at: Num;
}

const toRefund = (r: RefundRow): RefundRecord => ({
  id: r.id,
  paymentId: r.payment_id,
  orderId: r.order_id,
  status: r.status,
  amount: { amount: Number(r.amount), currency: r.currency },
  reason: r.reason,
  providerRefundId: r.provider_refund_id,
  failureCode: r.failure_code,
  reconcileAfter: Number(r.reconcile_after),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

export async function findRefund(db: Knex, id: string): Promise<RefundRecord | undefined> {
  const row = (await db("refunds").where({ id }).first()) as RefundRow | undefined;
  return row && toRefund(row);
}

/** Refunds of a payment that count against its amount (PENDING and SUCCEEDED), read locked. */
export async function committedRefundTotal(trx: Knex.Transaction, paymentId: string): Promise<number> {
  const rows = await trx("refunds")
    .where({ payment_id: paymentId })
    .whereIn("status", ["PENDING", "SUCCEEDED"])
    .forUpdate()
    .select<{ amount: Num }[]>("amount");
  return rows.reduce((sum, r) => sum + Number(r.amount), 0);
}

export async function insertRefund(trx: Knex.Transaction, r: RefundRecord): Promise<void> {
  await trx("refunds").insert({
    id: r.id,
    payment_id: r.paymentId,
    order_id: r.orderId,
    status: r.status,
    amount: r.amount.amount,
    currency: r.amount.currency,
    reason: r.reason,
    provider_refund_id: r.providerRefundId,
    failure_code: r.failureCode,
    reconcile_after: r.reconcileAfter,
    created_at: r.createdAt,
    updated_at: r.updatedAt,
  });
}

/** PENDING → SUCCEEDED | FAILED once; true for the caller that moved it. */
export async function settleRefund(
  trx: Knex.Transaction,
  id: string,
  to: Exclude<RefundStatus, "PENDING">,
  fields: { providerRefundId?: string; failureCode?: string },
  now: number,
): Promise<boolean> {
  const set: Record<string, unknown> = { status: to, updated_at: now };
  if (fields.providerRefundId) set.provider_refund_id = fields.providerRefundId;
  if (fields.failureCode) set.failure_code = fields.failureCode.slice(0, 64);
  return (await trx("refunds").where({ id, status: "PENDING" }).update(set)) === 1;
}

export async function noteRefundProviderId(db: Knex, id: string, providerRefundId: string, now: number): Promise<void> {
  await db("refunds").where({ id, status: "PENDING" }).update({ provider_refund_id: providerRefundId, updated_at: now });
}

export async function duePendingRefunds(db: Knex, now: number, limit: number): Promise<RefundRecord[]> {
  const rows = (await db("refunds")
    .where({ status: "PENDING" })
    .where("reconcile_after", "<=", now)
    .orderBy("reconcile_after")
    .limit(limit)) as RefundRow[];
  return rows.map(toRefund);
}

export async function claimRefund(db: Knex, id: string, now: number, until: number): Promise<boolean> {
  return (
    (await db("refunds").where({ id, status: "PENDING" }).where("reconcile_after", "<=", now).update({ reconcile_after: until })) === 1
  );
}

// ---- the sandbox platform's own records (SandboxStateStore) ----

interface SandboxRow {
  payment_id: string;
  amount: Num;
  currency: string;
  status: "succeeded" | "failed" | "closed";
  provider_txn_id: string;
  paid_at: Num | null;
}

export async function sandboxPayment(db: Knex, paymentId: string): Promise<SandboxPaymentState | undefined> {
  const r = (await db("sandbox_payments").where({ payment_id: paymentId }).first()) as SandboxRow | undefined;
  if (!r) return undefined;
  if (r.status === "closed") return { paymentId: r.payment_id, status: "closed", amountMinor: Number(r.amount), currency: r.currency };
  return {
    paymentId: r.payment_id,
    amountMinor: Number(r.amount),
    currency: r.currency,
    status: r.status,
    providerTxnId: r.provider_txn_id,
    ...(r.paid_at !== null && r.paid_at !== undefined ? { paidAt: new Date(Number(r.paid_at)).toISOString() } : {}),
  };
}

/**
 * The tester's choice, as the sandbox platform records it: a first choice is inserted; a
 * success replaces an earlier failure (the buyer tried again and paid); a success is final;
 * a closed trade takes no choice (the insert collides, and only a `failed` row is updated).
 * Each is one statement, so a close racing a choice is ordered by the row. Returns the
 * state as it stands afterwards.
 */
export async function recordSandboxChoice(
  db: Knex,
  s: { paymentId: string; amount: Money; status: "succeeded" | "failed"; providerTxnId: string; paidAt: number | null },
  now: number,
): Promise<SandboxPaymentState> {
  const row = {
    payment_id: s.paymentId,
    amount: s.amount.amount,
    currency: s.amount.currency,
    status: s.status,
    provider_txn_id: s.providerTxnId,
    paid_at: s.paidAt,
    updated_at: now,
  };
  try {
    await db("sandbox_payments").insert(row);
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    if (s.status === "succeeded")
      await db("sandbox_payments")
        .where({ payment_id: s.paymentId, status: "failed" })
        .update({ status: "succeeded", provider_txn_id: s.providerTxnId, paid_at: s.paidAt, updated_at: now });
  }
  return (await sandboxPayment(db, s.paymentId))!;
}

/**
 * The sandbox closes a trade (SandboxStateStore.closeTrade): with no choice yet, or a failed
 * one, it becomes closed; a succeeded one stays ("paid"). Insert-or-conditional-update, so
 * it is atomic with recordSandboxChoice.
 */
export async function sandboxCloseTrade(db: Knex, paymentId: string, amount: Money, now: number): Promise<CloseResult> {
  try {
    await db("sandbox_payments").insert({
      payment_id: paymentId,
      amount: amount.amount,
      currency: amount.currency,
      status: "closed",
      provider_txn_id: "",
      paid_at: null,
      updated_at: now,
    });
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    await db("sandbox_payments").where({ payment_id: paymentId, status: "failed" }).update({ status: "closed", updated_at: now });
  }
  const state = await sandboxPayment(db, paymentId);
  return { status: state?.status === "succeeded" ? "paid" : "closed" };
}

/**
 * The sandbox accepts a refund (SandboxStateStore.recordRefund): idempotent on the refund
 * id, and never more in total than the payment's amount, as Alipay and WeChat Pay refuse
 * an over-refund. The payment's sandbox row is locked while the total is summed, so two
 * concurrent refunds cannot both pass the check.
 */
export async function sandboxRecordRefund(
  db: Knex,
  r: SandboxRefundRequest,
  newId: () => string,
  now: number,
): Promise<SandboxRefundRecord> {
  const recorded = async (q: Knex) => {
    const row = (await q("sandbox_refunds").where({ refund_id: r.refundId }).first()) as { provider_refund_id: string } | undefined;
    return row && ({ status: "recorded", providerRefundId: row.provider_refund_id } as const);
  };
  const existing = await recorded(db);
  if (existing) return existing;
  try {
    return await inTransaction(db, async (trx) => {
      await trx("sandbox_payments").where({ payment_id: r.paymentId }).forUpdate().first();
      const again = await recorded(trx);
      if (again) return again;
      const [{ total }] = await trx("sandbox_refunds").where({ payment_id: r.paymentId }).sum<
        {
          total: Num | null;
        }[]
      >({ total: "amount" });
      if (Number(total ?? 0) + r.amountMinor > r.totalMinor) return { status: "refused", failureCode: "REFUND_AMOUNT_EXCEEDED" } as const;
      const providerRefundId = newId();
      await trx("sandbox_refunds").insert({
        refund_id: r.refundId,
        payment_id: r.paymentId,
        amount: r.amountMinor,
        provider_refund_id: providerRefundId,
        created_at: now,
      });
      return { status: "recorded", providerRefundId } as const;
    });
  } catch (err) {
    const again = isUniqueViolation(err) ? await recorded(db) : undefined;
    if (again) return again;
    throw err;
  }
}
