/**
 * The internal listener of every node (METRICS_PORT): GET /metrics, and the health routes.
 * Metrics reveal internal addresses, process arguments and order volumes, so they are never
 * served on the gateway's public port (it answers 404 there); Prometheus scrapes this port
 * inside the cluster. Nodes without the gateway take their work from RabbitMQ and listen on
 * no other port, yet an orchestrator must still probe them: the health routes answer here
 * with the gateway's paths and bodies (services/gateway/api.service.ts), so one probe
 * definition fits every node. A bare node:http server, not moleculer-web: it must answer
 * while the broker is starting or stopping, and carries nothing else.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { ServiceBroker } from "moleculer";
import { AppError, toErrorResponse } from "./errors";
import { prometheusText } from "./metrics";
import { checkReadiness } from "./readiness";

/** The gateway's paths too (OPS_ALIASES): the manifests probe these on METRICS_PORT for nodes without the gateway. */
export const HEALTH_PATHS = { live: "/health/live", ready: "/health/ready" } as const;
/** Prometheus text of this node (Moleculer's metrics and the business counters). */
export const METRICS_PATH = "/metrics";

export interface HealthServer {
  port: number;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
}

/**
 * Listens on `port` (0: an ephemeral one, for tests) on `host`: every interface by default,
 * since the kubelet and Prometheus reach the pod's IP; bin/start.ts binds embedded mode's to
 * 127.0.0.1, so a laptop's `npm start` does not show its metrics to the network.
 */
export async function startHealthServer(broker: ServiceBroker, port: number, host?: string): Promise<HealthServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD")
      return send(res, 405, toErrorResponse(new AppError("METHOD_NOT_ALLOWED", "GET only")).body);
    // Live as long as the event loop answers: a restart would not fix a dependency that is down.
    if (path === HEALTH_PATHS.live) return send(res, 200, { status: "ok" });
    if (path === METRICS_PATH) {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" });
      return void res.end(prometheusText(broker));
    }
    if (path === HEALTH_PATHS.ready) {
      checkReadiness(broker).then(
        (report) => {
          if (report.ready) return send(res, 200, { status: "ready", checks: report.checks });
          const err = new AppError(
            "SERVICE_UNAVAILABLE",
            `Not ready: ${report.down.map((d) => d.dependency).join(", ")} down`,
            report.down,
          );
          const { status, body } = toErrorResponse(err);
          send(res, status, body);
        },
        // checkReadiness catches each probe's failure; this is only a last resort.
        () => send(res, 503, toErrorResponse(new AppError("SERVICE_UNAVAILABLE", "Readiness check failed")).body),
      );
      return;
    }
    send(res, 404, toErrorResponse(new AppError("NOT_FOUND", "Not found")).body);
  });
  // Probes are short requests; do not let an idle keep-alive connection hold close() up.
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
