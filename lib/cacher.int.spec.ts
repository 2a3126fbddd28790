/**
 * The Redis cacher against the real Redis, and against a Redis that does not answer:
 * reads become misses quickly, writes are skipped, and the broker still stops.
 */
import assert from "node:assert/strict";
import { it } from "mocha";
import { ServiceBroker } from "moleculer";
import { freePort } from "../test/support/ports";
import { REDIS_URL, uniqueNamespace } from "../test/support/servers";
import { deleteRedisKeys } from "../test/support/app";
import { redisClient, ResilientRedisCacher } from "./cacher";

function brokerWith(redisUrl: string, namespace: string) {
  let calls = 0;
  const broker = new ServiceBroker({
    nodeID: namespace,
    logger: false,
    cacher: new ResilientRedisCacher({ redisUrl, prefix: `MOL-${namespace}-`, ttl: 30 }) as any,
  });
  broker.createService({
    name: "c",
    actions: {
      read: { cache: { keys: ["id"] }, handler: (ctx: any) => ({ id: ctx.params.id, n: ++calls }) },
    },
  });
  return broker;
}

it("caches in the real Redis", async () => {
  const ns = uniqueNamespace();
  const broker = brokerWith(REDIS_URL, ns);
  await broker.start();
  // Commands fail fast while disconnected (no offline queue), so wait for the connection.
  const client = (broker.cacher as any).client;
  if (client.status !== "ready") await new Promise((resolve) => client.once("ready", resolve));
  try {
    const first = await broker.call("c.read", { id: 1 });
    const second = await broker.call("c.read", { id: 1 });
    assert.deepEqual(second, first, "second read served from Redis");
  } finally {
    await broker.stop();
    await deleteRedisKeys(REDIS_URL, ns);
  }
});

it("with Redis down, cached actions still answer (miss) and the broker stops", async () => {
  const broker = brokerWith(`redis://127.0.0.1:${await freePort()}`, uniqueNamespace());
  await broker.start();
  const t0 = Date.now();
  const a = await broker.call<{ n: number }, unknown>("c.read", { id: 2 });
  const b = await broker.call<{ n: number }, unknown>("c.read", { id: 2 });
  assert.equal(b.n, a.n + 1, "both reads reached the handler");
  assert.ok(Date.now() - t0 < 3000, "no long wait in an offline queue");
  await broker.stop();
});

it("commands issued in one turn leave together (auto-pipelined), except on a client that refuses it", async () => {
  const ns = uniqueNamespace();
  const pipelined = redisClient(REDIS_URL);
  const plain = redisClient(REDIS_URL, { autoPipelining: false });
  try {
    // Commands fail fast while disconnected (no offline queue): wait for the connections.
    for (const c of [pipelined, plain]) if (c.status !== "ready") await new Promise((resolve) => c.once("ready", resolve));
    const keys = Array.from({ length: 10 }, (_, i) => `MOL-${ns}-k${i}`);
    await Promise.all(keys.map((k, i) => pipelined.set(k, String(i))));
    const reads = keys.map((k) => pipelined.get(k));
    assert.equal(pipelined.autoPipelineQueueSize, 10, "queued for one write");
    assert.deepEqual(
      await Promise.all(reads),
      keys.map((_, i) => String(i)),
    );
    const plainReads = keys.map((k) => plain.get(k));
    assert.equal(plain.autoPipelineQueueSize, 0, "each command written at once");
    assert.deepEqual(
      await Promise.all(plainReads),
      keys.map((_, i) => String(i)),
    );
  } finally {
    pipelined.disconnect();
    plain.disconnect();
    await deleteRedisKeys(REDIS_URL, ns);
  }
});
