/**
 * The built-in sandbox platform's own side: its key pair (generated once into DATA_DIR in
 * embedded mode), the pay page and the "buyer chose" endpoint, and the signed callback it
 * sends in the background as a real platform would. Bound into the `payment` service by
 * payment.service.ts; off (SANDBOX_PAY) its routes answer 404 whatever the body.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from "node:crypto";
import path from "node:path";
import type { AppConfig } from "../../lib/config";
import { AppError, conflict, notFound } from "../../lib/errors";
import { ensurePrivateDir, readOrCreatePrivateFile } from "../../lib/private-files";
import { sandboxPageCsp, sandboxPageHtml } from "./payment.domain";
import * as repo from "./payment.repo";
import { SandboxNotifier, checkSandboxPayToken, type PaymentConfig, type SandboxNotificationPayload } from "./platforms";
import { Params } from "../../proto/gen/params";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import type { Ctx, PaymentServiceThis } from "./payment.this";
import type { TypedActions } from "../../lib/service-schema";

const SANDBOX_KEY_FILE = "sandbox-pay-key.pem";

/**
 * Embedded mode without SANDBOX_PAY_* keys: the sandbox's key pair is generated once into
 * DATA_DIR (0600; like the JWT secret), so pay URLs and callbacks signed before a restart
 * still verify after it. Cluster mode takes the keys from the environment only.
 */
export function sandboxKeyEnv(
  config: Pick<AppConfig, "mode" | "dataDir">,
  env: Record<string, string | undefined>,
): Record<string, string | undefined> {
  const given = (v: string | undefined) => v !== undefined && v.trim() !== "";
  if (config.mode !== "embedded" || given(env.SANDBOX_PAY_PRIVATE_KEY) || given(env.SANDBOX_PAY_PUBLIC_KEY)) return env;
  ensurePrivateDir(config.dataDir);
  const pem = readOrCreatePrivateFile(path.join(config.dataDir, SANDBOX_KEY_FILE), () =>
    generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
  );
  const publicPem = createPublicKey(createPrivateKey(pem)).export({ type: "spki", format: "pem" }).toString();
  return { ...env, SANDBOX_PAY_PRIVATE_KEY: pem, SANDBOX_PAY_PUBLIC_KEY: publicPem };
}

export function sandboxActions(paymentConfig: PaymentConfig): TypedActions<PaymentServiceThis> {
  const sandboxParams = <T extends object>(schema: T): T | Record<string, never> => (paymentConfig.sandbox ? schema : {});
  return {
    /**
     * The sandbox platform's "buyer chose" endpoint (POST /api/payments/sandbox/:paymentId/complete):
     * the token from the payUrl proves access. The sandbox records the choice, answers 202,
     * then calls our notify route over HTTP, signed, with retries, like a real platform.
     */
    sandboxComplete: {
      auth: "none",
      // Off (SANDBOX_PAY), the route is not there for anyone: 404 whatever the body, not a 422.
      params: sandboxParams(Params["payment.sandboxComplete"]),
      async handler(
        this: PaymentServiceThis,
        ctx: Ctx<ActionParams<"payment.sandboxComplete">>,
      ): Promise<ActionResponse<"payment.sandboxComplete">> {
        const { paymentId, outcome, token } = ctx.params;
        const sandbox = paymentConfig.sandbox;
        if (!sandbox || !checkSandboxPayToken(paymentId, token, sandbox.privateKey)) throw notFound("Payment");
        const p = await repo.findPayment(this.db, paymentId);
        if (!p || p.provider !== "sandbox") throw notFound("Payment");
        const now = Date.now();
        // As a real platform: a trade past its time_expire, or closed, takes no payment.
        if (p.expiresAt !== null && now >= p.expiresAt)
          throw conflict("This trade has expired and can no longer be paid", [{ field: "paymentId" }]);
        const state = await repo.recordSandboxChoice(
          this.db,
          {
            paymentId,
            amount: p.amount,
            status: outcome === "success" ? "succeeded" : "failed",
            providerTxnId: `sbx_${randomBytes(12).toString("hex")}`,
            paidAt: outcome === "success" ? now : null,
          },
          now,
        );
        if (state.status === "closed") throw conflict("This trade was closed and can no longer be paid", [{ field: "paymentId" }]);
        if (state.status === "pending") throw new AppError("INTERNAL", "The sandbox recorded no choice");
        this.deliverSandbox({
          notifyId: `sbn_${randomBytes(12).toString("hex")}`,
          paymentId,
          providerTxnId: state.providerTxnId!,
          amountMinor: state.amountMinor,
          currency: state.currency,
          status: state.status === "succeeded" ? "succeeded" : "failed",
          ...(state.paidAt ? { paidAt: state.paidAt } : {}),
        });
        ctx.meta.$statusCode = 202;
        return { paymentId, outcome: state.status === "succeeded" ? "success" : "failure", status: "notifying" };
      },
    },

    /** The sandbox's pay page (GET /sandbox/pay/:paymentId?token=): choose success or failure. */
    sandboxPage: {
      auth: "none",
      openapi: { contentType: "text/html", response: { type: "string" } },
      params: sandboxParams(Params["payment.sandboxPage"]),
      async handler(
        this: PaymentServiceThis,
        ctx: Ctx<ActionParams<"payment.sandboxPage">>,
      ): Promise<ActionResponse<"payment.sandboxPage">> {
        const { paymentId, token } = ctx.params;
        const sandbox = paymentConfig.sandbox;
        if (!sandbox || !token || !checkSandboxPayToken(paymentId, token, sandbox.privateKey)) throw notFound("Payment");
        const p = await repo.findPayment(this.db, paymentId);
        if (!p || p.provider !== "sandbox") throw notFound("Payment");
        const nonce = randomBytes(16).toString("base64");
        ctx.meta.$responseType = "text/html; charset=utf-8";
        ctx.meta.$responseHeaders = {
          "Content-Security-Policy": sandboxPageCsp(nonce),
          "Cache-Control": "no-store",
          "Referrer-Policy": "no-referrer",
        };
        return sandboxPageHtml(p, token, nonce);
      },
    },
  };
}

export const sandboxMethods = {
  /** The sandbox platform sends its callback in the background, as a real platform would. */
  deliverSandbox(this: PaymentServiceThis, payload: SandboxNotificationPayload) {
    const sandbox = this.paymentConfig.sandbox!;
    const lifetime = this.lifetime.signal;
    this.notifier ??= new SandboxNotifier({
      privateKey: sandbox.privateKey,
      // Waits between retries end early when the service stops.
      sleep: (ms) =>
        new Promise<void>((resolve) => {
          if (lifetime.aborted) return resolve();
          const t = setTimeout(resolve, ms);
          lifetime.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
        }),
    });
    const url = `${this.publicUrl()}/api/payments/notify/sandbox`;
    const delivery = this.notifier
      .deliver(url, payload, lifetime)
      .then((r) => {
        if (!r.delivered && !lifetime.aborted)
          this.logger.warn(
            `Sandbox callback for ${payload.paymentId} not delivered after ${r.attempts} attempt(s): ${r.lastError ?? "?"}; reconciliation will settle it`,
          );
      })
      .catch(() => undefined)
      .finally(() => this.deliveries.delete(delivery));
    this.deliveries.add(delivery);
  },
};
