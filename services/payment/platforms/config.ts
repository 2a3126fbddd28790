/**
 * The payment platforms' environment variables. A platform is enabled only when its
 * whole group is set; a group set in part is a configuration error naming what is
 * missing (half a merchant configuration is a mistake, never a silent "disabled").
 * Keys are parsed here, at start, so a bad key stops the process instead of failing
 * the first payment. Error messages name variables, never their values.
 */
import { generateKeyPairSync, sign as rsaSign, verify as rsaVerify, type KeyObject } from "node:crypto";
import { z } from "zod";
import { ConfigError } from "../../../lib/config";
import { AlipayPlatform, type AlipayConfig } from "./alipay";
import { Secret, keyId, loadPrivateKey, loadPublicKey } from "./keys";
import type { PaymentPlatform, PlatformName } from "./platform";
import { SandboxPlatform, type SandboxStateStore } from "./sandbox";
import { WechatPayPlatform, type WechatPayConfig } from "./wechatpay";

export { ConfigError };

export const ALIPAY_DEFAULT_GATEWAY = "https://openapi.alipay.com/gateway.do";
export const WECHATPAY_DEFAULT_BASE_URL = "https://api.mch.weixin.qq.com";

const text = z.string().trim();
const httpUrl = text.refine((v) => {
  try {
    return ["http:", "https:"].includes(new URL(v).protocol);
  } catch {
    return false;
  }
}, "must be an http(s) URL");

/** Shape checks only; group rules and key parsing follow. Messages never quote the value. */
const EnvSchema = z.object({
  SANDBOX_PAY_PRIVATE_KEY: text.optional(),
  SANDBOX_PAY_PUBLIC_KEY: text.optional(),
  ALIPAY_APP_ID: text.regex(/^\d{1,32}$/, "must be digits (the Alipay app id)").optional(),
  ALIPAY_SELLER_ID: text.regex(/^\d{1,32}$/, "must be digits (the merchant PID, 2088…)").optional(),
  ALIPAY_PRIVATE_KEY: text.optional(),
  ALIPAY_PUBLIC_KEY: text.optional(),
  ALIPAY_GATEWAY: httpUrl.optional(),
  WECHATPAY_MCH_ID: text.regex(/^\d{1,32}$/, "must be digits (the merchant id)").optional(),
  WECHATPAY_APP_ID: text.regex(/^[A-Za-z0-9_]{1,64}$/, "must be letters and digits (the appid, wx…)").optional(),
  WECHATPAY_SERIAL_NO: text.regex(/^[A-Fa-f0-9]{1,64}$/, "must be the hexadecimal serial number of the merchant certificate").optional(),
  WECHATPAY_PRIVATE_KEY: text.optional(),
  WECHATPAY_API_V3_KEY: z.string().optional(),
  WECHATPAY_PLATFORM_CERTS: text.optional(),
  WECHATPAY_BASE_URL: httpUrl.optional(),
});
type Env = z.infer<typeof EnvSchema>;
type Var = keyof Env;

/** The variables that must all be set to enable a platform; the optional ones have defaults. */
export const PLATFORM_GROUPS = {
  sandbox: { required: ["SANDBOX_PAY_PRIVATE_KEY", "SANDBOX_PAY_PUBLIC_KEY"], optional: [] },
  alipay: { required: ["ALIPAY_APP_ID", "ALIPAY_SELLER_ID", "ALIPAY_PRIVATE_KEY", "ALIPAY_PUBLIC_KEY"], optional: ["ALIPAY_GATEWAY"] },
  wechatpay: {
    required: [
      "WECHATPAY_MCH_ID",
      "WECHATPAY_APP_ID",
      "WECHATPAY_SERIAL_NO",
      "WECHATPAY_PRIVATE_KEY",
      "WECHATPAY_API_V3_KEY",
      "WECHATPAY_PLATFORM_CERTS",
    ],
    optional: ["WECHATPAY_BASE_URL"],
  },
} as const satisfies Record<PlatformName, { required: readonly Var[]; optional: readonly Var[] }>;

export interface SandboxKeys {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** True when generated at start (embedded mode): valid for this process only. */
  generated: boolean;
}

export interface PaymentConfig {
  sandbox?: SandboxKeys;
  alipay?: AlipayConfig;
  wechatpay?: WechatPayConfig;
  /** The enabled platforms, in a stable order. */
  enabled: PlatformName[];
}

export interface ParsePaymentConfigOptions {
  /**
   * embedded: the sandbox is always on, with a key pair generated at start unless both
   * SANDBOX_PAY_* keys are given. cluster: the sandbox is on only when both keys are set
   * (every node must verify what another node signed, so a per-process key cannot work;
   * and a production cluster should not offer a pay-without-paying platform by default).
   */
  mode: "embedded" | "cluster";
  /**
   * SANDBOX_PAY: the built-in sandbox lets anyone "pay" with no money, so it can be switched
   * off in any mode; unset, it is on except under NODE_ENV=production (`production`).
   */
  sandbox?: boolean;
  production?: boolean;
}

/** Parses and validates the platforms' variables. Throws ConfigError listing every problem. */
export function parsePaymentConfig(env: Record<string, string | undefined>, options: ParsePaymentConfigOptions): PaymentConfig {
  // An empty value counts as unset, as everywhere in this project's configuration.
  const present: Record<string, string> = {};
  for (const name of Object.keys(EnvSchema.shape)) {
    const v = env[name];
    if (v !== undefined && v.trim() !== "") present[name] = v;
  }
  const problems: string[] = [];
  const parsed = EnvSchema.safeParse(present);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(`${String(issue.path[0])}: ${issue.message}`);
    throw new ConfigError(problems);
  }
  const e = parsed.data;

  const groupState = (name: PlatformName): "off" | "on" => {
    const group = PLATFORM_GROUPS[name];
    const set = [...group.required, ...group.optional].filter((v) => e[v] !== undefined);
    if (!set.length) return "off";
    const missing = group.required.filter((v) => e[v] === undefined);
    if (missing.length) {
      problems.push(`${missing.join(", ")}: required to enable ${name} (${set.join(", ")} ${set.length === 1 ? "is" : "are"} set)`);
      return "off";
    }
    return "on";
  };

  const config: PaymentConfig = { enabled: [] };

  // --- sandbox ---
  const sandboxWanted = options.sandbox ?? !options.production;
  if (!sandboxWanted) {
    // Off: its keys, if any, are not even loaded.
  } else if (groupState("sandbox") === "on") {
    const privateKey = keyOr(problems, "SANDBOX_PAY_PRIVATE_KEY", () => loadPrivateKey(e.SANDBOX_PAY_PRIVATE_KEY!));
    const publicKey = keyOr(problems, "SANDBOX_PAY_PUBLIC_KEY", () => loadPublicKey(e.SANDBOX_PAY_PUBLIC_KEY!));
    if (privateKey && publicKey) {
      if (!isPair(privateKey, publicKey)) problems.push("SANDBOX_PAY_PUBLIC_KEY: does not match SANDBOX_PAY_PRIVATE_KEY");
      else config.sandbox = { privateKey, publicKey, generated: false };
    }
  } else if (options.mode === "embedded" && !problems.length) {
    const pair = generateKeyPairSync("rsa", { modulusLength: 2048 });
    config.sandbox = { privateKey: pair.privateKey, publicKey: pair.publicKey, generated: true };
  } else if (options.mode === "cluster" && options.sandbox === true) {
    problems.push(
      "SANDBOX_PAY: true in a cluster needs SANDBOX_PAY_PRIVATE_KEY and SANDBOX_PAY_PUBLIC_KEY (one pair for every payment replica)",
    );
  }

  // --- alipay ---
  if (groupState("alipay") === "on") {
    const privateKey = keyOr(problems, "ALIPAY_PRIVATE_KEY", () => loadPrivateKey(e.ALIPAY_PRIVATE_KEY!));
    const alipayPublicKey = keyOr(problems, "ALIPAY_PUBLIC_KEY", () => loadPublicKey(e.ALIPAY_PUBLIC_KEY!));
    if (privateKey && alipayPublicKey) {
      config.alipay = {
        appId: e.ALIPAY_APP_ID!,
        sellerId: e.ALIPAY_SELLER_ID!,
        privateKey,
        alipayPublicKey,
        gateway: e.ALIPAY_GATEWAY ?? ALIPAY_DEFAULT_GATEWAY,
      };
    }
  }

  // --- wechatpay ---
  if (groupState("wechatpay") === "on") {
    const privateKey = keyOr(problems, "WECHATPAY_PRIVATE_KEY", () => loadPrivateKey(e.WECHATPAY_PRIVATE_KEY!));
    // The APIv3 key is 32 ASCII characters, used as the AES-256 key bytes as they are.
    const apiV3Key = Buffer.from(e.WECHATPAY_API_V3_KEY!, "utf8");
    if (apiV3Key.length !== 32) problems.push("WECHATPAY_API_V3_KEY: must be exactly 32 bytes");
    const platformKeys = parsePlatformCerts(e.WECHATPAY_PLATFORM_CERTS!, problems);
    if (privateKey && apiV3Key.length === 32 && platformKeys) {
      config.wechatpay = {
        mchId: e.WECHATPAY_MCH_ID!,
        appId: e.WECHATPAY_APP_ID!,
        serialNo: e.WECHATPAY_SERIAL_NO!.toUpperCase(),
        privateKey,
        apiV3Key: new Secret(apiV3Key),
        platformKeys,
        baseUrl: e.WECHATPAY_BASE_URL ?? WECHATPAY_DEFAULT_BASE_URL,
      };
    }
  }

  if (problems.length) throw new ConfigError(problems);
  config.enabled = (["sandbox", "alipay", "wechatpay"] as const).filter((n) => config[n] !== undefined);
  return config;
}

/**
 * WECHATPAY_PLATFORM_CERTS: a JSON object {"<serial>": "<PEM certificate or public key>"}
 * — the platform certificates (serial = certificate serial) and/or the newer WeChat Pay
 * public key (serial = its PUB_KEY_ID_…). Several entries allow a key rotation.
 */
function parsePlatformCerts(raw: string, problems: string[]): Map<string, KeyObject> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    problems.push('WECHATPAY_PLATFORM_CERTS: must be a JSON object {"<serial>": "<PEM>"}');
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || !Object.keys(value).length) {
    problems.push('WECHATPAY_PLATFORM_CERTS: must be a non-empty JSON object {"<serial>": "<PEM>"}');
    return undefined;
  }
  const keys = new Map<string, KeyObject>();
  for (const [serial, pem] of Object.entries(value)) {
    if (!/^[A-Za-z0-9_]{1,64}$/.test(serial)) {
      problems.push("WECHATPAY_PLATFORM_CERTS: each key must be a serial number (letters, digits, _)");
      return undefined;
    }
    const key = typeof pem === "string" ? keyOr(problems, `WECHATPAY_PLATFORM_CERTS[${serial}]`, () => loadPublicKey(pem)) : undefined;
    if (typeof pem !== "string") problems.push(`WECHATPAY_PLATFORM_CERTS[${serial}]: must be a PEM string`);
    if (!key) return undefined;
    keys.set(serial, key);
  }
  return keys;
}

function keyOr(problems: string[], name: string, load: () => KeyObject): KeyObject | undefined {
  try {
    return load();
  } catch (err) {
    // loadPrivateKey/loadPublicKey throw fixed messages that never include the input.
    problems.push(`${name}: ${err instanceof Error ? err.message : "invalid key"}`);
    return undefined;
  }
}

function isPair(privateKey: KeyObject, publicKey: KeyObject): boolean {
  const probe = Buffer.from("meridian key pair check");
  try {
    return rsaVerify("sha256", probe, publicKey, rsaSign("sha256", probe, privateKey));
  } catch {
    return false;
  }
}

export interface CreatePlatformsDeps {
  /** The gateway's public base URL (the sandbox pay page lives there). */
  publicUrl: string;
  /** Required when the sandbox is enabled. */
  sandboxStore?: SandboxStateStore;
  now?: () => number;
  fetch?: typeof fetch;
}

/** One instance per enabled platform. */
export function createPlatforms(config: PaymentConfig, deps: CreatePlatformsDeps): Map<PlatformName, PaymentPlatform> {
  const platforms = new Map<PlatformName, PaymentPlatform>();
  const now = deps.now ? { now: deps.now } : {};
  if (config.sandbox) {
    if (!deps.sandboxStore) throw new Error("createPlatforms: the sandbox is enabled but no sandboxStore was given");
    platforms.set(
      "sandbox",
      new SandboxPlatform(
        { privateKey: config.sandbox.privateKey, publicKey: config.sandbox.publicKey, publicUrl: deps.publicUrl },
        { store: deps.sandboxStore, ...now },
      ),
    );
  }
  if (config.alipay) platforms.set("alipay", new AlipayPlatform(config.alipay, now));
  if (config.wechatpay)
    platforms.set("wechatpay", new WechatPayPlatform(config.wechatpay, { ...now, ...(deps.fetch ? { fetch: deps.fetch } : {}) }));
  return platforms;
}

/** A one-line, secret-free description for the start-up log. */
export function describePaymentConfig(config: PaymentConfig): string {
  const parts: string[] = [];
  if (config.sandbox) parts.push(`sandbox (key ${keyId(config.sandbox.publicKey)}${config.sandbox.generated ? ", generated" : ""})`);
  if (config.alipay) parts.push(`alipay (app ${config.alipay.appId})`);
  if (config.wechatpay) parts.push(`wechatpay (mch ${config.wechatpay.mchId}, ${config.wechatpay.platformKeys.size} platform key(s))`);
  return parts.length ? parts.join(", ") : "none";
}
