/**
 * The Redis cacher against the real Redis, and against a Redis that does not answer:
 * reads become misses quickly, writes are skipped, and the broker still stops.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { afterEach, describe, it } from "mocha";
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
  assert.equal(client.options.enableAutoPipelining, true, "the cacher's commands are auto-pipelined");
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

/** A TCP relay to Redis that can stop relaying without closing anything: a host that went silent. */
async function silenceableRelay(target: URL): Promise<{ url: string; silence(): void; close(): Promise<void> }> {
  let silent = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
    }
    client.on("data", (d) => void (silent || upstream.write(d)));
    upstream.on("data", (d) => void (silent || client.write(d)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    silence: () => void (silent = true),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe("a Redis gone silent", () => {
  let relay: Awaited<ReturnType<typeof silenceableRelay>> | undefined;
  let clients: ReturnType<typeof redisClient>[] = [];
  // Also after a timeout: a test that fails by hanging must not keep the run alive.
  afterEach(async () => {
    for (const c of clients) c.disconnect();
    await relay?.close();
  });

  it("with the connection open: every command fails after the command timeout, pipelined or not", async function () {
    this.timeout(20_000);
    relay = await silenceableRelay(new URL(REDIS_URL));
    clients = [redisClient(relay.url), redisClient(relay.url, { autoPipelining: false })];
    for (const c of clients) if (c.status !== "ready") await new Promise((resolve) => c.once("ready", resolve));
    relay.silence();
    for (const c of clients) {
      // The first read waits for an answer that never comes; the second is issued behind it.
      const first = c.get("silent-1");
      await new Promise((resolve) => setImmediate(resolve));
      const second = c.get("silent-2");
      await assert.rejects(first, /timed out/i);
      await assert.rejects(second, /timed out/i);
    }
  });
});
