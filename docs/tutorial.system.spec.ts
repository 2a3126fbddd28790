/**
 * docs/tutorial.md runs as written, start to end (docs/tutorial.ts): the embedded shop with its
 * REPL, a purchase through the sandbox's page in headless Chromium, the REPL's `business-events`
 * and `invariants`, the race script, a chaos run on the local cluster, and each "break it yourself"
 * switch failing its test and passing without it. From a terminal as a reader's would be: no
 * NODE_ENV and none of the variables the tests set, in the repository's root.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { describe, it } from "mocha";
import { pressButton } from "../test/support/chromium";
import { parseTutorial, runTutorial } from "./tutorial";

const ROOT = path.resolve(__dirname, "..");
const PAGE = fs.readFileSync(path.join(ROOT, "docs", "tutorial.md"), "utf8");

/** The ports the tutorial's shop listens on (the defaults: gateway, gRPC, metrics). */
const PORTS = [3000, 50051, 3030];

const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });

/** The environment of a fresh terminal: the machine's, without what the test tooling sets for itself. */
function readersEnv(): Record<string, string | undefined> {
  const env = { ...process.env };
  for (const name of ["NODE_ENV", "DATA_DIR", "PORT", "GRPC_PORT", "METRICS_PORT", "BREAK_PROTECTION", "MERIDIAN_TEST_STATS", "LOG_LEVEL"])
    delete env[name];
  return env;
}

describe("docs/tutorial.md", () => {
  it("runs as written: every command and HTTP call of the page, in order, does what the page says", async () => {
    for (const port of PORTS) assert.ok(await portFree(port), `port ${port} is taken: the tutorial's shop listens there`);
    const dataDir = /DATA_DIR=(\S+)/.exec(PAGE)?.[1] ?? "";
    assert.ok(dataDir.startsWith("/tmp/"), "the tutorial starts the shop in a data directory of its own, under /tmp");
    // The tutorial's shop starts empty, as a first reader's does.
    fs.rmSync(dataDir, { recursive: true, force: true });
    const steps = parseTutorial(PAGE);
    try {
      await runTutorial(steps, ROOT, readersEnv(), {
        log: (line) => process.stdout.write(`    ${line}\n`),
        pressButton,
      });
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }).timeout(19 * 60_000); // under bin/test.ts's file limit (TEST_FILE_TIMEOUT_S, 20 minutes): this bound is the one met
});
