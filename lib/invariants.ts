/**
 * The checkout invariants of a settled system, read from the services' databases (order,
 * payment, product, notification). Run by the kill test and the chaos runs once the system has
 * settled (test/system/checkout-kill.system.spec.ts, test/support/chaos.ts), and by operators
 * through the REPL's `invariants` command (lib/repl-commands.ts) on a system with no checkout in
 * flight. Its negative controls (planted rows it must name) are lib/invariants.int.spec.ts.
 * - every order a client was answered 201 for (`knownOrderIds`) exists; none is left
 *   PENDING_PAYMENT; every order is in one of `finalStatuses`;
 * - money, as the platform sees it, to the minor unit: a charge an order keeps (its paid
 *   payment) is refunded exactly what the order counts as refunded (0, or its partial refunds
 *   summed, or all of it); every other charge (a second one, one the order could not take, one
 *   of no existing order) is refunded exactly its amount, never more; each refund the platform
 *   made is one succeeded refund of the payment service (same id, payment and amount) and the
 *   other way round, and the order's succeeded refunds are those; an order that took money
 *   (PAID, SHIPPED, DELIVERED, REFUNDED) keeps a charge of its own, no other order keeps one;
 *   nothing PENDING, no refund unsettled. "The platform" is the sandbox's own records for its
 *   payments; Alipay's and WeChat Pay's records are theirs, so for those payments the payment
 *   service's records stand in for them (counted in `figures.offPlatformPayments`);
 * - (counted, not a problem) Idempotency-Keys whose create died before its order existed;
 * - stock per product (on_hand ≥ reserved ≥ 0 is the product table's own CHECK): reserved = the
 *   held reservations = 0 (nothing in flight), and, given each product's stock at the start (`initialStock`: a run without
 *   refunds or returns), on_hand = initial − units of the orders that took money; stock
 *   committed exactly for the orders that took money (a REFUNDED one's may be back: returned),
 *   and returned only for REFUNDED ones and CANCELLED ones that kept no charge;
 * - each order that took money has exactly one `payment.succeeded` notification, for its
 *   buyer, and no other order has one.
 * Limit: a checkout in flight (an order waiting for payment, a payment or refund not settled,
 * stock held) is reported as a problem: the check is for a system at rest.
 */
import type { Knex } from "knex";

/** The statuses an order can rest in. */
export const SETTLED_STATUSES = ["PAID", "SHIPPED", "DELIVERED", "CANCELLED", "REFUNDED"] as const;
/** The statuses of an order that took money (and kept its stock). */
const TOOK_MONEY = ["PAID", "SHIPPED", "DELIVERED", "REFUNDED"];

export interface CheckOptions {
  /** The products whose stock is checked (default: every product). */
  products?: { id: string }[];
  /** Each product's on_hand when the run began; without it, on_hand is not compared. */
  initialStock?(productId: string): number;
  /** Orders a client was answered 201 for: each must exist. */
  knownOrderIds?: Iterable<string>;
  /** The statuses an order may be in (default SETTLED_STATUSES; a run that never ships: PAID and CANCELLED). */
  finalStatuses?: readonly string[];
  /** The nodes' output, for a payment's trail in a problem report. */
  logs?: { name: string; lines: string[] }[];
}

export interface CheckResult {
  problems: string[];
  figures: {
    orders: number;
    byStatus: Record<string, number>;
    /** Distinct order ids of `knownOrderIds` looked up (each must exist). */
    knownOrders: number;
    payments: number;
    /** Payments the platform charged. */
    charges: number;
    /** Charges refunded in full (exactly their amount). */
    refundedCharges: number;
    /** Kept charges partly refunded (exactly what their order counts). */
    partlyRefundedCharges: number;
    /** Refunds the order service recorded (automatic ones included). */
    autoRefunds: number;
    /** Refunds the platform made. */
    platformRefunds: number;
    notified: number;
    orphanClaims: number;
    /** Payments of Alipay or WeChat Pay, whose platform records are read as the payment service's. */
    offPlatformPayments: number;
  };
  /** Idempotency-Keys claimed by a create that never produced its order (its process died). */
  orphanClaims: string[];
}

type OrderRow = {
  id: string;
  user_id: string;
  status: string;
  paid_payment_id: string | null;
  paid_amount: number;
  refunded_amount: number;
  reservation_expires_at: number | null;
};

export async function checkCheckoutInvariants(db: (service: string) => Knex, opts: CheckOptions): Promise<CheckResult> {
  const problems: string[] = [];
  const orders = await db("order")("orders").select<OrderRow[]>(
    "id",
    "user_id",
    "status",
    "paid_payment_id",
    "paid_amount",
    "refunded_amount",
    "reservation_expires_at",
  );
  const items = await db("order")("order_items").select<
    {
      order_id: string;
      product_id: string;
      quantity: number;
    }[]
  >("order_id", "product_id", "quantity");
  const orderRefunds = await db("order")("order_refunds").select<
    {
      id: string;
      order_id: string;
      payment_id: string;
      amount: number;
      status: string;
    }[]
  >("id", "order_id", "payment_id", "amount", "status");
  const payments = await db("payment")("payments").select<
    {
      id: string;
      order_id: string;
      status: string;
      amount: number;
      provider: string;
    }[]
  >("id", "order_id", "status", "amount", "provider");
  const sbxPayments = await db("payment")("sandbox_payments").select<{ payment_id: string; status: string }[]>("payment_id", "status");
  const sbxRefunds = await db("payment")("sandbox_refunds").select<
    {
      refund_id: string;
      payment_id: string;
      amount: number;
    }[]
  >("refund_id", "payment_id", "amount");
  const payRefunds = await db("payment")("refunds").select<
    {
      id: string;
      payment_id: string;
      amount: number;
      status: string;
    }[]
  >("id", "payment_id", "amount", "status");
  const stock = await db("product")("products").select<
    {
      id: string;
      on_hand: number;
      reserved: number;
    }[]
  >("id", "on_hand", "reserved");
  const holds = await db("product")("reservations").select<
    {
      order_id: string;
      product_id: string;
      quantity: number;
      status: string;
    }[]
  >("order_id", "product_id", "quantity", "status");
  const notes = await db("notification")("notifications").where({ type: "payment.succeeded" }).select<
    {
      user_id: string;
      data: string;
    }[]
  >("user_id", "data");

  const byStatus: Record<string, number> = {};
  for (const o of orders) byStatus[o.status] = (byStatus[o.status] ?? 0) + 1;
  const orderById = new Map(orders.map((o) => [o.id, o]));
  const tookMoney = new Map(orders.filter((o) => TOOK_MONEY.includes(o.status)).map((o) => [o.id, o]));
  const finalStatuses: readonly string[] = opts.finalStatuses ?? SETTLED_STATUSES;
  const known = new Set(opts.knownOrderIds ?? []);
  for (const id of known) if (!orderById.has(id)) problems.push(`order ${id} answered 201 but is not in the database`);
  // (1) nothing left waiting for payment
  for (const o of orders)
    if (o.status === "PENDING_PAYMENT")
      problems.push(`order ${o.id} still PENDING_PAYMENT (hold expired ${Date.now() - Number(o.reservation_expires_at)} ms ago)`);
  for (const o of orders)
    if (o.status !== "PENDING_PAYMENT" && !finalStatuses.includes(o.status))
      problems.push(`order ${o.id} in unexpected status ${o.status}`);
  // (2) money, as the platform sees it. A charge is a payment the sandbox recorded as
  // succeeded; what went back is the sum of the sandbox's refunds of it. Compared exactly:
  // "at least its amount" would let a refund made twice pass. For a payment of Alipay or WeChat
  // Pay, whose records are the platform's, the payment service's own records stand in.
  const paymentById = new Map(payments.map((p) => [p.id, p]));
  const onSandbox = (paymentId: string) => (paymentById.get(paymentId)?.provider ?? "sandbox") === "sandbox";
  const offPlatform = payments.filter((p) => !onSandbox(p.id));
  const refundedAt = new Map<string, number>();
  for (const r of sbxRefunds) refundedAt.set(r.payment_id, (refundedAt.get(r.payment_id) ?? 0) + Number(r.amount));
  for (const r of payRefunds)
    if (r.status === "SUCCEEDED" && !onSandbox(r.payment_id))
      refundedAt.set(r.payment_id, (refundedAt.get(r.payment_id) ?? 0) + Number(r.amount));
  const sbx = new Map(sbxPayments.map((s) => [s.payment_id, s.status]));
  const charged = (paymentId: string) =>
    onSandbox(paymentId) ? sbx.get(paymentId) === "succeeded" : paymentById.get(paymentId)?.status === "SUCCEEDED";
  const describeOrder = async (id: string) => {
    const o = orderById.get(id);
    const hist = await db("order")("order_history").where({ order_id: id }).orderBy("seq").select<
      {
        status: string;
        at: number;
      }[]
    >("status", "at");
    const rs = holds.filter((h) => h.order_id === id);
    const rows = await db("product")("reservations")
      .where({ order_id: id })
      .select<{ product_id: string; quantity: number; status: string; expires_at: number; updated_at: number }[]>(
        "product_id",
        "quantity",
        "status",
        "expires_at",
        "updated_at",
      );
    const ps = payments.filter((p) => p.order_id === id).map((p) => `${p.id}:${p.status}/sbx=${sbx.get(p.id) ?? "-"}`);
    const base = rs.length ? Math.min(...rows.map((r) => Number(r.expires_at))) : 0;
    return `{status ${o?.status}; history ${hist.map((h) => `${h.status}@${Number(h.at) - base}`).join(" ")}; holds ${rows.map((r) => `${String(r.product_id).slice(0, 8)}x${r.quantity}:${r.status}@${Number(r.updated_at) - base}`).join(" ")}; payments ${ps.join(" ")}; refunds ${orderRefunds
      .filter((r) => r.order_id === id)
      .map((r) => `${r.id}:${r.status}`)
      .join(" ")} (times in ms relative to hold expiry)}`;
  };
  // The three records of a refund agree: the platform's, the payment service's, the order
  // service's (one refund id throughout). A refund row the platform has and the payment
  // service does not (or the other way round) is money moved that nobody accounts for.
  const payRefundById = new Map(payRefunds.map((r) => [r.id, r]));
  const sbxRefundIds = new Set(sbxRefunds.map((r) => r.refund_id));
  for (const r of sbxRefunds) {
    const pr = payRefundById.get(r.refund_id);
    if (!pr || pr.status !== "SUCCEEDED" || pr.payment_id !== r.payment_id || Number(pr.amount) !== Number(r.amount))
      problems.push(
        `platform refund ${r.refund_id} (payment ${r.payment_id}, ${r.amount}): the payment service has ${pr ? `a ${pr.status} refund of payment ${pr.payment_id} (${pr.amount})` : "no such refund"}`,
      );
    if (!charged(r.payment_id)) problems.push(`platform refund ${r.refund_id}: payment ${r.payment_id} was never charged at the platform`);
  }
  for (const r of payRefunds)
    if (r.status === "SUCCEEDED" && onSandbox(r.payment_id) && !sbxRefundIds.has(r.id))
      problems.push(`payment-side refund ${r.id} (payment ${r.payment_id}, ${r.amount}) SUCCEEDED but the platform made no such refund`);
  for (const r of orderRefunds) {
    if (r.status !== "SUCCEEDED") continue;
    const pr = payRefundById.get(r.id);
    if (!pr || pr.status !== "SUCCEEDED" || pr.payment_id !== r.payment_id || Number(pr.amount) !== Number(r.amount))
      problems.push(
        `order-side refund ${r.id} (order ${r.order_id}, payment ${r.payment_id}, ${r.amount}) SUCCEEDED; the payment service has ${pr ? `a ${pr.status} refund of payment ${pr.payment_id} (${pr.amount})` : "no such refund"}`,
      );
  }
  let charges = 0;
  let refundedCharges = 0;
  let partlyRefundedCharges = 0;
  for (const p of payments) {
    if (!charged(p.id)) continue;
    charges++;
    const amount = Number(p.amount);
    const back = refundedAt.get(p.id) ?? 0;
    const o = orderById.get(p.order_id);
    if (p.status !== "SUCCEEDED") {
      const trail = (opts.logs ?? []).flatMap((c) =>
        c.lines.filter((l) => l.includes(p.id)).map((l) => `[${c.name}] ${(l.match(/"msg":"([^"]{0,200})/) ?? [l, l.slice(0, 200)])[1]}`),
      );
      problems.push(
        `payment ${p.id} (order ${p.order_id}) charged at the platform but ${p.status} here; logs: ${trail.slice(0, 4).join(" | ") || "none"}`,
      );
    }
    if (back > amount) problems.push(`payment ${p.id} (order ${p.order_id}) over-refunded: ${back} back for a charge of ${amount}`);
    if (o && o.paid_payment_id === p.id) {
      // The order's kept charge: refunded exactly what the order counts (0 in these runs, or
      // its partial refunds summed, or all of it for a REFUNDED order).
      const counted = Number(o.refunded_amount);
      const byOrderRefunds = orderRefunds
        .filter((r) => r.payment_id === p.id && r.status === "SUCCEEDED")
        .reduce((n, r) => n + Number(r.amount), 0);
      if (back !== counted || byOrderRefunds !== counted)
        problems.push(
          `${o.status} order ${o.id}: its kept charge ${p.id} of ${amount} was refunded ${back} at the platform, ${byOrderRefunds} by the order's refunds, and the order counts ${counted}`,
        );
      if (Number(o.paid_amount) !== amount)
        problems.push(`${o.status} order ${o.id}: paid_amount ${o.paid_amount}, but its kept charge ${p.id} is ${amount}`);
      if (back === amount) refundedCharges++;
      else if (back > 0) partlyRefundedCharges++;
      continue;
    }
    // Any other charge goes back in full, exactly once.
    if (back === amount) {
      refundedCharges++;
      continue;
    }
    if (back > amount) continue; // reported above
    if (!o) problems.push(`payment ${p.id}: charge of ${amount} kept (${back} refunded) for order ${p.order_id}, which does not exist`);
    else
      problems.push(
        `${o.status} order ${o.id}: charge ${p.id} of ${amount} kept (${back} refunded), its paid payment being ${o.paid_payment_id ?? "none"} ${await describeOrder(o.id)}`,
      );
  }
  // A charge the payment service has no row for belongs to no order anyone could refund.
  for (const s of sbxPayments)
    if (s.status === "succeeded" && !paymentById.has(s.payment_id))
      problems.push(`payment ${s.payment_id} charged at the platform but unknown to the payment service`);
  for (const o of orders) {
    const kept = o.paid_payment_id;
    if (kept && (!charged(kept) || paymentById.get(kept)?.order_id !== o.id))
      problems.push(
        `${o.status} order ${o.id}: its paid payment ${kept} is ${paymentById.has(kept) ? (charged(kept) ? `a charge of order ${paymentById.get(kept)!.order_id}` : "not a charge at the platform") : "unknown to the payment service"} ${await describeOrder(o.id)}`,
      );
    const takesMoney = TOOK_MONEY.includes(o.status);
    if (takesMoney && !kept) problems.push(`${o.status} order ${o.id}: no paid payment ${await describeOrder(o.id)}`);
    if (!takesMoney && kept) problems.push(`${o.status} order ${o.id}: paid payment ${kept} recorded`);
    // REFUNDED exactly when everything paid came back (a partial refund keeps the status).
    if (kept && (o.status === "REFUNDED") !== (Number(o.refunded_amount) === Number(o.paid_amount)))
      problems.push(`${o.status} order ${o.id}: refunded ${o.refunded_amount} of ${o.paid_amount}`);
  }
  for (const p of payments) if (p.status === "PENDING") problems.push(`payment ${p.id} (order ${p.order_id}) still PENDING`);
  for (const r of payRefunds) if (r.status !== "SUCCEEDED") problems.push(`payment-side refund ${r.id} ${r.status}`);
  for (const r of orderRefunds) if (r.status !== "SUCCEEDED") problems.push(`order-side refund ${r.id} (order ${r.order_id}) ${r.status}`);
  // An Idempotency-Key claimed by a create whose process died before the order existed is not
  // a problem by itself: a retry with that key takes the claim over once it is stale (the
  // order service's staleClaimMs). Counted here; the kill test retries such keys at the end.
  const keys = await db("order")("idempotency_keys").select<
    {
      idem_key: string;
      resource_id: string;
      created_at: number;
    }[]
  >("idem_key", "resource_id", "created_at");
  // A key names what its request created: an order, a refund, or a return (its request or its
  // approval): a claim naming none of them is the orphan.
  const returnIds = new Set((await db("order")("order_returns").select<{ id: string }[]>("id")).map((r) => r.id));
  const refundIds = new Set(orderRefunds.map((r) => r.id));
  const orphanClaims = keys
    .filter((k) => !orderById.has(k.resource_id) && !refundIds.has(k.resource_id) && !returnIds.has(k.resource_id))
    .map((k) => k.idem_key);
  // (3) conservation
  for (const p of opts.products ?? stock) {
    const s = stock.find((x) => x.id === p.id)!;
    if (opts.initialStock) {
      const initial = opts.initialStock(p.id);
      const sold = items.filter((i) => i.product_id === p.id && tookMoney.has(i.order_id)).reduce((n, i) => n + Number(i.quantity), 0);
      if (Number(s.on_hand) !== initial - sold)
        problems.push(`product ${p.id}: on_hand ${s.on_hand}, expected ${initial} − ${sold} sold = ${initial - sold}`);
    }
    const held = holds.filter((h) => h.product_id === p.id && h.status === "held").reduce((n, h) => n + Number(h.quantity), 0);
    if (Number(s.reserved) !== held) problems.push(`product ${p.id}: reserved ${s.reserved} but holds sum to ${held}`);
    if (Number(s.reserved) !== 0) problems.push(`product ${p.id}: reserved ${s.reserved} at the end`);
  }
  const committedOrders = new Set(holds.filter((h) => h.status === "committed").map((h) => h.order_id));
  for (const id of committedOrders)
    if (!tookMoney.has(id))
      problems.push(
        `${orderById.get(id)?.status ?? "unknown"} order ${id}: stock committed but the order took no money ${await describeOrder(id)}`,
      );
  // A refund of an order that never shipped puts its stock back (its lines committed → returned).
  const returnedOrders = new Set(holds.filter((h) => h.status === "returned").map((h) => h.order_id));
  for (const [id, o] of tookMoney)
    if (!committedOrders.has(id) && !(o.status === "REFUNDED" && returnedOrders.has(id)))
      problems.push(`${o.status} order ${id}: no committed reservation`);
  // Stock comes back for a REFUNDED order that never shipped, and for a CANCELLED one that kept
  // no charge but whose stock a rolled-back payment handler had committed (order.consumers.ts
  // onPaymentSucceeded: returnSoldStock).
  for (const id of returnedOrders) {
    const o = orderById.get(id);
    if (o?.status !== "REFUNDED" && !(o?.status === "CANCELLED" && !o.paid_payment_id))
      problems.push(
        `${o?.status ?? "unknown"} order ${id}: stock returned but the order is neither REFUNDED nor CANCELLED without a charge`,
      );
  }
  // (4) notifications
  const notified = new Map<string, { user: string; n: number }>();
  for (const n of notes) {
    // The notification's data, as the notification service stores it (NotificationData).
    const orderId = String((JSON.parse(n.data) as { orderId?: unknown } | null)?.orderId);
    const e = notified.get(orderId) ?? { user: n.user_id, n: 0 };
    e.n++;
    notified.set(orderId, e);
  }
  for (const o of tookMoney.values()) {
    const e = notified.get(o.id);
    if (!e || e.n !== 1 || e.user !== o.user_id)
      problems.push(
        `${o.status} order ${o.id}: ${e?.n ?? 0} payment.succeeded notification(s)${e && e.user !== o.user_id ? " for another user" : ""}`,
      );
  }
  for (const [id, e] of notified)
    if (!tookMoney.has(id)) problems.push(`order ${id} took no money but has ${e.n} payment.succeeded notification(s)`);
  return {
    problems,
    figures: {
      orders: orders.length,
      byStatus,
      knownOrders: known.size,
      payments: payments.length,
      charges,
      refundedCharges,
      partlyRefundedCharges,
      autoRefunds: orderRefunds.length,
      platformRefunds: sbxRefunds.length,
      notified: notified.size,
      orphanClaims: orphanClaims.length,
      offPlatformPayments: offPlatform.length,
    },
    orphanClaims,
  };
}
