/**
 * Payment service: payments through a platform (sandbox, Alipay, WeChat Pay), their
 * callbacks, refunds, and reconciliation. Handlers stay thin: rules live in
 * payment.domain.ts, SQL in payment.repo.ts, the platforms in platforms/.
 *
 * Guarantees and their limits:
 * - A payment changes state once: every outcome (callback or reconciliation) goes through
 *   `settle`, one transaction with a conditional `UPDATE … WHERE status IN (…)` and, when
 *   that moved the row, its `payment.succeeded` / `payment.failed` event in the outbox. A
 *   repeated or concurrent callback finds the row moved and changes nothing (and is still
 *   acknowledged, so the platform stops re-sending). A success after a failure is recorded
 *   (the buyer's money was taken); a failure after a success is not.
 * - A callback is trusted only after the platform's own verification (signature over the
 *   raw bytes, timestamp window, merchant/app) AND `checkBusiness` against our stored
 *   payment (id, amount, currency). A refusal answers the platform's nack (400) and
 *   changes nothing.
 * - Refunds are idempotent per refundId: the row is inserted first (primary key), under the
 *   payment's row lock with the sum of PENDING+SUCCEEDED refunds checked, then the platform
 *   is called with refundId as out_request_no / out_refund_no. A replay returns the stored
 *   result. An unknown platform answer leaves it PENDING; the sweep asks again with the same id.
 * - Reconciliation: each replica sweeps every PAYMENT_RECONCILE_INTERVAL_MS. A row is claimed
 *   by a conditional UPDATE of its `reconcile_after` (one replica wins), then queried and
 *   settled through `settle`. A PENDING payment past PAYMENT_PENDING_TIMEOUT_S that the
 *   platform reports unpaid, closed or unknown becomes FAILED (reason timeout, closed,
 *   not_found); a later success callback still records SUCCEEDED. Payments failed for want
 *   of an answer (timeout, not_found) stay watched for FAILED_WATCH_MS: the buyer can still
 *   pay such a trade, so they are asked about again once per lease, and a success is
 *   recorded even if its callback never comes (the order service refunds it when the order
 *   is gone).
 * - Trades expire with the order's reservation (`expiresAt`, sent to the platform as its
 *   time_expire), and a cancelled or expired order's open trades are closed at their
 *   platform: `order.cancelled` marks them (inbox transaction), reconciliation closes them
 *   (a remote call) right after and settles them FAILED; a trade the buyer paid meanwhile is
 *   recorded SUCCEEDED, and the order service refunds it.
 * - A success the order service never acknowledged (`order.paid`, or its automatic refund)
 *   within PAYMENT_ORDER_ACK_TIMEOUT_S — its event was dead-lettered — is handed over again
 *   by reconciliation (`order.applyPayment`, idempotent per payment): the order takes it if
 *   it still can, otherwise it is refunded automatically and the buyer told.
 * - The sandbox's callbacks are sent over HTTP by this process (SandboxNotifier, retries with
 *   backoff); retries in flight are lost if the process stops, and reconciliation then
 *   settles the payment from the sandbox's own records (sandbox_payments), PENDING or watched.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import type { Knex } from "knex";
import type { AppConfig } from "../../lib/config";
import { requireUser } from "../../lib/context";
import { inTransaction, isUniqueViolation } from "../../lib/db";
import { AppError, conflict, notFound, validationError } from "../../lib/errors";
import { countBusiness } from "../../lib/metrics";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin } from "../../mixins/events.mixin";
import {
  fromStatesFor,
  iso,
  newPaymentId,
  paidAtMs,
  payloadColumns,
  pendingKey,
  reconcileOutcome,
  refundProblem,
  refundStatusOf,
  sameRefund,
  toPaymentView,
  toRefundView,
  type Money,
  type Outcome,
  type PaymentRecord,
  type RefundRecord,
  movedAmountProblem,
} from "./payment.domain";
import * as repo from "./payment.repo";
import { sandboxActions, sandboxKeyEnv, sandboxMethods } from "./sandbox";
import type { Ctx, PaymentServiceThis } from "./payment.this";
import { callAction } from "../../lib/call";
import { periodic } from "../../lib/periodic";
import {
  PaymentPlatformError,
  PaymentVerificationError,
  checkBusiness,
  createPlatforms,
  describePaymentConfig,
  parsePaymentConfig,
  type PaymentConfig,
  type PaymentPlatform,
  type PlatformHttpResponse,
  type PlatformName,
  type RefundResult,
  type SandboxStateStore,
} from "./platforms";
import { Events } from "../../proto/gen/contracts";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";

/** Rows handled per sweep pass (payments, then refunds). */
const SWEEP_BATCH = 100;
/**
 * How long a payment the reconciliation failed for want of an answer is still asked about
 * (once per lease): a late payment whose callback was lost is then recorded SUCCEEDED, and
 * the order service refunds it if the order can no longer take it. A day, and at least as
 * long as a trade can be paid (its time_expire is the reservation's end) plus an hour.
 */
const failedWatchMs = (reservationTtlS: number) => Math.max(24 * 3600 * 1000, reservationTtlS * 1000 + 3600 * 1000);

// ---- configuration ----

export function loadPaymentConfig(config: AppConfig, env: Record<string, string | undefined> = process.env): PaymentConfig {
  const options = { mode: config.mode, sandbox: config.payments.sandbox, production: config.production };
  // No key file is made for a sandbox that is off.
  const wanted = options.sandbox ?? !options.production;
  return parsePaymentConfig(wanted ? sandboxKeyEnv(config, env) : env, options);
}

/** A payment or a refund moves money: Money's contract allows 0 (a free product), these do not. */
function assertMoves(amount: Money): void {
  const problem = movedAmountProblem(amount);
  if (problem) throw validationError(problem, [{ field: "amount.amount", message: problem }]);
}

function httpReply(ctx: Ctx<unknown>, r: PlatformHttpResponse): string | null {
  ctx.meta.$statusCode = r.status;
  const headers: Record<string, string> = {};
  let type: string | undefined;
  for (const [k, v] of Object.entries(r.headers)) {
    if (k.toLowerCase() === "content-type") type = v;
    else headers[k] = v;
  }
  ctx.meta.$responseType = type ?? "text/plain; charset=utf-8";
  ctx.meta.$responseHeaders = headers;
  return r.body === "" ? null : r.body;
}

export function createPaymentService(config: AppConfig, env: Record<string, string | undefined> = process.env): TypedServiceSchema<PaymentServiceThis> {
  // Parsed when the broker is composed: a bad key or half a merchant configuration stops the start.
  const paymentConfig = loadPaymentConfig(config, env);
  const timeoutMs = config.payments.pendingTimeoutS * 1000;
  /** A claimed row is left to its claimer this long before another sweep may try it. */
  const leaseMs = Math.max(60_000, 2 * config.payments.reconcileIntervalMs);
  const ackTimeoutMs = config.payments.orderAckTimeoutS * 1000;
  const FAILED_WATCH_MS = failedWatchMs(config.reservations.ttlSeconds);

  return {
    name: "payment",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [
      EventsMixin({
        name: "payment",
        config,
        consumes: {
          // The order took the success: reconciliation has nothing to hand over.
          async [Events.OrderPaid](this: PaymentServiceThis, trx: Knex.Transaction, p: { paymentId: string }) {
            await repo.acknowledgeByOrder(trx, p.paymentId, Date.now());
          },
          // Cancelled or expired: its open trades are closed at their platforms. The close is a
          // remote call, so it is not made in this inbox transaction: the trades are marked,
          // and reconciliation (woken after the commit) closes them, retrying until it can.
          async [Events.OrderCancelled](this: PaymentServiceThis, trx: Knex.Transaction, p: { orderId: string }) {
            if (await repo.requestClose(trx, p.orderId, Date.now())) trx.executionPromise.then(() => this.reconcileSoon(), () => undefined);
          },
        },
      }),
      DbMixin({ name: "payment", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      /** For the order service: a payment of an order with a platform (not routed). */
      create: {
        visibility: "public",
        params: Params["payment.create"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.create">>): Promise<ActionResponse<"payment.create">> {
          const { orderId, userId, provider, subject, expiresAt } = ctx.params;
          assertMoves(ctx.params.amount);
          if (expiresAt <= Date.now()) throw conflict("The order's reservation has expired; it can no longer be paid", [{ field: "expiresAt" }]);
          const amount = { amount: ctx.params.amount.amount, currency: ctx.params.amount.currency };
          const platform = this.platformFor(provider);
          if (await repo.hasSucceededPayment(this.db, orderId)) throw conflict("This order is already paid", [{ field: "orderId", orderId }]);
          const key = pendingKey(orderId, provider, amount);
          const reusable = await repo.findByPendingKey(this.db, key);
          if (reusable) return toPaymentView(reusable);

          const id = newPaymentId();
          let created;
          try {
            created = await platform.create({
              paymentId: id, orderId, amountMinor: amount.amount, currency: amount.currency, subject, expiresAt,
              notifyUrl: `${this.publicUrl()}/api/payments/notify/${provider}`,
            });
          } catch (err) {
            // The platform's own refusal (an amount or a deadline it does not take): its message says which.
            if (err instanceof PaymentPlatformError && err.reason === "invalid_request") throw validationError(`The payment platform refused the payment: ${err.message}`);
            if (err instanceof AppError) throw err;
            this.logger.warn(`payment.create: ${provider} did not answer`, err instanceof Error ? err.message : err);
            throw new AppError("SERVICE_UNAVAILABLE", "The payment platform is unavailable; try again later");
          }
          const now = Date.now();
          const record: PaymentRecord = {
            id, orderId, userId, provider, status: "PENDING", amount, subject, ...payloadColumns(created),
            providerTxnId: null, failureReason: null, reconcileAfter: now + timeoutMs, paidAt: null, expiresAt, createdAt: now, updatedAt: now,
          };
          try {
            await inTransaction(this.db, async (trx) => {
              if (await repo.hasSucceededPayment(trx, orderId)) throw conflict("This order is already paid", [{ field: "orderId", orderId }]);
              await repo.insertPayment(trx, record, key);
            });
          } catch (err) {
            // A concurrent create of the same order, provider and amount won: reuse its payment.
            if (isUniqueViolation(err)) {
              const winner = await repo.findByPendingKey(this.db, key);
              if (winner) return toPaymentView(winner);
            }
            throw err;
          }
          return toPaymentView(record);
        },
      },

      get: {
        auth: "user",
        // Unknown fields (an injected userId) are dropped: ownership alone decides, 404.
        params: Params["payment.get"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.get">>): Promise<ActionResponse<"payment.get">> {
          const user = requireUser(ctx);
          const p = await repo.findPayment(this.db, ctx.params.id);
          // Someone else's payment is a 404: its existence is not revealed.
          if (!p || (p.userId !== user.id && user.role !== "admin")) throw notFound("Payment");
          return toPaymentView(p);
        },
      },

      /** For the order service: the order's payments, oldest first (not routed). */
      listForOrder: {
        visibility: "public",
        params: Params["payment.listForOrder"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.listForOrder">>): Promise<ActionResponse<"payment.listForOrder">> {
          return (await repo.paymentsOfOrder(this.db, ctx.params.orderId)).map(toPaymentView);
        },
      },

      /** For the order service: a refund through the platform that took the money (not routed). */
      refund: {
        visibility: "public",
        params: Params["payment.refund"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.refund">>): Promise<ActionResponse<"payment.refund">> {
          const { refundId, orderId, paymentId, reason } = ctx.params;
          assertMoves(ctx.params.amount);
          const amount = { amount: ctx.params.amount.amount, currency: ctx.params.amount.currency };
          const replay = (r: RefundRecord) => {
            if (!sameRefund(r, { paymentId, orderId, amount })) throw conflict("This refundId was used for another refund", [{ field: "refundId" }]);
            return toRefundView(r);
          };
          // The order service asked for it: it has dealt with this payment (reconciliation
          // need not hand the success over again).
          await repo.acknowledgeByOrder(this.db, paymentId, Date.now());
          const stored = await repo.findRefund(this.db, refundId);
          if (stored) return replay(stored);
          const now = Date.now();
          const refund: RefundRecord = {
            id: refundId, paymentId, orderId, status: "PENDING", amount, reason, providerRefundId: null, failureCode: null,
            // Left to this call; the sweep takes over only if it never settles (a crash, an unknown answer).
            reconcileAfter: now + leaseMs, createdAt: now, updatedAt: now,
          };
          let payment: PaymentRecord | RefundRecord;
          try {
            payment = await inTransaction(this.db, async (trx) => {
              // The payment's row lock serializes refunds of one payment: the sum below is current.
              const p = await repo.findPaymentForUpdate(trx, paymentId);
              if (!p) throw notFound("Payment");
              const same = await repo.findRefund(trx, refundId);
              if (same) return same;
              const problem = refundProblem(p, { orderId, amount }, await repo.committedRefundTotal(trx, paymentId));
              if (problem?.status === 404) throw notFound("Payment");
              if (problem?.status === 409) throw conflict(problem.message, [{ field: "paymentId", status: p.status }]);
              if (problem) throw validationError(problem.message, [{ field: "amount" }]);
              await repo.insertRefund(trx, refund);
              return p;
            });
          } catch (err) {
            if (isUniqueViolation(err)) {
              const again = await repo.findRefund(this.db, refundId);
              if (again) return replay(again);
            }
            throw err;
          }
          if ("paymentId" in payment) return replay(payment);
          return toRefundView(await this.executeRefund(refund, payment));
        },
      },

      /**
       * The platforms' callbacks (POST /api/payments/notify/:provider). The gateway's raw
       * route passes the exact bytes (base64), the content type and the headers. Answers in
       * the platform's own format: its ack (also for a repeat), or its nack (400) for a
       * callback that fails verification, which changes nothing.
       */
      notify: {
        auth: "none",
        // Not JSON: the platform's own reply. Summary, errors and tags are the contract's.
        openapi: { contentType: "text/plain", response: { type: "string" }, description: "Answers the platform's own acknowledgement (Alipay and the sandbox: `success` as text/plain; WeChat Pay: 204). A callback that fails verification (signature, key, timestamp, merchant, app, amount, unknown payment) answers 400 and changes nothing; a repeat changes nothing." },
        params: Params["payment.notify"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.notify">>): Promise<ActionResponse<"payment.notify">> {
          // The configured body limit, in base64 (the contract's rule is the largest setting's).
          if (ctx.params.rawBody.length > Math.ceil((config.bodyLimitBytes * 4) / 3) + 8)
            throw validationError("The callback body is too large", [{ field: "rawBody", message: `at most ${config.bodyLimitBytes} bytes` }]);
          const platform = this.platforms().get(ctx.params.provider as PlatformName);
          if (!platform) throw notFound("Payment platform");
          try {
            const n = await platform.verifyNotification({
              headers: Object.fromEntries((ctx.params.headers ?? []).map((h) => [h.name, h.values.length === 1 ? h.values[0]! : h.values])),
              rawBody: Buffer.from(ctx.params.rawBody, "base64"),
              contentType: ctx.params.contentType || undefined,
            });
            const stored = await repo.findPayment(this.db, n.paymentId);
            const mine = stored && stored.provider === platform.name ? stored : undefined;
            checkBusiness(n, mine && { paymentId: mine.id, amountMinor: mine.amount.amount, currency: mine.amount.currency });
            const payment = mine!;
            if (n.status === "succeeded") {
              await this.settle(payment, { kind: "succeeded", providerTxnId: n.providerTxnId, paidAt: paidAtMs(n.paidAt, Date.now()) });
            } else if (n.status === "failed") {
              await this.settle(payment, { kind: "failed", reason: "declined", providerTxnId: n.providerTxnId });
            }
            // "pending" (the buyer has not paid yet): nothing to record; acknowledged.
            return httpReply(ctx, platform.ackResponse());
          } catch (err) {
            if (err instanceof PaymentVerificationError) {
              this.logger.warn(`Refused a ${platform.name} callback: ${err.reason}`);
            } else {
              // Our side failed (database…): a 500 nack, so the platform sends it again later.
              this.logger.error(`A ${platform.name} callback could not be recorded`, err instanceof Error ? err.message : err);
            }
            return httpReply(ctx, platform.nackResponse(err));
          }
        },
      },

      ...sandboxActions(paymentConfig),

      /**
       * For the order service: close the order's trades that may still be open (the order
       * was cancelled while one was being created: its `order.cancelled` came before the
       * trade existed). Idempotent; the closing itself is reconciliation's. Not routed.
       */
      closeOrderTrades: {
        visibility: "public",
        params: Params["payment.closeOrderTrades"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.closeOrderTrades">>): Promise<ActionResponse<"payment.closeOrderTrades">> {
          const marked = await repo.requestClose(this.db, ctx.params.orderId, Date.now());
          if (marked) this.reconcileSoon();
          return { marked };
        },
      },

      /** One reconciliation pass now (tests, operations); `now` (epoch ms) lets a test look ahead. */
      reconcile: {
        visibility: "public",
        params: Params["payment.reconcile"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.reconcile">>): Promise<ActionResponse<"payment.reconcile">> {
          return this.reconcileOnce(ctx.params.now);
        },
      },
    },

    methods: {
      /**
       * The gateway's public base URL. PUBLIC_URL when given; when it is not and PORT=0 (an
       * ephemeral port: tests), the configured URL ends in ":0", which no one can reach, so
       * the address the local gateway actually bound is used instead.
       */
      publicUrl(this: PaymentServiceThis): string {
        if (new URL(config.publicUrl).port !== "0") return config.publicUrl;
        const api = this.broker.getLocalService("api") as unknown as { server?: { address(): unknown } } | undefined;
        const address = api?.server?.address();
        if (address && typeof address === "object" && "port" in address) return `http://127.0.0.1:${(address as { port: number }).port}`;
        throw new AppError("SERVICE_UNAVAILABLE", "The gateway's public URL is not known (set PUBLIC_URL)");
      },

      /** Built on first use: the sandbox's payUrl needs the public URL, known once the gateway listens. */
      platforms(this: PaymentServiceThis): Map<PlatformName, PaymentPlatform> {
        if (!this.platformMap) {
          const store: SandboxStateStore = {
            getPayment: (id) => repo.sandboxPayment(this.db, id),
            closeTrade: async (id) => {
              const p = await repo.findPayment(this.db, id);
              return p ? repo.sandboxCloseTrade(this.db, id, p.amount, Date.now()) : { status: "not_found" };
            },
            recordRefund: (r) => repo.sandboxRecordRefund(this.db, r, () => `sbr_${randomBytes(12).toString("hex")}`, Date.now()),
          };
          this.platformMap = createPlatforms(paymentConfig, { publicUrl: this.publicUrl(), sandboxStore: store });
        }
        return this.platformMap;
      },

      platformFor(this: PaymentServiceThis, provider: string): PaymentPlatform {
        const platform = this.platforms().get(provider as PlatformName);
        if (!platform) throw validationError(`Payment provider '${provider}' is not enabled`, [{ field: "provider", enabled: paymentConfig.enabled }]);
        return platform;
      },

      /** Records an outcome once, with its event in the same transaction. True when this call moved the row. */
      async settle(this: PaymentServiceThis, payment: PaymentRecord, outcome: Outcome): Promise<boolean> {
        return inTransaction(this.db, async (trx) => {
          const now = Date.now();
          if (!(await repo.settlePayment(trx, payment.id, outcome, fromStatesFor(outcome), now))) return false;
          const base = { paymentId: payment.id, orderId: payment.orderId, userId: payment.userId, provider: payment.provider };
          if (outcome.kind === "succeeded") {
            await this.publishEvent(trx, Events.PaymentSucceeded, {
              ...base, amount: { ...payment.amount }, providerTxnId: outcome.providerTxnId, paidAt: iso(outcome.paidAt), occurredAt: iso(now),
            });
          } else {
            await this.publishEvent(trx, Events.PaymentFailed, { ...base, reason: outcome.reason, occurredAt: iso(now) });
          }
          countBusiness(this.broker, outcome.kind === "succeeded" ? "payments_succeeded" : "payments_failed", { provider: payment.provider }, trx);
          return true;
        });
      },

      /** Calls the platform for a stored PENDING refund (same refundId every time) and applies the answer. */
      async executeRefund(this: PaymentServiceThis, refund: RefundRecord, payment: PaymentRecord): Promise<RefundRecord> {
        const platform = this.platforms().get(payment.provider);
        if (!platform) {
          this.logger.warn(`Refund ${refund.id}: provider ${payment.provider} is not enabled here; left PENDING`);
          return (await repo.findRefund(this.db, refund.id))!;
        }
        let result: RefundResult | undefined;
        try {
          result = await platform.refund({
            paymentId: payment.id, refundId: refund.id, amountMinor: refund.amount.amount, totalMinor: payment.amount.amount,
            currency: refund.amount.currency, reason: refund.reason,
          });
        } catch (err) {
          if (err instanceof PaymentPlatformError && !err.retryable) result = { status: "failed", failureCode: err.platformCode ?? err.reason };
          else this.logger.warn(`Refund ${refund.id}: outcome unknown, the sweep will ask again`, err instanceof Error ? err.message : err);
        }
        if (result) await this.applyRefundResult(refund, result);
        return (await repo.findRefund(this.db, refund.id))!;
      },

      async applyRefundResult(this: PaymentServiceThis, refund: RefundRecord, result: RefundResult): Promise<void> {
        const status = refundStatusOf(result);
        if (status === "PENDING") {
          if (result.providerRefundId) await repo.noteRefundProviderId(this.db, refund.id, result.providerRefundId, Date.now());
          return;
        }
        await inTransaction(this.db, async (trx) => {
          const now = Date.now();
          const fields = { ...(result.providerRefundId ? { providerRefundId: result.providerRefundId } : {}), ...(result.failureCode ? { failureCode: result.failureCode } : {}) };
          if (!(await repo.settleRefund(trx, refund.id, status, fields, now))) return;
          await this.publishEvent(trx, status === "SUCCEEDED" ? Events.RefundSucceeded : Events.RefundFailed, {
            refundId: refund.id, orderId: refund.orderId, paymentId: refund.paymentId, amount: { ...refund.amount }, occurredAt: iso(now),
          });
          countBusiness(this.broker, "refunds", { result: status === "SUCCEEDED" ? "succeeded" : "failed" }, trx);
        });
      },

      /**
       * One pass: PENDING payments past the timeout are queried and settled; PENDING refunds
       * whose call never settled are sent again (same refundId). Any number of replicas may
       * run it: each row is claimed by a conditional UPDATE first.
       */
      async reconcileOnce(this: PaymentServiceThis, now = Date.now()) {
        let payments = 0;
        let refunds = 0;
        let closed = 0;
        let handedOver = 0;
        const platforms = this.platforms();
        const watchSince = now - FAILED_WATCH_MS;
        for (const p of await repo.dueCloses(this.db, now, SWEEP_BATCH)) {
          if (!(await repo.claimClose(this.db, p.id, now, now + leaseMs))) continue;
          try {
            if (await this.closeTrade(p)) closed++;
          } catch (err) {
            this.logger.warn(`Closing the trade of payment ${p.id} failed; retried after ${leaseMs} ms`, err instanceof Error ? err.message : err);
          }
        }
        for (const p of await repo.duePendingPayments(this.db, now, SWEEP_BATCH, watchSince)) {
          if (!(await repo.claimPayment(this.db, p.id, now, now + leaseMs, watchSince))) continue;
          const platform = platforms.get(p.provider);
          if (!platform) continue;
          try {
            const outcome = reconcileOutcome(await platform.query(p.id), p.amount, Date.now());
            if (!outcome) {
              this.logger.error(`Reconciliation of payment ${p.id}: the platform's amount or currency differs from ours; left ${p.status}`);
              continue;
            }
            // A watched FAILED payment changes only if the platform now says it was paid.
            if (p.status === "FAILED" && outcome.kind !== "succeeded") continue;
            if (await this.settle(p, outcome)) payments++;
          } catch (err) {
            this.logger.warn(`Reconciliation of payment ${p.id} failed; retried after ${leaseMs} ms`, err instanceof Error ? err.message : err);
          }
        }
        // Successes the order never acknowledged (their event dead-lettered): hand them over again.
        for (const p of await repo.dueUnacknowledged(this.db, now - ackTimeoutMs, now, SWEEP_BATCH)) {
          if (!(await repo.claimUnacknowledged(this.db, p.id, now, now + leaseMs))) continue;
          try {
            const { outcome } = await callAction(this.broker, "order.applyPayment", { paymentId: p.id, orderId: p.orderId, provider: p.provider, amount: p.amount });
            this.logger.warn(`Payment ${p.id} of order ${p.orderId} was never acknowledged by the order service; handed over again: ${outcome}`);
            await repo.acknowledgeByOrder(this.db, p.id, Date.now());
            handedOver++;
          } catch (err) {
            this.logger.warn(`Handing payment ${p.id} over to the order service failed; retried after ${leaseMs} ms`, err instanceof Error ? err.message : err);
          }
        }
        for (const r of await repo.duePendingRefunds(this.db, now, SWEEP_BATCH)) {
          if (!(await repo.claimRefund(this.db, r.id, now, now + leaseMs))) continue;
          const payment = await repo.findPayment(this.db, r.paymentId);
          if (!payment) continue;
          try {
            if ((await this.executeRefund(r, payment)).status !== "PENDING") refunds++;
          } catch (err) {
            this.logger.warn(`Reconciliation of refund ${r.id} failed`, err instanceof Error ? err.message : err);
          }
        }
        if (payments || refunds || closed || handedOver)
          this.logger.info(`Reconciliation settled ${payments} payment(s), ${refunds} refund(s); closed ${closed} trade(s); handed ${handedOver} success(es) over`);
        return { payments, refunds, closed, handedOver };
      },

      /**
       * Closes a cancelled order's trade at its platform and settles it: closed → FAILED
       * ("closed"); unknown to the platform → FAILED ("not_found", still watched: an Alipay
       * page-pay trade comes into being only when the buyer opens the page, until its
       * time_expire); paid meanwhile → SUCCEEDED (the order refunds it). A trade already
       * FAILED here (given up for want of an answer, or declined) keeps its status; closed at
       * the platform it is no longer watched. True when this changed something.
       */
      async closeTrade(this: PaymentServiceThis, p: PaymentRecord) {
        const platform = this.platforms().get(p.provider);
        if (!platform) return false;
        const result = await platform.close(p.id);
        let changed = false;
        if (result.status === "paid") {
          const outcome = reconcileOutcome(await platform.query(p.id), p.amount, Date.now());
          if (outcome?.kind !== "succeeded") throw new Error(`the platform said paid, then ${outcome?.kind ?? "an amount that differs"}`);
          changed = await this.settle(p, outcome);
        } else if (p.status === "PENDING") {
          changed = await this.settle(p, { kind: "failed", reason: result.status === "closed" ? "closed" : "not_found" });
        }
        await repo.closeHandled(this.db, p.id, result.status === "closed", Date.now());
        return changed || result.status === "closed";
      },

      /** Runs a reconciliation pass now (after a cancel), unless one is running. */
      reconcileSoon(this: PaymentServiceThis) {
        // Before `started` (a backlog's order.cancelled consumed at boot): run it once started.
        if (this.reconciler) this.reconciler.kick();
        else this.reconcileAsked = true;
      },

      ...sandboxMethods,
    },

    created(this: PaymentServiceThis) {
      this.paymentConfig = paymentConfig;
      this.lifetime = new AbortController();
      this.deliveries = new Set();
    },

    async started(this: PaymentServiceThis) {
      this.logger.info(`Payment platforms: ${describePaymentConfig(paymentConfig)}`);
      if (paymentConfig.sandbox)
        this.logger.warn("SANDBOX PAYMENTS ARE ON: anyone can \"pay\" an order with no money through /sandbox/pay (SANDBOX_PAY=false turns it off; off by default under NODE_ENV=production)");
      this.reconciler = periodic("Payment reconciliation", config.payments.reconcileIntervalMs, () => this.reconcileOnce(), this.logger);
      if (this.reconcileAsked) this.reconciler.kick();
    },

    async stopped(this: PaymentServiceThis) {
      this.lifetime.abort();
      await this.reconciler?.stop();
      await Promise.allSettled([...this.deliveries]);
    },
  };
}
