/**
 * `npm run bench:serializer`: Moleculer's JSON and CBOR serializers against the protobuf
 * serializer (lib/serializer/protobuf-serializer.ts), on the real contracts.
 *
 *  1. Per packet (REQ user.register, RES with a Session, EVENT user.registered, HEARTBEAT):
 *     bytes per message, and encode+decode operations per second (BENCH_MICRO_MS per case,
 *     default 1500 ms, after a warm-up).
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
import { loadConfig } from "../lib/config";
import { ProtobufSerializer } from "../lib/serializer/protobuf-serializer";
import { createVhost, type RabbitVhost } from "../test/support/rabbitmq";
import { REDIS_URL } from "../test/support/servers";

const MICRO_MS = Number(process.env.BENCH_MICRO_MS ?? 1500);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 5);
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 100);
const progress = (msg: string) => process.stderr.write(`[bench:serializer] ${msg}\n`);

type Name = "JSON" | "CBOR" | "protobuf";
const NAMES: Name[] = ["JSON", "CBOR", "protobuf"];
type Ser = { serialize(o: object, t: string): Buffer; deserialize(b: Buffer, t: string): any };
function makeSerializer(name: Name): InstanceType<typeof Serializers.Base> {
  const s = name === "protobuf" ? new ProtobufSerializer() : name === "CBOR" ? new Serializers.CBOR() : new Serializers.JSON();
  s.init({ getLogger: () => console, fatal: (m: string) => { throw new Error(m); } } as never);
  return s;
}

const USER = {
  id: "3f1e6a52-6c1b-4f0e-9b7a-2d2f0c7e9a11",
  email: "ada.lovelace@example.com",
  name: "Ada Lovelace",
  role: "customer",
  preferences: { categories: ["books", "phones"], brands: ["acme"] },
  createdAt: "2026-11-24T12:00:00.000Z",
};
const common = { ver: "5", sender: "gateway-7f9c2", meta: { clientIp: "10.0.0.12", requestId: "b7c4f3d2-1e55-4c1a-8f3d-0a9b8c7d6e5f" }, headers: {} };
const reqId = "5d9e2f7a-0c3b-4b8e-a1f6-7e2d9c4b3a10";
const CASES: { name: string; type: string; packet: Record<string, unknown>; prime?: string }[] = [
  {
    name: "REQ user.register",
    type: "REQ",
    packet: {
      ...common, id: reqId, action: "user.register", params: { email: USER.email, password: "correct horse battery staple", name: USER.name },
      timeout: 5000, level: 1, tracing: null, parentID: null, requestID: reqId, caller: "api", stream: false,
    },
  },
  {
    name: "RES Session",
    type: "RES",
    prime: "user.register",
    packet: {
      ...common, sender: "user-1", id: reqId, success: true, headers: undefined,
      data: { user: USER, accessToken: `eyJhbGciOiJIUzI1NiJ9.${"x".repeat(180)}.${"y".repeat(43)}`, refreshToken: `0f4a1c2e-9d8b-4e6f-a3c5-7b1d2e9f4a6c.${"z".repeat(43)}` },
    },
  },
  {
    name: "EVENT user.registered",
    type: "EVENT",
    packet: {
      ...common, id: reqId, event: "user.registered", data: { userId: USER.id, email: USER.email, name: USER.name, occurredAt: USER.createdAt },
      groups: ["notification"], broadcast: false, level: 1, tracing: null, parentID: null, requestID: reqId, caller: "user", needAck: null,
    },
  },
  { name: "HEARTBEAT", type: "HEARTBEAT", packet: { ver: "5", sender: "gateway-7f9c2", cpu: 12.5 } },
];

function micro() {
  const rows: { case: string; ser: Name; bytes: number; ops: number }[] = [];
  for (const c of CASES) {
    for (const name of NAMES) {
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

async function remote(vhost: RabbitVhost, name: Name) {
  const namespace = `bs-${randomBytes(4).toString("hex")}`;
  const env = { RABBITMQ_URI: vhost.uri, NAMESPACE: namespace, JWT_SECRET: "x".repeat(32), REDIS_URL, LOG_LEVEL: "warn", DATA_DIR: "/tmp/meridian-bench-serializer" };
  const make = (nodeID: string) => {
    const opts = brokerOptions(loadConfig({ ...env, NODE_ID: nodeID }));
    opts.serializer = makeSerializer(name) as never;
    opts.metrics = { enabled: false };
    opts.tracking = { enabled: false };
    return new ServiceBroker(opts);
  };
  const server = make(`srv-${name}`);
  const client = make(`cli-${name}`);
  server.createService({ name: "user", actions: { get: { visibility: "public", handler: (ctx: any) => ({ ...USER, id: ctx.params.id }) } } });
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
          const u = (await client.call("user.get", { id: USER.id })) as { email: string };
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
  const rows = micro();
  progress(`remote calls over AMQP: ${IN_FLIGHT} in flight, ${DURATION_S} s per serializer`);
  const vhost = await createVhost();
  const remoteRows: { ser: Name; rate: number; failed: number }[] = [];
  try {
    for (const name of NAMES) remoteRows.push(await remote(vhost, name));
  } finally {
    await vhost.destroy();
  }

  const out: string[] = [];
  out.push(`Node ${process.version}, ${new Date().toISOString().slice(0, 10)}; ${MICRO_MS} ms per packet case; remote: ${IN_FLIGHT} in flight, ${DURATION_S} s each.`, "");
  out.push("| packet | serializer | bytes | vs JSON | encode+decode/s | vs JSON |", "|---|---|---:|---:|---:|---:|");
  for (const c of CASES) {
    const base = rows.find((r) => r.case === c.name && r.ser === "JSON")!;
    for (const r of rows.filter((x) => x.case === c.name))
      out.push(`| ${r.case} | ${r.ser} | ${r.bytes} | ${pct(r.bytes / base.bytes)} | ${Math.round(r.ops).toLocaleString("en")} | ${pct(r.ops / base.ops)} |`);
  }
  out.push("", "| remote `user.get` over AMQP | calls/s | vs JSON | failed |", "|---|---:|---:|---:|");
  const baseRate = remoteRows.find((r) => r.ser === "JSON")!.rate;
  for (const r of remoteRows) out.push(`| ${r.ser} | ${Math.round(r.rate).toLocaleString("en")} | ${pct(r.rate / baseRate)} | ${r.failed} |`);
  process.stdout.write(out.join("\n") + "\n");
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
