/**
 * An in-process Meridian for integration tests: a real broker with real services, a
 * gateway on a free port, and a database of its own (a temp SQLite dir, or a MariaDB
 * database named after a unique namespace), removed by `stop()`.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import type { Middleware, ServiceBroker } from "moleculer";
import Redis from "ioredis";
import { createBroker } from "../../app";
import { loadConfig, type AppConfig, type ServiceName } from "../../lib/config";
import type { LogDestination } from "../../lib/logger";
import { dropDatabase } from "../../lib/db";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "./servers";

export interface TestApp {
  broker: ServiceBroker;
  config: AppConfig;
  baseUrl: string;
  /** The gRPC edge's address (`127.0.0.1:<port>`), when the app runs it. */
  grpcAddress: string;
  stop(): Promise<void>;
}

export interface TestAppOptions {
  db?: "sqlite" | "mariadb";
  redis?: boolean;
  env?: Record<string, string>;
  services?: ServiceName[];
  /** Broker middlewares added after the node's own (app.ts createBroker). */
  middlewares?: Middleware[];
  /** Where the app's log lines go (lib/logger.ts); a test that reads them passes a collector. */
  logDestination?: LogDestination;
}

export function testConfig(opts: TestAppOptions = {}): AppConfig {
  const namespace = uniqueNamespace();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-test-"));
  return loadConfig({
    PORT: "0",
    GRPC_PORT: "0",
    DATA_DIR: dataDir,
    NAMESPACE: namespace,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
    DEMO_CATALOG: "false",
    // Integration tests register many accounts and place many orders from 127.0.0.1: the
    // request limits are off unless a test turns them on (the limits' own tests do).
    RATE_LIMITS: "off",
    ...(opts.db === "mariadb" ? { MYSQL_URL: MYSQL_URL, MIGRATE_ON_START: "true" } : {}),
    ...(opts.redis ? { REDIS_URL } : {}),
    ...opts.env,
  });
}

export async function startTestApp(opts: TestAppOptions = {}): Promise<TestApp> {
  const config = testConfig(opts);
  const services = opts.services ?? config.services;
  const broker = createBroker(config, services, { middlewares: opts.middlewares, logDestination: opts.logDestination });
  await broker.start();
  // A started app is a ready one: the search index builds in the background after start.
  if (services.includes("search")) {
    const deadline = Date.now() + 15_000;
    while (!(await broker.call<{ ready: boolean }>("search.status")).ready) {
      if (Date.now() > deadline) throw new Error("the search index was not built within 15 s");
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  let baseUrl = "";
  if (services.includes("gateway")) {
    const server = (broker.getLocalService("api") as unknown as { server: { address(): AddressInfo } }).server;
    baseUrl = `http://127.0.0.1:${server.address().port}`;
  }
  const grpcAddress = services.includes("grpc") ? `127.0.0.1:${(broker.getLocalService("grpc") as unknown as { port: number }).port}` : "";
  return {
    broker,
    config,
    baseUrl,
    grpcAddress,
    async stop() {
      await broker.stop();
      for (const s of services) if (s !== "gateway" && s !== "grpc") await dropDatabase(config, s);
      if (config.redisUrl) await deleteRedisKeys(config.redisUrl, config.namespace);
      fs.rmSync(config.dataDir, { recursive: true, force: true });
    },
  };
}

/** Removes every key this namespace wrote (cacher and rate limits). */
/**
 * The embedded system (SQLite) with a demo catalog of `catalogSize` and `admin` bootstrapped:
 * what the load generator (test/support/load.ts) runs against in the int tier. The product
 * service seeds the catalog in its `started` (so before start() resolves), and startTestApp
 * waits for the search index built from it.
 */
export function startShopForLoad(admin: { email: string; password: string }, catalogSize = 60): Promise<TestApp> {
  return startTestApp({
    db: "sqlite",
    env: { ADMIN_EMAIL: admin.email, ADMIN_PASSWORD: admin.password, DEMO_CATALOG: "true", DEMO_CATALOG_SIZE: String(catalogSize) },
  });
}

export async function deleteRedisKeys(url: string, namespace: string): Promise<void> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on("error", () => undefined);
  try {
    for (const pattern of [`MOL-${namespace}-*`, `meridian:${namespace}:*`]) {
      let cursor = "0";
      do {
        const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 500);
        if (keys.length) await redis.del(...keys);
        cursor = next;
      } while (cursor !== "0");
    }
  } catch {
    // A test that points REDIS_URL at a dead port has nothing to clean.
  } finally {
    redis.disconnect();
  }
}

/** JSON over fetch, returning status, headers and the parsed body (or text). */
export async function http(
  baseUrl: string,
  method: string,
  urlPath: string,
  opts: { body?: unknown; token?: string; headers?: Record<string, string>; raw?: string } = {},
): Promise<{ status: number; headers: Headers; body: any; text: string }> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let payload: string | undefined = opts.raw;
  if (opts.body !== undefined) {
    payload = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await fetch(baseUrl + urlPath, { method, headers, body: payload });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, body, text };
}
