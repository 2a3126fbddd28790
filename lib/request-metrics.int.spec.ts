/**
 * lib/request-metrics.ts in a broker built from moleculer.config.ts: Moleculer's internal
 * middlewares all present in Moleculer's order, the lean metrics where Moleculer's Metrics was
 * (a dropped Timeout or Validator would pass every other test until a request hung or bad
 * params got through), and the request families counted per caller with the error labels.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { INTERNAL_MIDDLEWARES, ServiceBroker } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import { loadConfig } from "./config";
import { AppError } from "./errors";
import { prometheusText } from "./metrics";
import { requestMetricsOf } from "./request-metrics";

describe("lean request metrics", () => {
  let broker: ServiceBroker;
  before(async () => {
    const config = loadConfig({ LOG_LEVEL: "warn", JWT_SECRET: "x".repeat(32) });
    broker = new ServiceBroker({ ...brokerOptions(config), logger: false });
    broker.createService({
      name: "probe",
      actions: {
        ok: { params: { n: "number" }, handler: (ctx) => ctx.params },
        refuse: () => Promise.reject(new AppError("OUT_OF_STOCK", "no")),
        nested: (ctx) => ctx.call("probe.ok", { n: 1 }),
      },
    });
    await broker.start();
  });
  after(() => broker.stop());

  it("Moleculer's internal middlewares run in its order, with the lean Metrics in Metrics' place", () => {
    const names = broker.middlewares.list.map((m) => m.name);
    const internal = names.filter((n) => INTERNAL_MIDDLEWARES.includes(n as string));
    assert.deepEqual(internal, INTERNAL_MIDDLEWARES);
    assert.ok(requestMetricsOf(broker), "the lean store is in use");
    assert.equal(broker.metrics.getMetric("moleculer.request.total"), null, "not counted twice");
  });

  it("calls, errors, levels and times, per caller", async () => {
    await broker.call("probe.ok", { n: 1 });
    await broker.call("probe.nested");
    await assert.rejects(broker.call("probe.refuse"), { type: "OUT_OF_STOCK" });
    await assert.rejects(broker.call("probe.ok", { n: "x" }), { type: "VALIDATION_ERROR" });
    const text = prometheusText(broker);
    const line = (re: RegExp) => text.split("\n").filter((l) => re.test(l));
    assert.equal(line(/^moleculer_request_total\{.*action="probe\.ok".*caller="null".*\} 2$/).length, 1, text);
    assert.equal(line(/^moleculer_request_total\{.*action="probe\.ok".*caller="probe".*\} 1$/).length, 1, text);
    assert.equal(
      line(/^moleculer_request_error_total\{.*action="probe\.refuse".*errorCode="409",errorType="OUT_OF_STOCK"\} 1$/).length,
      1,
      text,
    );
    assert.equal(line(/^moleculer_request_error_total\{.*action="probe\.ok".*errorType="VALIDATION_ERROR"\} 1$/).length, 1, text);
    assert.equal(line(/^moleculer_request_levels\{.*level="2"\} 1$/).length, 1, text);
    assert.equal(line(/^moleculer_request_time_count\{.*action="probe\.refuse".*\} 1$/).length, 1, text);
    assert.equal(requestMetricsOf(broker)!.totalOf("probe.ok"), 3);
  });
});
