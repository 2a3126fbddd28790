/**
 * A contract evolves as docs/contracts.md "Contracts" says (new fields `optional`, numbers never
 * reused): then a node built from the previous version of a message and a node built from
 * the next one talk over the wire, in both directions, with protobuf (no JSON fallback).
 * Two brokers, each with its own ProtobufSerializer and descriptor, over Moleculer's Fake
 * transporter (packets are serialized and deserialized as over RabbitMQ).
 *
 * The "next" version adds `optional string nickname = 20` to meridian.user.v1.User and
 * `optional string referral = 20` to RegisterRequest. The planted fault renumbers User's
 * `email` from 2 to 12 (what `reserved` and buf breaking forbid) and shows the test notices.
 */
import { it } from "mocha";
import assert from "node:assert/strict";
import { ServiceBroker, type Context } from "moleculer";
import descriptor from "../../proto/gen/descriptor.json";
import { eventually } from "../../test/support/eventually";
import { ProtobufSerializer } from "./protobuf-serializer";

type Json = Record<string, any>;
const userPkg = (d: Json) => d.nested.meridian.nested.user.nested.v1.nested;
const clone = (): Json => JSON.parse(JSON.stringify(descriptor));
function addOptional(d: Json, message: string, field: string, id: number): void {
  const m = userPkg(d)[message];
  m.fields[field] = { type: "string", id, options: { proto3_optional: true } };
  m.oneofs = { ...(m.oneofs ?? {}), [`_${field}`]: { oneof: [field] } };
}

const previous = clone();
const next = clone();
addOptional(next, "User", "nickname", 20);
addOptional(next, "RegisterRequest", "referral", 20);
const broken = clone();
userPkg(broken).User.fields.email.id = 12;

const USER = {
  id: "u1",
  email: "ada@example.test",
  name: "Ada",
  role: "customer",
  preferences: { categories: [], brands: [] },
  createdAt: "2026-12-03T00:00:00.000Z",
};

/** A node speaking `version`: a `user` service whose `get` answers USER plus `extra`, and records the params it got. */
async function node(nodeID: string, version: Json, extra: Json = {}) {
  const seen: unknown[] = [];
  const broker = new ServiceBroker({
    nodeID,
    namespace: "mixed-versions",
    transporter: "Fake",
    serializer: new ProtobufSerializer({ descriptor: version }),
    logger: false,
    metrics: { enabled: true },
  });
  broker.createService({
    name: `user`,
    actions: {
      get: { visibility: "public", handler: (ctx: Context<Json>) => (seen.push(ctx.params), { ...USER, ...extra }) },
      register: {
        visibility: "public",
        handler: (ctx: Context<Json>) => (seen.push(ctx.params), { user: { ...USER, ...extra }, accessToken: "a", refreshToken: "r" }),
      },
    },
  });
  await broker.start();
  return { broker, seen, fallbacks: () => fallbackCount(broker) };
}
function fallbackCount(broker: ServiceBroker): number {
  const [metric] = broker.metrics.list({ includes: ["meridian.serializer.json_fallback.total"] });
  // Typed as a Map, listed as an array of {value, labels}.
  const values: { value: number }[] = Object.values(metric?.values ?? {});
  return values.reduce((n, v) => n + v.value, 0);
}

/** Calls `action` on the other node (by nodeID), so the call crosses the transporter. */
async function remote(from: ServiceBroker, to: string, action: string, params: Json) {
  await eventually(`${from.nodeID} sees ${action} on ${to}`, async () =>
    (from.registry.getActionEndpoints(action)?.endpoints ?? []).some((e: { node: { id: string } }) => e.node.id === to),
  );
  return from.call(action, params, { nodeID: to });
}

it("a node of the previous version and one of the next one talk both ways, all in protobuf", async () => {
  // Two pairs, since a node serves and calls: (old caller → new server) and (new caller → old server).
  const oldNode = await node("old", previous);
  const newNode = await node("new", next, { nickname: "ada" });
  try {
    // Old caller, new server: the new field is skipped by the old decoder, the rest is intact.
    assert.deepEqual(await remote(oldNode.broker, "new", "user.get", { id: "u1" }), USER);
    // New caller, old server: the new optional request field is ignored by the old node,
    // and the old answer lacks the optional field (absent, not "").
    const session = (await remote(newNode.broker, "old", "user.register", {
      email: "ada@example.test",
      password: "pw-123456789",
      name: "Ada",
      referral: "friend",
    })) as Json;
    assert.deepEqual(session.user, USER);
    assert.equal("nickname" in session.user, false);
    assert.deepEqual(oldNode.seen.at(-1), { email: "ada@example.test", password: "pw-123456789", name: "Ada" });
    // New caller, new field understood by a new server.
    const mine = await node("new-2", next, { nickname: "ada" });
    try {
      assert.deepEqual(await remote(newNode.broker, "new-2", "user.get", { id: "u1" }), { ...USER, nickname: "ada" });
    } finally {
      await mine.broker.stop();
    }
    assert.equal(oldNode.fallbacks() + newNode.fallbacks(), 0, "every payload went as its contract message");
    // …and the counter does count: a param outside the contract goes as JSON.
    await remote(oldNode.broker, "new", "user.get", { id: "u1", unknown: true });
    assert.equal(oldNode.fallbacks(), 1);
  } finally {
    await Promise.all([oldNode.broker.stop(), newNode.broker.stop()]);
  }
});

it("planted fault: a renumbered field (a breaking change) garbles what the other version reads", async () => {
  const oldNode = await node("old-b", previous);
  const brokenNode = await node("broken", broken);
  try {
    const got = (await remote(oldNode.broker, "broken", "user.get", { id: "u1" })) as Json;
    assert.notDeepEqual(got, USER);
    assert.equal(got.email, "", "the old node finds no field 2 and reads the proto3 default");
  } finally {
    await Promise.all([oldNode.broker.stop(), brokenNode.broker.stop()]);
  }
});
