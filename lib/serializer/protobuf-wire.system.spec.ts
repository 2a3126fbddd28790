/**
 * The protobuf serializer on a real RabbitMQ (a private vhost): a gateway node and a user
 * node, both with the cluster default SERIALIZER (protobuf). RabbitMQ's firehose tracer
 * (`rabbitmqctl trace_on`, for this vhost only) copies every published message to
 * amq.rabbitmq.trace, where a queue of ours captures the bytes exactly as they travelled.
 * They are decoded with protobufjs from proto/*.proto alone: the business fields are
 * protobuf fields, not JSON text. The whole user flow runs between the two nodes first.
 *
 * @shares-machine: two brokers in this process on a private vhost (about 7 s).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { after, before, it } from "mocha";
import { promisify } from "node:util";
import amqp from "amqplib";
import type { ServiceBroker } from "moleculer";
import protobuf from "protobufjs";
import { createBroker } from "../../app";
import { testConfig, http } from "../../test/support/app";
import { createVhost, type RabbitVhost } from "../../test/support/rabbitmq";
import { uniqueNamespace } from "../../test/support/servers";
import { loadProtoRoot } from "../../proto/load";
import { QUEUE_PREFIX } from "../transporter/safe-amqp-transporter";

interface Captured {
  queue: string;
  body: Buffer;
}

let vhost: RabbitVhost;
let conn: amqp.ChannelModel;
const captured: Captured[] = [];
const brokers: ServiceBroker[] = [];
const dataDirs: string[] = [];
let baseUrl = "";
let gateway: ServiceBroker;
const namespace = uniqueNamespace("pw");

before(async () => {
  vhost = await createVhost();
  await promisify(execFile)("rabbitmqctl", ["trace_on", "-p", vhost.vhost], { timeout: 30_000 });
  conn = await amqp.connect(vhost.uri);
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue("", { exclusive: true, autoDelete: true });
  await ch.bindQueue(queue, "amq.rabbitmq.trace", "publish.#");
  await ch.consume(
    queue,
    (msg) => {
      if (!msg) return;
      const headers = msg.properties.headers ?? {};
      const keys = (headers.routing_keys as string[] | undefined) ?? [];
      const target = headers.exchange_name ? String(headers.exchange_name) : (keys[0] ?? "");
      captured.push({ queue: target, body: msg.content });
    },
    { noAck: true },
  );

  const env = { RABBITMQ_URI: vhost.uri, NAMESPACE: namespace, JWT_SECRET: randomBytes(32).toString("hex"), MIGRATE_ON_START: "true" };
  const userConfig = testConfig({ redis: true, env: { ...env, SERVICES: "user", NODE_ID: "wire-user" } });
  const gwConfig = testConfig({ redis: true, env: { ...env, SERVICES: "gateway", NODE_ID: "wire-gw" } });
  assert.equal(userConfig.serializer, "protobuf", "protobuf is the cluster default");
  dataDirs.push(userConfig.dataDir, gwConfig.dataDir);
  const userNode = createBroker(userConfig);
  gateway = createBroker(gwConfig);
  brokers.push(userNode, gateway);
  await Promise.all([userNode.start(), gateway.start()]);
  await gateway.waitForServices(["user"], 20_000);
  const server = (gateway.getLocalService("api") as unknown as { server: { address(): AddressInfo } }).server;
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  await Promise.all(brokers.map((b) => b.stop().catch(() => undefined)));
  await conn?.close().catch(() => undefined);
  await vhost?.destroy();
  for (const d of dataDirs) fs.rmSync(d, { recursive: true, force: true });
});

let userId = "";
let email = "";

it("the user flow works between a gateway node and a user node with SERIALIZER=protobuf", async () => {
  email = `wire-${randomBytes(4).toString("hex")}@example.com`;
  const password = "wire test password";
  const reg = await http(baseUrl, "POST", "/api/auth/register", { body: { email, password, name: "Wire" } });
  assert.equal(reg.status, 201, reg.text);
  userId = reg.body.user.id;
  const login = await http(baseUrl, "POST", "/api/auth/login", { body: { email, password } });
  assert.equal(login.status, 200, login.text);
  const token = login.body.accessToken;
  assert.equal((await http(baseUrl, "GET", "/api/users/me", { token })).body.email, email);
  const patched = await http(baseUrl, "PATCH", "/api/users/me", { token, body: { preferences: { categories: ["phones"] } } });
  assert.deepEqual(patched.body.preferences, { categories: ["phones"], brands: [] });
  // An unknown field still reaches the validator (sent as JSON): 422 as without protobuf.
  assert.equal((await http(baseUrl, "PATCH", "/api/users/me", { token, body: { role: "admin" } })).status, 422);
  const addr = await http(baseUrl, "POST", "/api/users/me/addresses", {
    token,
    body: { recipient: "Wire", phone: "123456", line1: "1 Road", city: "Town", postalCode: "12345", country: "CN" },
  });
  assert.equal(addr.status, 201, addr.text);
  assert.equal(addr.body.line2, null);
  const list = await http(baseUrl, "GET", "/api/users/me/addresses", { token });
  assert.deepEqual(
    list.body.map((a: { id: string }) => a.id),
    [addr.body.id],
  );
  assert.equal((await http(baseUrl, "DELETE", `/api/users/me/addresses/${addr.body.id}`, { token })).status, 204);
  const refreshed = await http(baseUrl, "POST", "/api/auth/refresh", { body: { refreshToken: login.body.refreshToken } });
  assert.equal(refreshed.status, 200, refreshed.text);
  const out = await http(baseUrl, "POST", "/api/auth/logout", {
    token: refreshed.body.accessToken,
    body: { refreshToken: refreshed.body.refreshToken },
  });
  assert.equal(out.status, 204);
});

it("a user.get REQ and its RES on the wire decode with protobufjs from proto/ alone", async () => {
  captured.length = 0;
  const user = await gateway.call<{ email: string }, unknown>("user.get", { id: userId });
  assert.equal(user.email, email);
  for (let i = 0; i < 50 && !captured.some((c) => c.queue === `${QUEUE_PREFIX}-${namespace}.RES.wire-gw`); i++)
    await new Promise((r) => setTimeout(r, 50));

  const root = loadProtoRoot();
  const service = root.lookupService("meridian.user.v1.UserService");
  assert.equal(service.options?.["(meridian.options.v1.service)"], "user");
  const method = service.methods.Get;
  method.resolve();

  const req = captured.find((c) => c.queue === `${QUEUE_PREFIX}-${namespace}.REQ.wire-user`);
  assert.ok(req, `no REQ captured; queues: ${captured.map((c) => c.queue).join(", ")}`);
  const reqEnvelope = root.lookupType("meridian.wire.v1.Request").decode(req.body) as any;
  assert.equal(reqEnvelope.action, "user.get");
  assert.equal(reqEnvelope.params.value, "message");
  const params = method.resolvedRequestType!.decode(reqEnvelope.params.message) as any;
  assert.equal(params.id, userId);

  const res = captured.find((c) => c.queue === `${QUEUE_PREFIX}-${namespace}.RES.wire-gw` && c.body.includes(Buffer.from(email)));
  assert.ok(res, "no RES captured");
  const resEnvelope = root.lookupType("meridian.wire.v1.Response").decode(res.body) as any;
  assert.equal(resEnvelope.success, true);
  assert.equal(resEnvelope.action, "user.get");
  assert.equal(resEnvelope.data.value, "message");
  const UserT = method.resolvedResponseType!;
  assert.equal(UserT.fullName, ".meridian.user.v1.User");
  const decoded = UserT.decode(resEnvelope.data.message) as any;
  assert.equal(decoded.email, email);
  assert.equal(decoded.id, userId);
  assert.deepEqual(decoded.preferences.categories, ["phones"]);

  // The e-mail is field 2 (length-delimited) of the User message, read with a bare reader.
  const emailField = UserT.fields.email;
  assert.equal(emailField.id, 2);
  const reader = protobuf.Reader.create(resEnvelope.data.message);
  let found: string | undefined;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === emailField.id && (tag & 7) === 2) found = reader.string();
    else reader.skipType(tag & 7);
  }
  assert.equal(found, email);
  for (const bytes of [req.body, res.body]) {
    assert.equal(bytes.includes(Buffer.from('"email":')), false);
    assert.equal(bytes.includes(Buffer.from('"id":')), false);
  }
  // Everything else that travelled is a protobuf envelope too (no JSON packet at all).
  assert.ok(captured.length >= 2);
  for (const c of captured) assert.notEqual(c.body[0], "{".charCodeAt(0), `${c.queue} starts like JSON`);
});
