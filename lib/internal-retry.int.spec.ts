/**
 * Calls between services sent once more (lib/internal-retry.ts), over the machine's RabbitMQ
 * (a vhost of its own): three nodes, a "cart" service calling "product" actions served by two
 * product nodes. The first product node holds the calls it gets and then stops (its pending
 * calls are refused: "node left"); the caller's read goes again to the other node, its write
 * does not (it may have acted), and a call made from an edge (the gateway's `api`) is left
 * to the edge.
 */
import assert from "node:assert/strict";
import { after, before, it } from "mocha";
import { ServiceBroker, type Context } from "moleculer";
import { createVhost, type RabbitVhost } from "../test/support/rabbitmq";
import { uniqueNamespace } from "../test/support/servers";
import { eventually } from "../test/support/eventually";
import { InternalRetryMiddleware } from "./internal-retry";
import { SafeAmqpTransporter } from "./transporter/safe-amqp-transporter";

let vhost: RabbitVhost;
before(async () => {
  vhost = await createVhost();
});
after(async () => {
  await vhost.destroy();
});

it("a read refused because its node left goes again to the other node; a write and an edge's call do not", async () => {
  const namespace = uniqueNamespace("ir");
  const node = (nodeID: string) =>
    new ServiceBroker({
      nodeID,
      namespace,
      requestTimeout: 20_000,
      logger: false,
      transporter: new SafeAmqpTransporter({ url: [vhost.uri], prefetch: 100 }) as never,
      middlewares: [InternalRetryMiddleware()],
    });
  const held: { release: () => void }[] = [];
  const served: string[] = [];
  const product = (b: ServiceBroker, holds: boolean) =>
    b.createService({
      name: "product",
      actions: {
        // A read (GET /api/products/:id) and a write (POST …/stock) of the product contract.
        get: async () => {
          served.push(`${b.nodeID} get`);
          if (holds) await new Promise<void>((release) => held.push({ release }));
          return { from: b.nodeID };
        },
        adjustStock: async () => {
          served.push(`${b.nodeID} adjustStock`);
          if (holds) await new Promise<void>((release) => held.push({ release }));
          return { from: b.nodeID };
        },
      },
    });
  const a = node("a");
  const b = node("b");
  const c = node("c");
  const via = (service: string) => ({
    name: service,
    actions: { call: (ctx: Context<{ action: string }>) => ctx.call(ctx.params.action, {}, { nodeID: "b" }) },
  });
  a.createService(via("cart"));
  a.createService(via("api"));
  product(b, true);
  product(c, false);
  try {
    await Promise.all([a.start(), b.start(), c.start()]);
    await a.waitForServices(["product"]);
    await eventually(
      "both product nodes seen",
      async () => (a.registry.getActionEndpoints("product.get")?.endpoints.length ?? 0) === 2,
      20_000,
    );

    const read = a.call("cart.call", { action: "product.get" });
    const write = a.call("cart.call", { action: "product.adjustStock" });
    const edge = a.call("api.call", { action: "product.get" });
    const settled = Promise.allSettled([read, write, edge]);
    await eventually("three calls held by node b", async () => held.length === 3, 20_000);
    await b.stop(); // b leaves: its pending calls are refused ("node left")
    const [r, w, e] = await settled;
    assert.equal(r.status, "fulfilled", `the read: ${JSON.stringify(r)}`);
    assert.deepEqual(r.value, { from: "c" }, "answered by the other node");
    assert.equal(w.status, "rejected", "the write is not sent twice");
    assert.equal((w.reason as Error).name, "RequestRejectedError");
    assert.equal(e.status, "rejected", "an edge's call is the edge's to retry");
    assert.deepEqual(
      served.filter((s) => s.startsWith("c")),
      ["c get"],
      "node c got the read only",
    );
  } finally {
    for (const h of held) h.release();
    await Promise.allSettled([a.stop(), b.stop(), c.stop()]);
  }
});
