import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { it } from "mocha";
import { loadConfig } from "../../lib/config";
import { keyId } from "./platforms/keys";
import { loadPaymentConfig } from "./payment.service";

it("embedded: the sandbox key pair is generated once into DATA_DIR (0600) and reused after a restart", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-pay-"));
  try {
    const config = loadConfig({ DATA_DIR: dir });
    const first = loadPaymentConfig(config, {});
    assert.deepEqual(first.enabled, ["sandbox"]);
    assert.equal(first.sandbox!.generated, false);
    assert.equal((fs.statSync(path.join(dir, "sandbox-pay-key.pem")).mode & 0o777).toString(8), "600");
    const second = loadPaymentConfig(config, {});
    assert.equal(keyId(second.sandbox!.publicKey), keyId(first.sandbox!.publicKey), "callbacks signed before a restart verify after it");
    assert.equal(config.payments.pendingTimeoutS, 900);
    assert.equal(
      loadConfig({ DATA_DIR: dir, PAYMENT_PENDING_TIMEOUT_S: "60", PAYMENT_RECONCILE_INTERVAL_MS: "500" }).payments.reconcileIntervalMs,
      500,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it("cluster: no sandbox unless its keys are given; nothing written", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-pay-"));
  try {
    const config = loadConfig({ DATA_DIR: dir, RABBITMQ_URI: "amqp://localhost", SERVICES: "payment" });
    assert.deepEqual(loadPaymentConfig(config, {}).enabled, []);
    assert.equal(fs.existsSync(path.join(dir, "sandbox-pay-key.pem")), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
