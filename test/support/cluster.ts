/**
 * The Kubernetes topology as processes on this machine: one `bin/start.ts` process per pod
 * (one service per node, the replica counts of k8s/base), over RabbitMQ, etcd, Redis and
 * MariaDB. Used by `npm run cluster`, the system tests and the chaos runner.
 *
 * Servers:
 * - etcd: always a private instance (own ports and data dir), as discovery, with
 *   authentication on: the nodes log in as a user whose role reaches only this cluster's
 *   discovery keys (ETCD_USERNAME / ETCD_PASSWORD in `env`); `etcdMembers: 3` clusters three;
 * - RabbitMQ and MariaDB: the machine's shared servers (a fresh vhost; databases under a
 *   unique namespace), or private instances (`privateServers: true`) for runs that restart
 *   them (chaos) — the machine's shared servers are never restarted;
 * - Redis: the machine's (keys under the namespace's prefix, removed at the end).
 *
 * Start: migrations first (`bin/migrate.ts`, as the Kubernetes Job), then every node, a few at
 * a time (each tsx process compiles on start), then until every gateway is ready and sees
 * every service with its replica count. Stop: SIGTERM to every node (Moleculer's graceful
 * stop), SIGKILL after a grace period, then the servers and everything the run created.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { parseAllDocuments } from "yaml";
import { brokerOptions } from "../../moleculer.config";
import { ALL_SERVICES, loadConfig, type ServiceName } from "../../lib/config";
import { dropDatabase } from "../../lib/db";
import { deleteRedisKeys } from "./app";
import { discoveryPrefix } from "../../lib/discovery/etcd-access";
import { startEtcd, type EtcdHandle } from "./etcd";
import { freePort } from "./ports";
import { startPrivateMariaDb, type PrivateMariaDb } from "./private-mariadb";
import { startPrivateRabbit, startPrivateRabbitCluster, type PrivateRabbit, type PrivateRabbitCluster } from "./private-rabbitmq";
import { settlesWithin, spawnTs, type ChildHandle } from "./proc";
import { createVhost, type RabbitVhost } from "./rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "./servers";

const ROOT = path.resolve(__dirname, "..", "..");
const START = path.join(ROOT, "bin", "start.ts");
const MIGRATE = path.join(ROOT, "bin", "migrate.ts");
/** Services that own a database (dropped at the end). */
export const DB_SERVICES: ServiceName[] = ["user", "product", "cart", "order", "payment", "notification", "recommendation"];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Replicas per service, read from the Deployments of k8s/base (the one source of the counts). */
export function k8sReplicas(dir = path.join(ROOT, "k8s", "base")): Record<ServiceName, number> {
  const out = {} as Record<ServiceName, number>;
  for (const service of ALL_SERVICES) {
    const file = path.join(dir, `${service}.yaml`);
    const docs = parseAllDocuments(fs.readFileSync(file, "utf8")).map((d) => d.toJS() as { kind?: string; spec?: { replicas?: number } });
    const deployment = docs.find((d) => d?.kind === "Deployment");
    if (!deployment) throw new Error(`${file}: no Deployment`);
    out[service] = deployment.spec?.replicas ?? 1;
  }
  return out;
}

export interface ClusterNode {
  id: string;
  service: ServiceName;
  /** The gateway's PORT, or the node's METRICS_PORT. */
  port: number;
  /** The internal listener (/metrics, health routes): METRICS_PORT. */
  metricsPort: number;
  /** A gRPC edge's GRPC_PORT. */
  grpcPort?: number;
  child: ChildHandle;
  /** Every process this node id ran (restarts included). */
  history: ChildHandle[];
}

export interface LocalClusterOptions {
  /** Replicas per service (default: k8s/base's). */
  replicas?: Partial<Record<ServiceName, number>>;
  /** Private RabbitMQ and MariaDB instances (for runs that restart them). */
  privateServers?: boolean;
  /** Extra environment for every node. */
  env?: Record<string, string>;
  /** First gateway's port (the others follow); default: free ports. */
  gatewayPort?: number;
  /** Where the nodes' logs go (one file per node id); default: a temp dir. */
  logDir?: string;
  /** Admin account created at start (the user service's ADMIN_EMAIL/ADMIN_PASSWORD). */
  admin?: { email: string; password: string };
  /** Progress messages. */
  log?: (line: string) => void;
  /** Nodes started at once. */
  startConcurrency?: number;
  /** etcd members (1, or 3 for a cluster that survives one member's loss). */
  etcdMembers?: number;
  /**
   * No single point in the bus (#17): three clustered private RabbitMQ nodes (quorum queues
   * replicated on all three) and three etcd members, beside a private MariaDB. Each node's
   * RABBITMQ_URI lists the three, starting with a different one, so the nodes' connections
   * spread over the brokers as a Kubernetes Service would spread them.
   */
  ha?: boolean;
}

export interface LocalCluster {
  namespace: string;
  env: Record<string, string>;
  nodes: Map<string, ClusterNode>;
  gatewayUrls: string[];
  /** The gRPC edges' addresses (`127.0.0.1:<GRPC_PORT>`), by node id. */
  grpcAddresses: Map<string, string>;
  etcd: EtcdHandle;
  /** The single private RabbitMQ (privateServers without ha). */
  rabbit?: PrivateRabbit;
  /** The three clustered private RabbitMQ nodes (ha). */
  rabbitCluster?: PrivateRabbitCluster;
  mariadb?: PrivateMariaDb;
  logDir: string;
  /** A broker of this process on the cluster (no services), for `$node` calls and checks. */
  observer: ServiceBroker;
  kill(nodeId: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts the node again (after a kill), and waits for its start line. */
  restart(nodeId: string): Promise<void>;
  /** Every service visible from `nodeId`'s registry with the number of nodes running it. */
  servicesSeenBy(nodeId: string): Promise<Map<string, number>>;
  /** Until every gateway is ready and sees every service at full count (or throws). */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(opts?: { keep?: boolean }): Promise<void>;
}

async function httpOk(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

export async function startLocalCluster(opts: LocalClusterOptions = {}): Promise<LocalCluster> {
  const log = opts.log ?? (() => undefined);
  const replicas = { ...k8sReplicas(), ...opts.replicas };
  const namespace = uniqueNamespace("lc");
  const logDir = opts.logDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "meridian-cluster-"));
  fs.mkdirSync(logDir, { recursive: true });
  const cleanups: { what: string; run: () => Promise<unknown> }[] = [];
  const cleanup = (what: string, run: () => Promise<unknown>) => cleanups.push({ what, run });
  // Each step timed in the log: a slow teardown is seconds of every system test that starts a cluster.
  const undo = async () => {
    for (const c of cleanups.reverse()) {
      const started = Date.now();
      await c.run().catch(() => undefined);
      log(`  stopped: ${c.what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    }
  };

  try {
    const etcdMembers = opts.etcdMembers ?? (opts.ha ? 3 : 1);
    log(`etcd: starting a private instance (${etcdMembers} member(s), authentication on)`);
    const etcd = await startEtcd({ members: etcdMembers, auth: { prefix: `${discoveryPrefix(namespace)}/` } });
    cleanup("etcd", () => etcd.destroy());
    let rabbit: PrivateRabbit | undefined;
    let rabbitCluster: PrivateRabbitCluster | undefined;
    let vhost: RabbitVhost | undefined;
    let mariadb: PrivateMariaDb | undefined;
    if (opts.ha) {
      log("RabbitMQ: starting three private nodes, clustered; MariaDB: a private instance");
      const [rc, db] = await Promise.allSettled([startPrivateRabbitCluster(3), startPrivateMariaDb()]);
      if (rc.status === "fulfilled") cleanup("RabbitMQ cluster", () => rc.value.destroy());
      if (db.status === "fulfilled") cleanup("MariaDB", () => db.value.destroy());
      if (rc.status === "rejected") throw rc.reason;
      if (db.status === "rejected") throw db.reason;
      [rabbitCluster, mariadb] = [rc.value, db.value];
    } else if (opts.privateServers) {
      log("RabbitMQ, MariaDB: starting private instances");
      [rabbit, mariadb] = await Promise.all([startPrivateRabbit(), startPrivateMariaDb()]);
      cleanup("RabbitMQ", () => rabbit!.destroy());
      cleanup("MariaDB", () => mariadb!.destroy());
    } else {
      vhost = await createVhost();
      cleanup("RabbitMQ vhost", () => vhost!.destroy());
    }
    const sandbox = generateKeyPairSync("rsa", {
      modulusLength: 2048,
      publicKeyEncoding: { type: "spki", format: "pem" },
      privateKeyEncoding: { type: "pkcs8", format: "pem" },
    });
    const gatewayIds = Array.from({ length: replicas.gateway }, (_, i) => `${namespace}-gateway-${i + 1}`);
    const gatewayPorts: number[] = [];
    for (let i = 0; i < gatewayIds.length; i++) gatewayPorts.push(opts.gatewayPort ? opts.gatewayPort + i : await freePort());
    const env: Record<string, string> = {
      NAMESPACE: namespace,
      RABBITMQ_URI: rabbitCluster?.uris() ?? rabbit?.uri ?? vhost!.uri,
      ETCD_HOSTS: etcd.hosts,
      ETCD_USERNAME: etcd.credentials!.username,
      ETCD_PASSWORD: etcd.credentials!.password,
      REDIS_URL,
      MYSQL_URL: mariadb?.url ?? MYSQL_URL,
      JWT_SECRET: randomBytes(32).toString("hex"),
      SANDBOX_PAY_PRIVATE_KEY: sandbox.privateKey,
      SANDBOX_PAY_PUBLIC_KEY: sandbox.publicKey,
      PUBLIC_URL: `http://127.0.0.1:${gatewayPorts[0]}`,
      DATA_DIR: path.join(logDir, "data"),
      LOG_LEVEL: "warn",
      LOG_FORMAT: "json",
      // Every shopper of a load or chaos run comes from 127.0.0.1: the request limits (not
      // login's) would throttle them as one. Each node logs the warning; pass
      // `env: { RATE_LIMITS: "on" }` (or set it for `npm run cluster`) to keep them.
      RATE_LIMITS: process.env.RATE_LIMITS || "off",
      ...(opts.admin ? { ADMIN_EMAIL: opts.admin.email, ADMIN_PASSWORD: opts.admin.password } : {}),
      ...opts.env,
    };
    const config = loadConfig({ ...env, NODE_ID: "cluster-tool" });
    cleanup("databases and Redis keys", async () => {
      for (const s of DB_SERVICES) await dropDatabase(config, s);
      await deleteRedisKeys(REDIS_URL, namespace);
    });

    log("migrations (bin/migrate.ts, as the Kubernetes Job)");
    const migrate = spawnTs(MIGRATE, { name: "migrate", env: { ...env, NODE_ID: `${namespace}-migrate` } });
    await migrate.waitExit();
    if (!migrate.lines.some((l) => /recommendation: (applied|up to date)/.test(l)))
      throw new Error(`migrations failed:\n${migrate.lines.slice(-20).join("\n")}`);

    const nodes = new Map<string, ClusterNode>();
    type Planned = { id: string; service: ServiceName; port: number; metricsPort: number; grpcPort?: number };
    const plan: Planned[] = [];
    for (const service of ALL_SERVICES)
      for (let i = 0; i < replicas[service]; i++) {
        const metricsPort = await freePort();
        plan.push({
          id: service === "gateway" ? gatewayIds[i] : `${namespace}-${service}-${i + 1}`,
          service,
          port: service === "gateway" ? gatewayPorts[i] : metricsPort,
          metricsPort,
          ...(service === "grpc" ? { grpcPort: await freePort() } : {}),
        });
      }

    const spawnNode = (p: Planned, first: boolean) => {
      const extra: Record<string, string> = {
        ...(rabbitCluster ? { RABBITMQ_URI: rabbitCluster.uris(plan.findIndex((x) => x.id === p.id)) } : {}),
        NODE_ID: p.id,
        SERVICES: p.service,
        METRICS_PORT: String(p.metricsPort),
        ...(p.service === "gateway" ? { PORT: String(p.port) } : {}),
        ...(p.grpcPort ? { GRPC_PORT: String(p.grpcPort) } : {}),
      };
      // One product node loads the demo catalog into the empty database (two would race).
      if (first && p.id === `${namespace}-product-1`) extra.DEMO_CATALOG = "true";
      const child = spawnTs(START, { name: p.id, env: { ...env, ...extra } });
      const out = fs.createWriteStream(path.join(logDir, `${p.id}.log`), { flags: "a" });
      let written = 0;
      const flush = setInterval(() => {
        for (; written < child.lines.length; written++) out.write(`${child.lines[written]}\n`);
        // Bounded memory on long runs: what is in the file need not stay in the array.
        if (written > 5000) {
          child.lines.splice(0, written - 1000);
          written = 1000;
        }
      }, 500);
      void child.waitExit().then(() => {
        for (; written < child.lines.length; written++) out.write(`${child.lines[written]}\n`);
        clearInterval(flush);
        out.end();
      });
      return child;
    };
    const startOne = async (p: Planned, first: boolean) => {
      for (let attempt = 1; ; attempt++) {
        const child = spawnNode(p, first);
        const node = nodes.get(p.id);
        if (node) {
          node.child = child;
          node.history.push(child);
        } else nodes.set(p.id, { ...p, child, history: [child] });
        try {
          await child.waitForLine(/Meridian started/, 90_000);
          return;
        } catch (err) {
          // A start that failed (a server briefly away) is retried, as a pod would be.
          child.kill("SIGKILL");
          await child.waitExit();
          if (attempt >= 3)
            throw new Error(`${p.id} did not start: ${(err as Error).message.split("\n")[0]} (log: ${logDir}/${p.id}.log)`, { cause: err });
          // A port drawn free may be taken meanwhile (an outgoing connection's ephemeral
          // port): the next attempt listens on another one.
          if (child.lines.some((l) => l.includes("EADDRINUSE"))) {
            const port = await freePort();
            if (p.service !== "gateway") p.port = port;
            p.metricsPort = port;
            if (p.grpcPort) p.grpcPort = await freePort();
            const node = nodes.get(p.id);
            if (node) Object.assign(node, { port: p.port, metricsPort: p.metricsPort, grpcPort: p.grpcPort });
          }
          await sleep(1000);
        }
      }
    };

    log(`nodes: ${plan.length} (${ALL_SERVICES.map((s) => `${s} ×${replicas[s]}`).join(", ")})`);
    cleanup("nodes", async () => {
      await Promise.all([...nodes.values()].map((n) => stopChild(n.child)));
    });
    const queue = [...plan];
    let started = 0;
    await Promise.all(
      Array.from({ length: opts.startConcurrency ?? 4 }, async () => {
        for (let p = queue.shift(); p; p = queue.shift()) {
          await startOne(p, true);
          log(`  started ${p.id} (${++started}/${plan.length})`);
        }
      }),
    );

    const observer = new ServiceBroker({ ...brokerOptions({ ...config, nodeId: `${namespace}-observer`, services: [] }), logger: false });
    await observer.start();
    cleanup("observer", () => observer.stop());

    const cluster: LocalCluster = {
      namespace,
      env,
      nodes,
      gatewayUrls: gatewayPorts.map((p) => `http://127.0.0.1:${p}`),
      get grpcAddresses() {
        return new Map([...nodes.values()].filter((n) => n.grpcPort).map((n) => [n.id, `127.0.0.1:${n.grpcPort}`]));
      },
      etcd,
      rabbit,
      rabbitCluster,
      mariadb,
      logDir,
      observer,
      async kill(nodeId, signal = "SIGKILL") {
        const node = nodes.get(nodeId);
        if (!node) throw new Error(`no node ${nodeId}`);
        node.child.kill(signal);
        await node.child.waitExit();
      },
      async restart(nodeId) {
        const node = nodes.get(nodeId);
        if (!node) throw new Error(`no node ${nodeId}`);
        await startOne(node, false);
      },
      async servicesSeenBy(nodeId) {
        const list = await observer.call<
          {
            name: string;
            nodes?: string[];
          }[],
          unknown
        >("$node.services", { onlyAvailable: true, skipInternal: true }, { nodeID: nodeId });
        return new Map(list.map((s) => [s.name, s.nodes?.length ?? 1]));
      },
      async waitHealthy(timeoutMs = 120_000) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const problems: string[] = [];
          for (const [i, url] of cluster.gatewayUrls.entries()) {
            if (!(await httpOk(`${url}/health/ready`))) {
              problems.push(`${gatewayIds[i]} not ready`);
              continue;
            }
            const seen = await cluster.servicesSeenBy(gatewayIds[i]).catch(() => new Map<string, number>());
            for (const s of ALL_SERVICES) {
              const name = moleculerName(s);
              if ((seen.get(name) ?? 0) < replicas[s]) problems.push(`${gatewayIds[i]} sees ${seen.get(name) ?? 0}/${replicas[s]} ${s}`);
            }
          }
          for (const n of nodes.values())
            if (n.service !== "gateway" && !(await httpOk(`http://127.0.0.1:${n.port}/health/ready`))) problems.push(`${n.id} not ready`);
          if (!problems.length) return;
          if (Date.now() > deadline) throw new Error(`cluster not healthy after ${timeoutMs} ms: ${problems.join("; ")}`);
          await sleep(500);
        }
      },
      async stop(stopOpts = {}) {
        if (stopOpts.keep) {
          // Keep the servers' data (databases, vhost): only the processes go.
          await Promise.all([...nodes.values()].map((n) => stopChild(n.child)));
          await observer.stop();
          await etcd.destroy();
          await rabbit?.stop();
          for (const n of rabbitCluster?.nodes ?? []) await n.stop();
          await mariadb?.stop();
          return;
        }
        await undo();
      },
    };
    log("waiting until every gateway is ready and sees every service");
    await cluster.waitHealthy();
    return cluster;
  } catch (err) {
    await undo();
    throw err;
  }
}

/** The Moleculer service a SERVICES entry runs (the gateway's service is `api`). */
export const moleculerName = (s: ServiceName): string => (s === "gateway" ? "api" : s);

/** SIGTERM (Moleculer's graceful stop), SIGKILL after 30 s. */
async function stopChild(child: ChildHandle): Promise<void> {
  child.kill("SIGTERM");
  const done = await settlesWithin(child.waitExit(), 30_000);
  if (!done) {
    child.kill("SIGKILL");
    await child.waitExit();
  }
}
