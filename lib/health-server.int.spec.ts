/**
 * The health server of a node without the gateway: liveness answers from the start,
 * readiness runs the node's probes (lib/readiness.ts) with the gateway's shapes, and
 * close() returns even with a keep-alive connection open.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { it } from "mocha";
import { ServiceBroker } from "moleculer";
import { startHealthServer } from "./health-server";
import { registerProbe } from "./readiness";

async function get(port: number, path: string, method = "GET"): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

it("live at once, ready only when every probe passes, 503 names what is down", async () => {
  const broker = new ServiceBroker({ logger: false });
  let dbUp = false;
  registerProbe(broker, "node", async () => {
    if (!broker.started) throw new Error("still starting");
  });
  registerProbe(broker, "db:order", async () => {
    if (!dbUp) throw new Error("connect ECONNREFUSED 127.0.0.1:3306");
  });
  const health = await startHealthServer(broker, 0);
  try {
    assert.ok(health.port > 0);
    // Before the broker has started: alive (do not restart it), not ready.
    assert.deepEqual(await get(health.port, "/health/live"), { status: 200, body: { status: "ok" } });
    const starting = await get(health.port, "/health/ready");
    assert.equal(starting.status, 503);
    assert.equal(starting.body.error.code, "SERVICE_UNAVAILABLE");
    assert.deepEqual(
      starting.body.error.details.map((d: { dependency: string }) => d.dependency),
      ["db:order", "node"],
    );

    await broker.start();
    const dbDown = await get(health.port, "/health/ready");
    assert.equal(dbDown.status, 503);
    assert.equal(dbDown.body.error.message, "Not ready: db:order down");
    assert.deepEqual(dbDown.body.error.details, [{ dependency: "db:order", reason: "connect ECONNREFUSED 127.0.0.1:3306" }]);

    dbUp = true;
    assert.deepEqual(await get(health.port, "/health/ready?probe=kubelet"), {
      status: 200,
      body: { status: "ready", checks: { "db:order": "up", node: "up" } },
    });

    assert.equal((await get(health.port, "/health/ready", "HEAD")).status, 200);
    assert.equal((await get(health.port, "/health/live", "POST")).status, 405);
    // Prometheus text (empty here: this broker has no InProcessPrometheusReporter; lib/observability.int.spec.ts checks the content).
    const metrics = await fetch(`http://127.0.0.1:${health.port}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    await metrics.text();
    const missing = await get(health.port, "/nothing-here");
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, "NOT_FOUND");
  } finally {
    await broker.stop();
    await health.close();
  }
});

it("a hung probe reads as down instead of hanging the probe request", async () => {
  const broker = new ServiceBroker({ logger: false });
  registerProbe(broker, "cache", () => new Promise<void>(() => undefined));
  const health = await startHealthServer(broker, 0);
  try {
    const started = Date.now();
    const res = await get(health.port, "/health/ready");
    assert.equal(res.status, 503);
    assert.deepEqual(res.body.error.details, [{ dependency: "cache", reason: "no answer in 2000 ms" }]);
    assert.ok(Date.now() - started < 5000, "answered within the readiness deadline");
  } finally {
    await health.close();
  }
});

it("close() returns with an idle keep-alive connection open; a taken port is an error", async () => {
  const broker = new ServiceBroker({ logger: false });
  const health = await startHealthServer(broker, 0);
  const agent = new http.Agent({ keepAlive: true });
  await new Promise<void>((resolve, reject) =>
    http
      .get({ port: health.port, host: "127.0.0.1", path: "/health/live", agent }, (res) => res.resume().on("end", resolve))
      .on("error", reject),
  );
  await assert.rejects(startHealthServer(broker, health.port), /EADDRINUSE/);
  await health.close();
  agent.destroy();
});
