/**
 * The payment platform layer (no Moleculer, no database). Wiring, for the payment service:
 *   const config = parsePaymentConfig(process.env, { mode });          // at start
 *   const platforms = createPlatforms(config, { publicUrl, sandboxStore });
 *   // notify route: n = await p.verifyNotification({ headers, rawBody, contentType });
 *   //   checkBusiness(n, storedPayment); record once; reply p.ackResponse()
 *   //   on PaymentVerificationError: reply p.nackResponse(err) (400), change nothing.
 *   // create({ …, expiresAt }) sends the platform a deadline; close(id) ends a trade (closed,
 *   //   paid: record it, not_found: watch it until expiresAt).
 * Ids: WeChat Pay's out_trade_no is 6–32 of [A-Za-z0-9_-|*] — a dashed UUID (36) does
 * not fit; Alipay's is up to 64 of [A-Za-z0-9_-].
 */
export * from "./platform";
export { AlipayPlatform, type AlipayConfig, type AlipayDeps } from "./alipay";
export { WechatPayPlatform, type WechatPayConfig, type WechatPayDeps } from "./wechatpay";
export {
  SandboxPlatform,
  SandboxNotifier,
  MemorySandboxStateStore,
  signSandboxNotification,
  verifySandboxNotification,
  sandboxOutcomePayload,
  sandboxPayToken,
  checkSandboxPayToken,
  type SandboxConfig,
  type SandboxDeps,
  type SandboxStateStore,
  type SandboxPaymentState,
  type SandboxRefundRequest,
  type SandboxRefundRecord,
  type SandboxNotificationPayload,
  type SandboxNotifierOptions,
  type DeliveryResult,
} from "./sandbox";
export {
  parsePaymentConfig,
  createPlatforms,
  describePaymentConfig,
  ConfigError,
  type PaymentConfig,
  type CreatePlatformsDeps,
} from "./config";
export { Secret } from "./keys";
