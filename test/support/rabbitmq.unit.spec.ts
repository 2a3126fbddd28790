/**
 * The tests' RabbitMQ address: a vhost's URI is TEST_RABBITMQ_URL's (host, port,
 * credentials, query) with the vhost as its path.
 */
import assert from "node:assert/strict";
import { it } from "mocha";
import { vhostOf, vhostUri } from "./rabbitmq";

it("vhostUri keeps the base URL's credentials, host, port and query, and puts the vhost in the path", () => {
  assert.equal(vhostUri("amqp://guest:guest@127.0.0.1:5672", "meridian-test-1"), "amqp://guest:guest@127.0.0.1:5672/meridian-test-1");
  assert.equal(
    vhostUri("amqps://ci:s%40cret@rabbit.example:5671/?heartbeat=10", "v"),
    "amqps://ci:s%40cret@rabbit.example:5671/v?heartbeat=10",
  );
  // A vhost the base URL names is replaced; a vhost name is encoded.
  assert.equal(vhostUri("amqp://u:p@h:1234/other", "a/b"), "amqp://u:p@h:1234/a%2Fb");
});

it("vhostOf reads the vhost back from a URI ('/' when it names none)", () => {
  assert.equal(vhostOf(vhostUri("amqp://guest:guest@127.0.0.1:5672", "a/b")), "a/b");
  assert.equal(vhostOf("amqp://guest:guest@127.0.0.1:5672"), "/");
  assert.equal(vhostOf("amqp://guest:guest@127.0.0.1:5672/"), "/");
});
