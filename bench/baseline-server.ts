/**
 * The "bare" baseline of the gateway benchmark: a plain `node:http` server answering the
 * same two routes with the same JSON as Meridian, and nothing else (no framework, no
 * broker, no validation, no token verification, no database). Run as a child process by
 * bench/gateway.bench.ts so it does not share an event loop with autocannon.
 *
 *   PORT=0 BENCH_USER_JSON='{"id":...}' npx tsx bench/baseline-server.ts
 *
 * Prints `baseline listening on <port>` once it accepts connections.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

const JSON_TYPE = "application/json; charset=utf-8";
const LIVE = JSON.stringify({ status: "ok" });
// The bench passes a user JSON shaped like the real `GET /api/users/me` answer.
const USER = process.env.BENCH_USER_JSON ?? JSON.stringify({ id: "00000000-0000-4000-8000-000000000000", email: "bench@example.com" });
const UNAUTHORIZED = JSON.stringify({ error: { code: "UNAUTHORIZED", message: "Authentication required" } });

function send(res: http.ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  res.setHeader("Content-Type", JSON_TYPE);
  res.setHeader("Content-Length", Buffer.byteLength(body));
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health/live") return send(res, 200, LIVE);
  if (req.method === "GET" && req.url === "/api/users/me") {
    // The trivial stand-in for authentication: a bearer token must be present, nothing more.
    if (!req.headers.authorization?.startsWith("Bearer ")) return send(res, 401, UNAUTHORIZED);
    return send(res, 200, USER);
  }
  send(res, 404, JSON.stringify({ error: { code: "NOT_FOUND", message: "Not found" } }));
});

server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  process.stdout.write(`baseline listening on ${(server.address() as AddressInfo).port}\n`);
});

for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
