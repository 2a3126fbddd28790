/**
 * The recommendation service's consumers (EventsMixin: outbox, durable queue, inbox; each
 * message applied once inside the inbox transaction): purchases in and out, and the copy of
 * the product fields the ranking needs, applied only when newer than the copy.
 */
import type { EventHandler } from "../../lib/events/consumer";
import { isFullRefund, paidOrderOf } from "./recommendation.domain";
import * as repo from "./recommendation.repo";
import type { PublicProduct } from "./recommendation.this";
import { Events } from "../../proto/gen/contracts";

export function productFields(p: PublicProduct & { version: number }, deleted = false): repo.ProductFields {
  return { id: p.id, name: p.name, category: p.category, brand: p.brand ?? null, available: p.stock?.available ?? 0, deleted, version: p.version };
}

const onPaid: EventHandler = async (trx, payload) => {
  const order = paidOrderOf(payload);
  if (order) await repo.applyPaidOrder(trx, order, Date.now());
};
const onRefunded: EventHandler = async (trx, payload) => {
  if (isFullRefund(payload)) await repo.applyRefundedOrder(trx, payload, Date.now());
};
const onProduct =
  (deleted: boolean): EventHandler =>
  async (trx, payload: PublicProduct) => {
    if (typeof payload?.id === "string" && typeof payload.version === "number") await repo.applyProduct(trx, productFields(payload, deleted), Date.now());
  };
const onStock: EventHandler = async (trx, payload: { product?: PublicProduct; deleted?: boolean }) => {
  if (payload?.product && typeof payload.product.version === "number") await repo.applyProduct(trx, productFields(payload.product, Boolean(payload.deleted)), Date.now());
};

export const recommendationConsumers = {
  [Events.OrderPaid]: onPaid,
  [Events.OrderRefunded]: onRefunded,
  [Events.ProductCreated]: onProduct(false),
  [Events.ProductUpdated]: onProduct(false),
  [Events.ProductDeleted]: onProduct(true),
  [Events.StockChanged]: onStock,
};
