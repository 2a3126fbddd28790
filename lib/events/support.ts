/**
 * Helpers for the event-layer tests and benchmark: plain brokers (no transporter: the event
 * layer has its own AMQP connection) running fixture services on a shared namespace.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { loadConfig, type AppConfig } from "../config";
import { dropDatabase } from "../db";
import type { AnyServiceSchema } from "../service-schema";
import { queueMessages, type Rabbitmqctl } from "../../test/support/rabbitmq";
import { REDIS_URL } from "../../test/support/servers";
import { topology } from "./topology";

export interface EventsTestEnv {
  namespace: string;
  dataDir: string;
  db: "sqlite" | "mariadb";
  rabbitUri?: string;
  mysqlUrl: string;
  env?: Record<string, string>;
}

export function eventsConfig(t: EventsTestEnv, extra: Record<string, string> = {}): AppConfig {
  return loadConfig({
    DATA_DIR: t.dataDir,
    NAMESPACE: t.namespace,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
    MIGRATE_ON_START: "true",
    JWT_SECRET: "x".repeat(40),
    EVENTS_POLL_INTERVAL_MS: "100",
    ...(t.db === "mariadb" ? { MYSQL_URL: t.mysqlUrl } : {}),
    // A cluster node running the user service keeps revocations and limits in Redis.
    ...(t.rabbitUri ? { RABBITMQ_URI: t.rabbitUri, REDIS_URL } : {}),
    ...t.env,
    ...extra,
  });
}

export function newDataDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "meridian-events-"));
}

export async function startBroker(
  nodeID: string,
  services: AnyServiceSchema[],
  level = process.env.TEST_LOG_LEVEL ?? "warn",
): Promise<ServiceBroker> {
  const broker = new ServiceBroker({ nodeID, logger: { type: "Console", options: { level, formatter: "short" } } as never });
  for (const s of services) broker.createService(s);
  await broker.start();
  return broker;
}

export async function dropAll(config: AppConfig, services: string[]): Promise<void> {
  for (const s of services) await dropDatabase(config, s);
  fs.rmSync(config.dataDir, { recursive: true, force: true });
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function svc<T>(broker: ServiceBroker, name: string): T {
  return broker.getLocalService(name) as unknown as T;
}

/**
 * Messages (ready + unacknowledged, read live: test/support/rabbitmq.ts) in the event layer's
 * queues of `namespace`, in the vhost `uri` names: work, retry, dead-letter and broadcast
 * queues, not the transporter's. `ctl` defaults to the machine's broker. `services`: only the
 * queues of these consuming services. A test running part of the system passes the services
 * it runs, since a publisher declares the queues of every consumer the contracts name (relay.ts),
 * and those of a service not running keep their messages.
 */
export async function eventQueueMessages(
  uri: string,
  namespace: string,
  ctl?: Rabbitmqctl,
  services?: readonly string[],
): Promise<{ total: number; dead: number; byQueue: Map<string, number> }> {
  const prefix = `${topology(namespace).exchange}.`;
  const byQueue = await queueMessages(uri, prefix, ctl);
  if (services) for (const name of [...byQueue.keys()]) if (!services.some((s) => name.startsWith(`${prefix}${s}.`))) byQueue.delete(name);
  let total = 0;
  let dead = 0;
  for (const [name, n] of byQueue) {
    total += n;
    if (name.endsWith(".dead")) dead += n;
  }
  return { total, dead, byQueue };
}
