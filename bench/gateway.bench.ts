/**
 * `npm run bench:gateway`: HTTP throughput and latency of the gateway, as ratios against a
 * bare `node:http` server measured in the same run (see bench/README.md).
 *
 * Cases, one after the other, each with its own processes (only one system runs at a time):
 *   bare      bench/baseline-server.ts: node:http answering the same JSON
 *   embedded  bin/start.ts, all services in one process, SQLite in a temp DATA_DIR
 *   remote    bin/start.ts twice: SERVICES=gateway and SERVICES=user, over AMQP on a private vhost
 * Routes: GET /health/live (local to the gateway) and an authenticated GET /api/users/me.
 * Every server under test runs in a child process; autocannon runs in this one.
 *
 * Environment: BENCH_DURATION_S (10), BENCH_WARMUP_S (2), BENCH_CONNECTIONS (50),
 * BENCH_CASES (a comma list: bare,embedded,remote; all by default), BENCH_ROUTES (a comma list
 * of paths: /health/live,/api/users/me; all by default),
 * BENCH_USER_DB (sqlite | mariadb), BENCH_LOG_LEVEL (info), BENCH_CPU_PROF (a directory:
 * children of the Meridian cases write V8 CPU profiles there), BENCH_JSON (a file for the
 * raw numbers). Exit 1 if any run had errors or non-2xx responses.
 */
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { accessTokens } from "../lib/auth/tokens";
import { loadConfig } from "../lib/config";
import { dropDatabase } from "../lib/db";
import { freePort } from "../test/support/ports";
import { createVhost } from "../test/support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../test/support/servers";
import {
  aborting,
  cleanupAll,
  cpuSeconds,
  CPU_PROF_DIR,
  installSignalCleanup,
  load,
  markdownTable,
  onCleanup,
  pidOf,
  profileArgs,
  scoped,
  startChild,
  summaryFigure,
  waitForStatus,
  type BenchChild,
  type Measured,
} from "./support";

function intEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`${name}: expected an integer >= ${min}, got '${raw}'\n`);
    process.exit(2);
  }
  return n;
}

const DURATION_S = intEnv("BENCH_DURATION_S", 10, 1);
const WARMUP_S = intEnv("BENCH_WARMUP_S", 2, 0);
const CONNECTIONS = intEnv("BENCH_CONNECTIONS", 50, 1);
const USER_DB = process.env.BENCH_USER_DB || "sqlite";
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL || "info";
if (USER_DB !== "sqlite" && USER_DB !== "mariadb") {
  process.stderr.write(`BENCH_USER_DB: expected sqlite or mariadb, got '${USER_DB}'\n`);
  process.exit(2);
}

const ROOT = path.resolve(__dirname, "..");
const START = path.join(ROOT, "bin", "start.ts");
const BASELINE = path.join(__dirname, "baseline-server.ts");

interface Route {
  name: string;
  path: string;
  auth: boolean;
}
const ALL_ROUTES: Route[] = [
  { name: "GET /health/live", path: "/health/live", auth: false },
  { name: "GET /api/users/me", path: "/api/users/me", auth: true },
];
// BENCH_ROUTES=/api/users/me (a comma list of paths) runs only those, e.g. to profile one route.
const onlyRoutes = (process.env.BENCH_ROUTES ?? "")
  .split(",")
  .map((r) => r.trim())
  .filter(Boolean);
const ROUTES = onlyRoutes.length ? ALL_ROUTES.filter((r) => onlyRoutes.includes(r.path)) : ALL_ROUTES;
if (!ROUTES.length) {
  process.stderr.write(`BENCH_ROUTES: none of ${onlyRoutes.join(", ")} is one of ${ALL_ROUTES.map((r) => r.path).join(", ")}\n`);
  process.exit(2);
}

interface Target {
  baseUrl: string;
  token: string;
  userId: string;
  children: BenchChild[];
}

interface CaseDef {
  name: string;
  start(): Promise<Target>;
}

interface Row {
  caseName: string;
  route: Route;
  result?: Measured;
  warmup?: Measured;
  /** CPU seconds the system under test (all its processes) used during the measured run. */
  serverCpuS?: number;
  /** CPU seconds per process during the measured run (the nodes, autocannon, the shared RabbitMQ). */
  cpu?: Record<string, number>;
  wallS?: number;
  failure?: string;
}

const rows: Row[] = [];

/** The local RabbitMQ server's pid (beam.smp), to report its CPU in the remote case; undefined if not found. */
const rabbitPid = pidOf("beam.smp");
const notes: string[] = [];

// Every variable Meridian reads, blanked (empty = unset), so the caller's shell cannot
// turn a case into something else (e.g. an exported RABBITMQ_URI making "embedded" a cluster node).
const MERIDIAN_ENV_BLANK: Record<string, string> = Object.fromEntries(
  [
    "PORT",
    "DATA_DIR",
    "SERVICES",
    "NODE_ID",
    "NAMESPACE",
    "RABBITMQ_URI",
    "ETCD_HOSTS",
    "ETCD_USERNAME",
    "ETCD_PASSWORD",
    "REDIS_URL",
    "MYSQL_URL",
    "SERIALIZER",
    "JWT_SECRET",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "PUBLIC_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "TRUST_PROXY",
    "MIGRATE_ON_START",
    "METRICS_PORT",
    "NODE_ENV",
    "SANDBOX_PAY",
  ].map((k) => [k, ""]),
);

function meridianEnv(env: Record<string, string>): Record<string, string> {
  // METRICS_PORT 0: no internal listener (several nodes, and it is not measured); GRPC_PORT 0:
  // any free port (an `npm start` may hold 50051); RATE_LIMITS
  // off unless BENCH_RATE_LIMITS=on: one load generator is one client address, so the budgets
  // would answer 429s; with it on (and BENCH_RATE_LIMIT_BUDGET as RATE_LIMIT_USER and
  // RATE_LIMIT_IP, high enough) the run measures their per-request cost.
  const limits: Record<string, string> =
    process.env.BENCH_RATE_LIMITS === "on"
      ? {
          RATE_LIMITS: "on",
          RATE_LIMIT_USER: process.env.BENCH_RATE_LIMIT_BUDGET ?? "9999999/60",
          RATE_LIMIT_IP: process.env.BENCH_RATE_LIMIT_BUDGET ?? "9999999/60",
        }
      : { RATE_LIMITS: "off" };
  return { ...MERIDIAN_ENV_BLANK, LOG_LEVEL, LOG_FORMAT: "text", METRICS_PORT: "0", GRPC_PORT: "0", ...limits, ...env };
}

/** A Meridian node (bin/start.ts), profiled when BENCH_CPU_PROF is set (profileArgs). */
function startMeridian(caseName: string, name: string, env: Record<string, string>): BenchChild {
  return startChild(START, name, meridianEnv(env), profileArgs(caseName, name));
}

function tempDir(label: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `meridian-bench-${label}-`));
  onCleanup(`remove ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The user service's storage for a Meridian case: env for the node, and a drop of the database after. */
function userStorage(namespace: string, dataDir: string): Record<string, string> {
  if (USER_DB === "sqlite") return { DATA_DIR: dataDir };
  const env = { DATA_DIR: dataDir, MYSQL_URL, MIGRATE_ON_START: "true" };
  onCleanup(`drop MariaDB database of namespace ${namespace}`, () =>
    dropDatabase(loadConfig({ ...env, NAMESPACE: namespace, JWT_SECRET: "x".repeat(32) }), "user"),
  );
  return env;
}

// The same shape as the real answer (toPublicUser), with an e-mail and name of the same length.
const benchEmail = () => `bench-${randomBytes(4).toString("hex")}@example.com`;
const BENCH_NAME = "Bench User";

/** Registers a user through the gateway and checks the token on `GET /api/users/me`. */
/** Readiness is the gateway node's own; the user service (another node) may be discovered a moment later. */
async function registerUser(baseUrl: string, deadline = Date.now() + 30_000): Promise<{ token: string; userId: string; me: unknown }> {
  for (;;) {
    try {
      return await registerUserOnce(baseUrl);
    } catch (err) {
      if (Date.now() > deadline || !/answered 503/.test(String(err))) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function registerUserOnce(baseUrl: string): Promise<{ token: string; userId: string; me: unknown }> {
  const email = benchEmail();
  const res = await fetch(`${baseUrl}/api/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password: `bench-${randomBytes(12).toString("hex")}`, name: BENCH_NAME }),
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST /api/auth/register answered ${res.status}: ${text.slice(0, 300)}`);
  const body = JSON.parse(text) as { accessToken: string; user: { id: string } };
  const me = await fetch(`${baseUrl}/api/users/me`, { headers: { authorization: `Bearer ${body.accessToken}` } });
  const meBody = (await me.json()) as { id?: string };
  if (me.status !== 200 || meBody.id !== body.user.id)
    throw new Error(`GET /api/users/me with the new token answered ${me.status}: ${JSON.stringify(meBody).slice(0, 300)}`);
  return { token: body.accessToken, userId: body.user.id, me: meBody };
}

async function startBare(): Promise<Target> {
  const user = {
    id: randomUUID(),
    email: benchEmail(),
    name: BENCH_NAME,
    role: "customer",
    preferences: { categories: [], brands: [] },
    createdAt: new Date().toISOString(),
  };
  // A real HS256 token of the real shape, so the request is the same size; the bare server only checks "Bearer ".
  const token = await accessTokens(randomBytes(32).toString("hex"), 900).sign({ id: user.id, role: "customer", sessionId: randomUUID() });
  const child = startChild(BASELINE, "bare", { PORT: "0", BENCH_USER_JSON: JSON.stringify(user) });
  const m = await child.waitForLine(/baseline listening on (\d+)/, 30_000);
  return { baseUrl: `http://127.0.0.1:${m[1]}`, token, userId: user.id, children: [child] };
}

async function startEmbedded(): Promise<Target> {
  const namespace = uniqueNamespace("bench");
  const dataDir = tempDir("embedded");
  const port = await freePort();
  const child = startMeridian("embedded", "embedded", {
    PORT: String(port),
    NAMESPACE: namespace,
    NODE_ID: "bench-embedded",
    ...userStorage(namespace, dataDir),
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  await waitForStatus(`${baseUrl}/health/ready`, 200, [child]);
  const { token, userId, me } = await registerUser(baseUrl);
  checkUserShape(me);
  return { baseUrl, token, userId, children: [child] };
}

async function startRemote(): Promise<Target> {
  process.stderr.write("    creating a RabbitMQ vhost...\n");
  const vhost = await createVhost();
  onCleanup(`delete RabbitMQ vhost ${vhost.vhost}`, () => vhost.destroy());
  process.stderr.write(`    vhost ${vhost.vhost}\n`);
  const namespace = uniqueNamespace("bench");
  const common = { RABBITMQ_URI: vhost.uri, REDIS_URL, JWT_SECRET: randomBytes(32).toString("base64url"), NAMESPACE: namespace };
  const userDir = tempDir("user-node");
  const gatewayDir = tempDir("gateway-node");
  const port = await freePort();
  const userNode = startMeridian("remote", "user-node", {
    ...common,
    SERVICES: "user",
    NODE_ID: "bench-user",
    MIGRATE_ON_START: "true",
    ...userStorage(namespace, userDir),
  });
  const gateway = startMeridian("remote", "gateway-node", {
    ...common,
    SERVICES: "gateway",
    NODE_ID: "bench-gateway",
    PORT: String(port),
    DATA_DIR: gatewayDir,
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  await waitForStatus(`${baseUrl}/health/ready`, 200, [userNode, gateway], 90_000);
  const { token, userId } = await registerUser(baseUrl);
  return { baseUrl, token, userId, children: [gateway, userNode] };
}

let bareUserKeys: string[] | undefined;
function checkUserShape(me: unknown): void {
  const keys = Object.keys(me as object).sort();
  if (bareUserKeys && keys.join() !== bareUserKeys.join())
    notes.push(`The bare /users/me JSON has keys ${bareUserKeys.join(",")}, the real one ${keys.join(",")}: update startBare().`);
}

/** One request before the load: the route answers 200 with the expected body. */
async function sanityCheck(target: Target, route: Route): Promise<void> {
  const res = await fetch(target.baseUrl + route.path, {
    headers: route.auth ? { authorization: `Bearer ${target.token}` } : {},
  });
  const body = (await res.json().catch(() => undefined)) as { status?: string; id?: string } | undefined;
  const ok = res.status === 200 && (route.auth ? body?.id === target.userId : body?.status === "ok");
  if (!ok) throw new Error(`${route.name} answered ${res.status} ${JSON.stringify(body)?.slice(0, 300)}`);
}

async function runCase(def: CaseDef, index: number, total: number): Promise<void> {
  process.stderr.write(`\n[${index}/${total}] ${def.name}: starting...\n`);
  const t0 = Date.now();
  await scoped(async () => {
    let target: Target;
    try {
      target = await def.start();
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      process.stderr.write(`  ${def.name} did not start: ${why}\n`);
      for (const route of ROUTES) rows.push({ caseName: def.name, route, failure: `did not start: ${why.split("\n")[0]}` });
      return;
    }
    process.stderr.write(`  ready in ${((Date.now() - t0) / 1000).toFixed(1)} s at ${target.baseUrl}\n`);
    // Log lines from here on are the system's behaviour under load; earlier ones are start-up
    // (e.g. the 503s of /health/ready polled before the user node was discovered).
    const startupLines = target.children.map((c) => c.lines.length);
    if (def.name === "bare") {
      // Remembered to compare with the real /users/me answer once a Meridian case is up.
      const res = await fetch(`${target.baseUrl}/api/users/me`, { headers: { authorization: `Bearer ${target.token}` } });
      bareUserKeys = Object.keys((await res.json()) as object).sort();
    }
    for (const route of ROUTES) {
      if (aborting()) return;
      const row: Row = { caseName: def.name, route };
      rows.push(row);
      try {
        await sanityCheck(target, route);
        const opts = {
          url: target.baseUrl + route.path,
          connections: CONNECTIONS,
          headers: (route.auth ? { authorization: `Bearer ${target.token}` } : {}) as Record<string, string>,
        };
        process.stderr.write(`  ${route.name}\n`);
        if (WARMUP_S > 0) row.warmup = await load({ ...opts, duration: WARMUP_S }, "warm-up (not counted)");
        const before = target.children.map((c) => c.bytes);
        const cpuBefore = target.children.map((c) => cpuSeconds(c.pid));
        const selfBefore = process.cpuUsage();
        const rabbitBefore = def.name === "remote" && rabbitPid ? cpuSeconds(rabbitPid) : undefined;
        const t1 = process.hrtime.bigint();
        row.result = await load({ ...opts, duration: DURATION_S }, "measuring");
        row.wallS = Number(process.hrtime.bigint() - t1) / 1e9;
        const cpuAfter = target.children.map((c) => cpuSeconds(c.pid));
        const self = process.cpuUsage(selfBefore);
        const rabbitAfter = rabbitBefore !== undefined ? cpuSeconds(rabbitPid!) : undefined;
        if ([...cpuBefore, ...cpuAfter].every((v) => v !== undefined)) {
          row.cpu = Object.fromEntries(target.children.map((c, i) => [c.name, cpuAfter[i]! - cpuBefore[i]!]));
          row.serverCpuS = Object.values(row.cpu).reduce((a, b) => a + b, 0);
        }
        row.cpu = { ...row.cpu, "autocannon (this process)": (self.user + self.system) / 1e6 };
        if (rabbitBefore !== undefined && rabbitAfter !== undefined) row.cpu["RabbitMQ server (shared)"] = rabbitAfter - rabbitBefore;
        const logged = target.children.map((c, i) => ({ name: c.name, bytes: c.bytes - before[i] })).filter((c) => c.bytes > 0);
        for (const c of logged)
          notes.push(
            `${def.name} ${route.name}: ${c.name} wrote ${c.bytes} bytes of output during the measured run (per-request logging?)`,
          );
        await sanityCheck(target, route);
      } catch (err) {
        if (aborting()) return;
        row.failure = err instanceof Error ? err.message.split("\n")[0] : String(err);
        process.stderr.write(`  ${route.name} failed: ${row.failure}\n`);
      }
    }
    // Warnings and errors the system logged (text format: "[time] WARN  node/svc: ...").
    for (const [i, c] of target.children.entries()) {
      const bad = c.lines.slice(startupLines[i]).filter((l) => /\b(WARN|ERROR|FATAL)\b/.test(l));
      if (bad.length) notes.push(`${def.name}: ${c.name} logged ${bad.length} warning/error line(s), e.g. ${bad[0].slice(0, 200)}`);
    }
    process.stderr.write(`  stopping ${def.name}...\n`);
  });
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const pct = (n: number) => `${Math.round(n * 100)} %`;

function report(): { table: string; failed: boolean } {
  let failed = false;
  const bare = new Map(rows.filter((r) => r.caseName === "bare" && r.result).map((r) => [r.route.name, r.result!]));
  const tableRows = rows.map((r) => {
    if (!r.result) {
      failed = true;
      return [r.caseName, r.route.name, "-", "-", "-", "-", "-", "-", `FAILED: ${r.failure}`];
    }
    const { result: res, latency } = r.result;
    const base = bare.get(r.route.name);
    const errors = res.errors + (r.warmup?.result.errors ?? 0);
    const non2xx = res.non2xx + (r.warmup?.result.non2xx ?? 0);
    if (errors || non2xx) {
      failed = true;
      const codes = Object.entries(res.statusCodeStats)
        .map(([code, s]) => `${code}×${s.count}`)
        .join(", ");
      notes.push(
        `${r.caseName} ${r.route.name}: ${res.errors} errors (${res.timeouts} timeouts), ${res.non2xx} non-2xx [${codes}]` +
          (r.warmup ? `; warm-up: ${r.warmup.result.errors} errors, ${r.warmup.result.non2xx} non-2xx` : ""),
      );
    }
    return [
      r.caseName,
      r.route.name,
      fmt(res.requests.average),
      base ? pct(res.requests.average / base.result.requests.average) : "-",
      fmt(latency.p50, 2),
      fmt(latency.p99, 2),
      base ? `${fmt(latency.p99 / base.latency.p99, 1)}×` : "-",
      r.serverCpuS !== undefined && res.requests.total ? fmt((r.serverCpuS * 1e6) / res.requests.total) : "-",
      `${errors} / ${non2xx}`,
    ];
  });
  for (const r of rows)
    if (r.cpu && r.wallS)
      notes.push(
        `CPU during ${r.caseName} ${r.route.name} (${r.wallS.toFixed(1)} s wall, in cores): ` +
          Object.entries(r.cpu)
            .map(([name, s]) => `${name} ${(s / r.wallS!).toFixed(2)}`)
            .join(", "),
      );
  const table = markdownTable(
    ["Case", "Route", "req/s", "req/s vs bare", "p50 ms", "p99 ms", "p99 vs bare", "server CPU µs/req", "errors / non-2xx (incl. warm-up)"],
    tableRows,
    [false, false, true, true, true, true, true, true, true],
  );
  return { table, failed };
}

/** Headline figures for `npm run bench` (BENCH_SUMMARY): GET /api/users/me as % of bare, CPU µs per request. */
function summarize(failed: boolean): void {
  const route = "GET /api/users/me";
  const bare = rows.find((r) => r.caseName === "bare" && r.route.name === route)?.result;
  for (const [caseName, min] of [
    ["embedded", 0.3],
    ["remote", 0.2],
  ] as const) {
    const r = rows.find((x) => x.caseName === caseName && x.route.name === route);
    if (!r) continue;
    const what = `${route} ${caseName === "remote" ? "remote over AMQP" : "embedded"}`;
    if (!r.result || !bare) {
      summaryFigure(
        "gateway",
        `${what}, req/s vs bare`,
        r.failure ? `FAILED: ${r.failure.slice(0, 60)}` : "no bare run",
        `>= ${pct(min)}`,
        false,
      );
      continue;
    }
    const ratio = r.result.result.requests.average / bare.result.requests.average;
    const cpu =
      r.serverCpuS !== undefined && r.result.result.requests.total
        ? ` (${fmt((r.serverCpuS * 1e6) / r.result.result.requests.total)} µs CPU/req)`
        : "";
    summaryFigure("gateway", `${what}, req/s vs bare`, `${pct(ratio)}${cpu}`, `>= ${pct(min)}`, ratio >= min);
  }
  summaryFigure("gateway", "check", failed ? "FAILED (errors, non-2xx or a case did not run)" : "OK", undefined, !failed);
}

async function main(): Promise<void> {
  installSignalCleanup();
  if (CPU_PROF_DIR) fs.mkdirSync(CPU_PROF_DIR, { recursive: true });
  const cases: CaseDef[] = [
    { name: "bare", start: startBare },
    { name: "embedded", start: startEmbedded },
    { name: "remote", start: startRemote },
  ];
  const header =
    `Gateway benchmark, ${new Date().toISOString()}: Node ${process.version}, ${os.cpus().length} CPU(s) (${os.cpus()[0]?.model.trim()}), ` +
    `${CONNECTIONS} connections, ${DURATION_S} s measured + ${WARMUP_S} s warm-up per route, user storage: ${USER_DB}, ` +
    `Meridian LOG_LEVEL=${LOG_LEVEL}${CPU_PROF_DIR ? `, CPU profiles in ${CPU_PROF_DIR}` : ""}; ` +
    `load average at start ${os.loadavg()[0].toFixed(2)}`;
  process.stderr.write(`${header}\n`);
  const only = (process.env.BENCH_CASES ?? "")
    .split(",")
    .map((c) => c.trim())
    .filter(Boolean);
  const unknown = only.filter((c) => !cases.some((d) => d.name === c));
  if (unknown.length) throw new Error(`BENCH_CASES: unknown case(s) ${unknown.join(", ")}; known: ${cases.map((c) => c.name).join(", ")}`);
  const selected = only.length ? cases.filter((c) => only.includes(c.name)) : cases;
  for (const [i, def] of selected.entries()) if (!aborting()) await runCase(def, i + 1, selected.length);
  if (aborting()) return new Promise<never>(() => undefined); // the signal handler cleans up and exits

  const { table, failed } = report();
  summarize(failed);
  // Other work on the machine (tests, builds) skews everything: the load average says whether it was quiet.
  process.stdout.write(`\n${header}, at end ${os.loadavg()[0].toFixed(2)}\n\n${table}\n`);
  if (notes.length) process.stdout.write(`\nNotes:\n${notes.map((n) => `- ${n}`).join("\n")}\n`);
  if (process.env.BENCH_JSON) {
    const raw = rows.map((r) => ({ case: r.caseName, route: r.route.name, failure: r.failure, warmup: r.warmup, result: r.result }));
    fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify({ header, rows: raw, notes }, null, 2));
  }
  await cleanupAll();
  if (failed) {
    process.stderr.write("\nFAILED: some runs had errors or non-2xx responses, or did not run (see above).\n");
    process.exit(1);
  }
  process.exit(0);
}

main().catch(async (err) => {
  process.stderr.write(`\n${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  await cleanupAll();
  process.exit(1);
});
