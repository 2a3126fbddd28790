/**
 * A private etcd for system tests and the local cluster: one member, or three clustered on
 * this machine, optionally with authentication on.
 *
 * Each member is Debian's /usr/bin/etcd 3.4 (or $ETCD_BIN) on its own free client and peer
 * ports, with its own name and data dir under the OS temp dir; its log goes to
 * `<dir>/<name>.log`. `stop()` and `start()` simulate an outage of every member (they come
 * back on the same ports with the same data, so leases and keys survive as in a real restart);
 * `members` stops, kills and starts one member at a time, and `leader()` names the current
 * leader.
 *
 * With `auth`, etcd checks credentials as a production etcd does: a `root` user (role root),
 * and a user whose role reaches only `auth.prefix` (the nodes' discovery keys), then auth on.
 * Passwords are random per start; `credentials` has the nodes' user for ETCD_USERNAME /
 * ETCD_PASSWORD, `root` the administrator's (to grant or inspect).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Etcd3 } from "etcd3";
import { ROOT_USER, setUpEtcdAuth } from "../../lib/discovery/etcd-auth-setup";
import { freePort } from "./ports";

export interface EtcdMember {
  name: string;
  /** This member's client URL. */
  url: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
  start(): Promise<void>;
  running(): boolean;
}

export interface EtcdHandle {
  /** Client URLs of every member, comma-separated (ETCD_HOSTS; the etcd3 client's `hosts` split on commas). */
  hosts: string;
  members: EtcdMember[];
  /** The nodes' user (auth only): role reaching only the prefix given. */
  credentials?: { username: string; password: string };
  /** The administrator (auth only). */
  root?: { username: string; password: string };
  /** The member the running members follow. */
  leader(): Promise<EtcdMember>;
  /** SIGTERM every member and wait until they have exited. */
  stop(): Promise<void>;
  /** Start every stopped member again (same ports, names and data) and wait until healthy. */
  start(): Promise<void>;
  /** Kill every member (SIGKILL) and remove the directory. Safe to call more than once. */
  destroy(): Promise<void>;
}

export interface EtcdOptions {
  /** 1 (default) or 3. */
  members?: number;
  /** Authentication on, with a user whose role reaches only this key prefix. */
  auth?: { prefix: string; username?: string };
}

const ETCD_BIN = process.env.ETCD_BIN ?? "/usr/bin/etcd";
const READY_TIMEOUT_MS = 20_000;

export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdHandle> {
  if (!fs.existsSync(ETCD_BIN)) {
    throw new Error(`etcd binary not found at ${ETCD_BIN}: install Debian's "etcd-server" package or set ETCD_BIN`);
  }
  const count = opts.members ?? 1;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-etcd-"));
  const cluster = path.basename(dir);
  const specs: { name: string; client: string; peer: string }[] = [];
  for (let i = 0; i < count; i++) {
    specs.push({
      name: `${cluster}-${i + 1}`,
      client: `http://127.0.0.1:${await freePort()}`,
      peer: `http://127.0.0.1:${await freePort()}`,
    });
  }
  const initialCluster = specs.map((s) => `${s.name}=${s.peer}`).join(",");
  // With authentication, JWT tokens (etcd's advice for a cluster): a token any member issued is
  // valid on every member, so losing the member that issued it costs no new login. Etcd's
  // default "simple" tokens live in the issuing member only.
  const tokens: string[] = [];
  if (opts.auth) {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", {
      modulusLength: 2048,
      publicKeyEncoding: { type: "spki", format: "pem" },
      privateKeyEncoding: { type: "pkcs8", format: "pem" },
    });
    fs.writeFileSync(path.join(dir, "jwt.key"), privateKey, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, "jwt.pub"), publicKey);
    tokens.push(`--auth-token=jwt,pub-key=${path.join(dir, "jwt.pub")},priv-key=${path.join(dir, "jwt.key")},sign-method=RS256,ttl=10m`);
  }
  // ETCD_* variables from the environment would be mixed with our flags.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ETCD_")));
  const members = specs.map((s) => member(s, dir, [`--initial-cluster=${initialCluster}`, ...tokens], env));
  const destroy = async () => {
    await Promise.all(members.map((m) => m.stop("SIGKILL")));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    // Members of a new cluster wait for each other: start them together.
    await Promise.all(members.map((m) => m.start()));
    const hosts = members.map((m) => m.url).join(",");
    const secured = opts.auth
      ? await enableAuth(
          members.map((m) => m.url),
          opts.auth,
        )
      : undefined;
    return {
      hosts,
      members,
      ...secured,
      async leader() {
        const client = new Etcd3({ hosts: members.filter((m) => m.running()).map((m) => m.url), auth: secured?.root });
        try {
          const [{ leader }, { members: list }] = await Promise.all([client.maintenance.status(), client.cluster.memberList({})]);
          const name = list.find((m) => m.ID === leader)?.name;
          const found = members.find((m) => m.name === name);
          if (!found) throw new Error(`no leader among the members (status says ${leader})`);
          return found;
        } finally {
          client.close();
        }
      },
      stop: async () => void (await Promise.all(members.map((m) => m.stop()))),
      start: async () => void (await Promise.all(members.filter((m) => !m.running()).map((m) => m.start()))),
      destroy,
    };
  } catch (err) {
    await destroy();
    throw err;
  }
}

function member(
  spec: { name: string; client: string; peer: string },
  dir: string,
  clusterArgs: string[],
  env: NodeJS.ProcessEnv,
): EtcdMember {
  const args = [
    `--name=${spec.name}`,
    `--data-dir=${path.join(dir, spec.name)}`,
    `--listen-client-urls=${spec.client}`,
    `--advertise-client-urls=${spec.client}`,
    `--listen-peer-urls=${spec.peer}`,
    `--initial-advertise-peer-urls=${spec.peer}`,
    `--initial-cluster-token=${path.basename(dir)}`,
    ...clusterArgs,
  ];
  let child: ChildProcess | null = null;
  const exited = (proc: ChildProcess) =>
    proc.exitCode !== null || proc.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => proc.once("exit", () => resolve()));

  return {
    name: spec.name,
    url: spec.client,
    running: () => child !== null,
    async start() {
      if (child) return;
      const log = fs.openSync(path.join(dir, `${spec.name}.log`), "a");
      const proc = spawn(ETCD_BIN, args, { env, stdio: ["ignore", log, log] });
      fs.closeSync(log);
      child = proc;
      proc.once("exit", () => {
        if (child === proc) child = null;
      });
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (Date.now() < deadline) {
        if (child !== proc) throw new Error(`etcd member ${spec.name} exited during startup, see ${dir}/${spec.name}.log`);
        try {
          // /health is "true" once this member has a leader (a member alone in a cluster of three is not healthy).
          const res = await fetch(`${spec.client}/health`, { signal: AbortSignal.timeout(1000) });
          if (res.ok && ((await res.json()) as { health?: string }).health === "true") return;
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`etcd member ${spec.name} not healthy after ${READY_TIMEOUT_MS} ms, see ${dir}/${spec.name}.log`);
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      const proc = child;
      if (!proc) return;
      proc.kill(signal);
      await exited(proc);
    },
  };
}

/** Users and roles as an operator sets them up (lib/discovery/etcd-auth-setup.ts, what `npm run etcd:auth` runs). */
async function enableAuth(hosts: string[], auth: NonNullable<EtcdOptions["auth"]>) {
  const root = { username: ROOT_USER, password: randomBytes(12).toString("hex") };
  const credentials = { username: auth.username ?? "meridian", password: randomBytes(12).toString("hex") };
  await setUpEtcdAuth({ hosts, rootPassword: root.password, user: credentials, prefix: auth.prefix });
  return { root, credentials };
}
