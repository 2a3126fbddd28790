/**
 * A private, single-member etcd server for system tests.
 *
 * Each call to `startEtcd()` runs its own etcd (Debian's /usr/bin/etcd 3.4, or $ETCD_BIN) on free
 * client and peer ports, with its own name and data dir under the OS temp dir; its log goes to
 * `<dir>/etcd.log`. `stop()` and `start()` simulate an outage: the server comes back on the same
 * ports with the same data (so leases and keys survive, as in a real etcd restart).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "./ports";

export interface EtcdHandle {
  /** Client URL for the etcd3 client's `hosts` option, e.g. "http://127.0.0.1:40123". */
  hosts: string;
  /** SIGTERM the server and wait until it has exited. No-op if it is not running. */
  stop(): Promise<void>;
  /** Start it again (same ports, name and data dir) and wait until /health is OK. */
  start(): Promise<void>;
  /** Kill it (SIGKILL) and remove its directory. Safe to call more than once. */
  destroy(): Promise<void>;
}

const ETCD_BIN = process.env.ETCD_BIN ?? "/usr/bin/etcd";
const READY_TIMEOUT_MS = 20_000;

export async function startEtcd(): Promise<EtcdHandle> {
  if (!fs.existsSync(ETCD_BIN)) {
    throw new Error(`etcd binary not found at ${ETCD_BIN}: install Debian's "etcd-server" package or set ETCD_BIN`);
  }
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-etcd-"));
  const name = path.basename(dir);
  const hosts = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    `--name=${name}`,
    `--data-dir=${path.join(dir, "data")}`,
    `--listen-client-urls=${hosts}`,
    `--advertise-client-urls=${hosts}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=${name}=${peer}`,
  ];
  // ETCD_* variables from the environment would be mixed with our flags.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ETCD_")));
  let child: ChildProcess | null = null;

  const exited = (proc: ChildProcess) =>
    proc.exitCode !== null || proc.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>(resolve => proc.once("exit", () => resolve()));

  async function start(): Promise<void> {
    if (child) return;
    const log = fs.openSync(path.join(dir, "etcd.log"), "a");
    const proc = spawn(ETCD_BIN, args, { env, stdio: ["ignore", log, log] });
    fs.closeSync(log);
    child = proc;
    proc.once("exit", () => {
      if (child === proc) child = null;
    });
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (child !== proc) throw new Error(`etcd exited during startup, see ${dir}/etcd.log`);
      try {
        const res = await fetch(`${hosts}/health`, { signal: AbortSignal.timeout(1000) });
        if (res.ok && ((await res.json()) as { health?: string }).health === "true") return;
      } catch {
        // not listening yet
      }
      await new Promise(r => setTimeout(r, 100));
    }
    throw new Error(`etcd not healthy after ${READY_TIMEOUT_MS} ms, see ${dir}/etcd.log`);
  }

  async function stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const proc = child;
    if (!proc) return;
    proc.kill(signal);
    await exited(proc);
  }

  await start().catch(async err => {
    await stop("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  return {
    hosts,
    start,
    stop: () => stop(),
    async destroy() {
      await stop("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
