/**
 * The protobuf serializer: every packet type Moleculer sends decodes to what the JSON
 * serializer would have delivered, contracts are used where they fit and JSON where they do
 * not, bad bytes are rejected cleanly, and the request-id map stays bounded. The packets come
 * from real brokers (Moleculer's in-process Fake transporter, which serializes every packet).
 */
import { after, before, describe, it } from "mocha";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { PassThrough, Readable } from "node:stream";
import { Errors, ServiceBroker, type ServiceSchema } from "moleculer";
import { loadProtoRoot } from "../../proto/load";
import { ProtobufPacketError, ProtobufSerializer } from "./protobuf-serializer";

const proto = loadProtoRoot();
const ResponseT = proto.lookupType("meridian.wire.v1.Response");
const RequestT = proto.lookupType("meridian.wire.v1.Request");

const USER = {
  id: "9b2f4c1e-0000-4000-8000-000000000001",
  email: "ada@example.com",
  name: "Ada",
  role: "customer",
  preferences: { categories: ["books"], brands: [] },
  createdAt: "2026-11-24T12:00:00.000Z",
};
const ADDRESS = {
  id: "a1",
  recipient: "Ada",
  phone: "+33 1 23",
  line1: "1 rue X",
  line2: null,
  city: "Paris",
  province: null,
  postalCode: "75001",
  country: "FR",
  createdAt: "2026-11-24T12:00:00.000Z",
  updatedAt: "2026-11-24T12:00:00.000Z",
};

/** What Moleculer's JSON serializer would deliver, with the serializer's documented defaults. */
function viaJson(type: string, obj: Record<string, unknown>): Record<string, unknown> {
  const j = JSON.parse(JSON.stringify(obj));
  const nulls: Record<string, string[]> = {
    REQ: ["tracing", "parentID", "requestID", "caller"],
    EVENT: ["tracing", "parentID", "requestID", "caller", "needAck"],
    HEARTBEAT: ["cpu"],
  };
  for (const k of nulls[type] ?? []) if (j[k] === undefined) j[k] = null;
  if (type === "EVENT" && Array.isArray(j.groups) && j.groups.length === 0) delete j.groups;
  return j;
}

interface Recorded {
  type: string;
  json: Record<string, unknown>;
  bytes: Buffer;
  hasBuffer: boolean;
}

/** Records every packet it serializes (and what JSON would have made of it). */
class RecordingSerializer extends ProtobufSerializer {
  readonly sent: Recorded[] = [];
  override serialize(obj: Record<string, any>, type: string): Buffer {
    const hasBuffer = Buffer.isBuffer(obj.params) || Buffer.isBuffer(obj.data);
    const json = viaJson(type, obj);
    const bytes = super.serialize(obj, type);
    this.sent.push({ type, json, bytes, hasBuffer });
    return bytes;
  }
}

describe("round trips of every packet Moleculer sends, between two brokers", () => {
  const namespace = `pb-${randomBytes(4).toString("hex")}`;
  const callerSer = new RecordingSerializer();
  const serverSer = new RecordingSerializer();
  const received: unknown[] = [];
  let caller: ServiceBroker;
  let server: ServiceBroker;

  const serverUser: ServiceSchema = {
    name: "user",
    actions: {
      get: { visibility: "public", handler: async (ctx: any) => ({ ...USER, id: ctx.params.id }) },
      logout: { handler: () => null },
      me: {
        handler: () => {
          throw new Errors.MoleculerClientError("User not found", 404, "NOT_FOUND", { field: "id" });
        },
      },
      // A response that does not fit its contract (an extra field): travels as JSON.
      updateMe: { handler: () => ({ ...USER, extra: 1 }) },
      listAddresses: { handler: () => [ADDRESS, { ...ADDRESS, id: "a2", line2: "Bât. B", province: "IDF" }] },
      // Calls back into the calling node while its own request is pending there.
      getAddress: {
        handler: async (ctx: any) =>
          ctx.call("user.createAddress", { recipient: "x", phone: "1", line1: "l", city: "c", postalCode: "1", country: "FR" }),
      },
      uploadEcho: {
        handler: async (ctx: any) => {
          const chunks: Buffer[] = [];
          for await (const c of ctx.stream as AsyncIterable<Buffer>) chunks.push(c);
          return Readable.from([Buffer.concat(chunks), Buffer.from("!")]);
        },
      },
    },
  };
  const callerSide: ServiceSchema = {
    name: "user",
    actions: { createAddress: { handler: (ctx: any) => ({ ...ADDRESS, recipient: ctx.params.recipient }) } },
    events: { "user.registered": { handler: (ctx: any) => void received.push(ctx.params) } },
  };

  before(async () => {
    const common = { namespace, transporter: "Fake", logger: false, heartbeatInterval: 1 } as const;
    caller = new ServiceBroker({ ...common, nodeID: "caller", serializer: callerSer });
    server = new ServiceBroker({ ...common, nodeID: "server", serializer: serverSer });
    caller.createService(callerSide);
    server.createService(serverUser);
    await Promise.all([caller.start(), server.start()]);
    // Both "user" services exist locally, so waitForServices would not wait for the other node.
    const known = () => Boolean(caller.registry.getActionEndpoints("user.get") && server.registry.getActionEndpoints("user.createAddress"));
    for (let i = 0; i < 250 && !known(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(known(), "the two brokers did not discover each other");
  });

  after(async () => {
    await Promise.all([caller?.stop(), server?.stop()]);
  });

  it("a contract action: params and response are protobuf messages and arrive unchanged", async () => {
    const before = serverSer.sent.length;
    assert.deepEqual(await caller.call("user.get", { id: USER.id }), USER);
    const res = serverSer.sent.slice(before).find((p) => p.type === "RES")!;
    const envelope = ResponseT.decode(res.bytes) as any;
    assert.equal(envelope.action, "user.get");
    assert.equal(envelope.data.value, "message");
    const req = callerSer.sent.filter((p) => p.type === "REQ").at(-1)!;
    assert.equal((RequestT.decode(req.bytes) as any).params.value, "message");
    assert.equal(serverSer.pending.size, 0, "the entry is removed when the response is sent");
  });

  it("null responses, errors, lists, nullable fields and values that do not fit", async () => {
    assert.equal(await caller.call("user.logout", { refreshToken: "t" }), null);
    await assert.rejects(caller.call("user.me", {}), (err: any) => {
      assert.equal(err.name, "MoleculerClientError");
      assert.equal(err.code, 404);
      assert.equal(err.type, "NOT_FOUND");
      assert.deepEqual(err.data, { field: "id" });
      return true;
    });
    assert.deepEqual(await caller.call("user.updateMe", { name: "Ada", unknown: true }), { ...USER, extra: 1 });
    assert.deepEqual(await caller.call("user.listAddresses", {}), [ADDRESS, { ...ADDRESS, id: "a2", line2: "Bât. B", province: "IDF" }]);
  });

  it("a node that calls and serves at once answers both with contracts", async () => {
    const before = { c: callerSer.sent.length, s: serverSer.sent.length };
    assert.equal(((await caller.call("user.getAddress", { userId: "u", id: "a1" })) as any).recipient, "x");
    const actions = [...callerSer.sent.slice(before.c), ...serverSer.sent.slice(before.s)]
      .filter((p) => p.type === "RES")
      .map((p) => (ResponseT.decode(p.bytes) as any).action)
      .sort();
    assert.deepEqual(actions, ["user.createAddress", "user.getAddress"]);
    assert.equal(callerSer.pending.size, 0);
    assert.equal(serverSer.pending.size, 0);
  });

  it("events with a contract, and without", async () => {
    const registered = { userId: USER.id, email: USER.email, name: USER.name, occurredAt: USER.createdAt };
    await server.emit("user.registered", registered);
    await server.broadcast("user.registered", { ...registered, extra: "json" });
    for (let i = 0; i < 50 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(received, [registered, { ...registered, extra: "json" }]);
  });

  it("streams: Buffer chunks both ways", async () => {
    const upload = new PassThrough();
    const p = caller.call("user.uploadEcho", null, { stream: upload });
    upload.write(Buffer.from("hello "));
    upload.end(Buffer.from("world"));
    const out: Buffer[] = [];
    for await (const c of (await p) as AsyncIterable<Buffer>) out.push(c);
    assert.equal(Buffer.concat(out).toString(), "hello world!");
    assert.ok(callerSer.sent.some((s) => s.type === "REQ" && s.hasBuffer));
    assert.ok(serverSer.sent.some((s) => s.type === "RES" && s.hasBuffer));
  });

  it("PING/PONG", async () => {
    const pong = await caller.ping("server", 2000);
    assert.equal((pong as any).nodeID, "server");
  });

  it("every packet sent decodes (in a fresh serializer, without its map) to what JSON would deliver", async () => {
    for (let i = 0; i < 40 && !serverSer.sent.some((p) => p.type === "HEARTBEAT"); i++) await new Promise((r) => setTimeout(r, 100));
    const fresh = new ProtobufSerializer();
    const all = [...callerSer.sent, ...serverSer.sent];
    const types = new Set(all.map((p) => p.type));
    for (const t of ["INFO", "DISCOVER", "HEARTBEAT", "REQ", "RES", "EVENT", "PING", "PONG"])
      assert.ok(types.has(t), `no ${t} packet was sent`);
    for (const p of all) {
      const decoded = fresh.deserialize(p.bytes, p.type);
      if (p.hasBuffer) {
        assert.ok(Buffer.isBuffer(decoded.params ?? decoded.data), `${p.type} chunk stays a Buffer`);
        continue;
      }
      assert.deepEqual(
        JSON.parse(JSON.stringify(decoded)),
        JSON.parse(JSON.stringify(p.json)),
        `${p.type} ${JSON.stringify(p.json).slice(0, 200)}`,
      );
      assert.deepEqual(Object.keys(decoded).sort(), Object.keys(p.json).sort(), `${p.type}: same keys`);
      if (p.bytes.length > 40) assert.ok(p.bytes.length < JSON.stringify(p.json).length, `${p.type} is smaller than JSON`);
    }
  });

  it("bad bytes on the wire are logged and dropped; the node keeps serving", async () => {
    const logged: string[] = [];
    const serverLogger = (serverSer as unknown as { logger: { error(m: string): void } }).logger;
    (serverSer as unknown as { logger: unknown }).logger = { error: (m: string) => logged.push(m) };
    try {
      const good = callerSer.serialize(
        { ver: "5", sender: "caller", id: "x1", action: "user.get", params: { id: "u" }, meta: {}, headers: {}, level: 1, stream: false },
        "REQ",
      );
      const bus = (global as unknown as { bus: { emit(topic: string, data: unknown): void } }).bus;
      for (const bad of [good.subarray(0, good.length - 5), randomBytes(64), Buffer.from('{"id":1}'), Buffer.alloc(0)])
        bus.emit(`MOL-${namespace}.REQ.server`, bad);
      bus.emit(`MOL-${namespace}.RES.caller`, randomBytes(32));
      assert.ok(logged.length >= 4, `logged: ${logged.join("\n")}`);
      assert.ok(
        logged.every((l) => /^Invalid protobuf (REQ|RES) packet \(\d+ bytes\) rejected: /.test(l)),
        logged.join("\n"),
      );
      assert.deepEqual(await caller.call("user.get", { id: USER.id }), USER);
    } finally {
      (serverSer as unknown as { logger: unknown }).logger = serverLogger;
    }
  });
});

describe("the serializer alone", () => {
  const a = new ProtobufSerializer();
  const b = new ProtobufSerializer();
  const req = (id: string, action: string, params: unknown) => ({
    ver: "5",
    sender: "a",
    id,
    action,
    params,
    meta: { user: { id: "u" } },
    headers: {},
    timeout: 5000,
    level: 1,
    tracing: null,
    parentID: null,
    requestID: id,
    caller: null,
    stream: false,
  });

  it("bad bytes: truncated, garbage, unknown packet type, unknown contract", () => {
    const good = a.serialize(req("r1", "user.get", { id: "u" }), "REQ");
    for (let n = 1; n < good.length; n += 3)
      assert.throws(() => b.deserialize(good.subarray(0, n), "REQ"), ProtobufPacketError, `truncated to ${n} bytes`);
    for (let i = 0; i < 200; i++) {
      const bytes = randomBytes(1 + (i % 100));
      for (const t of ["REQ", "RES", "EVENT", "INFO", "HEARTBEAT", "PING"]) {
        try {
          b.deserialize(bytes, t);
        } catch (err) {
          assert.ok(err instanceof ProtobufPacketError, String(err));
        }
      }
    }
    assert.throws(() => b.deserialize(good, "NOPE"), /unknown packet type "NOPE"/);
    assert.throws(() => a.serialize({}, "NOPE"), ProtobufPacketError);
    // A contract message for an action this node has no contract for (version skew).
    const skewed = Buffer.from(
      RequestT.encode({
        ver: "5",
        sender: "a",
        id: "r",
        action: "nobody.knows",
        params: { message: Buffer.from([8, 1]) },
        end: true,
      }).finish(),
    );
    assert.throws(() => b.deserialize(skewed, "REQ"), /nobody\.knows, which has no contract here/);
    // A RES that claims a contract but names no action.
    const orphan = Buffer.from(
      ResponseT.encode({ ver: "5", sender: "a", id: "r", success: true, data: { message: Buffer.from([8, 1]) }, end: true }).finish(),
    );
    assert.throws(() => b.deserialize(orphan, "RES"), ProtobufPacketError);
  });

  it("values that do not fit their contract travel as JSON, unchanged", () => {
    const cases: [string, unknown][] = [
      ["user.register", { email: "a@b.c", password: "pw", name: "n", role: "admin" }], // unknown field
      ["user.register", { email: "a@b.c", password: "pw" }], // missing required field
      ["user.register", { email: 42, password: "pw", name: "n" }], // wrong type
      ["user.register", { email: "\ud800", password: "pw", name: "n" }], // lone surrogate
      ["user.get", { id: null }],
      ["user.updateMe", { preferences: { categories: "books" } }],
      ["user.updateMe", { name: null }],
      ["user.get", []],
      ["user.get", "u1"],
    ];
    for (const [action, params] of cases) {
      const bytes = a.serialize(req("r", action, params), "REQ");
      assert.equal((RequestT.decode(bytes) as any).params.value, "json", `${action} ${JSON.stringify(params)}`);
      assert.deepEqual(b.deserialize(bytes, "REQ").params, JSON.parse(JSON.stringify(params)));
    }
    const fits: [string, unknown][] = [
      ["user.register", { email: "a@b.c", password: "pw", name: "n" }],
      ["user.register", { email: "a@b.c", password: "pw", name: "n", ignored: undefined }],
      ["user.updateMe", {}],
      ["user.updateMe", { preferences: { categories: [] } }],
      ["user.updateMe", { name: "x", preferences: { brands: ["b"], categories: undefined } }],
      ["user.updateAddress", { id: "a", line2: null, province: "p" }],
      ["user.createAddress", { recipient: "r", phone: "1", line1: "l", city: "c", postalCode: "1", country: "FR", line2: "x" }],
    ];
    for (const [action, params] of fits) {
      const bytes = a.serialize(req("r", action, params), "REQ");
      assert.equal((RequestT.decode(bytes) as any).params.value, "message", `${action} ${JSON.stringify(params)}`);
      assert.deepEqual(b.deserialize(bytes, "REQ").params, JSON.parse(JSON.stringify(params)));
    }
  });

  it("null and undefined responses; errors go generic", () => {
    const s = new ProtobufSerializer();
    s.deserialize(a.serialize(req("n1", "user.get", { id: "u" }), "REQ"), "REQ");
    s.deserialize(a.serialize(req("n2", "user.get", { id: "u" }), "REQ"), "REQ");
    s.deserialize(a.serialize(req("n3", "user.get", { id: "u" }), "REQ"), "REQ");
    const nul = b.deserialize(s.serialize({ ver: "5", sender: "s", id: "n1", success: true, data: null, meta: {} }, "RES"), "RES");
    assert.equal(nul.data, null);
    const undef = b.deserialize(s.serialize({ ver: "5", sender: "s", id: "n2", success: true, data: undefined, meta: {} }, "RES"), "RES");
    assert.ok(!("data" in undef) || undef.data === undefined);
    const error = { name: "MoleculerClientError", message: "nope", code: 404, type: "NOT_FOUND", data: { a: [1] }, nodeID: "s" };
    const bytes = s.serialize({ ver: "5", sender: "s", id: "n3", success: false, data: null, error, meta: {} }, "RES");
    assert.equal((ResponseT.decode(bytes) as any).action, null);
    const e = b.deserialize(bytes, "RES");
    assert.equal(e.success, false);
    assert.deepEqual(e.error, error);
    assert.equal(s.pending.size, 0);
  });

  it("the pending-id map stays bounded under 100k requests without responses, and an evicted id still answers (as JSON)", () => {
    const s = new ProtobufSerializer({ pendingLimit: 5000 });
    for (let i = 0; i < 100_000; i++) s.deserialize(a.serialize(req(`id-${i}`, "user.get", { id: "u" }), "REQ"), "REQ");
    assert.equal(s.pending.size, 5000);
    assert.equal(s.pending.get("id-99999"), "user.get");
    assert.equal(s.pending.has("id-0"), false);
    // Evicted: generic encoding, still decoded correctly by a node that has no map at all.
    const evicted = s.serialize({ ver: "5", sender: "s", id: "id-0", success: true, data: USER, meta: {} }, "RES");
    assert.equal((ResponseT.decode(evicted) as any).data.value, "json");
    assert.deepEqual(new ProtobufSerializer().deserialize(evicted, "RES").data, USER);
    // Remembered: the contract, and the entry goes.
    const kept = s.serialize({ ver: "5", sender: "s", id: "id-99999", success: true, data: USER, meta: {} }, "RES");
    assert.equal((ResponseT.decode(kept) as any).action, "user.get");
    assert.deepEqual(new ProtobufSerializer().deserialize(kept, "RES").data, USER);
    assert.equal(s.pending.size, 4999);
    // Actions of services without contracts are not remembered; a business action's REQ is,
    // until its RES (which then counts a JSON fallback by the action's name), even when it
    // answers nothing (user.logout: google.protobuf.Empty).
    const t = new ProtobufSerializer();
    t.deserialize(a.serialize(req("x", "user.logout", { refreshToken: "r" }), "REQ"), "REQ");
    t.deserialize(a.serialize(req("y", "other.action", { any: 1 }), "REQ"), "REQ");
    assert.deepEqual([...t.pending], [["x", "user.logout"]]);
    t.serialize({ ver: "5", sender: "s", id: "x", success: true, data: null, meta: {} }, "RES");
    assert.equal(t.pending.size, 0);
  });

  it("ctx.meta: known keys as Meta fields, the rest as JSON; {} stays {}, null stays null", () => {
    const metas: [unknown, string[], boolean][] = [
      // [meta, keys expected in known_meta, JSON rest expected]
      [
        {
          user: { id: "u1", role: "customer" },
          clientIp: "10.0.0.1",
          requestId: "r",
          idempotencyKey: "k",
          $statusCode: 201,
          $location: "/x",
          $responseType: "text/html",
        },
        ["user", "clientIp", "requestId", "idempotencyKey", "statusCode", "location", "responseType"],
        false,
      ],
      [{ clientIp: "10.0.0.1", $responseHeaders: { "Retry-After": "3" }, custom: [1, { a: null }] }, ["clientIp"], true],
      [{ user: { id: "u1" }, requestId: 12 }, [], true], // misfits: a user without its role, a number for a string
      [{}, [], false],
      [{ gone: undefined }, [], false],
      [null, [], true],
    ];
    for (const [meta, known, rest] of metas) {
      const bytes = a.serialize({ ...req("m", "user.get", { id: "u" }), meta }, "REQ");
      assert.deepEqual(b.deserialize(bytes, "REQ").meta, JSON.parse(JSON.stringify(meta)), JSON.stringify(meta));
      const envelope = RequestT.decode(bytes) as any;
      assert.deepEqual(Object.keys(envelope.knownMeta ?? {}).sort(), known.sort(), JSON.stringify(meta));
      assert.equal(envelope.meta != null, rest, `JSON rest for ${JSON.stringify(meta)}`);
    }
    // meta comes back with the response (moleculer-web reads $statusCode from it)
    a.deserialize(b.serialize(req("m2", "user.get", { id: "u" }), "REQ"), "REQ");
    const res = a.serialize(
      { ver: "5", sender: "a", id: "m2", success: true, data: USER, meta: { $statusCode: 201, user: { id: "u1", role: "admin" } } },
      "RES",
    );
    assert.deepEqual(b.deserialize(res, "RES").meta, { $statusCode: 201, user: { id: "u1", role: "admin" } });
    assert.equal((ResponseT.decode(res) as any).meta, null, "nothing left for JSON");
  });

  it('a "__proto__" meta key stays an own key both ways; a packet written from inside another is whole', () => {
    const meta = JSON.parse('{"__proto__":{"isAdmin":true},"clientIp":"1.2.3.4","x":1}');
    const got = b.deserialize(a.serialize({ ...req("p1", "user.get", { id: "u" }), meta }, "REQ"), "REQ").meta;
    assert.deepEqual(Object.keys(got).sort(), ["__proto__", "clientIp", "x"]);
    assert.equal(Object.getPrototypeOf(got), Object.prototype);
    assert.equal(got.isAdmin, undefined);
    // a value whose toJSON serializes another packet on the same serializer (re-entering)
    const s = new ProtobufSerializer();
    let inner: Buffer | undefined;
    const sneaky = { toJSON: () => ((inner = s.serialize(req("in", "user.get", { id: "i" }), "REQ")), "ok") };
    const outer = s.serialize({ ...req("out", "user.get", { id: "o" }), meta: { custom: sneaky } }, "REQ");
    assert.equal(b.deserialize(outer, "REQ").id, "out");
    assert.deepEqual(b.deserialize(outer, "REQ").meta, { custom: "ok" });
    assert.equal(b.deserialize(inner!, "REQ").id, "in");
  });

  it("GOSSIP packets (TCP transporter) travel generic", () => {
    const g = { ver: "5", sender: "a", online: { b: [1, 2, 3] }, offline: { c: 4 } };
    assert.deepEqual(b.deserialize(a.serialize({ ...g }, "GOSSIP_REQ"), "GOSSIP_REQ"), g);
    const hello = { ver: "5", sender: "a", host: "h", port: 1234 };
    assert.deepEqual(b.deserialize(a.serialize({ ...hello }, "GOSSIP_HELLO"), "GOSSIP_HELLO"), hello);
  });
});
