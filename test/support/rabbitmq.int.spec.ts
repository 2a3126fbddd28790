/**
 * The queue depths the event proofs wait on are read live (test/support/rabbitmq.ts): a
 * quorum queue's `list_queues` counts lag by up to a tick (5 s) and read 0 after a restart,
 * which once let a proof declare "quiet" over a 700-message backlog.
 */
import assert from "node:assert/strict";
import { after, before, it } from "mocha";
import amqp from "amqplib";
import { createVhost, queueMessages, type RabbitVhost } from "./rabbitmq";

let vhost: RabbitVhost;
before(async () => {
  vhost = await createVhost();
});
after(async () => {
  await vhost.destroy();
});

it("queueMessages: a quorum queue's messages are counted the moment they are confirmed, unacknowledged ones included, and a classic queue's too", async () => {
  const conn = await amqp.connect(vhost.uri);
  const consumerConn = await amqp.connect(vhost.uri);
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue("probe.quorum", { durable: true, arguments: { "x-queue-type": "quorum" } });
    await ch.assertQueue("probe.classic", { durable: true });
    await ch.assertQueue("other.quorum", { durable: true, arguments: { "x-queue-type": "quorum" } });
    for (let i = 0; i < 100; i++) ch.sendToQueue("probe.quorum", Buffer.from(String(i)), { persistent: true });
    for (let i = 0; i < 7; i++) ch.sendToQueue("probe.classic", Buffer.from(String(i)), { persistent: true });
    ch.sendToQueue("other.quorum", Buffer.from("x"), { persistent: true });
    await ch.waitForConfirms();

    // No wait: read right after the confirms, inside the quorum queue's metrics tick.
    assert.deepEqual(Object.fromEntries(await queueMessages(vhost.uri, "probe.")), { "probe.quorum": 100, "probe.classic": 7 });

    // 30 delivered and held unacknowledged: still 100 in the queue's count (70 ready + 30 in flight).
    const cc = await consumerConn.createChannel();
    await cc.prefetch(30);
    const held: amqp.ConsumeMessage[] = [];
    let ackNow = false;
    await cc.consume("probe.quorum", (msg) => {
      if (msg && ackNow) cc.ack(msg);
      else if (msg) held.push(msg);
    });
    for (const deadline = Date.now() + 10_000; held.length < 30 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 20));
    assert.equal(held.length, 30);
    assert.equal((await queueMessages(vhost.uri, "probe.")).get("probe.quorum"), 100);

    // Acked: 0 once all are handled.
    ackNow = true;
    for (const msg of held) cc.ack(msg);
    for (
      const deadline = Date.now() + 10_000;
      (await queueMessages(vhost.uri, "probe.")).get("probe.quorum") !== 0 && Date.now() < deadline;
    )
      await new Promise((r) => setTimeout(r, 50));
    assert.equal((await queueMessages(vhost.uri, "probe.")).get("probe.quorum"), 0);
  } finally {
    await consumerConn.close().catch(() => undefined);
    await conn.close().catch(() => undefined);
  }
});
