/**
 * The platform against the real servers: separate node processes (gateway, two user
 * replicas) over RabbitMQ (own vhost) with etcd discovery (a private etcd, since this
 * test stops it), Redis (own key prefix) and MariaDB (own databases). Then the same user
 * flow in embedded mode, from `bin/start.ts` exactly as `npm start` runs it.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import { promisify } from "node:util";
import type { ServiceBroker } from "moleculer";
import { createBroker } from "../../app";
import { loadConfig } from "../../lib/config";
import { discoveryPrefix } from "../../lib/discovery/etcd-access";
import { dropDatabase } from "../../lib/db";
import { deleteRedisKeys, http } from "../support/app";
import { startEtcd, type EtcdHandle } from "../support/etcd";
import { freePort } from "../support/ports";
import { settlesWithin, spawnTs, type ChildHandle } from "../support/proc";
import { createVhost, type RabbitVhost } from "../support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../support/servers";

const ROOT = path.resolve(__dirname, "..", "..");
const START = path.join(ROOT, "bin", "start.ts");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The user part of the contract, end to end; throws with the step that failed. */
async function userFlow(baseUrl: string): Promise<number> {
  let requests = 0;
  const step = async (name: string, method: string, p: string, expect: number, opts: Parameters<typeof http>[3] = {}) => {
    requests++;
    const r = await http(baseUrl, method, p, opts);
    if (r.status !== expect) throw new Error(`${name}: ${method} ${p} answered ${r.status} (expected ${expect}): ${r.text.slice(0, 300)}`);
    return r.body;
  };
  const email = `u-${randomBytes(6).toString("hex")}@example.com`;
  const password = "system test password";
  await step("register", "POST", "/api/auth/register", 201, { body: { email, password, name: "Sys" } });
  const session = await step("login", "POST", "/api/auth/login", 200, { body: { email, password } });
  const token = session.accessToken;
  await step("me", "GET", "/api/users/me", 200, { token });
  await step("patch me", "PATCH", "/api/users/me", 200, { token, body: { preferences: { categories: ["phones"] } } });
  const address = await step("add address", "POST", "/api/users/me/addresses", 201, {
    token,
    body: { recipient: "Sys", phone: "123456", line1: "1 Road", city: "Town", postalCode: "12345", country: "CN" },
  });
  const list = await step("list addresses", "GET", "/api/users/me/addresses", 200, { token });
  if (list.length !== 1 || list[0].id !== address.id) throw new Error("address list wrong");
  const refreshed = await step("refresh", "POST", "/api/auth/refresh", 200, { body: { refreshToken: session.refreshToken } });
  await step("logout", "POST", "/api/auth/logout", 204, { token: refreshed.accessToken, body: { refreshToken: refreshed.refreshToken } });
  return requests;
}

/**
 * Runs `npm run repl`'s script: once it has joined, types `nodes` (again every 250 ms) until
 * its output lists every node of `waitForNodes`, then types `commands`; returns all it printed.
 */
function runRepl(env: Record<string, string>, waitForNodes: string[], commands: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "bin", "repl.ts")], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let joinedAt = -1;
    let sent = false;
    let asking: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    // Polled, not slept: discovery lists the other nodes a moment after the join.
    const ask = () => {
      child.stdin.write("nodes\n");
      asking = setTimeout(ask, 250);
    };
    const onData = (d: Buffer) => {
      out += d.toString();
      if (joinedAt < 0 && out.includes("Joined the cluster")) {
        joinedAt = out.length;
        ask();
      }
      if (joinedAt >= 0 && !sent && waitForNodes.every((n) => new RegExp(`\\b${n}\\b`).test(out.slice(joinedAt)))) {
        sent = true;
        clearTimeout(asking);
        child.stdin.write(commands.join("\n") + "\n");
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", reject);
    child.on("exit", () => {
      clearTimeout(timer);
      clearTimeout(asking);
      resolve(out);
    });
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (await check().catch(() => false)) return Date.now() - t0;
    await sleep(200);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

describe("cluster: gateway + 2 user nodes over RabbitMQ, etcd, Redis, MariaDB", () => {
  let etcd: EtcdHandle;
  let vhost: RabbitVhost;
  let observer: ServiceBroker;
  let baseUrl = "";
  const namespace = uniqueNamespace("sys");
  const nodes = new Map<string, ChildHandle>();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-sys-"));
  let env: Record<string, string> = {};

  const startNode = async (nodeId: string, services: string, extra: Record<string, string> = {}) => {
    const child = spawnTs(START, { name: nodeId, env: { ...env, NODE_ID: nodeId, SERVICES: services, ...extra } });
    nodes.set(nodeId, child);
    await child.waitForLine(/Meridian started/, 30_000);
    return child;
  };
  /** Node ids in `nodeId`'s registry, asked over the transporter. */
  const registryOf = async (nodeId: string): Promise<string[]> => {
    const list = await observer.call<{ id: string }[], unknown>("$node.list", { onlyAvailable: true }, { nodeID: nodeId });
    return list.map((n) => n.id).sort();
  };

  before(async () => {
    // etcd checks credentials, as a production one does: the nodes' user reaches only this
    // cluster's discovery keys.
    etcd = await startEtcd({ auth: { prefix: `${discoveryPrefix(namespace)}/` } });
    vhost = await createVhost();
    env = {
      RABBITMQ_URI: vhost.uri,
      ETCD_HOSTS: etcd.hosts,
      ETCD_USERNAME: etcd.credentials!.username,
      ETCD_PASSWORD: etcd.credentials!.password,
      REDIS_URL,
      MYSQL_URL,
      NAMESPACE: namespace,
      JWT_SECRET: randomBytes(32).toString("hex"),
      DATA_DIR: dataDir,
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      // Every request of this test comes from 127.0.0.1 (its request loops would exhaust one
      // address's budget; the limits have their own tests).
      LOGIN_RATE_LIMIT: "100000",
      RATE_LIMITS: "off",
    };
    // Cluster mode migrates as a separate step, as a Kubernetes Job would.
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", path.join(ROOT, "bin", "migrate.ts")], {
      env: { ...process.env, ...env, SERVICES: "user,product" },
      cwd: ROOT,
    });
    assert.match(stdout, /user: applied/);
    assert.match(stdout, /product: applied/);
    const port = await freePort();
    await Promise.all([
      startNode("gw", "gateway,product", { PORT: String(port) }),
      startNode("user-1", "user"),
      startNode("user-2", "user"),
    ]);
    baseUrl = `http://127.0.0.1:${port}`;
    observer = createBroker(loadConfig({ ...env, NODE_ID: "observer", LOG_LEVEL: "warn" }), []);
    await observer.start();
    await waitFor("gateway ready", async () => (await http(baseUrl, "GET", "/health/ready")).status === 200, 20_000);
    await waitFor(
      "all nodes see each other",
      async () => {
        const seen = await registryOf("gw");
        return ["gw", "user-1", "user-2"].every((n) => seen.includes(n));
      },
      20_000,
    );
  });

  after(async () => {
    await observer?.stop().catch(() => undefined);
    for (const child of nodes.values()) child.kill("SIGKILL");
    await Promise.all([...nodes.values()].map((c) => c.waitExit()));
    await vhost?.destroy().catch(() => undefined);
    await etcd?.destroy().catch(() => undefined);
    for (const service of ["user", "product"])
      await dropDatabase(loadConfig({ MYSQL_URL, NAMESPACE: namespace, RABBITMQ_URI: "amqp://x" }, { tool: true }), service);
    await deleteRedisKeys(REDIS_URL, namespace);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("the user flow works through the gateway; readiness names every dependency", async () => {
    await userFlow(baseUrl);
    const ready = await http(baseUrl, "GET", "/health/ready");
    // The gateway's node also runs the product service (its routes need one somewhere).
    assert.deepEqual(ready.body.checks, { cache: "up", "database:product": "up", node: "up", transporter: "up" });
  });

  it("a node whose ETCD_PASSWORD etcd refuses stops at start, naming the variable (no retry loop)", async () => {
    const child = spawnTs(START, {
      name: "bad-etcd-password",
      env: { ...env, NODE_ID: "bad-etcd-password", SERVICES: "user", ETCD_PASSWORD: "not the password" },
    });
    if (!(await settlesWithin(child.waitExit(), 30_000))) {
      child.kill("SIGKILL");
      assert.fail(`still running 30 s after its start (an outage loop?):\n${child.lines.slice(-10).join("\n")}`);
    }
    assert.equal(child.exitCode, 1);
    assert.match(child.lines.join("\n"), /Start failed:.*ETCD_PASSWORD: etcd refused user 'meridian'/);
  });

  it("`npm run repl` joins the running cluster through RabbitMQ: `nodes` and `call user.…` work", async () => {
    // Same variables as the cluster nodes (transporter, etcd, namespace): the REPL is one more node.
    const nodes = ["gw", "user-1", "user-2"];
    const out = await runRepl(env, nodes, ["call user.get --id nobody", "quit"]);
    const afterJoin = out.slice(out.indexOf("Joined the cluster"));
    // Only `nodes` prints node ids: each id after the join is its answer.
    for (const node of nodes) assert.match(afterJoin, new RegExp(`\\b${node}\\b`), out);
    assert.match(afterJoin, /User not found/, out);
  });

  it("a user node killed with kill -9 and restarted: the flow works again within seconds", async () => {
    // Traffic runs through the kill and the restart, to measure what the balancer costs.
    let running = true;
    const outcomes: { at: number; ok: boolean; error?: string }[] = [];
    const t0 = Date.now();
    const loop = async () => {
      while (running) {
        try {
          await userFlow(baseUrl);
          outcomes.push({ at: Date.now() - t0, ok: true });
        } catch (err) {
          outcomes.push({ at: Date.now() - t0, ok: false, error: (err as Error).message.slice(0, 120) });
        }
      }
    };
    const workers = [loop(), loop()];
    let killedAt: number;
    let restartedAt: number;
    try {
      await sleep(1000);
      const victim = nodes.get("user-1")!;
      victim.kill("SIGKILL");
      await victim.waitExit();
      killedAt = Date.now() - t0;
      await sleep(2000); // down for a while, as a crashed pod would be before its restart
      await startNode("user-1", "user");
      restartedAt = Date.now() - t0;
      await waitFor("gateway sees user-1 again", async () => (await registryOf("gw")).includes("user-1"), 10_000);
      // Keep the traffic going well past the settling time asserted below.
      while (Date.now() - t0 < restartedAt + 9000) await sleep(250);
    } finally {
      running = false;
      await Promise.all(workers);
    }
    const failed = outcomes.filter((o) => !o.ok);
    const lastFailure = failed.length ? failed[failed.length - 1].at : killedAt;
    const after = outcomes.filter((o) => o.at > restartedAt + 5000);
    // The gateway's second tries (lib/edge-retry.ts): reads lost with the killed node.
    const sentAgain = nodes.get("gw")!.lines.filter((l) => /sent once more/.test(l)).length;
    console.log(
      JSON.stringify({
        flows: outcomes.length,
        failedFlows: failed.length,
        sentAgain,
        killedAt,
        restartedAt,
        lastFailureMsAfterKill: lastFailure - killedAt,
        errors: [...new Set(failed.map((f) => f.error))].slice(0, 4),
      }),
    );
    // The flow works again within seconds of the restart, and keeps working.
    assert.ok(after.length > 0 && after.every((o) => o.ok), "every flow after the restart settled succeeds");
    assert.ok(lastFailure - restartedAt < 10_000, `last failure ${lastFailure - restartedAt} ms after the restart`);
  });

  it("etcd stopped for 60 s under traffic: no failed request, no dropped node, no log flood; a node started meanwhile joins after", async () => {
    const failures: string[] = [];
    let flows = 0;
    let requests = 0;
    let running = true;
    const loop = async () => {
      while (running) {
        try {
          const n = await userFlow(baseUrl);
          requests += n;
          flows++;
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    };
    const workers = [loop(), loop()];
    const stopTraffic = async () => {
      running = false;
      await Promise.all(workers);
    };
    const linesBefore = new Map([...nodes].map(([id, c]) => [id, c.lines.length]));
    const dropped: string[] = [];
    const expected = ["gw", "user-1", "user-2"];

    let late: ChildHandle | undefined;
    let joined: number;
    let etcdBack: number;
    let logDuringOutage: { id: string; lines: number; bytes: number }[];
    try {
      await etcd.stop();
      const outageStart = Date.now();
      while (Date.now() - outageStart < 60_000) {
        for (const id of expected) {
          const seen = await registryOf(id).catch((e) => [`(${(e as Error).message})`]);
          const missing = expected.filter((n) => !seen.includes(n));
          if (missing.length) dropped.push(`${id} lost ${missing.join(",")} at ${Date.now() - outageStart} ms`);
        }
        // A node started during the outage must start (and join once etcd is back).
        if (!late && Date.now() - outageStart > 20_000) late = await startNode("user-3", "user");
        await sleep(1000);
      }
      // The gateway's access log writes one line per request by design (README
      // "Observability"); a flood is anything else the outage makes the nodes write.
      logDuringOutage = [...nodes.entries()]
        .filter(([id]) => expected.includes(id))
        .map(([id, c]) => {
          const other = c.lines.slice(linesBefore.get(id)).filter((l) => !l.includes('"kind":"access"'));
          return { id, lines: other.length, bytes: other.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0) };
        });
      await etcd.start();
      etcdBack = Date.now();
      joined = await waitFor(
        "user-3 seen by the gateway after etcd is back",
        async () => (await registryOf("gw")).includes("user-3"),
        20_000,
      );
      // The late node really serves: a call pinned to it answers (NOT_FOUND for an unknown id)
      // once the observer has its services too.
      await waitFor(
        "user-3 answers a call pinned to it",
        async () => {
          const err = await observer.call("user.get", { id: "nobody" }, { nodeID: "user-3" }).then(
            () => null,
            (e) => e,
          );
          return err?.type === "NOT_FOUND";
        },
        10_000,
      );
      await sleep(10_000); // traffic through recovery and the grace period after it
    } finally {
      await stopTraffic();
    }

    console.log(
      JSON.stringify({
        flows,
        requests,
        failures: failures.length,
        lateNodeJoinedMs: joined,
        afterEtcdBackMs: Date.now() - etcdBack,
        logDuringOutage,
      }),
    );
    assert.deepEqual(failures, [], "no failed request during the etcd outage");
    assert.deepEqual(dropped, [], "no node dropped another");
    assert.ok(flows > 20, `traffic kept flowing (${flows} flows)`);
    for (const l of logDuringOutage) {
      assert.ok(l.lines < 60, `${l.id} wrote ${l.lines} log lines during the outage`);
      assert.ok(l.bytes < 64 * 1024, `${l.id} wrote ${l.bytes} bytes of log during the outage`);
    }
    assert.ok(joined < 15_000, `late node joined ${joined} ms after etcd was back`);
  });
});

describe("embedded: `bin/start.ts` with no cluster variables", () => {
  it("starts alone (SQLite in DATA_DIR, no servers) and serves the user flow", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-emb-"));
    const port = await freePort();
    const metricsPort = await freePort();
    const child = spawnTs(START, {
      name: "embedded",
      env: {
        DATA_DIR: dataDir,
        PORT: String(port),
        METRICS_PORT: String(metricsPort),
        LOG_LEVEL: "warn",
        RABBITMQ_URI: "",
        ETCD_HOSTS: "",
        REDIS_URL: "",
        MYSQL_URL: "",
        NODE_ENV: "",
        SANDBOX_PAY: "",
      },
    });
    try {
      const started = await child.waitForLine(/API docs: (\S+)/, 30_000);
      assert.equal(started[1], `http://localhost:${port}/docs`);
      // Metrics on the internal listener only; the public port answers 404 for them.
      assert.ok(
        child.lines.some((l) => l.includes(`Metrics (internal): http://localhost:${metricsPort}/metrics`)),
        "prints the metrics address",
      );
      const metrics = await http(`http://127.0.0.1:${metricsPort}`, "GET", "/metrics");
      assert.equal(metrics.status, 200);
      assert.match(metrics.text, /^# TYPE moleculer_/m);
      const hidden = await http(`http://127.0.0.1:${port}`, "GET", "/metrics");
      assert.equal(hidden.status, 404);
      assert.equal(hidden.body.error.code, "NOT_FOUND");
      // The sandbox platform is on in embedded mode, and the start log says so in one loud line.
      assert.equal(child.lines.filter((l) => l.includes("SANDBOX PAYMENTS ARE ON")).length, 1);
      await userFlow(`http://127.0.0.1:${port}`);
      assert.ok(fs.existsSync(path.join(dataDir, "user.sqlite")));
      // A fresh embedded start loads the demo catalog: the shop has things in it.
      const products = await http(`http://127.0.0.1:${port}`, "GET", "/api/products?pageSize=5&sort=price_asc");
      assert.equal(products.status, 200, products.text);
      assert.equal(products.body.total, 1000);
      assert.equal(products.body.items.length, 5);
      assert.ok(products.body.items[0].price.amount <= products.body.items[4].price.amount);
      assert.ok(
        child.lines.some((l) => /npm run repl/.test(l)),
        "prints how to open the REPL",
      );
    } finally {
      child.kill("SIGTERM");
      await child.waitExit();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("a bad configuration stops the process with a message naming the variable", async () => {
    const child = spawnTs(START, { name: "bad-config", env: { PORT: "not-a-port", RABBITMQ_URI: "amqp://127.0.0.1:1", JWT_SECRET: "" } });
    await child.waitExit();
    const out = child.lines.join("\n");
    assert.match(out, /PORT/);
    assert.match(out, /JWT_SECRET: required in cluster mode/);
  });
});
