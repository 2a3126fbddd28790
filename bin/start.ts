/**
 * `npm start`: validates the configuration, starts this node's services and prints where
 * to reach them. Embedded by default (all services, SQLite, nothing to install); a cluster
 * node when RABBITMQ_URI (and friends) are set.
 */
import type { Service, ServiceBroker } from "moleculer";
import { createBroker } from "../app";
import { ConfigError, loadConfig, type AppConfig } from "../lib/config";
import { asyncStdout } from "../lib/logger";
import { startHealthServer, type HealthServer } from "../lib/health-server";

export function loadConfigOrExit(opts: { tool?: boolean } = {}): AppConfig {
  try {
    return loadConfig(process.env, opts);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

export function installShutdown(stop: () => Promise<unknown>): void {
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    });
}

/** What the configuration turned off or weakened (RATE_LIMITS=off, BREAK_PROTECTION), in the start log of every process that runs services. */
export function logWarnings(broker: ServiceBroker, config: AppConfig): void {
  for (const warning of config.warnings) broker.logger.warn(`WARNING: ${warning}`);
}

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  // The server's log lines leave asynchronously (lib/logger.ts: what that guarantees on a stop and a crash).
  const stdout = asyncStdout();
  const broker = createBroker(config, config.services, { logDestination: stdout });
  logWarnings(broker, config);
  // The internal listener (/metrics, and the health routes for a node without the gateway),
  // started before the broker so liveness answers (and readiness says "starting") while the
  // services start. Never the gateway's public port: metrics reveal internal addresses and volumes.
  let health: HealthServer | undefined;
  if (config.metricsPort) {
    try {
      health = await startHealthServer(broker, config.metricsPort, config.mode === "embedded" ? "127.0.0.1" : undefined);
    } catch (err) {
      process.stderr.write(`Metrics listener on port ${config.metricsPort} failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    }
  }
  installShutdown(() => broker.stop().finally(() => health?.close()));
  try {
    await broker.start();
  } catch (err) {
    broker.logger.fatal("Start failed:", err instanceof Error ? err.message : err);
    await broker.stop().catch(() => undefined);
    process.exit(1);
  }
  const lines = [`Meridian started: ${config.mode} mode, node '${config.nodeId}', services: ${config.services.join(", ")}`];
  if (config.services.includes("gateway")) {
    lines.push(
      `  Gateway: ${config.publicUrl}/api`,
      `  API docs: ${config.publicUrl}/docs  (OpenAPI: ${config.publicUrl}/api/openapi.json)`,
    );
  }
  if (config.services.includes("grpc")) {
    const grpc = broker.getLocalService("grpc") as (Service & { port?: number }) | undefined;
    lines.push(`  gRPC: localhost:${grpc?.port ?? config.grpcPort}  (grpcurl -plaintext localhost:${grpc?.port ?? config.grpcPort} list)`);
  }
  if (health) lines.push(`  Metrics (internal): http://localhost:${health.port}/metrics, health: /health/live and /health/ready`);
  lines.push(
    config.mode === "cluster"
      ? "  REPL: `npm run repl` in another terminal joins this cluster (same environment variables)"
      : "  REPL: stop this and run `npm run repl` (embedded mode is one process: it starts the system with a REPL attached)",
  );
  // Through the log's destination: one writer on fd 1, so the banner never lands inside a log line.
  stdout.write(`${lines.join("\n")}\n`);
}

if (require.main === module) void main();
