/**
 * AmqpLink against the machine's RabbitMQ: with several URLs (a cluster's nodes) it connects
 * to the first that answers, and when none does its error names every node tried, never a
 * credential; a turn's messages leave the socket in one write.
 */
import assert from "node:assert/strict";
import { after, before, it } from "mocha";
import { createVhost, type RabbitVhost } from "../../test/support/rabbitmq";
import { freePort } from "../../test/support/ports";
import { AmqpLink } from "./amqp";

let vhost: RabbitVhost;
before(async () => {
  vhost = await createVhost();
});
after(async () => {
  await vhost.destroy();
});

it("several URLs: a dead node is skipped; when none answers the error names each, without its password", async () => {
  const [dead1, dead2] = [await freePort(), await freePort()];
  const down = (port: number) => `amqp://meridian:s3cret-pw@127.0.0.1:${port}`;
  const link = new AmqpLink([down(dead1), vhost.uri], "amqp-link-test");
  try {
    const conn = await link.connection();
    const ch = await conn.createChannel();
    await ch.checkExchange("amq.topic");
    await ch.close();
  } finally {
    await link.close();
  }
  const none = new AmqpLink([down(dead1), down(dead2)], "amqp-link-test");
  try {
    const err = await none.connection().then(
      () => assert.fail("connected to a dead node"),
      (e: Error) => e,
    );
    assert.match(err.message, new RegExp(`no RabbitMQ node answered \\(127\\.0\\.0\\.1:${dead1}: .*; 127\\.0\\.0\\.1:${dead2}: `));
    assert.doesNotMatch(err.message, /s3cret/);
  } finally {
    await none.close();
  }
});

it("the messages published in one turn leave the socket in one write, all of them, in order", async () => {
  const link = new AmqpLink(vhost.uri, "amqp-cork-test");
  try {
    const conn = await link.connection();
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue("", { exclusive: true });
    // amqplib keeps its socket as `connection.stream` (0.10); the socket's writes are counted here.
    type Writer = (this: unknown, ...args: unknown[]) => unknown;
    const socket = (conn.connection as typeof conn.connection & { stream: { _write: Writer; _writev: Writer } }).stream;
    let writes = 0;
    const write = socket._write;
    const writev = socket._writev;
    socket._write = function (...args) {
      writes++;
      return write.apply(this, args);
    };
    socket._writev = function (...args) {
      writes++;
      return writev.apply(this, args);
    };
    const received: string[] = [];
    const all = new Promise<void>((resolve) => {
      void ch.consume(
        queue,
        (msg) => {
          if (!msg) return;
          received.push(msg.content.toString());
          if (received.length === 50) resolve();
        },
        { noAck: true },
      );
    });
    await ch.checkQueue(queue); // the consume is set up; nothing else is in flight
    writes = 0;
    const sent = Array.from({ length: 50 }, (_, i) => `message ${i}`);
    for (const body of sent) ch.sendToQueue(queue, Buffer.from(body));
    await all;
    socket._write = write;
    socket._writev = writev;
    assert.deepEqual(received, sent);
    assert.equal(writes, 1, "one write for the turn's 50 messages");
    await ch.close();
  } finally {
    await link.close();
  }
});
