/**
 * The checkout invariants after a disturbed run (kill -9 of nodes, chaos), read from the
 * services' databases once the system has settled:
 * - every order a client saw created exists; none is left PENDING_PAYMENT; only PAID and
 *   CANCELLED remain (the runs place and pay orders; they do not ship or refund);
 * - money as the platform (sandbox) sees it: a PAID order keeps exactly its paid charge, any
 *   other order none (everything else refunded in full); nothing PENDING, no refund unsettled;
 * - (counted, not a problem) Idempotency-Keys whose create died before its order existed;
 * - conservation per product: on_hand = initial − units of PAID orders; reserved = the held
 *   reservations = 0; committed reservations exactly those of PAID orders;
 * - each PAID order has exactly one `payment.succeeded` notification, for its buyer, and no
 *   other order has one.
 * Shared by test/system/checkout-kill.system.spec.ts and the chaos runner.
 */
import type { Knex } from "knex";
import type { ChildHandle } from "./proc";

export interface CheckOptions {
  /** The products the run used; their stock is checked. */
  products: { id: string }[];
  /** Each product's on_hand when the run began. */
  initialStock(productId: string): number;
  /** Orders a client saw created (answered 201). */
  knownOrderIds?: Iterable<string>;
  /** The nodes' output, for a payment's trail in a problem report. */
  logs?: ChildHandle[];
}

export interface CheckResult {
  problems: string[];
  figures: { orders: number; byStatus: Record<string, number>; payments: number; charges: number; refundedCharges: number; autoRefunds: number; notified: number; orphanClaims: number };
  /** Idempotency-Keys claimed by a create that never produced its order (its process died). */
  orphanClaims: string[];
}

export async function checkCheckoutInvariants(db: (service: string) => Knex, opts: CheckOptions): Promise<CheckResult> {
  const problems: string[] = [];
  const orders = (await db("order")("orders").select("id", "user_id", "status", "paid_payment_id", "reservation_expires_at")) as { id: string; user_id: string; status: string; paid_payment_id: string | null; reservation_expires_at: number | null }[];
  const items = (await db("order")("order_items").select("order_id", "product_id", "quantity")) as { order_id: string; product_id: string; quantity: number }[];
  const orderRefunds = (await db("order")("order_refunds").select("id", "order_id", "payment_id", "status")) as { id: string; order_id: string; payment_id: string; status: string }[];
  const payments = (await db("payment")("payments").select("id", "order_id", "status", "amount")) as { id: string; order_id: string; status: string; amount: number }[];
  const sbxPayments = (await db("payment")("sandbox_payments").select("payment_id", "status")) as { payment_id: string; status: string }[];
  const sbxRefunds = (await db("payment")("sandbox_refunds").select("payment_id", "amount")) as { payment_id: string; amount: number }[];
  const payRefunds = (await db("payment")("refunds").select("id", "payment_id", "status")) as { id: string; payment_id: string; status: string }[];
  const stock = (await db("product")("products").select("id", "on_hand", "reserved")) as { id: string; on_hand: number; reserved: number }[];
  const holds = (await db("product")("reservations").select("order_id", "product_id", "quantity", "status")) as { order_id: string; product_id: string; quantity: number; status: string }[];
  const notes = (await db("notification")("notifications").where({ type: "payment.succeeded" }).select("user_id", "data")) as { user_id: string; data: string }[];

  const byStatus: Record<string, number> = {};
  for (const o of orders) byStatus[o.status] = (byStatus[o.status] ?? 0) + 1;
  const paid = new Map(orders.filter((o) => o.status === "PAID").map((o) => [o.id, o]));
  for (const id of opts.knownOrderIds ?? []) if (!orders.some((o) => o.id === id)) problems.push(`order ${id} answered 201 but is not in the database`);
  // (1) nothing left waiting for payment
  for (const o of orders) if (o.status === "PENDING_PAYMENT") problems.push(`order ${o.id} still PENDING_PAYMENT (hold expired ${Date.now() - Number(o.reservation_expires_at)} ms ago)`);
  for (const o of orders) if (o.status !== "PAID" && o.status !== "CANCELLED") problems.push(`order ${o.id} in unexpected status ${o.status}`);
  // (2) money, as the platform sees it: charges kept = succeeded and not refunded in full
  const refundedAt = new Map<string, number>();
  for (const r of sbxRefunds) refundedAt.set(r.payment_id, (refundedAt.get(r.payment_id) ?? 0) + Number(r.amount));
  const sbx = new Map(sbxPayments.map((s) => [s.payment_id, s.status]));
  const describeOrder = async (id: string) => {
    const o = orders.find((x) => x.id === id);
    const hist = (await db("order")("order_history").where({ order_id: id }).orderBy("seq").select("status", "at")) as { status: string; at: number }[];
    const rs = holds.filter((h) => h.order_id === id);
    const rows = (await db("product")("reservations").where({ order_id: id }).select("product_id", "quantity", "status", "expires_at", "updated_at")) as Record<string, unknown>[];
    const ps = payments.filter((p) => p.order_id === id).map((p) => `${p.id}:${p.status}/sbx=${sbx.get(p.id) ?? "-"}`);
    const base = rs.length ? Math.min(...rows.map((r) => Number(r.expires_at))) : 0;
    return `{status ${o?.status}; history ${hist.map((h) => `${h.status}@${Number(h.at) - base}`).join(" ")}; holds ${rows.map((r) => `${String(r.product_id).slice(0, 8)}x${r.quantity}:${r.status}@${Number(r.updated_at) - base}`).join(" ")}; payments ${ps.join(" ")}; refunds ${orderRefunds.filter((r) => r.order_id === id).map((r) => `${r.id}:${r.status}`).join(" ")} (times in ms relative to hold expiry)}`;
  };
  const kept = new Map<string, string[]>();
  let charges = 0;
  let refundedCharges = 0;
  for (const p of payments) {
    if (sbx.get(p.id) !== "succeeded") continue;
    charges++;
    if ((refundedAt.get(p.id) ?? 0) >= Number(p.amount)) {
      refundedCharges++;
      continue;
    }
    kept.set(p.order_id, [...(kept.get(p.order_id) ?? []), p.id]);
    if (p.status !== "SUCCEEDED") {
      const trail = (opts.logs ?? []).flatMap((c) => c.lines.filter((l) => l.includes(p.id)).map((l) => `[${c.name}] ${(l.match(/"msg":"([^"]{0,200})/) ?? [l, l.slice(0, 200)])[1]}`));
      problems.push(`payment ${p.id} (order ${p.order_id}) charged at the platform but ${p.status} here; logs: ${trail.slice(0, 4).join(" | ") || "none"}`);
    }
  }
  for (const o of orders) {
    const k = kept.get(o.id) ?? [];
    if (o.status === "PAID" && (k.length !== 1 || k[0] !== o.paid_payment_id))
      problems.push(`PAID order ${o.id}: charges kept ${JSON.stringify(k)}, paid payment ${o.paid_payment_id} ${await describeOrder(o.id)}`);
    if (o.status !== "PAID" && k.length) problems.push(`${o.status} order ${o.id}: charges kept ${JSON.stringify(k)} (never refunded) ${await describeOrder(o.id)}`);
  }
  for (const p of payments) if (p.status === "PENDING") problems.push(`payment ${p.id} (order ${p.order_id}) still PENDING`);
  for (const r of payRefunds) if (r.status !== "SUCCEEDED") problems.push(`payment-side refund ${r.id} ${r.status}`);
  for (const r of orderRefunds) if (r.status !== "SUCCEEDED") problems.push(`order-side refund ${r.id} (order ${r.order_id}) ${r.status}`);
  // An Idempotency-Key claimed by a create whose process died before the order existed is not
  // a problem by itself: a retry with that key takes the claim over once it is stale (the
  // order service's staleClaimMs). Counted here; the kill test retries such keys at the end.
  const keys = (await db("order")("idempotency_keys").select("idem_key", "resource_id", "created_at")) as { idem_key: string; resource_id: string; created_at: number }[];
  const orderSet = new Set(orders.map((o) => o.id));
  const orphanClaims = keys.filter((k) => !orderSet.has(k.resource_id)).map((k) => k.idem_key);
  // (3) conservation
  for (const p of opts.products) {
    const s = stock.find((x) => x.id === p.id)!;
    const initial = opts.initialStock(p.id);
    const sold = items.filter((i) => i.product_id === p.id && paid.has(i.order_id)).reduce((n, i) => n + Number(i.quantity), 0);
    if (Number(s.on_hand) !== initial - sold) problems.push(`product ${p.id}: on_hand ${s.on_hand}, expected ${initial} − ${sold} sold = ${initial - sold}`);
    const held = holds.filter((h) => h.product_id === p.id && h.status === "held").reduce((n, h) => n + Number(h.quantity), 0);
    if (Number(s.reserved) !== held) problems.push(`product ${p.id}: reserved ${s.reserved} but holds sum to ${held}`);
    if (Number(s.reserved) !== 0) problems.push(`product ${p.id}: reserved ${s.reserved} at the end`);
  }
  const committedOrders = new Set(holds.filter((h) => h.status === "committed").map((h) => h.order_id));
  for (const id of committedOrders) if (!paid.has(id)) problems.push(`order ${id}: stock committed but the order is not PAID ${await describeOrder(id)}`);
  for (const id of paid.keys()) if (!committedOrders.has(id)) problems.push(`PAID order ${id}: no committed reservation`);
  // (4) notifications
  const notified = new Map<string, { user: string; n: number }>();
  for (const n of notes) {
    const orderId = JSON.parse(n.data)?.orderId as string;
    const e = notified.get(orderId) ?? { user: n.user_id, n: 0 };
    e.n++;
    notified.set(orderId, e);
  }
  for (const o of paid.values()) {
    const e = notified.get(o.id);
    if (!e || e.n !== 1 || e.user !== o.user_id) problems.push(`PAID order ${o.id}: ${e?.n ?? 0} payment.succeeded notification(s)${e && e.user !== o.user_id ? " for another user" : ""}`);
  }
  for (const [id, e] of notified) if (!paid.has(id)) problems.push(`order ${id} not PAID but ${e.n} payment.succeeded notification(s)`);
  return {
    problems,
    figures: { orders: orders.length, byStatus, payments: payments.length, charges, refundedCharges, autoRefunds: orderRefunds.length, notified: notified.size, orphanClaims: orphanClaims.length },
    orphanClaims,
  };
}
