/** The notification service's configuration variables (lib/config.ts): SMTP_URL, MAIL_FROM, MAIL_*. */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { it } from "mocha";
import { loadConfig } from "../../lib/config";
import { configProblems } from "../../test/support/config";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-cfg-"));
const problems = (env: Record<string, string>) => configProblems(() => loadConfig({ DATA_DIR: dir, ...env }));

it("defaults: no SMTP (e-mails kept in the database), 8 attempts from 30 s", () => {
  assert.deepEqual(loadConfig({ DATA_DIR: dir }).mail, {
    smtpUrl: undefined,
    from: "Meridian <no-reply@localhost>",
    maxAttempts: 8,
    retryBaseMs: 30_000,
  });
  // Optional in cluster mode too.
  assert.equal(loadConfig({ DATA_DIR: dir, RABBITMQ_URI: "amqp://localhost", SERVICES: "notification" }).mail.smtpUrl, undefined);
  assert.equal(loadConfig({ DATA_DIR: dir, SMTP_URL: "" }).mail.smtpUrl, undefined, "empty is unset");
});

it("SMTP_URL smtp:// or smtps://, MAIL_FROM an address or Name <address>", () => {
  const c = loadConfig({
    DATA_DIR: dir,
    SMTP_URL: "smtps://user:pw@mail.example.com:465",
    MAIL_FROM: "Shop <shop@example.com>",
    MAIL_MAX_ATTEMPTS: "3",
    MAIL_RETRY_BASE_MS: "100",
  });
  assert.deepEqual(c.mail, {
    smtpUrl: "smtps://user:pw@mail.example.com:465",
    from: "Shop <shop@example.com>",
    maxAttempts: 3,
    retryBaseMs: 100,
  });
  assert.equal(
    loadConfig({ DATA_DIR: dir, SMTP_URL: "smtp://127.0.0.1:2525", MAIL_FROM: "shop@example.com" }).mail.from,
    "shop@example.com",
  );
  for (const [env, name] of [
    [{ SMTP_URL: "http://mail.example.com" }, "SMTP_URL"],
    [{ SMTP_URL: "not a url" }, "SMTP_URL"],
    [{ MAIL_FROM: "nobody" }, "MAIL_FROM"],
    [{ MAIL_FROM: "Shop <shop@example.com>\r\nBcc: x@evil.example" }, "MAIL_FROM"],
    [{ MAIL_MAX_ATTEMPTS: "0" }, "MAIL_MAX_ATTEMPTS"],
    [{ MAIL_RETRY_BASE_MS: "fast" }, "MAIL_RETRY_BASE_MS"],
  ] as const) {
    const p = problems(env);
    assert.equal(p.length, 1, p.join("; "));
    assert.ok(p[0].startsWith(`${name}:`), p[0]);
  }
});
