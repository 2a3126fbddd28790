/**
 * lib/cacher-metrics.ts in brokers built from moleculer.config.ts, with the memory cacher (the
 * embedded default) and the Redis cacher (the cluster default, against the real Redis): every
 * get, hit, set and clean counted once in `/metrics` under Moleculer's family names, times as
 * bucketed histograms without the quantile reservoir, and nothing left in Moleculer's registry.
 */
import assert from "node:assert/strict";
import { describe, it } from "mocha";
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import { deleteRedisKeys } from "../test/support/app";
import { REDIS_URL, uniqueNamespace } from "../test/support/servers";
import { cacherMetricsOf } from "./cacher-metrics";
import { loadConfig } from "./config";
import { prometheusText } from "./metrics";

async function exercise(env: Record<string, string>): Promise<string> {
  const config = loadConfig({ LOG_LEVEL: "warn", JWT_SECRET: "x".repeat(32), ...env });
  const broker = new ServiceBroker({ ...brokerOptions(config), logger: false });
  let calls = 0;
  broker.createService({
    name: "probe",
    actions: { read: { cache: { keys: ["id"] }, handler: (ctx) => ({ id: ctx.params.id, n: ++calls }) } },
  });
  await broker.start();
  try {
    // Commands fail fast while disconnected (no offline queue): wait for the connection.
    const client = (broker.cacher as { client?: { status: string; once(e: string, f: () => void): void } }).client;
    assert.equal(Boolean(client), Boolean(env.REDIS_URL), "the cacher the configuration chose");
    if (client && client.status !== "ready") await new Promise<void>((resolve) => client.once("ready", resolve));
    assert.ok(cacherMetricsOf(broker), "the lean store is in use");
    for (const name of ["moleculer.cacher.get.total", "moleculer.cacher.get.time", "moleculer.cacher.found.total"])
      assert.equal(broker.metrics.getMetric(name), null, `${name}: not counted twice`);
    await broker.call("probe.read", { id: 1 }); // miss, set
    await broker.call("probe.read", { id: 1 }); // hit
    await broker.call("probe.read", { id: 2 }); // miss, set
    await broker.cacher!.clean("probe.**");
    assert.equal(calls, 2);
    return prometheusText(broker);
  } finally {
    await broker.stop();
  }
}

function check(text: string): void {
  const value = (name: string) => {
    const lines = text.split("\n").filter((l) => l.startsWith(`${name}{`));
    assert.equal(lines.length, 1, `${name}: one line\n${text}`);
    assert.match(lines[0], /namespace="[^"]*",nodeID="[^"]+"/, "the reporter's default labels");
    return Number(lines[0].slice(lines[0].lastIndexOf(" ") + 1));
  };
  assert.equal(value("moleculer_cacher_get_total"), 3);
  assert.equal(value("moleculer_cacher_found_total"), 1);
  assert.equal(value("moleculer_cacher_set_total"), 2);
  assert.equal(value("moleculer_cacher_clean_total"), 1);
  assert.equal(value("moleculer_cacher_expired_total"), 0);
  assert.equal(value("moleculer_cacher_get_time_count"), 3);
  assert.equal(value("moleculer_cacher_set_time_count"), 2);
  assert.ok(value("moleculer_cacher_get_time_sum") > 0);
  assert.equal(text.split("\n").filter((l) => l.startsWith("moleculer_cacher_get_time_bucket{")).length, 13, "12 bounds and +Inf");
  assert.ok(!/^moleculer_cacher_\w+\{[^}]*quantile=/m.test(text), "no quantile reservoir");
  assert.equal(text.split("\n").filter((l) => l === "# TYPE moleculer_cacher_get_total counter").length, 1, "one family");
}

describe("cacher metrics as plain numbers", () => {
  it("the memory cacher (embedded): gets, hits, sets and cleans counted once, times in buckets", async () => {
    check(await exercise({}));
  });

  it("the Redis cacher (cluster), against the real Redis: the same", async () => {
    const namespace = uniqueNamespace();
    try {
      check(await exercise({ REDIS_URL, NAMESPACE: namespace }));
    } finally {
      await deleteRedisKeys(REDIS_URL, namespace);
    }
  });
});
