import assert from "node:assert/strict";
import { it } from "mocha";
import { inspect } from "node:util";
import { configProblems } from "../../../test/support/config";
import { createPlatforms, describePaymentConfig, parsePaymentConfig } from "./config";
import { AlipayPlatform } from "./alipay";
import { SandboxPlatform, MemorySandboxStateStore } from "./sandbox";
import { WechatPayPlatform } from "./wechatpay";
import { rsaPair } from "./test-support";

const pem = (k: ReturnType<typeof rsaPair>, which: "private" | "public") =>
  which === "private"
    ? k.privateKey.export({ type: "pkcs8", format: "pem" }).toString()
    : k.publicKey.export({ type: "spki", format: "pem" }).toString();
const sandbox = rsaPair();
const app = rsaPair();
const ali = rsaPair();
const mch = rsaPair();
const wxPlatform = rsaPair();
const API_V3_KEY = "0123456789abcdef0123456789ABCDEF";

const alipayEnv = {
  ALIPAY_APP_ID: "2021000000000001",
  ALIPAY_SELLER_ID: "2088000000000002",
  ALIPAY_PRIVATE_KEY: pem(app, "private"),
  ALIPAY_PUBLIC_KEY: pem(ali, "public"),
};
const wechatEnv = {
  WECHATPAY_MCH_ID: "1900000001",
  WECHATPAY_APP_ID: "wxd678efh567hg6787",
  WECHATPAY_SERIAL_NO: "5157f09efdc096de15ebe81a47057a7232f1b8e1",
  WECHATPAY_PRIVATE_KEY: pem(mch, "private"),
  WECHATPAY_API_V3_KEY: API_V3_KEY,
  WECHATPAY_PLATFORM_CERTS: JSON.stringify({ PUB_KEY_ID_0114232134912410000000000000: pem(wxPlatform, "public") }),
};

const problemsOf = (env: Record<string, string>, mode: "embedded" | "cluster" = "cluster") =>
  configProblems(() => parsePaymentConfig(env, { mode }));

const SECRETS = [pem(app, "private"), pem(mch, "private"), API_V3_KEY, pem(sandbox, "private")].map((p) =>
  p
    .replace(/-----[A-Z ]+-----/g, "")
    .trim()
    .slice(0, 40),
);
const assertNoSecret = (text: string) => {
  for (const s of SECRETS) assert.ok(!text.includes(s), "a secret leaked");
};

it("embedded with nothing set: the sandbox alone, with a generated key pair", () => {
  const c = parsePaymentConfig({}, { mode: "embedded" });
  assert.deepEqual(c.enabled, ["sandbox"]);
  assert.equal(c.sandbox?.generated, true);
  assert.match(describePaymentConfig(c), /^sandbox \(key [0-9a-f]{32}, generated\)$/);
});

it("cluster with nothing set: no platform (the sandbox needs shared keys there)", () => {
  assert.deepEqual(parsePaymentConfig({}, { mode: "cluster" }).enabled, []);
  const c = parsePaymentConfig(
    { SANDBOX_PAY_PRIVATE_KEY: pem(sandbox, "private"), SANDBOX_PAY_PUBLIC_KEY: pem(sandbox, "public") },
    { mode: "cluster" },
  );
  assert.deepEqual(c.enabled, ["sandbox"]);
  assert.equal(c.sandbox?.generated, false);
});

it("SANDBOX_PAY: false turns the sandbox off in any mode; NODE_ENV=production turns it off unless true", () => {
  const keys = { SANDBOX_PAY_PRIVATE_KEY: pem(sandbox, "private"), SANDBOX_PAY_PUBLIC_KEY: pem(sandbox, "public") };
  assert.deepEqual(parsePaymentConfig({}, { mode: "embedded", sandbox: false }).enabled, []);
  assert.deepEqual(parsePaymentConfig(keys, { mode: "cluster", sandbox: false }).enabled, [], "its keys are not even loaded");
  assert.deepEqual(parsePaymentConfig({}, { mode: "embedded", production: true }).enabled, []);
  assert.deepEqual(parsePaymentConfig(keys, { mode: "cluster", production: true }).enabled, []);
  assert.deepEqual(parsePaymentConfig({}, { mode: "embedded", production: true, sandbox: true }).enabled, ["sandbox"]);
  assert.deepEqual(parsePaymentConfig(keys, { mode: "cluster", production: true, sandbox: true }).enabled, ["sandbox"]);
  assert.throws(
    () => parsePaymentConfig({}, { mode: "cluster", sandbox: true }),
    /SANDBOX_PAY: true in a cluster needs SANDBOX_PAY_PRIVATE_KEY/,
  );
});

it("every group complete: all three platforms; gateway URLs default", () => {
  const c = parsePaymentConfig({ ...alipayEnv, ...wechatEnv }, { mode: "embedded" });
  assert.deepEqual(c.enabled, ["sandbox", "alipay", "wechatpay"]);
  assert.equal(c.alipay?.gateway, "https://openapi.alipay.com/gateway.do");
  assert.equal(c.wechatpay?.baseUrl, "https://api.mch.weixin.qq.com");
  assert.equal(c.wechatpay?.serialNo, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
  assert.equal(c.wechatpay?.platformKeys.size, 1);
  const platforms = createPlatforms(c, { publicUrl: "http://localhost:3000", sandboxStore: new MemorySandboxStateStore() });
  assert.ok(platforms.get("sandbox") instanceof SandboxPlatform);
  assert.ok(platforms.get("alipay") instanceof AlipayPlatform);
  assert.ok(platforms.get("wechatpay") instanceof WechatPayPlatform);
  assert.throws(() => createPlatforms(c, { publicUrl: "http://localhost:3000" }), /sandboxStore/);
  // Nothing secret through inspect, JSON or the platforms' toString (each platform class has its own; the
  // PaymentPlatform interface does not declare it).
  assertNoSecret(inspect(c, { depth: 10 }));
  assertNoSecret(JSON.stringify(c));
  for (const p of platforms.values() as Iterable<SandboxPlatform | AlipayPlatform | WechatPayPlatform>)
    assertNoSecret(String(p) + inspect(p, { depth: 10 }));
});

it("a partly set group is an error naming what is missing", () => {
  assert.deepEqual(problemsOf({ ALIPAY_APP_ID: "2021000000000001", ALIPAY_PRIVATE_KEY: pem(app, "private") }), [
    "ALIPAY_SELLER_ID, ALIPAY_PUBLIC_KEY: required to enable alipay (ALIPAY_APP_ID, ALIPAY_PRIVATE_KEY are set)",
  ]);
  assert.deepEqual(problemsOf({ WECHATPAY_BASE_URL: "https://api.mch.weixin.qq.com" }), [
    "WECHATPAY_MCH_ID, WECHATPAY_APP_ID, WECHATPAY_SERIAL_NO, WECHATPAY_PRIVATE_KEY, WECHATPAY_API_V3_KEY, WECHATPAY_PLATFORM_CERTS: required to enable wechatpay (WECHATPAY_BASE_URL is set)",
  ]);
  assert.deepEqual(problemsOf({ SANDBOX_PAY_PRIVATE_KEY: pem(sandbox, "private") }, "embedded"), [
    "SANDBOX_PAY_PUBLIC_KEY: required to enable sandbox (SANDBOX_PAY_PRIVATE_KEY is set)",
  ]);
  // An empty value counts as unset.
  assert.deepEqual(parsePaymentConfig({ ALIPAY_APP_ID: "", ALIPAY_GATEWAY: " " }, { mode: "cluster" }).enabled, []);
});

it("bad values are named, never echoed", () => {
  const problems = problemsOf({
    ...alipayEnv,
    ALIPAY_PRIVATE_KEY: "MIIsecretbutbroken",
    ALIPAY_GATEWAY: "ftp://x",
    ...wechatEnv,
    WECHATPAY_API_V3_KEY: "short-secret-key",
    WECHATPAY_PLATFORM_CERTS: "{not json",
  });
  assert.deepEqual(problems, ["ALIPAY_GATEWAY: must be an http(s) URL"]);
  const more = problemsOf({
    ...alipayEnv,
    ALIPAY_PRIVATE_KEY: "MIIsecretbutbroken",
    ...wechatEnv,
    WECHATPAY_API_V3_KEY: "short-secret-key",
    WECHATPAY_PLATFORM_CERTS: "{not json",
  });
  assert.deepEqual(more, [
    "ALIPAY_PRIVATE_KEY: not a valid RSA private key (PEM or base64 DER expected)",
    "WECHATPAY_API_V3_KEY: must be exactly 32 bytes",
    'WECHATPAY_PLATFORM_CERTS: must be a JSON object {"<serial>": "<PEM>"}',
  ]);
  for (const p of more) assert.ok(!p.includes("MIIsecret") && !p.includes("short-secret"));
  assert.deepEqual(problemsOf({ ...alipayEnv, ALIPAY_PUBLIC_KEY: pem(ali, "private") }), [
    "ALIPAY_PUBLIC_KEY: not a valid RSA public key (PEM, certificate or base64 DER expected)",
  ]);
  assert.deepEqual(problemsOf({ SANDBOX_PAY_PRIVATE_KEY: pem(sandbox, "private"), SANDBOX_PAY_PUBLIC_KEY: pem(app, "public") }), [
    "SANDBOX_PAY_PUBLIC_KEY: does not match SANDBOX_PAY_PRIVATE_KEY",
  ]);
  assert.deepEqual(problemsOf({ ...wechatEnv, WECHATPAY_PLATFORM_CERTS: JSON.stringify({ SERIAL1: "nope" }) }), [
    "WECHATPAY_PLATFORM_CERTS[SERIAL1]: not a valid RSA public key (PEM, certificate or base64 DER expected)",
  ]);
  assert.deepEqual(problemsOf({ ...alipayEnv, ALIPAY_APP_ID: "app-one" }), ["ALIPAY_APP_ID: must be digits (the Alipay app id)"]);
  const err = (() => {
    try {
      parsePaymentConfig({ ...alipayEnv, ALIPAY_PRIVATE_KEY: "MIIsecretbutbroken" }, { mode: "cluster" });
    } catch (e) {
      return e as Error;
    }
    return undefined;
  })();
  assert.ok(err && !err.message.includes("MIIsecret") && !String(err.stack).includes("MIIsecret"));
});

it("keys in the shapes environments carry: escaped newlines, bare base64 (PKCS#8 and PKCS#1)", () => {
  const escaped = pem(app, "private").replace(/\n/g, "\\n");
  const bare = app.privateKey.export({ type: "pkcs8", format: "der" }).toString("base64");
  const pkcs1 = app.privateKey.export({ type: "pkcs1", format: "der" }).toString("base64");
  const barePublic = ali.publicKey.export({ type: "spki", format: "der" }).toString("base64");
  for (const key of [escaped, bare, pkcs1]) {
    const c = parsePaymentConfig({ ...alipayEnv, ALIPAY_PRIVATE_KEY: key, ALIPAY_PUBLIC_KEY: barePublic }, { mode: "cluster" });
    assert.deepEqual(c.enabled, ["alipay"]);
  }
});
