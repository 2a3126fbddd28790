import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { configProblems } from "../test/support/config";
import { loadConfig } from "./config";

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "meridian-cfg-"));
const problemsOf = (env: Record<string, string>) => configProblems(() => loadConfig(env));

test("embedded defaults: all services, port 3000, SQLite, generated secret kept in DATA_DIR", () => {
  const dir = tmp();
  const a = loadConfig({ DATA_DIR: dir });
  assert.equal(a.mode, "embedded");
  assert.equal(a.port, 3000);
  assert.deepEqual(a.services, ["gateway", "user", "product", "search", "notification", "cart", "payment", "order", "recommendation"]);
  assert.deepEqual(a.reservations, { ttlSeconds: 900, sweepIntervalMs: 30_000 });
  // The sweep runs every quarter of the TTL, from 1 s to 30 s, unless set.
  assert.deepEqual(loadConfig({ DATA_DIR: dir, RESERVATION_TTL_SECONDS: "60" }).reservations, { ttlSeconds: 60, sweepIntervalMs: 15_000 });
  assert.deepEqual(loadConfig({ DATA_DIR: dir, RESERVATION_TTL_SECONDS: "1", RESERVATION_SWEEP_INTERVAL_MS: "200" }).reservations, { ttlSeconds: 1, sweepIntervalMs: 200 });
  assert.equal(a.migrateOnStart, true);
  assert.equal(a.mysqlUrl, undefined);
  assert.ok(a.jwtSecret.length >= 32);
  assert.equal((fs.statSync(path.join(dir, "jwt-secret")).mode & 0o777).toString(8), "600");
  assert.equal(loadConfig({ DATA_DIR: dir }).jwtSecret, a.jwtSecret, "the same secret on the next start");
  assert.equal(a.publicUrl, "http://localhost:3000");
});

test("cluster mode by RABBITMQ_URI: secrets have no fallback, migrations are a separate step", () => {
  assert.deepEqual(problemsOf({ RABBITMQ_URI: "amqp://localhost" }), ["JWT_SECRET: required in cluster mode (no fallback for secrets)"]);
  const c = loadConfig({
    RABBITMQ_URI: "amqp://guest:guest@localhost:5672/",
    JWT_SECRET: "s".repeat(32),
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

test("every bad value is reported at once, each naming its variable", () => {
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
  for (const name of ["PORT", "RABBITMQ_URI", "REDIS_URL", "MYSQL_URL", "JWT_SECRET", "ADMIN_EMAIL/ADMIN_PASSWORD", "LOG_LEVEL", "TRUST_PROXY"])
    assert.ok(problems.some((p) => p.startsWith(name)), `${name} in ${problems.join(" | ")}`);
});

test("rules between variables", () => {
  const dir = tmp();
  assert.match(problemsOf({ DATA_DIR: dir, SERVICES: "user,nope" })[0], /^SERVICES: unknown service\(s\) nope/);
  assert.match(problemsOf({ DATA_DIR: dir, SERVICES: "user" })[0], /^SERVICES: without RABBITMQ_URI/);
  assert.match(problemsOf({ DATA_DIR: dir, ETCD_HOSTS: "localhost:2379" })[0], /^ETCD_HOSTS: etcd discovery needs a transporter/);
  const cluster = { DATA_DIR: dir, RABBITMQ_URI: "amqp://x", JWT_SECRET: "s".repeat(32) };
  assert.match(problemsOf({ ...cluster, ETCD_HOSTS: "localhost:2379", ETCD_USERNAME: "u" })[0], /^ETCD_USERNAME\/ETCD_PASSWORD: give both/);
  assert.match(problemsOf({ ...cluster, ETCD_HOSTS: "not a host" })[0], /^ETCD_HOSTS: expected/);
  assert.match(problemsOf({ ...cluster, HEARTBEAT_INTERVAL_S: "6", HEARTBEAT_TIMEOUT_S: "6" })[0], /^HEARTBEAT_TIMEOUT_S/);
  assert.match(problemsOf({ DATA_DIR: dir, ADMIN_EMAIL: "a@example.com", ADMIN_PASSWORD: "short" })[0], /^ADMIN_PASSWORD: must be at least 8/);
});

test("empty strings count as unset", () => {
  const c = loadConfig({ DATA_DIR: tmp(), RABBITMQ_URI: "", REDIS_URL: "", PORT: "" });
  assert.equal(c.mode, "embedded");
  assert.equal(c.port, 3000);
});

test("HEALTH_PORT: the health server of a node without the gateway, off (0) unless set", () => {
  const dir = tmp();
  assert.equal(loadConfig({ DATA_DIR: dir }).healthPort, 0);
  assert.equal(loadConfig({ DATA_DIR: dir, HEALTH_PORT: "0" }).healthPort, 0);
  assert.equal(loadConfig({ DATA_DIR: dir, HEALTH_PORT: "9101" }).healthPort, 9101);
  assert.deepEqual(problemsOf({ DATA_DIR: dir, HEALTH_PORT: "70000" }), ["HEALTH_PORT: must be at most 65535"]);
});
