/**
 * Payment service: payments through a platform (sandbox, Alipay, WeChat Pay), their
 * callbacks, refunds, and reconciliation. Handlers stay thin: rules live in
 * payment.domain.ts, SQL in payment.repo.ts, the platforms in platforms/. This file binds
 * the actions and holds payments and their callbacks; refunds.actions.ts, reconcile.actions.ts
 * and sandbox.ts (the sandbox platform's pages) hold the rest.
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
import { forRunner } from "../../lib/runner";
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
  toPaymentView,
  type Outcome,
  type PaymentRecord,
} from "./payment.domain";
import * as repo from "./payment.repo";
import { sandboxActions, sandboxKeyEnv, sandboxMethods } from "./sandbox";
import { assertMoves, paymentTimings, type Ctx, type PaymentServiceThis } from "./payment.this";
import { refundActions, refundMethods } from "./refunds.actions";
import { reconcileActions, reconcileMethods } from "./reconcile.actions";
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
  type SandboxStateStore,
} from "./platforms";
import { Events } from "../../proto/gen/contracts";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";

// ---- configuration ----

export function loadPaymentConfig(config: AppConfig, env: Record<string, string | undefined> = process.env): PaymentConfig {
  const options = { mode: config.mode, sandbox: config.payments.sandbox, production: config.production };
  // No key file is made for a sandbox that is off.
  const wanted = options.sandbox ?? !options.production;
  return parsePaymentConfig(wanted ? sandboxKeyEnv(config, env) : env, options);
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

export function createPaymentService(
  config: AppConfig,
  env: Record<string, string | undefined> = process.env,
): TypedServiceSchema<PaymentServiceThis> {
  // Parsed when the broker is composed: a bad key or half a merchant configuration stops the start.
  const paymentConfig = loadPaymentConfig(config, env);
  const { timeoutMs } = paymentTimings(config);

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
            if (await repo.requestClose(trx, p.orderId, Date.now()))
              trx.executionPromise.then(
                () => this.reconcileSoon(),
                () => undefined,
              );
          },
        },
      }),
      DbMixin({ name: "payment", migrationsDir: path.join(__dirname, "migrations"), config }),
    ],

    actions: {
      ...refundActions(config),
      ...reconcileActions(),

      /** For the order service: a payment of an order with a platform (not routed). */
      create: {
        visibility: "public",
        params: Params["payment.create"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.create">>): Promise<ActionResponse<"payment.create">> {
          const { orderId, userId, provider, subject, expiresAt } = ctx.params;
          assertMoves(ctx.params.amount);
          if (expiresAt <= Date.now())
            throw conflict("The order's reservation has expired; it can no longer be paid", [{ field: "expiresAt" }]);
          const amount = { amount: ctx.params.amount.amount, currency: ctx.params.amount.currency };
          const platform = this.platformFor(provider);
          if (await repo.hasSucceededPayment(this.db, orderId))
            throw conflict("This order is already paid", [{ field: "orderId", orderId }]);
          const key = pendingKey(orderId, provider, amount);
          const reusable = await repo.findByPendingKey(this.db, key);
          if (reusable) return toPaymentView(reusable);

          const id = newPaymentId();
          let created;
          try {
            created = await platform.create({
              paymentId: id,
              orderId,
              amountMinor: amount.amount,
              currency: amount.currency,
              subject,
              expiresAt,
              notifyUrl: `${this.publicUrl()}/api/payments/notify/${provider}`,
            });
          } catch (err) {
            // The platform's own refusal (an amount or a deadline it does not take): its message says which.
            if (err instanceof PaymentPlatformError && err.reason === "invalid_request")
              throw validationError(`The payment platform refused the payment: ${err.message}`);
            if (err instanceof AppError) throw err;
            this.logger.warn(`payment.create: ${provider} did not answer`, err instanceof Error ? err.message : err);
            throw new AppError("SERVICE_UNAVAILABLE", "The payment platform is unavailable; try again later");
          }
          const now = Date.now();
          const record: PaymentRecord = {
            id,
            orderId,
            userId,
            provider,
            status: "PENDING",
            amount,
            subject,
            ...payloadColumns(created),
            providerTxnId: null,
            failureReason: null,
            reconcileAfter: now + timeoutMs,
            paidAt: null,
            expiresAt,
            createdAt: now,
            updatedAt: now,
          };
          try {
            await inTransaction(this.db, async (trx) => {
              if (await repo.hasSucceededPayment(trx, orderId))
                throw conflict("This order is already paid", [{ field: "orderId", orderId }]);
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
        async handler(
          this: PaymentServiceThis,
          ctx: Ctx<ActionParams<"payment.listForOrder">>,
        ): Promise<ActionResponse<"payment.listForOrder">> {
          return (await repo.paymentsOfOrder(this.db, ctx.params.orderId)).map(toPaymentView);
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
        openapi: {
          contentType: "text/plain",
          response: { type: "string" },
          description:
            "Answers the platform's own acknowledgement (Alipay and the sandbox: `success` as text/plain; WeChat Pay: 204). A callback that fails verification (signature, key, timestamp, merchant, app, amount, unknown payment) answers 400 and changes nothing; a repeat changes nothing.",
        },
        params: Params["payment.notify"],
        async handler(this: PaymentServiceThis, ctx: Ctx<ActionParams<"payment.notify">>): Promise<ActionResponse<"payment.notify">> {
          // The configured body limit, in base64 (the contract's rule is the largest setting's).
          if (ctx.params.rawBody.length > Math.ceil((config.bodyLimitBytes * 4) / 3) + 8)
            throw validationError("The callback body is too large", [
              { field: "rawBody", message: `at most ${config.bodyLimitBytes} bytes` },
            ]);
          const platform = this.platforms().get(ctx.params.provider as PlatformName);
          if (!platform) throw notFound("Payment platform");
          try {
            const n = await platform.verifyNotification({
              headers: Object.fromEntries((ctx.params.headers ?? []).map((h) => [h.name, h.values.length === 1 ? h.values[0] : h.values])),
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
    },

    methods: {
      ...refundMethods,
      ...reconcileMethods(config),

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
        if (!platform)
          throw validationError(`Payment provider '${provider}' is not enabled`, [{ field: "provider", enabled: paymentConfig.enabled }]);
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
              ...base,
              amount: { ...payment.amount },
              providerTxnId: outcome.providerTxnId,
              paidAt: iso(outcome.paidAt),
              occurredAt: iso(now),
            });
          } else {
            await this.publishEvent(trx, Events.PaymentFailed, { ...base, reason: outcome.reason, occurredAt: iso(now) });
          }
          countBusiness(
            this.broker,
            outcome.kind === "succeeded" ? "payments_succeeded" : "payments_failed",
            { provider: payment.provider },
            trx,
          );
          return true;
        });
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
        this.logger.warn(
          'SANDBOX PAYMENTS ARE ON: anyone can "pay" an order with no money through /sandbox/pay (SANDBOX_PAY=false turns it off; off by default under NODE_ENV=production)',
        );
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

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createPaymentService);
