/**
 * A private RabbitMQ node for tests that stop and restart the broker (never the machine's
 * shared one). Its own node name, AMQP and distribution ports, data, log and config files
 * in a temp dir, no plugins (so no management listener). It runs Debian's scripts from
 * /usr/lib/rabbitmq/bin directly as the current user (root in CI), not through
 * /usr/sbin's wrapper, which would `su rabbitmq` and hide the pid. HOME is the temp dir,
 * so the node and our rabbitmqctl calls share a cookie Erlang generates there (the
 * machine's own cookie is neither read nor needed); epmd is the machine's.
 *
 * `stop()` / `start()` restart it on the same data dir (durable queues and persistent
 * messages survive); `destroy()` stops it and removes the dir.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "./ports";

const BIN = process.env.RABBITMQ_BIN_DIR ?? "/usr/lib/rabbitmq/bin";

export interface PrivateRabbit {
  uri: string;
  node: string;
  dir: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  destroy(): Promise<void>;
}

export async function startPrivateRabbit(): Promise<PrivateRabbit> {
  if (!fs.existsSync(path.join(BIN, "rabbitmq-server"))) throw new Error(`rabbitmq-server not found in ${BIN}: install Debian's rabbitmq-server`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-rabbit-"));
  for (const d of ["mnesia", "log", "home"]) fs.mkdirSync(path.join(dir, d));
  fs.writeFileSync(path.join(dir, "enabled_plugins"), "[].\n");
  fs.writeFileSync(path.join(dir, "rabbitmq.conf"), "");
  const [port, distPort] = [await freePort(), await freePort()];
  const node = `meridian-${randomBytes(4).toString("hex")}@localhost`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: path.join(dir, "home"),
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: path.join(dir, "mnesia"),
    RABBITMQ_LOG_BASE: path.join(dir, "log"),
    RABBITMQ_CONFIG_FILE: path.join(dir, "rabbitmq"),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, "enabled_plugins"),
    RABBITMQ_PID_FILE: path.join(dir, "rabbit.pid"),
  };
  const ctl = (...args: string[]) => promisify(execFile)(path.join(BIN, "rabbitmqctl"), ["-n", node, ...args], { env, timeout: 90_000 });
  let child: ChildProcess | null = null;

  const exited = (proc: ChildProcess) =>
    proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => proc.once("exit", () => r()));

  async function start(): Promise<void> {
    if (child) return;
    const log = fs.openSync(path.join(dir, "server.log"), "a");
    const proc = spawn(path.join(BIN, "rabbitmq-server"), [], { env, stdio: ["ignore", log, log] });
    fs.closeSync(log);
    child = proc;
    proc.once("exit", () => {
      if (child === proc) child = null;
    });
    // `await_startup` fails at once while the node has not registered with epmd yet: retry.
    const deadline = Date.now() + 90_000;
    for (;;) {
      try {
        await ctl("await_startup", "--timeout", "60");
        return;
      } catch (err) {
        if (child !== proc || Date.now() > deadline)
          throw new Error(`private RabbitMQ did not start (see ${dir}/server.log and ${dir}/log): ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async function stop(): Promise<void> {
    const proc = child;
    if (!proc) return;
    await ctl("stop").catch(() => proc.kill("SIGTERM"));
    await Promise.race([exited(proc), new Promise((r) => setTimeout(r, 30_000))]);
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited(proc);
    }
    child = null;
  }

  await start().catch(async (err) => {
    await stop(); // the dir stays, for its logs
    throw err;
  });
  return {
    uri: `amqp://guest:guest@127.0.0.1:${port}`,
    node,
    dir,
    start,
    stop,
    async destroy() {
      await stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
