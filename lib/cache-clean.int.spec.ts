/**
 * lib/cache-clean.ts with real Moleculer brokers in this process (memory cachers, Moleculer's
 * in-process transporter between two nodes): a write's clean reaches every node, a stale entry
 * stored just after the first clean is gone after the second, a shared cacher ignores hints.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { ServiceBroker } from "moleculer";
import { eventually } from "../test/support/eventually";
import { actionCacheKey, CacheCleaner, readThrough, SECOND_CLEAN_MS } from "./cache-clean";

type Hint = { id: string };

function node(nodeID: string, namespace: string, shared = false) {
  const broker = new ServiceBroker({ nodeID, namespace, transporter: "Fake", cacher: "Memory", logger: false });
  broker.createService({
    name: "thing",
    events: {
      "cache.clean.thing": {
        handler: (ctx: { nodeID?: string; params: Hint }) => cleaner.received(ctx.nodeID ?? "", ctx.params),
      },
    },
  } as never);
  const cleaner = new CacheCleaner<Hint>(
    broker,
    { warn: () => undefined },
    "thing",
    (cacher, { id }) => cacher.del(key(broker, id)),
    shared,
  );
  return {
    broker,
    cleaner,
    get: (id: string) => broker.cacher!.get(key(broker, id)),
    set: (id: string, v: unknown) => broker.cacher!.set(key(broker, id), v, 60),
  };
}

const key = (broker: ServiceBroker, id: string) => actionCacheKey(broker.cacher!, "thing.get", ["id"], { id });

describe("cache cleaning after a commit (lib/cache-clean.ts)", () => {
  const ns = `cc-${process.pid}-${Date.now()}`;
  const a = node("a", ns);
  const b = node("b", ns);
  before(async () => {
    await Promise.all([a.broker.start(), b.broker.start()]);
    await eventually(
      "the nodes see each other",
      async () => a.broker.registry.nodes.toArray().length === 2 && b.broker.registry.nodes.toArray().length === 2,
    );
  });
  after(async () => {
    a.cleaner.stop();
    b.cleaner.stop();
    await Promise.all([a.broker.stop(), b.broker.stop()]);
  });

  it("the writer's node and the other node forget the entry", async () => {
    await a.set("1", { v: "old" });
    await b.set("1", { v: "old" });
    await a.cleaner.afterCommit({ id: "1" });
    assert.equal(await a.get("1"), undefined, "cleaned here at once");
    await eventually("the other node's memory cacher is cleaned by the hint", async () => (await b.get("1")) === undefined);
  });

  it("an old row stored just after the first clean (a read that raced the commit) is gone after the second", async () => {
    await a.cleaner.afterCommit({ id: "2" });
    await a.set("2", { v: "read before the commit" });
    await b.set("2", { v: "read before the commit" });
    assert.deepEqual(await a.get("2"), { v: "read before the commit" }, "the first clean is over");
    await eventually(
      "the second clean, here and on the other node",
      async () => (await a.get("2")) === undefined && (await b.get("2")) === undefined,
    );
  });

  it("readThrough: a hit is not loaded again; what load finds missing is not stored", async () => {
    let loads = 0;
    const load = async () => (loads++, { v: "row" });
    assert.deepEqual(await readThrough(a.broker.cacher, key(a.broker, "3"), 60, load), { v: "row" });
    assert.deepEqual(await readThrough(a.broker.cacher, key(a.broker, "3"), 60, load), { v: "row" });
    assert.equal(loads, 1);
    assert.equal(await readThrough(a.broker.cacher, key(a.broker, "4"), 60, async () => undefined), undefined);
    assert.equal(await a.get("4"), undefined, "a missing row is not cached");
  });
});

describe("a shared cacher (Redis) ignores other nodes' hints; stop drops the second clean", () => {
  const ns = `cc2-${process.pid}-${Date.now()}`;
  const a = node("a", ns, true);
  const b = node("b", ns, true);
  before(async () => {
    await Promise.all([a.broker.start(), b.broker.start()]);
    await eventually("the nodes see each other", async () => a.broker.registry.nodes.toArray().length === 2);
  });
  after(async () => Promise.all([a.broker.stop(), b.broker.stop()]));

  it("node b keeps its entry (in cluster mode it is the same Redis entry, cleaned by the writer)", async () => {
    await b.set("1", { v: "kept" });
    await a.cleaner.afterCommit({ id: "1" });
    a.cleaner.stop();
    // The hint was broadcast before afterCommit returned; a round trip through b proves it arrived.
    await b.broker.call("$node.health", {}, { nodeID: "a" });
    await a.broker.call("$node.health", {}, { nodeID: "b" });
    assert.deepEqual(await b.get("1"), { v: "kept" });
    await a.set("1", { v: "stored after the stop" });
    await new Promise((r) => setTimeout(r, SECOND_CLEAN_MS + 100));
    assert.deepEqual(await a.get("1"), { v: "stored after the stop" }, "no second clean after stop");
  });
});
