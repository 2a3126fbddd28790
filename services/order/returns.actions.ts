/**
 * Returns: a buyer asks (within RETURN_WINDOW_DAYS of delivery, never more than was bought
 * and not yet returned), an admin approves (a refund of the amount, and the goods back on the
 * shelf when `restock`) or rejects. Requests and approvals take an Idempotency-Key. Bound into
 * the `order` service by order.service.ts.
 */
import { randomUUID } from "node:crypto";
import type { AppConfig } from "../../lib/config";
import { requireUser } from "../../lib/context";
import { inTransaction } from "../../lib/db";
import { conflict, notFound, validationError } from "../../lib/errors";
import {
  REFUNDABLE,
  canDecide,
  refundAmount,
  refundable,
  returnRequestVerdict,
  returnValue,
  toPublicReturn,
  type OrderLineInput,
  type ReturnRecord,
} from "./order.domain";
import * as repo from "./order.repo";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { Events } from "../../proto/gen/contracts";
import { Params } from "../../proto/gen/params";
import type { TypedActions } from "../../lib/service-schema";
import { newRefundId, type Ctx, type NewRefund, type OrderThis } from "./order.this";

export function returnActions(config: AppConfig): TypedActions<OrderThis> {
  return {
    requestReturn: {
      auth: "user",
      rateLimit: "refunds",
      params: Params["order.requestReturn"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.requestReturn">>): Promise<ActionResponse<"order.requestReturn">> {
        const me = requireUser(ctx);
        const owned = await repo.findOrder(this.db, ctx.params.id);
        // Only the buyer asks; anyone else's order is not found.
        if (!owned || owned.userId !== me.id) throw notFound("Order");
        const { items, reason } = ctx.params;
        const ret = await this.withKey(
          ctx,
          { op: "order.requestReturn", orderId: owned.id, body: { items, reason } },
          randomUUID(),
          (id) => requestReturn(this, owned.id, id, items, reason, config.returnWindowDays),
          (id) => repo.findReturn(this.db, id),
        );
        ctx.meta.$statusCode = 201;
        ctx.meta.$location = `/api/orders/${owned.id}/returns`;
        return toPublicReturn(ret);
      },
    },

    listOrderReturns: {
      auth: "user",
      params: Params["order.listOrderReturns"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.listOrderReturns">>): Promise<ActionResponse<"order.listOrderReturns">> {
        const order = await this.ownOrder(ctx, ctx.params.id);
        const items = (await repo.returnsOf(this.db, order.id)).map(toPublicReturn);
        return { items, total: items.length, page: 1, pageSize: Math.max(items.length, 1) };
      },
    },

    listReturns: {
      auth: "admin",
      params: Params["order.listReturns"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.listReturns">>): Promise<ActionResponse<"order.listReturns">> {
        const page = ctx.params.page ?? 1;
        const pageSize = ctx.params.pageSize ?? 20;
        const { items, total } = await repo.listReturns(this.db, {
          status: ctx.params.status,
          limit: pageSize,
          offset: (page - 1) * pageSize,
        });
        return { items: items.map(toPublicReturn), total, page, pageSize };
      },
    },

    approveReturn: {
      auth: "admin",
      params: Params["order.approveReturn"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.approveReturn">>): Promise<ActionResponse<"order.approveReturn">> {
        const { id, amount, restock } = ctx.params;
        const ret = await this.withKey(
          ctx,
          { op: "order.approveReturn", returnId: id, body: { amount, restock } },
          id,
          (returnId) => decideReturn(this, returnId, { kind: "approve", amount, restock }),
          async (returnId) => {
            const r = await repo.findReturn(this.db, returnId);
            // Another admin's rejection is not this request's answer.
            if (r?.status === "REJECTED") throw conflict("This return was rejected meanwhile", [{ status: r.status }]);
            return r?.status === "APPROVED" ? r : undefined;
          },
        );
        return toPublicReturn(ret);
      },
    },

    rejectReturn: {
      auth: "admin",
      params: Params["order.rejectReturn"],
      async handler(this: OrderThis, ctx: Ctx<ActionParams<"order.rejectReturn">>): Promise<ActionResponse<"order.rejectReturn">> {
        return toPublicReturn(await decideReturn(this, ctx.params.id, { kind: "reject", reason: ctx.params.reason }));
      },
    },
  };
}

async function requestReturn(
  svc: OrderThis,
  orderId: string,
  returnId: string,
  items: OrderLineInput[],
  reason: string,
  windowDays: number,
): Promise<ReturnRecord> {
  return inTransaction(svc.db, async (trx) => {
    const o = (await repo.findOrderForUpdate(trx, orderId))!;
    const verdict = returnRequestVerdict(o, items, await repo.returnsOf(trx, o.id), Date.now(), windowDays);
    if ("conflict" in verdict) throw conflict(`Return refused: ${verdict.conflict}`, [{ status: o.status }]);
    if ("problems" in verdict) throw validationError("The return cannot be requested", verdict.problems);
    const now = Date.now();
    const ret: ReturnRecord = {
      id: returnId,
      orderId: o.id,
      userId: o.userId,
      status: "REQUESTED",
      items: verdict.lines,
      reason,
      amount: null,
      restock: null,
      refundId: null,
      decisionReason: null,
      createdAt: now,
      decidedAt: null,
    };
    await repo.insertReturn(trx, ret);
    await svc.publishEvent(trx, Events.ReturnRequested, {
      returnId,
      orderId: o.id,
      userId: o.userId,
      items: verdict.lines,
      reason,
      occurredAt: new Date(now).toISOString(),
    });
    return ret;
  });
}

/**
 * An admin's decision on a REQUESTED return, once, under the order's row lock. Approval
 * records the refund (PENDING, sent to the platform after the commit) and publishes
 * `return.approved`, on which the product service puts the lines back on the shelf when
 * `restock` (its step's undo of the sale, idempotent per return) and the buyer is told.
 */
async function decideReturn(
  svc: OrderThis,
  returnId: string,
  d: { kind: "approve"; amount?: number; restock: boolean } | { kind: "reject"; reason: string },
): Promise<ReturnRecord> {
  const found = await repo.findReturn(svc.db, returnId);
  if (!found) throw notFound("Return");
  let refund: NewRefund | undefined;
  await inTransaction(svc.db, async (trx) => {
    const o = (await repo.findOrderForUpdate(trx, found.orderId))!;
    const ret = (await repo.findReturn(trx, returnId))!;
    if (!canDecide(ret)) throw conflict(`This return was already ${ret.status.toLowerCase()}`, [{ status: ret.status }]);
    const now = Date.now();
    const at = new Date(now).toISOString();
    if (d.kind === "reject") {
      await repo.decideReturn(trx, ret.id, { status: "REJECTED", decisionReason: d.reason, decidedAt: now });
      await svc.publishEvent(trx, Events.ReturnRejected, {
        returnId: ret.id,
        orderId: o.id,
        userId: o.userId,
        reason: d.reason,
        occurredAt: at,
      });
      return;
    }
    if (!REFUNDABLE.includes(o.status) || !o.paidPaymentId)
      throw conflict(`An order in status ${o.status} has nothing left to refund`, [{ status: o.status }]);
    const left = refundable(o.paidAmount, o.paidPaymentId, await repo.refundsOf(trx, o.id));
    const verdict = refundAmount(d.amount ?? Math.min(returnValue(o, ret.items).amount, left), left);
    if ("problem" in verdict) {
      if (left <= 0) throw conflict(`Return refused: ${verdict.problem}`, [{ field: "amount", refundable: left }]);
      throw validationError(`Return refused: ${verdict.problem}`, [{ field: "amount", refundable: left }]);
    }
    const amount = { amount: verdict.amount, currency: o.total.currency };
    refund = {
      id: newRefundId(),
      orderId: o.id,
      paymentId: o.paidPaymentId,
      amount,
      status: "PENDING",
      reason: `return ${ret.id}`,
      createdAt: now,
      updatedAt: now,
    };
    await repo.insertRefund(trx, refund);
    await repo.decideReturn(trx, ret.id, { status: "APPROVED", amount, restock: d.restock, refundId: refund.id, decidedAt: now });
    await svc.publishEvent(trx, Events.ReturnApproved, {
      returnId: ret.id,
      orderId: o.id,
      userId: o.userId,
      amount,
      restock: d.restock,
      lines: ret.items,
      refundId: refund.id,
      occurredAt: at,
    });
    svc.sendAfterCommit(trx, refund);
  });
  return (await repo.findReturn(svc.db, returnId))!;
}
