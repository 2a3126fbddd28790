/**
 * lib/transit-metrics.ts in brokers built from moleculer.config.ts, over the machine's RabbitMQ
 * (a vhost of their own): every packet a remote call sends and receives is counted by type and
 * bytes on both nodes, the gauges read the transit at scrape time, and Moleculer's registry no
 * longer holds these families (so `/metrics` lists each once).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import { createVhost, type RabbitVhost } from "../test/support/rabbitmq";
import { eventually } from "../test/support/eventually";
import { uniqueNamespace } from "../test/support/servers";
import { loadConfig } from "./config";
import { prometheusText } from "./metrics";
import { TRANSIT_METRICS } from "./transit-metrics";

describe("transit metrics as plain numbers", () => {
  let vhost: RabbitVhost;
  let caller: ServiceBroker;
  let callee: ServiceBroker;
  let releaseSlow: () => void = () => undefined;
  let slowStarted = false;
  before(async () => {
    vhost = await createVhost();
    const namespace = uniqueNamespace();
    const node = (nodeID: string) => {
      const config = loadConfig({
        LOG_LEVEL: "warn",
        JWT_SECRET: "x".repeat(32),
        RABBITMQ_URI: vhost.uri,
        REDIS_URL: "redis://127.0.0.1:6379",
        NAMESPACE: namespace,
        SERVICES: nodeID === "caller" ? "gateway" : "user",
      });
      return new ServiceBroker({ ...brokerOptions(config), nodeID, logger: false });
    };
    caller = node("caller");
    callee = node("callee");
    callee.createService({
      name: "echo",
      actions: {
        say: (ctx) => ({ said: (ctx.params as { text: string }).text }),
        slow: () =>
          new Promise((resolve) => {
            slowStarted = true;
            releaseSlow = () => resolve("done");
          }),
      },
    });
    await Promise.all([caller.start(), callee.start()]);
    await caller.waitForServices("echo", 15_000);
  });
  after(async () => {
    releaseSlow();
    await Promise.all([caller?.stop(), callee?.stop()]);
    await vhost?.destroy();
  });

  /** The value of `name{…labels…}` in the broker's Prometheus text (every line, summed), or undefined when absent. */
  const sample = (broker: ServiceBroker, name: string, label = "") => {
    const lines = prometheusText(broker)
      .split("\n")
      .filter((l) => l.startsWith(`${name}{`) && l.includes(label));
    return lines.length ? lines.reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0) : undefined;
  };

  it("counts each remote call's request and response on both nodes, by type and bytes", async () => {
    const before = {
      reqSent: sample(caller, "moleculer_transit_publish_total", 'type="REQ"') ?? 0,
      reqGot: sample(callee, "moleculer_transit_receive_total", 'type="REQ"') ?? 0,
      resSent: sample(callee, "moleculer_transit_publish_total", 'type="RES"') ?? 0,
      resGot: sample(caller, "moleculer_transit_receive_total", 'type="RES"') ?? 0,
      packets: sample(caller, "moleculer_transporter_packets_sent_total")!,
      bytes: sample(caller, "moleculer_transporter_packets_sent_bytes")!,
      gotPackets: sample(callee, "moleculer_transporter_packets_received_total")!,
    };
    for (let i = 0; i < 5; i++) assert.deepEqual(await caller.call("echo.say", { text: `hello ${i}` }), { said: `hello ${i}` });
    assert.equal(sample(caller, "moleculer_transit_publish_total", 'type="REQ"'), before.reqSent + 5);
    assert.equal(sample(callee, "moleculer_transit_receive_total", 'type="REQ"'), before.reqGot + 5);
    assert.equal(sample(callee, "moleculer_transit_publish_total", 'type="RES"'), before.resSent + 5);
    assert.equal(sample(caller, "moleculer_transit_receive_total", 'type="RES"'), before.resGot + 5);
    // Heartbeats may go out meanwhile: at least the five requests, each with bytes.
    assert.ok(sample(caller, "moleculer_transporter_packets_sent_total")! >= before.packets + 5);
    assert.ok(sample(caller, "moleculer_transporter_packets_sent_bytes")! >= before.bytes + 5 * 20);
    assert.ok(sample(callee, "moleculer_transporter_packets_received_total")! >= before.gotPackets + 5);
  });

  it("the active-requests gauge is the requests awaiting an answer at the scrape, not a running sum", async () => {
    assert.equal(sample(caller, "moleculer_transit_requests_active"), 0);
    const pending = caller.call("echo.slow");
    await eventually("the callee runs the request, unanswered", async () => slowStarted);
    assert.equal(sample(caller, "moleculer_transit_requests_active"), 1);
    releaseSlow();
    assert.equal(await pending, "done");
    assert.equal(sample(caller, "moleculer_transit_requests_active"), 0);
    assert.equal(sample(caller, "moleculer_transit_streams_send_active"), 0);
  });

  it("each family is written once: Moleculer's registry no longer holds them", () => {
    for (const name of TRANSIT_METRICS) assert.equal(caller.metrics.getMetric(name), null, name);
    const text = prometheusText(caller);
    for (const name of TRANSIT_METRICS) {
      const prom = name.replace(/\./g, "_");
      assert.equal(text.split("\n").filter((l) => l === `# TYPE ${prom} ${name.endsWith("active") ? "gauge" : "counter"}`).length, 1, prom);
    }
  });
});
