/**
 * Moleculer's runner (#18: `npm run dev`): `moleculer-runner` loads moleculer.config.ts's
 * default export (the broker options of the one validated configuration) and every
 * `services/<name>/*.service.ts` (their default exports), the embedded system answers, and
 * with `--hot` an edited service file is reloaded in place. A real process, as `npm run dev`
 * starts it (without the REPL, which needs a terminal).
 *
 * @shares-machine: one embedded process started and one service reloaded (about 4 s).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { it } from "mocha";
import { eventually } from "../support/eventually";
import { freePort } from "../support/ports";

const ROOT = path.join(__dirname, "..", "..");
const RUNNER = path.join(ROOT, "node_modules", "moleculer", "bin", "moleculer-runner.js");

it("moleculer-runner starts the embedded system from moleculer.config.ts and the service files, and hot-reloads an edited service", async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-runner-"));
  const port = await freePort();
  // The `dev` script's command, read from package.json (so the test runs what users run), minus --repl.
  const dev = (JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts.dev;
  assert.match(
    dev,
    /^node --import tsx node_modules\/moleculer\/bin\/moleculer-runner\.js --config moleculer\.config\.ts --mask '\*\*\/\*\.service\.ts' --hot --repl$/,
  );
  const child = spawn(
    process.execPath,
    ["--import", "tsx", RUNNER, "--config", "moleculer.config.ts", "--mask", "**/*.service.ts", "--hot"],
    {
      cwd: ROOT,
      // SERIALIZER and NAMESPACE are ours; the runner would read them as broker options (hidden from it).
      env: {
        ...process.env,
        DATA_DIR: dataDir,
        PORT: String(port),
        GRPC_PORT: "0",
        DEMO_CATALOG: "false",
        LOG_LEVEL: "info",
        NODE_ENV: "development",
        SERIALIZER: "protobuf",
        NAMESPACE: "runner-test",
        SERVICES: "all",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const lines: string[] = [];
  for (const s of [child.stdout, child.stderr]) readline.createInterface({ input: s }).on("line", (l) => lines.push(l));
  const cart = path.join(ROOT, "services", "cart", "cart.service.ts");
  try {
    const base = `http://127.0.0.1:${port}`;
    await eventually(
      "the broker started",
      async () => (lines.some((l) => /ServiceBroker with \d+ service\(s\) started/.test(l)) ? true : undefined),
      90_000,
    );
    assert.equal((await fetch(`${base}/api/products?pageSize=1`)).status, 200);
    // Every service file was loaded (the gateway lists each one's routes; the others answer their own).
    for (const s of ["user", "product", "search", "cart", "order", "payment", "notification", "recommendation", "grpc"])
      assert.ok(
        lines.some((l) => new RegExp(`Service '${s}' started`).test(l)),
        `service ${s} started by the runner`,
      );
    assert.equal((await fetch(`${base}/api/cart`)).status, 401, "a route of a service file answers (no token: 401)");

    // An edit (here: its modification time) reloads that service only.
    const now = new Date();
    fs.utimesSync(cart, now, now);
    await eventually(
      "the cart service reloaded",
      async () => (lines.some((l) => /Hot reload 'cart' service/.test(l)) ? true : undefined),
      30_000,
    );
    await eventually(
      "cart answers again",
      async () => ((await fetch(`${base}/api/cart`).catch(() => undefined))?.status === 401 ? true : undefined),
      30_000,
    );
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
