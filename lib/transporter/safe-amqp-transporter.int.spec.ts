/**
 * The transporter on the machine's RabbitMQ (a vhost of its own): a queue of a node that
 * RabbitMQ forgets after the node moved (rabbitmq-server#9798: a late cleanup of a lost broker
 * node deletes the queue the moved node declared again, silently: no consumer cancel, nothing
 * delivered). The deletion is planted as RabbitMQ's cleanup does it, by removing the queue's
 * record (`rabbitmqctl eval`), which a client cannot do through AMQP: a `queue.delete` would
 * cancel the consumer, which the transporter already answers with a reconnect.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { after, before, it } from "mocha";
import { ServiceBroker } from "moleculer";
import { eventually } from "../../test/support/eventually";
import { createVhost, type RabbitVhost } from "../../test/support/rabbitmq";
import { QUEUE_PREFIX, SafeAmqpTransporter } from "./safe-amqp-transporter";

let vhost: RabbitVhost;
before(async () => {
  vhost = await createVhost();
});
after(async () => {
  await vhost?.destroy();
});

const broker = (nodeID: string) =>
  new ServiceBroker({
    nodeID,
    namespace: "forgotten",
    requestTimeout: 2000,
    logger: { type: "Console", options: { level: process.env.TEST_LOG_LEVEL ?? "error", formatter: "short" } } as never,
    transporter: new SafeAmqpTransporter({ url: [vhost.uri] }) as never,
  });

/**
 * Removes a queue's record as RabbitMQ's node-down cleanup does: its process and consumer stay.
 * Read back in the same call: the node's own checks after its move (1 s, 3 s, 10 s) may declare
 * the queue again before a second `rabbitmqctl` (seconds to start) could look.
 */
async function forgetQueue(name: string): Promise<void> {
  const key = `{resource, <<"${vhost.vhost}">>, queue, <<"${name}">>}`;
  const erl = `ok = mnesia:dirty_delete(rabbit_queue, ${key}), mnesia:dirty_read(rabbit_queue, ${key}).`;
  const { stdout } = await promisify(execFile)("rabbitmqctl", ["eval", erl], { timeout: 30_000 });
  assert.equal(stdout.trim(), "[]", `the record is gone: ${stdout}`);
}

const queueCount = async (name: string) =>
  (
    await promisify(execFile)("rabbitmqctl", ["list_queues", "-p", vhost.vhost, "name", "--formatter", "json"], { timeout: 30_000 })
  ).stdout.split(`"${name}"`).length - 1;

it("a queue of a node forgotten by RabbitMQ after the node moved: the node finds it gone, moves again and answers", async () => {
  const caller = broker("caller");
  const svc = broker("svc");
  svc.createService({ name: "svc", actions: { echo: (ctx) => ctx.params } });
  const tx = (b: ServiceBroker): SafeAmqpTransporter => {
    const t: unknown = b.transit?.tx;
    assert.ok(t instanceof SafeAmqpTransporter);
    return t;
  };
  try {
    await Promise.all([caller.start(), svc.start()]);
    await caller.waitForServices(["svc"], 30_000);
    assert.deepEqual(await caller.call("svc.echo", { n: 1 }), { n: 1 });

    // The node loses its connection and moves (here to the same, only URL).
    const first = tx(svc).connection;
    first?.close().catch(() => undefined);
    await eventually("svc moved and answers", async () => {
      if (tx(svc).connection === first || !tx(svc).connection) return false;
      return caller.call("svc.echo", { n: 2 }).then(
        () => true,
        () => false,
      );
    });
    const requests = `${QUEUE_PREFIX}-forgotten.REQ.svc`;
    await forgetQueue(requests);
    // Calls to svc go nowhere now, until the node's check after the move finds the queue gone
    // and it moves again, declaring its queues anew.
    await eventually(
      "svc answers again",
      async () =>
        caller.call("svc.echo", { n: 3 }).then(
          () => true,
          () => false,
        ),
      30_000,
    );
    assert.equal(await queueCount(requests), 1, "declared again");
  } finally {
    await Promise.all([caller.stop(), svc.stop()].map((p) => p.catch(() => undefined)));
  }
});
