/**
 * The recommendation service's consumers (EventsMixin: outbox, durable queue, inbox; each
 * message applied once inside the inbox transaction): purchases in and out, and the copy of
 * the product fields the ranking needs, applied only when newer than the copy. Each change the
 * replicas' memory must forget commits with a `recommendation.model_changed` event
 * (`modelChanged`, recommendation.service.ts). Handlers run with the service as `this`.
 */
import type { Knex } from "knex";
import { isFullRefund, paidOrderOf } from "./recommendation.domain";
import * as repo from "./recommendation.repo";
import type { PublicProduct, RecThis } from "./recommendation.this";
import { Events } from "../../proto/gen/contracts";

export function productFields(p: PublicProduct & { version: number }, deleted = false): repo.ProductFields {
  return {
    id: p.id,
    name: p.name,
    category: p.category,
    brand: p.brand ?? null,
    available: p.stock?.available ?? 0,
    deleted,
    version: p.version,
  };
}

async function onPaid(this: RecThis, trx: Knex.Transaction, payload: unknown): Promise<void> {
  const order = paidOrderOf(payload);
  const change = order && (await repo.applyPaidOrder(trx, order, Date.now()));
  if (change) await this.modelChanged(trx, { userIds: [change.userId], productIds: change.productIds });
}
async function onRefunded(this: RecThis, trx: Knex.Transaction, payload: unknown): Promise<void> {
  const change = isFullRefund(payload) ? await repo.applyRefundedOrder(trx, payload, Date.now()) : undefined;
  if (change) await this.modelChanged(trx, { userIds: [change.userId], productIds: change.productIds });
}
async function applyProduct(this: RecThis, trx: Knex.Transaction, fields: repo.ProductFields): Promise<void> {
  if (await repo.applyProduct(trx, fields, Date.now())) await this.modelChanged(trx, { productIds: [fields.id] });
}
const onProduct = (deleted: boolean) =>
  async function (this: RecThis, trx: Knex.Transaction, payload: PublicProduct): Promise<void> {
    if (typeof payload?.id === "string" && typeof payload.version === "number")
      await applyProduct.call(this, trx, productFields(payload, deleted));
  };
async function onStock(this: RecThis, trx: Knex.Transaction, payload: { product?: PublicProduct; deleted?: boolean }): Promise<void> {
  if (payload?.product && typeof payload.product.version === "number")
    await applyProduct.call(this, trx, productFields(payload.product, Boolean(payload.deleted)));
}

export const recommendationConsumers = {
  [Events.OrderPaid]: onPaid,
  [Events.OrderRefunded]: onRefunded,
  [Events.ProductCreated]: onProduct(false),
  [Events.ProductUpdated]: onProduct(false),
  [Events.ProductDeleted]: onProduct(true),
  [Events.StockChanged]: onStock,
};
