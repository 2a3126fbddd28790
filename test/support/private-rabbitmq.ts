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
 * messages survive); `kill()` is `kill -9` of its Erlang VM (no goodbye to clients or peers);
 * `destroy()` kills it (its data goes with it) and removes the dir.
 *
 * `startPrivateRabbitCluster(3)`: three such nodes clustered (#17): one Erlang cookie, each
 * its own name, ports and data dir; the second and third join the first
 * (`rabbitmqctl join_cluster`), as a cluster's nodes do with their peer discovery. A node
 * restarted after a kill rejoins by itself (its data dir remembers the cluster).
 *
 * The Erlang VMs are told not to busy-wait (`+sbwt none`...): several of them share this
 * machine's two cores with the services under test, and spinning schedulers would steal them.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "./ports";
import { settlesWithin } from "./proc";

const BIN = process.env.RABBITMQ_BIN_DIR ?? "/usr/lib/rabbitmq/bin";

export interface PrivateRabbit {
  uri: string;
  node: string;
  dir: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** `kill -9` of the node's Erlang VM; resolves once it is gone. */
  kill(): Promise<void>;
  /** rabbitmqctl against this node. */
  ctl(this: void, ...args: string[]): Promise<string>;
  destroy(): Promise<void>;
}

export interface PrivateRabbitCluster {
  nodes: PrivateRabbit[];
  /** Every node's URL, comma-separated (RABBITMQ_URI), starting with node `first`. */
  uris(first?: number): string;
  destroy(): Promise<void>;
}

export async function startPrivateRabbit(opts: { cookie?: string; name?: string } = {}): Promise<PrivateRabbit> {
  if (!fs.existsSync(path.join(BIN, "rabbitmq-server")))
    throw new Error(`rabbitmq-server not found in ${BIN}: install Debian's rabbitmq-server`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-rabbit-"));
  for (const d of ["mnesia", "log", "home"]) fs.mkdirSync(path.join(dir, d));
  fs.writeFileSync(path.join(dir, "enabled_plugins"), "[].\n");
  fs.writeFileSync(path.join(dir, "rabbitmq.conf"), "");
  // Members of one cluster share a cookie; Erlang refuses a cookie file others can read.
  if (opts.cookie) fs.writeFileSync(path.join(dir, "home", ".erlang.cookie"), opts.cookie, { mode: 0o400 });
  const [port, distPort] = [await freePort(), await freePort()];
  const node = `${opts.name ?? `meridian-${randomBytes(4).toString("hex")}`}@localhost`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "+sbwt none +sbwtdcpu none +sbwtdio none",
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
  const ctl = async (...args: string[]) =>
    (await promisify(execFile)(path.join(BIN, "rabbitmqctl"), ["-n", node, ...args], { env, timeout: 90_000 })).stdout;
  let child: ChildProcess | null = null;

  const exited = (proc: ChildProcess) =>
    proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => proc.once("exit", () => r()));

  async function start(): Promise<void> {
    if (child) return;
    // A VM killed with -9 leaves its pid file: gone before the next VM writes its own, so that
    // `kill` never signals a pid of the past.
    fs.rmSync(path.join(dir, "rabbit.pid"), { force: true });
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
          throw new Error(`private RabbitMQ did not start (see ${dir}/server.log and ${dir}/log): ${(err as Error).message}`, {
            cause: err,
          });
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async function stop(): Promise<void> {
    const proc = child;
    if (!proc) return;
    await ctl("stop").catch(() => proc.kill("SIGTERM"));
    await settlesWithin(exited(proc), 30_000);
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited(proc);
    }
    child = null;
  }

  async function kill(): Promise<void> {
    const proc = child;
    if (!proc) return;
    // The Erlang VM is the script's child (Debian's rabbitmq-server waits for it): kill it,
    // as the OOM killer or a node's crash would; the script then exits.
    const pidFile = path.join(dir, "rabbit.pid");
    const vm = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, "utf8").trim()) : 0;
    if (vm > 0) {
      try {
        process.kill(vm, "SIGKILL");
      } catch {
        // already gone
      }
    } else proc.kill("SIGTERM"); // no pid file yet: the script passes a TERM on to the VM it started
    await settlesWithin(exited(proc), 10_000);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
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
    kill,
    ctl,
    async destroy() {
      // Its data goes with it: no graceful stop (an Erlang CLI and the node's shutdown, seconds).
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `size` private nodes clustered (see the header); the first is the seed the others join. */
export async function startPrivateRabbitCluster(size = 3): Promise<PrivateRabbitCluster> {
  const cookie = randomBytes(20).toString("hex").toUpperCase();
  const name = `meridian-${randomBytes(3).toString("hex")}`;
  const started = await Promise.allSettled(
    Array.from({ length: size }, (_, i) => startPrivateRabbit({ cookie, name: `${name}-${i + 1}` })),
  );
  const nodes = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const destroy = async () => {
    await Promise.all(nodes.map((n) => n.destroy()));
  };
  try {
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    const [seed, ...rest] = nodes;
    for (const n of rest) {
      await n.ctl("stop_app");
      await n.ctl("join_cluster", seed.node);
      await n.ctl("start_app");
    }
    const status = await seed.ctl("cluster_status", "--formatter", "json");
    const running = (JSON.parse(status) as { running_nodes: string[] }).running_nodes;
    if (running.length !== size)
      throw new Error(`private RabbitMQ cluster: ${running.length} of ${size} nodes running (${running.join(", ")})`);
  } catch (err) {
    await destroy();
    throw err;
  }
  return {
    nodes,
    uris: (first = 0) => nodes.map((_, i) => nodes[(((first + i) % nodes.length) + nodes.length) % nodes.length].uri).join(","),
    destroy,
  };
}
