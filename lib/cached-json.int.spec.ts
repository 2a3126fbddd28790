/**
 * lib/cached-json.ts in brokers built from moleculer.config.ts: with the memory cacher (the
 * embedded default) a value the cache holds is deep-frozen and its JSON written once, whichever
 * way it was stored (an action's `cache`, or `readThrough`); a value not held, and every value of
 * the Redis cacher (the cluster default, against the real Redis), is serialized on every call.
 */
import assert from "node:assert/strict";
import { describe, it } from "mocha";
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import { deleteRedisKeys } from "../test/support/app";
import { REDIS_URL, uniqueNamespace } from "../test/support/servers";
import { jsonOf } from "./cached-json";
import { readThrough } from "./cache-clean";
import { loadConfig } from "./config";

/** A product-like value whose serializations are counted (JSON.stringify calls toJSON each time). */
function countedValue(id: string, counter: { n: number }) {
  const data = { id, price: { amount: 100, currency: "EUR" }, tags: ["a", "b"] };
  return {
    ...data,
    toJSON() {
      counter.n++;
      return data;
    },
  };
}

async function withBroker(env: Record<string, string>, run: (broker: ServiceBroker, serialized: { n: number }) => Promise<void>) {
  const config = loadConfig({ LOG_LEVEL: "warn", JWT_SECRET: "x".repeat(32), ...env });
  const broker = new ServiceBroker({ ...brokerOptions(config), logger: false });
  const serialized = { n: 0 };
  broker.createService({
    name: "probe",
    actions: { read: { cache: { keys: ["id"] }, handler: (ctx) => countedValue(String(ctx.params.id), serialized) } },
  });
  await broker.start();
  try {
    const client = (broker.cacher as { client?: { status: string; once(e: string, f: () => void): void } }).client;
    assert.equal(Boolean(client), Boolean(env.REDIS_URL), "the cacher the configuration chose");
    if (client && client.status !== "ready") await new Promise<void>((resolve) => client.once("ready", resolve));
    await run(broker, serialized);
  } finally {
    await broker.stop();
  }
}

describe("lib/cached-json: the memory cacher's values frozen, their JSON written once", function () {
  this.timeout(20_000);

  it("memory cacher: an action's cached value is frozen to the leaves, and one JSON serves every read", async () => {
    await withBroker({}, async (broker, serialized) => {
      const first = await broker.call<ReturnType<typeof countedValue>, { id: string }>("probe.read", { id: "p1" });
      const again = await broker.call<ReturnType<typeof countedValue>, { id: string }>("probe.read", { id: "p1" });
      assert.equal(again, first, "the memory cacher hands out the object it holds");
      assert.ok(Object.isFrozen(first) && Object.isFrozen(first.price) && Object.isFrozen(first.tags), "frozen, nested ones too");
      assert.throws(() => {
        (first.price as { amount: number }).amount = 1;
      }, TypeError);
      assert.throws(() => first.tags.push("c"), TypeError);

      const bodies = [jsonOf(first), jsonOf(again), jsonOf(first)];
      assert.equal(serialized.n, 1, "serialized once for three responses");
      assert.deepEqual(new Set(bodies).size, 1);
      assert.deepEqual(JSON.parse(bodies[0]), { id: "p1", price: { amount: 100, currency: "EUR" }, tags: ["a", "b"] });

      // After a clean, the next read stores a new value: its own JSON, written once too.
      await broker.cacher!.clean("probe.**");
      const fresh = await broker.call<object, { id: string }>("probe.read", { id: "p1" });
      assert.notEqual(fresh, first);
      jsonOf(fresh);
      jsonOf(fresh);
      assert.equal(serialized.n, 2);
    });
  });

  it("memory cacher: a value stored through readThrough is held too; a value not cached is serialized each time", async () => {
    await withBroker({}, async (broker, serialized) => {
      const loaded = await readThrough(broker.cacher, "probe-user-1", 60, async () => countedValue("u1", serialized));
      assert.ok(loaded && Object.isFrozen(loaded));
      jsonOf(loaded);
      jsonOf(loaded);
      assert.equal(serialized.n, 1);

      // A value frozen at the top only (Object.freeze is shallow): its children are frozen too.
      const inner = { tags: ["x"] };
      const shallow = await readThrough(broker.cacher, "probe-user-2", 60, async () => Object.freeze({ id: "u2", inner }));
      assert.equal(shallow?.inner, inner);
      assert.ok(Object.isFrozen(inner) && Object.isFrozen(inner.tags), "the children of an already frozen value");

      const plain = countedValue("not cached", serialized);
      jsonOf(plain);
      jsonOf(plain);
      assert.equal(serialized.n, 3, "an answer the cache does not hold: every time");
      assert.ok(!Object.isFrozen(plain));
    });
  });

  it("Redis cacher: nothing taken over (every read is a fresh copy): left unfrozen, serialized each time", async () => {
    const namespace = uniqueNamespace("cachedjson");
    try {
      await withBroker({ REDIS_URL, NAMESPACE: namespace }, async (broker, serialized) => {
        const first = await broker.call<object, { id: string }>("probe.read", { id: "p1" }); // miss: stored in Redis as JSON
        assert.ok(!Object.isFrozen(first), "the Redis cacher's values are not taken over");
        const hit = await broker.call<Record<string, unknown>, { id: string }>("probe.read", { id: "p1" });
        assert.ok(!Object.isFrozen(hit), "a copy, not held");
        assert.deepEqual(JSON.parse(jsonOf(hit)), { id: "p1", price: { amount: 100, currency: "EUR" }, tags: ["a", "b"] });
        // Serialized anew each time: a change to the copy shows in its next JSON.
        hit.note = "changed";
        assert.equal(JSON.parse(jsonOf(hit)).note, "changed");
        assert.equal(serialized.n, 1, "only the miss's result was serialized (into Redis)");
      });
    } finally {
      await deleteRedisKeys(REDIS_URL, namespace);
    }
  });
});
