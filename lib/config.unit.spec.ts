import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { it } from "mocha";
import { configProblems } from "../test/support/config";
import { loadConfig } from "./config";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "meridian-cfg-"));
const problemsOf = (env: Record<string, string>) => configProblems(() => loadConfig(env));
/** A cluster node's minimum (a random secret: placeholders are refused there). */
const CLUSTER = {
  RABBITMQ_URI: "amqp://guest:guest@localhost:5672/",
  JWT_SECRET: "3f9c2a7e1b4d8c6a0e5f7b9d2c4a6e8f",
  REDIS_URL: "redis://localhost:6379",
};

it("embedded defaults: all services, port 3000, SQLite, generated secret kept in DATA_DIR", () => {
  const dir = tmp();
  const a = loadConfig({ DATA_DIR: dir });
  assert.equal(a.mode, "embedded");
  assert.equal(a.port, 3000);
  assert.deepEqual(a.services, [
    "gateway",
    "grpc",
    "user",
    "product",
    "search",
    "notification",
    "cart",
    "payment",
    "order",
    "recommendation",
  ]);
  assert.equal(a.grpcPort, 50051);
  assert.deepEqual(a.reservations, { ttlSeconds: 900, sweepIntervalMs: 30_000 });
  // The sweep runs every quarter of the TTL, from 1 s to 30 s, unless set.
  assert.deepEqual(loadConfig({ DATA_DIR: dir, RESERVATION_TTL_SECONDS: "60" }).reservations, { ttlSeconds: 60, sweepIntervalMs: 15_000 });
  assert.deepEqual(loadConfig({ DATA_DIR: dir, RESERVATION_TTL_SECONDS: "1", RESERVATION_SWEEP_INTERVAL_MS: "200" }).reservations, {
    ttlSeconds: 1,
    sweepIntervalMs: 200,
  });
  assert.equal(a.migrateOnStart, true);
  assert.equal(a.mysqlUrl, undefined);
  assert.ok(a.jwtSecret.length >= 32);
  assert.equal((fs.statSync(path.join(dir, "jwt-secret")).mode & 0o777).toString(8), "600");
  assert.equal(loadConfig({ DATA_DIR: dir }).jwtSecret, a.jwtSecret, "the same secret on the next start");
  assert.equal(a.publicUrl, "http://localhost:3000");
});

it("cluster mode by RABBITMQ_URI: secrets have no fallback, migrations are a separate step", () => {
  assert.deepEqual(problemsOf({ RABBITMQ_URI: "amqp://localhost", REDIS_URL: "redis://localhost" }), [
    "JWT_SECRET: required in cluster mode (no fallback for secrets)",
  ]);
  // Only nodes that sign or verify tokens need the secret, and Redis (shared revocations and limits).
  assert.deepEqual(problemsOf({ RABBITMQ_URI: "amqp://localhost", SERVICES: "order,payment" }), []);
  assert.deepEqual(problemsOf({ RABBITMQ_URI: "amqp://localhost", JWT_SECRET: CLUSTER.JWT_SECRET, SERVICES: "gateway" }), [
    "REDIS_URL: required in cluster mode on gateway, grpc and user nodes (token revocations and rate limits are shared there)",
  ]);
  assert.deepEqual(problemsOf({ RABBITMQ_URI: "amqp://localhost", REDIS_URL: "redis://localhost", SERVICES: "grpc" }), [
    "JWT_SECRET: required in cluster mode (no fallback for secrets)",
  ]);
  const c = loadConfig({
    RABBITMQ_URI: "amqp://guest:guest@localhost:5672/",
    JWT_SECRET: CLUSTER.JWT_SECRET,
    ETCD_HOSTS: "127.0.0.1:2379, http://etcd-2:2379",
    ETCD_USERNAME: "root",
    ETCD_PASSWORD: "pw",
    REDIS_URL: "redis://localhost:6379",
    MYSQL_URL: "mysql://root@localhost:3306/",
    SERVICES: "user",
    DATA_DIR: tmp(),
  });
  assert.equal(c.mode, "cluster");
  assert.deepEqual(c.services, ["user"]);
  assert.deepEqual(c.etcd, { hosts: ["http://127.0.0.1:2379", "http://etcd-2:2379"], username: "root", password: "pw" });
  assert.equal(c.migrateOnStart, false);
  assert.equal(c.logFormat, "json");
});

it("every bad value is reported at once, each naming its variable", () => {
  const problems = problemsOf({
    PORT: "http",
    RABBITMQ_URI: "nats://x",
    REDIS_URL: "localhost:6379",
    MYSQL_URL: "postgres://x",
    JWT_SECRET: "short",
    ADMIN_EMAIL: "admin@example.com",
    LOG_LEVEL: "loud",
    TRUST_PROXY: "maybe",
  });
  for (const name of [
    "PORT",
    "RABBITMQ_URI",
    "REDIS_URL",
    "MYSQL_URL",
    "JWT_SECRET",
    "ADMIN_EMAIL/ADMIN_PASSWORD",
    "LOG_LEVEL",
    "TRUST_PROXY",
  ])
    assert.ok(
      problems.some((p) => p.startsWith(name)),
      `${name} in ${problems.join(" | ")}`,
    );
});

it("rules between variables", () => {
  const dir = tmp();
  assert.match(problemsOf({ DATA_DIR: dir, SERVICES: "user,nope" })[0], /^SERVICES: unknown service\(s\) nope/);
  assert.match(problemsOf({ DATA_DIR: dir, SERVICES: "user" })[0], /^SERVICES: without RABBITMQ_URI/);
  assert.match(problemsOf({ DATA_DIR: dir, ETCD_HOSTS: "localhost:2379" })[0], /^ETCD_HOSTS: etcd discovery needs a transporter/);
  const cluster = { ...CLUSTER, DATA_DIR: dir };
  assert.match(problemsOf({ ...cluster, ETCD_HOSTS: "localhost:2379", ETCD_USERNAME: "u" })[0], /^ETCD_USERNAME\/ETCD_PASSWORD: give both/);
  assert.match(problemsOf({ ...cluster, ETCD_HOSTS: "not a host" })[0], /^ETCD_HOSTS: expected/);
  // etcd's root password: `npm run etcd:auth` (a tool, etcd alone) takes it; a node refuses to hold it.
  const etcdAdmin = { ETCD_HOSTS: "etcd-0:2379", ETCD_USERNAME: "meridian", ETCD_PASSWORD: "n0de-pw", ETCD_ROOT_PASSWORD: "r00t-pw" };
  assert.match(problemsOf({ ...cluster, ...etcdAdmin })[0], /^ETCD_ROOT_PASSWORD: for npm run etcd:auth only/);
  assert.deepEqual(loadConfig({ DATA_DIR: dir, ...etcdAdmin }, { tool: true }).etcd, {
    hosts: ["http://etcd-0:2379"],
    username: "meridian",
    password: "n0de-pw",
    rootPassword: "r00t-pw",
  });
  assert.equal(loadConfig({ ...cluster, ...etcdAdmin, ETCD_ROOT_PASSWORD: "" }).etcd?.rootPassword, undefined);
  assert.match(
    configProblems(() => loadConfig({ DATA_DIR: dir, ETCD_ROOT_PASSWORD: "r00t-pw" }, { tool: true }))[0],
    /^ETCD_USERNAME\/ETCD_PASSWORD\/ETCD_ROOT_PASSWORD: set without ETCD_HOSTS/,
  );
  assert.match(problemsOf({ ...cluster, HEARTBEAT_INTERVAL_S: "6", HEARTBEAT_TIMEOUT_S: "6" })[0], /^HEARTBEAT_TIMEOUT_S/);
  assert.match(
    problemsOf({ DATA_DIR: dir, ADMIN_EMAIL: "a@example.com", ADMIN_PASSWORD: "short" })[0],
    /^ADMIN_PASSWORD: must be at least 8/,
  );
});

it("RABBITMQ_URI: one URL or a cluster's nodes as a comma list, each checked (protocol, placeholder password)", () => {
  const dir = tmp();
  assert.deepEqual(loadConfig({ ...CLUSTER, DATA_DIR: dir }).rabbitmqUris, [CLUSTER.RABBITMQ_URI]);
  const three = "amqp://u:s3cr3t-1@rabbit-0:5672, amqp://u:s3cr3t-1@rabbit-1:5672 ,amqps://u:s3cr3t-1@rabbit-2:5671";
  assert.deepEqual(loadConfig({ ...CLUSTER, RABBITMQ_URI: three, DATA_DIR: dir }).rabbitmqUris, [
    "amqp://u:s3cr3t-1@rabbit-0:5672",
    "amqp://u:s3cr3t-1@rabbit-1:5672",
    "amqps://u:s3cr3t-1@rabbit-2:5671",
  ]);
  assert.match(
    problemsOf({ ...CLUSTER, RABBITMQ_URI: "amqp://a:5672,nats://b:4222", DATA_DIR: dir }).join(" | "),
    /^RABBITMQ_URI\.1: must be a URL with protocol amqp: or amqps:/,
  );
  assert.match(problemsOf({ ...CLUSTER, RABBITMQ_URI: " , ", DATA_DIR: dir }).join(" | "), /^RABBITMQ_URI: must hold at least one URL/);
  assert.match(
    problemsOf({ ...CLUSTER, RABBITMQ_URI: "amqp://u:pw@a:5672,amqp://u:change-me@b:5672", DATA_DIR: dir }).join(" | "),
    /^RABBITMQ_URI: its password is a placeholder/,
  );
});

it("empty strings count as unset", () => {
  const c = loadConfig({ DATA_DIR: tmp(), RABBITMQ_URI: "", REDIS_URL: "", PORT: "" });
  assert.equal(c.mode, "embedded");
  assert.equal(c.port, 3000);
});

it("METRICS_PORT: the internal listener, 3030 embedded, off (0) in a cluster unless set; HEALTH_PORT is refused with its new name", () => {
  const dir = tmp();
  assert.equal(loadConfig({ DATA_DIR: dir }).metricsPort, 3030);
  assert.equal(loadConfig({ DATA_DIR: dir, METRICS_PORT: "0" }).metricsPort, 0);
  assert.equal(loadConfig({ DATA_DIR: dir, METRICS_PORT: "9101" }).metricsPort, 9101);
  assert.equal(loadConfig({ ...CLUSTER, DATA_DIR: dir }).metricsPort, 0);
  assert.deepEqual(problemsOf({ DATA_DIR: dir, METRICS_PORT: "70000" }), ["METRICS_PORT: must be at most 65535"]);
  assert.match(problemsOf({ DATA_DIR: dir, HEALTH_PORT: "3001" })[0], /^HEALTH_PORT: renamed to METRICS_PORT/);
});

it("TRUST_PROXY is a hop count; the old true is refused (it trusted the client-written leftmost entry)", () => {
  const dir = tmp();
  assert.equal(loadConfig({ DATA_DIR: dir }).trustProxyHops, 0);
  assert.equal(loadConfig({ DATA_DIR: dir, TRUST_PROXY: "1" }).trustProxyHops, 1);
  assert.equal(loadConfig({ DATA_DIR: dir, TRUST_PROXY: "false" }).trustProxyHops, 0);
  assert.match(problemsOf({ DATA_DIR: dir, TRUST_PROXY: "true" })[0], /^TRUST_PROXY: must be a hop count/);
});

it("request limits: defaults, <points>/<seconds>, RATE_LIMITS=off turns them off with a warning", () => {
  const dir = tmp();
  const on = loadConfig({ DATA_DIR: dir });
  assert.deepEqual(on.rateLimits, {
    enabled: true,
    signup: { points: 10, windowS: 600 },
    orders: { points: 20, windowS: 600 },
    refunds: { points: 10, windowS: 3600 },
    user: { points: 600, windowS: 60 },
    ip: { points: 1200, windowS: 60 },
  });
  assert.deepEqual(on.warnings, []);
  assert.deepEqual(loadConfig({ DATA_DIR: dir, RATE_LIMIT_SIGNUP: "3/60" }).rateLimits.signup, { points: 3, windowS: 60 });
  const off = loadConfig({ DATA_DIR: dir, RATE_LIMITS: "off" });
  assert.equal(off.rateLimits.enabled, false);
  assert.match(off.warnings[0], /RATE_LIMITS=off/);
  assert.match(problemsOf({ DATA_DIR: dir, RATE_LIMIT_ORDERS: "10 per minute" })[0], /^RATE_LIMIT_ORDERS: must be <points>\/<seconds>/);
  assert.match(problemsOf({ DATA_DIR: dir, RATE_LIMIT_ORDERS: "0/60" })[0], /^RATE_LIMIT_ORDERS: points and seconds must be at least 1/);
  assert.deepEqual(loadConfig({ DATA_DIR: dir }).unpaidLimits, { maxOrders: 3, maxUnitsPerProduct: 5 });
  assert.equal(loadConfig({ DATA_DIR: dir }).returnWindowDays, 30);
});

it("placeholder secrets are refused in cluster mode and under NODE_ENV=production, each named", () => {
  const dir = tmp();
  const placeholders = {
    JWT_SECRET: "change-me-change-me-change-me-change-me",
    RABBITMQ_URI: "amqp://meridian:change-me@rabbitmq:5672",
    MYSQL_URL: "mysql://root:CHANGEME@mariadb:3306/",
    ADMIN_EMAIL: "admin@example.com",
    ADMIN_PASSWORD: "change-me-now",
    REDIS_URL: "redis://:password@redis:6379",
  };
  const problems = problemsOf({ ...placeholders, DATA_DIR: dir });
  for (const name of ["JWT_SECRET", "RABBITMQ_URI", "MYSQL_URL", "ADMIN_PASSWORD", "REDIS_URL"])
    assert.ok(
      problems.some((p) => p.startsWith(`${name}:`) && /placeholder/.test(p)),
      `${name} in ${problems.join(" | ")}`,
    );
  // Embedded on a laptop they are allowed (nothing is exposed by default)...
  assert.deepEqual(
    problemsOf({ DATA_DIR: dir, JWT_SECRET: placeholders.JWT_SECRET, ADMIN_EMAIL: "a@example.com", ADMIN_PASSWORD: "change-me-now" }),
    [],
  );
  // ...but not under NODE_ENV=production.
  assert.ok(
    problemsOf({ DATA_DIR: dir, NODE_ENV: "production", JWT_SECRET: placeholders.JWT_SECRET }).some((p) => p.startsWith("JWT_SECRET:")),
  );
  // Shorter than 32 bytes is refused everywhere.
  assert.match(problemsOf({ DATA_DIR: dir, JWT_SECRET: "short" })[0], /^JWT_SECRET: must be at least 32/);
  // A real password (the test servers' guest/guest is a default, not a placeholder) passes.
  assert.deepEqual(problemsOf({ ...CLUSTER, DATA_DIR: dir }), []);
});

it("embedded files are owner-only: DATA_DIR 0700 when created, secret 0600, an older wider file narrowed", () => {
  const parent = tmp();
  const dir = path.join(parent, "data");
  loadConfig({ DATA_DIR: dir });
  assert.equal((fs.statSync(dir).mode & 0o777).toString(8), "700");
  assert.equal((fs.statSync(path.join(dir, "jwt-secret")).mode & 0o777).toString(8), "600");
  fs.chmodSync(path.join(dir, "jwt-secret"), 0o644);
  loadConfig({ DATA_DIR: dir });
  assert.equal((fs.statSync(path.join(dir, "jwt-secret")).mode & 0o777).toString(8), "600");
});

it("BREAK_PROTECTION: each switch named gives a warning; an unknown name, and any switch under NODE_ENV=production, is refused", () => {
  const dir = tmp();
  const broken = loadConfig({ DATA_DIR: dir, BREAK_PROTECTION: "stock-guard, inbox" });
  assert.equal(broken.warnings.length, 2);
  assert.match(broken.warnings[0], /^BREAK_PROTECTION=stock-guard: the conditional stock update .*\(tutorial only\)$/);
  assert.match(broken.warnings[1], /^BREAK_PROTECTION=inbox: the consumers' inbox/);
  assert.match(
    problemsOf({ DATA_DIR: dir, BREAK_PROTECTION: "inbox,stock" })[0],
    /^BREAK_PROTECTION: unknown stock; known: stock-guard, inbox, idempotency-key$/,
  );
  assert.ok(
    problemsOf({ DATA_DIR: dir, NODE_ENV: "production", BREAK_PROTECTION: "idempotency-key" }).includes(
      "BREAK_PROTECTION: refused under NODE_ENV=production (it turns off a protection of money or stock; tutorial only)",
    ),
  );
});
