/**
 * AmqpLink against the machine's RabbitMQ: with several URLs (a cluster's nodes) it connects
 * to the first that answers, and when none does its error names every node tried, never a
 * credential.
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
