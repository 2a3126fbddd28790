/**
 * The logger (lib/logger.ts): the line shapes of both formats through a broker, and the stop
 * guarantee of `npm start`'s asynchronous stdout: a node stopped by SIGTERM while its stdout is
 * not being read (its lines queued in the process) still writes every line before it exits.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, describe, it } from "mocha";
import { ServiceBroker, type Context } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import { freePort } from "../test/support/ports";
import { uniqueNamespace } from "../test/support/servers";
import { loadConfig } from "./config";
import type { LogDestination } from "./logger";
import { logFields } from "./tracing";
import { mapBounded, range } from "./bounded";

const ROOT = path.resolve(__dirname, "..");

function collector(): { lines: string[]; destination: LogDestination } {
  const lines: string[] = [];
  return { lines, destination: { write: (chunk: string) => void lines.push(...chunk.split("\n").filter(Boolean)) } };
}

describe("log lines", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-logger-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function logThrough(format: "json" | "text"): Promise<string[]> {
    const out = collector();
    const config = loadConfig({ DATA_DIR: dir, LOG_FORMAT: format, LOG_LEVEL: "info", NODE_ID: "log-node", NAMESPACE: uniqueNamespace() });
    const broker = new ServiceBroker(brokerOptions(config, [], { logDestination: out.destination }));
    broker.createService({
      name: "probe",
      actions: {
        speak(this: { logger: ServiceBroker["logger"] }, ctx: Context) {
          this.logger.info(logFields({ kind: "probe", n: 7 }), "spoke", { deep: { er: 1 } });
          this.logger.debug("below the level");
          this.logger.error("failed:", new Error("boom"));
          return ctx.requestID;
        },
      },
    });
    await broker.start();
    try {
      await broker.call("probe.speak", {}, { requestID: "req-log-1" });
    } finally {
      await broker.stop();
    }
    return out.lines;
  }

  it("JSON: Moleculer's fields, the request id inside a handler, logFields merged, the level honoured", async () => {
    const lines = (await logThrough("json")).map((l) => JSON.parse(l) as Record<string, unknown>);
    const spoke = lines.find((l) => typeof l.msg === "string" && l.msg.startsWith("spoke"))!;
    assert.ok(spoke, "the info line");
    assert.equal(spoke.level, "info");
    assert.equal(typeof spoke.ts, "number");
    assert.equal(spoke.msg, "spoke { deep: { er: 1 } }");
    assert.deepEqual(
      [spoke.nodeID, spoke.mod, spoke.svc, spoke.requestId, spoke.kind, spoke.n],
      ["log-node", "probe", "probe", "req-log-1", "probe", 7],
    );
    const failed = lines.find((l) => typeof l.msg === "string" && l.msg.startsWith("failed:"))!;
    assert.equal(failed.level, "error");
    assert.match(String(failed.msg), /Error: boom\n/, "an error's stack, as util.inspect prints it");
    assert.ok(!lines.some((l) => l.msg === "below the level"));
    assert.ok(
      lines.some((l) => l.msg === "ServiceBroker is stopped. Good bye." && l.requestId === undefined),
      "written at stop, outside any request",
    );
  });

  it("text: Moleculer's short line, logFields as key=value", async () => {
    const lines = await logThrough("text");
    const spoke = lines.find((l) => l.includes("spoke"));
    assert.match(spoke ?? "", /^\[\d\d:\d\d:\d\d\.\d{3}Z\] INFO +PROBE: kind=probe n=7 spoke \{ deep: \{ er: 1 \} \}$/);
    assert.ok(!lines.some((l) => l.includes("below the level")));
  });
});

describe("npm start's asynchronous stdout", () => {
  it("SIGTERM while stdout is not read: every access line and the last stop line are written before exit", async () => {
    const port = await freePort();
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-logger-start-"));
    const child = spawn(process.execPath, ["--import", pathToFileURL(require.resolve("tsx")).href, path.join(ROOT, "bin", "start.ts")], {
      cwd: ROOT,
      env: {
        ...process.env,
        PORT: String(port),
        DATA_DIR: dataDir,
        SERVICES: "gateway",
        NAMESPACE: uniqueNamespace(),
        NODE_ID: "log-flush",
        LOG_FORMAT: "json",
        LOG_LEVEL: "info",
        METRICS_PORT: "0",
        GRPC_PORT: "0",
        RATE_LIMITS: "off",
        RABBITMQ_URI: "",
        REDIS_URL: "",
        MYSQL_URL: "",
        ETCD_HOSTS: "",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (out += s));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const ok = await fetch(`http://127.0.0.1:${port}/health/live`).then(
          (r) => r.ok,
          () => false,
        );
        if (ok) break;
        if (Date.now() > deadline) assert.fail(`not up within 60 s:\n${out.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // From here the child's stdout pipe fills (64 KiB) and its lines queue in the process.
      child.stdout.pause();
      const N = 1500;
      await mapBounded(range(N), 20, async (i) => {
        const res = await fetch(`http://127.0.0.1:${port}/api/no-such-route-${i}`, { headers: { "x-request-id": `flush-${i}` } });
        assert.equal(res.status, 404);
        await res.arrayBuffer();
      });
      child.kill("SIGTERM");
      // The stop waits for the queued lines; reading again lets them out.
      await new Promise((r) => setTimeout(r, 500));
      child.stdout.resume();
      assert.equal(await exited, 0, out.slice(-2000));
      // Every line whole: the log's JSON lines, and the start banner (bin/start.ts, through the same destination).
      const lines = out
        .split("\n")
        .filter((l) => l && !l.startsWith("Meridian started") && !l.startsWith("  "))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const ids = new Set(lines.filter((l) => l.kind === "access").map((l) => l.requestId));
      const missing = Array.from({ length: N }, (_, i) => `flush-${i}`).filter((id) => !ids.has(id));
      assert.deepEqual(missing, [], `${missing.length} access lines lost`);
      assert.ok(
        lines.some((l) => l.msg === "ServiceBroker is stopped. Good bye."),
        "the broker's last line",
      );
    } finally {
      child.kill("SIGKILL");
      await exited;
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
