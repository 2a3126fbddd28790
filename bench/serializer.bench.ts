/**
 * `npm run bench:serializer`: Moleculer's JSON and CBOR serializers against the protobuf
 * serializer (lib/serializer/protobuf-serializer.ts), on the real contracts.
 *
 *  1. Per packet (REQ user.register, RES with a Session, EVENT user.registered, the money
 *     path's REQ product.reserve and RES Reservation and Product, HEARTBEAT, and a business
 *     event's AMQP envelope): bytes per message, and encode+decode operations per second
 *     (BENCH_MICRO_MS per case, default 1500 ms, after a warm-up). Every case is checked to
 *     fit its contract first, so the protobuf rows measure contract messages, not the JSON
 *     fallback.
 *  2. Remote calls over AMQP (private vhost): a caller broker and a server broker answering
 *     `user.get` with a User from memory (no database, so the transport and the serializer are
 *     what is measured), BENCH_IN_FLIGHT calls in flight (default 100) for BENCH_DURATION_S
 *     each (default 5), every serializer in the same run. Both brokers share this process, so
 *     calls/s include both sides' CPU.
 *
 * Ratios are against JSON in the same run. Needs the machine's RabbitMQ (rabbitmqctl as root).
 */
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { Serializers, ServiceBroker } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import descriptor from "../proto/gen/descriptor.json";
import { loadConfig } from "../lib/config";
import { encodeEnvelope, EVENT_CONTENT_TYPE, parseEnvelope } from "../lib/events/wire";
import { explainMisfit } from "../lib/serializer/contract-codec";
import { eventCodec, requestCodec, responseCodec } from "../lib/serializer/contracts-runtime";
import { ProtobufSerializer } from "../lib/serializer/protobuf-serializer";
import { createVhost, type RabbitVhost } from "../test/support/rabbitmq";
import { REDIS_URL } from "../test/support/servers";

const MICRO_MS = Number(process.env.BENCH_MICRO_MS ?? 1500);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 5);
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 100);
const progress = (msg: string) => process.stderr.write(`[bench:serializer] ${msg}\n`);

type Name = "JSON" | "CBOR" | "protobuf" | "protobuf, user contracts only";
const NAMES: Name[] = ["JSON", "CBOR", "protobuf"];
/**
 * Per packet, also the contract coverage before the contracts issue (#14): the same serializer
 * given only the user service's contracts, so other services' payloads go as JSON.
 */
const MICRO_NAMES: Name[] = [...NAMES, "protobuf, user contracts only"];
const USER_ONLY = (() => {
  const d = JSON.parse(JSON.stringify(descriptor)) as { nested: { meridian: { nested: Record<string, unknown> } } };
  for (const pkg of ["product", "cart", "order", "payment", "notification", "search", "recommendation"])
    delete d.nested.meridian.nested[pkg];
  return d;
})();
type Ser = { serialize(o: object, t: string): Buffer; deserialize(b: Buffer, t: string): any };
function makeSerializer(name: Name): InstanceType<typeof Serializers.Base> {
  const s =
    name === "protobuf"
      ? new ProtobufSerializer()
      : name === "protobuf, user contracts only"
        ? new ProtobufSerializer({ descriptor: USER_ONLY })
        : name === "CBOR"
          ? new Serializers.CBOR()
          : new Serializers.JSON();
  const logger = { debug() {}, info() {}, warn: console.warn, error: console.error };
  s.init({
    getLogger: () => logger,
    fatal: (m: string) => {
      throw new Error(m);
    },
  } as never);
  return s;
}

const USER_ID = "3f1e6a52-6c1b-4f0e-9b7a-2d2f0c7e9a11";
const USER = {
  id: USER_ID,
  email: "ada.lovelace@example.com",
  name: "Ada Lovelace",
  role: "customer",
  preferences: { categories: ["books", "phones"], brands: ["acme"] },
  createdAt: "2026-11-24T12:00:00.000Z",
};
const ORDER_ID = "9c1d7e2a-4b6f-4d3e-8a1c-5f2e7b9d0c31";
const LINES = [
  { productId: "0b7f3c1e-2a9d-4e6b-8c5f-1d3a7e9b2c40", quantity: 2, status: "held" },
  { productId: "6e2a9c4d-1f7b-4a3e-9d8c-2b5f7a1e3c62", quantity: 1, status: "held" },
  { productId: "a4c8e1b3-7d2f-4c9a-b6e5-3f1d9a7c5e84", quantity: 3, status: "held" },
];
const PRODUCT = {
  id: LINES[0].productId,
  sku: "LAMP-0042",
  name: "Desk Lamp Pro",
  description: "An adjustable LED desk lamp with three colour temperatures.",
  category: "lamps",
  brand: "Acme",
  tags: ["lighting", "office"],
  price: { amount: 4200, currency: "EUR" },
  images: ["https://cdn.example.com/p/lamp-0042/1.jpg"],
  stock: { onHand: 120, reserved: 7, available: 113 },
  createdAt: "2026-11-24T12:00:00.000Z",
  updatedAt: "2026-12-03T09:30:00.000Z",
  version: 18,
};
/** The reserve's answer prices its lines (what the order freezes). */
const PRICED = LINES.map(({ productId, quantity }, i) => ({
  productId,
  sku: `SKU-${i}`,
  name: `Product ${i}`,
  unitPrice: { amount: 1000 + i, currency: "EUR" },
  quantity,
}));
/** A business event as the relay publishes it on RabbitMQ (outbox row → envelope). */
const ORDER_PAID = {
  id: "7a3e9c1d-5b2f-4e8a-9c6d-1f4b7e2a9d53",
  name: "order.paid",
  source: "order",
  occurredAt: "2026-12-03T12:01:00.000Z",
  payload: {
    orderId: ORDER_ID,
    userId: USER_ID,
    total: { amount: 20160, currency: "EUR" },
    paymentId: "pay-4c2e8a1f",
    provider: "sandbox",
    lines: LINES.map(({ productId, quantity }) => ({ productId, quantity })),
    occurredAt: "2026-12-03T12:01:00.000Z",
  },
};
const common = {
  ver: "5",
  sender: "gateway-7f9c2",
  meta: { clientIp: "10.0.0.12", requestId: "b7c4f3d2-1e55-4c1a-8f3d-0a9b8c7d6e5f" },
  headers: {},
};
const reqId = "5d9e2f7a-0c3b-4b8e-a1f6-7e2d9c4b3a10";
const CASES: { name: string; type: string; packet: Record<string, unknown>; prime?: string }[] = [
  {
    name: "REQ user.register",
    type: "REQ",
    packet: {
      ...common,
      id: reqId,
      action: "user.register",
      params: { email: USER.email, password: "correct horse battery staple", name: USER.name },
      timeout: 5000,
      level: 1,
      tracing: null,
      parentID: null,
      requestID: reqId,
      caller: "api",
      stream: false,
    },
  },
  {
    name: "RES Session",
    type: "RES",
    prime: "user.register",
    packet: {
      ...common,
      sender: "user-1",
      id: reqId,
      success: true,
      headers: undefined,
      data: {
        user: USER,
        accessToken: `eyJhbGciOiJIUzI1NiJ9.${"x".repeat(180)}.${"y".repeat(43)}`,
        refreshToken: `0f4a1c2e-9d8b-4e6f-a3c5-7b1d2e9f4a6c.${"z".repeat(43)}`,
      },
    },
  },
  {
    name: "EVENT user.registered",
    type: "EVENT",
    packet: {
      ...common,
      id: reqId,
      event: "user.registered",
      data: { userId: USER.id, email: USER.email, name: USER.name, occurredAt: USER.createdAt },
      groups: ["notification"],
      broadcast: false,
      level: 1,
      tracing: null,
      parentID: null,
      requestID: reqId,
      caller: "user",
      needAck: null,
    },
  },
  // The money path: the order service reserving stock, the product it priced.
  {
    name: "REQ product.reserve",
    type: "REQ",
    packet: {
      ...common,
      id: reqId,
      action: "product.reserve",
      params: { orderId: ORDER_ID, lines: LINES.map(({ productId, quantity }) => ({ productId, quantity })) },
      timeout: 5000,
      level: 2,
      tracing: null,
      parentID: null,
      requestID: reqId,
      caller: "order",
      stream: false,
    },
  },
  {
    name: "RES Reservation",
    type: "RES",
    prime: "product.reserve",
    packet: {
      ...common,
      sender: "product-1",
      id: reqId,
      success: true,
      headers: undefined,
      data: { orderId: ORDER_ID, status: "held", lines: LINES, expiresAt: "2026-12-03T12:15:00.000Z", priced: PRICED },
    },
  },
  {
    name: "RES Product",
    type: "RES",
    prime: "product.get",
    packet: { ...common, sender: "product-1", id: reqId, success: true, headers: undefined, data: PRODUCT },
  },
  { name: "HEARTBEAT", type: "HEARTBEAT", packet: { ver: "5", sender: "gateway-7f9c2", cpu: 12.5 } },
];

function micro() {
  const rows: { case: string; ser: Name; bytes: number; ops: number }[] = [];
  for (const c of CASES) {
    for (const name of MICRO_NAMES) {
      const s = makeSerializer(name) as unknown as Ser & { pending?: Map<string, string> };
      const once = () => {
        if (c.prime && s.pending) s.pending.set(c.packet.id as string, c.prime);
        return s.deserialize(s.serialize(c.packet, c.type), c.type);
      };
      if (c.prime && s.pending) s.pending.set(c.packet.id as string, c.prime);
      const bytes = s.serialize(c.packet, c.type).length;
      for (let i = 0; i < 2000; i++) once(); // warm-up
      let n = 0;
      const start = performance.now();
      let now = start;
      while (now - start < MICRO_MS) {
        for (let i = 0; i < 200; i++) once();
        n += 200;
        now = performance.now();
      }
      const ops = (n / (now - start)) * 1000;
      rows.push({ case: c.name, ser: name, bytes, ops });
      progress(`${c.name} / ${name}: ${bytes} B, ${Math.round(ops).toLocaleString("en")} encode+decode/s`);
    }
  }
  return rows;
}

/**
 * A business event on RabbitMQ: the JSON envelope the relay published before the contracts
 * (JSON.stringify / JSON.parse) against the protobuf EventEnvelope with the event's message.
 */
function amqpEnvelope() {
  const rows: { case: string; ser: Name; bytes: number; ops: number }[] = [];
  const variants: [Name, () => Buffer, (b: Buffer) => unknown][] = [
    ["JSON", () => Buffer.from(JSON.stringify(ORDER_PAID)), (b) => JSON.parse(b.toString("utf8"))],
    ["protobuf", () => encodeEnvelope(ORDER_PAID), (b) => parseEnvelope(b, EVENT_CONTENT_TYPE)],
  ];
  const check = parseEnvelope(encodeEnvelope(ORDER_PAID), EVENT_CONTENT_TYPE);
  if (JSON.stringify(check) !== JSON.stringify(ORDER_PAID)) throw new Error("order.paid does not round-trip through its contract");
  for (const [ser, encode, decode] of variants) {
    const bytes = encode().length;
    for (let i = 0; i < 2000; i++) decode(encode());
    let n = 0;
    const start = performance.now();
    let now = start;
    while (now - start < MICRO_MS) {
      for (let i = 0; i < 200; i++) decode(encode());
      n += 200;
      now = performance.now();
    }
    const ops = (n / (now - start)) * 1000;
    rows.push({ case: "AMQP order.paid", ser, bytes, ops });
    progress(`AMQP order.paid / ${ser}: ${bytes} B, ${Math.round(ops).toLocaleString("en")} encode+decode/s`);
  }
  return rows;
}

/** Each contract case must travel as its contract message (else the bench measures the JSON fallback). */
function checkCasesFit() {
  for (const c of CASES) {
    const contract =
      c.type === "REQ"
        ? requestCodec(c.packet.action)
        : c.type === "RES"
          ? responseCodec(c.prime ?? "")
          : c.type === "EVENT"
            ? eventCodec(c.packet.event)
            : null;
    const value = c.type === "REQ" ? c.packet.params : c.packet.data;
    if (c.type !== "HEARTBEAT" && !contract) throw new Error(`${c.name}: no contract`);
    const why = contract ? explainMisfit(contract.type, value) : null;
    if (why) throw new Error(`${c.name} does not fit its contract: ${why}`);
  }
}

async function remote(vhost: RabbitVhost, name: Name) {
  const namespace = `bs-${randomBytes(4).toString("hex")}`;
  const env = {
    RABBITMQ_URI: vhost.uri,
    NAMESPACE: namespace,
    JWT_SECRET: "x".repeat(32),
    REDIS_URL,
    LOG_LEVEL: "warn",
    DATA_DIR: "/tmp/meridian-bench-serializer",
  };
  const make = (nodeID: string) => {
    const opts = brokerOptions(loadConfig({ ...env, NODE_ID: nodeID }));
    opts.serializer = makeSerializer(name);
    opts.metrics = { enabled: false };
    opts.tracking = { enabled: false };
    return new ServiceBroker(opts);
  };
  const server = make(`srv-${name}`);
  const client = make(`cli-${name}`);
  server.createService({
    name: "user",
    actions: { get: { visibility: "public", handler: (ctx: any) => ({ ...USER, id: ctx.params.id }) } },
  });
  try {
    await Promise.all([server.start(), client.start()]);
    await client.waitForServices(["user"], 20_000);
    let done = 0;
    let failed = 0;
    let counting = false;
    const stopAt = { t: 0 };
    const worker = async () => {
      while (performance.now() < stopAt.t) {
        try {
          const u = await client.call<{ email: string }, unknown>("user.get", { id: USER.id });
          if (u.email !== USER.email) throw new Error("wrong answer");
          if (counting) done++;
        } catch {
          if (counting) failed++;
        }
      }
    };
    stopAt.t = performance.now() + 1000; // warm-up
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    counting = true;
    const start = performance.now();
    stopAt.t = start + DURATION_S * 1000;
    const timer = setInterval(() => progress(`remote / ${name}: ${done} calls so far`), 1000);
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    clearInterval(timer);
    const rate = done / ((performance.now() - start) / 1000);
    progress(`remote / ${name}: ${Math.round(rate)} calls/s, ${failed} failed`);
    return { ser: name, rate, failed };
  } finally {
    await Promise.all([client.stop(), server.stop()]);
  }
}

const pct = (r: number) => `${Math.round(r * 100)} %`;

async function main() {
  progress(`per packet: ${MICRO_MS} ms per case`);
  checkCasesFit();
  const rows = [...micro(), ...amqpEnvelope()];
  progress(`remote calls over AMQP: ${IN_FLIGHT} in flight, ${DURATION_S} s per serializer`);
  const vhost = await createVhost();
  const remoteRows: { ser: Name; rate: number; failed: number }[] = [];
  try {
    for (const name of NAMES) remoteRows.push(await remote(vhost, name));
  } finally {
    await vhost.destroy();
  }

  const out: string[] = [];
  out.push(
    `Node ${process.version}, ${new Date().toISOString().slice(0, 10)}; ${MICRO_MS} ms per packet case; remote: ${IN_FLIGHT} in flight, ${DURATION_S} s each.`,
    "",
  );
  out.push("| packet | serializer | bytes | vs JSON | encode+decode/s | vs JSON |", "|---|---|---:|---:|---:|---:|");
  for (const c of [...CASES.map((x) => x.name), "AMQP order.paid"].map((name) => ({ name }))) {
    const base = rows.find((r) => r.case === c.name && r.ser === "JSON")!;
    for (const r of rows.filter((x) => x.case === c.name))
      out.push(
        `| ${r.case} | ${r.ser} | ${r.bytes} | ${pct(r.bytes / base.bytes)} | ${Math.round(r.ops).toLocaleString("en")} | ${pct(r.ops / base.ops)} |`,
      );
  }
  out.push("", "| remote `user.get` over AMQP | calls/s | vs JSON | failed |", "|---|---:|---:|---:|");
  const baseRate = remoteRows.find((r) => r.ser === "JSON")!.rate;
  for (const r of remoteRows)
    out.push(`| ${r.ser} | ${Math.round(r.rate).toLocaleString("en")} | ${pct(r.rate / baseRate)} | ${r.failed} |`);
  process.stdout.write(out.join("\n") + "\n");
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
