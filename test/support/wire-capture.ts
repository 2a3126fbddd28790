/**
 * What travels on RabbitMQ, captured and read back from proto/ alone. RabbitMQ's firehose
 * tracer (`rabbitmqctl trace_on`) copies every message published in a vhost to
 * amq.rabbitmq.trace; a queue of ours keeps the bytes as they travelled. `readCaptured`
 * decodes each one with protobufjs from the .proto files (not the generated code the nodes
 * run): Moleculer's packets by the queue or exchange they went to, business events by the
 * event exchange, each business payload with its contract message.
 */
import amqp from "amqplib";
import type protobuf from "protobufjs";
import { loadProtoRoot } from "../../proto/load";
import { readContracts } from "../../proto/registry";
import { topology } from "../../lib/events/topology";
import { QUEUE_PREFIX } from "../../lib/transporter/safe-amqp-transporter";
import type { Rabbitmqctl } from "./rabbitmq";

export interface CapturedMessage {
  /** The exchange, or the queue for a message published to the default exchange. */
  target: string;
  body: Buffer;
}

export interface Firehose {
  messages: CapturedMessage[];
  stop(): Promise<void>;
}

/**
 * `ctls`: every node of the broker (tracing is a node's: each copies what its own channels
 * publish, to the vhost's trace exchange, which routes cluster-wide).
 */
export async function startFirehose(ctls: Rabbitmqctl | Rabbitmqctl[], uri: string, vhost = "/"): Promise<Firehose> {
  const nodes = Array.isArray(ctls) ? ctls : [ctls];
  for (const ctl of nodes) await ctl("trace_on", "-p", vhost);
  const conn = await amqp.connect(uri);
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue("", { exclusive: true, autoDelete: true });
  await ch.bindQueue(queue, "amq.rabbitmq.trace", "publish.#");
  const messages: CapturedMessage[] = [];
  await ch.consume(
    queue,
    (msg) => {
      if (!msg) return;
      const headers = msg.properties.headers ?? {};
      const keys = (headers.routing_keys as string[] | undefined) ?? [];
      const exchange = headers.exchange_name ? String(headers.exchange_name) : "";
      messages.push({ target: exchange || (keys[0] ?? ""), body: msg.content });
    },
    { noAck: true },
  );
  return {
    messages,
    async stop() {
      for (const ctl of nodes) await ctl("trace_off", "-p", vhost).catch(() => undefined);
      await conn.close().catch(() => undefined);
    },
  };
}

export interface WireReport {
  /** Business actions whose params travelled as their contract message, with counts. */
  requests: Map<string, number>;
  /** Business actions whose answer travelled as its contract message. */
  responses: Map<string, number>;
  /** Business events (RabbitMQ, through the outbox) whose payload was its contract message. */
  events: Map<string, number>;
  /** Everything that did not: a business payload as JSON, bytes that do not decode. */
  problems: string[];
  /** Every decoded payload by "REQ <action>", "RES <action>" or "EVENT <name>", in order (to compare with what the client saw). */
  decoded: Map<string, Record<string, unknown>[]>;
}

const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

/** Decodes every captured message of `namespace` with protobufjs from proto/ alone. */
export function readCaptured(messages: readonly CapturedMessage[], namespace: string): WireReport {
  const root = loadProtoRoot();
  const contracts = readContracts(root);
  const services = new Set([...contracts.actions.keys()].map((a) => a.slice(0, a.indexOf("."))));
  const T = (n: string) => root.lookupType(`meridian.wire.v1.${n}`);
  const [Request, Response, Event, EventEnvelope] = [T("Request"), T("Response"), T("Event"), T("EventEnvelope")];
  const eventsExchange = topology(namespace).exchange;
  const prefix = `${QUEUE_PREFIX}-${namespace}.`;
  const report: WireReport = { requests: new Map(), responses: new Map(), events: new Map(), problems: [], decoded: new Map() };
  // A RES names its action only when its data is a contract message: the REQ's id tells
  // which business action an unnamed RES answers (so a JSON answer is caught too).
  const actionOfRequest = new Map<string, string>();
  const payload = (
    data: { value?: string; message?: Uint8Array } | null | undefined,
    type: protobuf.Type | null | undefined,
    what: string,
  ): boolean => {
    if (!data?.value || data.value === "isNull") return true;
    if (data.value !== "message") {
      report.problems.push(`${what}: travelled as ${data.value}`);
      return false;
    }
    if (!type) {
      report.problems.push(`${what}: a contract message, but proto/ has no contract for it`);
      return false;
    }
    // protobufjs rarely throws on the wrong bytes: the test compares the decoded values
    // with what the client sent and was answered.
    const value = type.toObject(type.decode(data.message!), { longs: Number }) as Record<string, unknown>;
    report.decoded.set(what, [...(report.decoded.get(what) ?? []), value]);
    return true;
  };

  for (const { target, body } of messages) {
    try {
      if (target === eventsExchange || target.startsWith(`${eventsExchange}.`)) {
        const e = EventEnvelope.decode(body) as unknown as { name: string; payload?: { value?: string; message?: Uint8Array } };
        if (payload(e.payload, contracts.events.get(e.name), `event ${e.name}`)) bump(report.events, e.name);
        continue;
      }
      if (!target.startsWith(prefix)) continue;
      const kind = target.slice(prefix.length).split(".")[0];
      if (kind === "REQ" || kind === "REQB") {
        const m = Request.decode(body) as unknown as { id: string; action: string; params?: { value?: string; message?: Uint8Array } };
        const business = services.has(m.action.slice(0, m.action.indexOf(".")));
        if (business) actionOfRequest.set(m.id, m.action);
        if (business && payload(m.params, contracts.actions.get(m.action)?.request, `REQ ${m.action}`)) bump(report.requests, m.action);
      } else if (kind === "RES") {
        const m = Response.decode(body) as unknown as {
          id: string;
          success: boolean;
          action?: string;
          data?: { value?: string; message?: Uint8Array };
        };
        const action = m.action || actionOfRequest.get(m.id);
        if (action && m.success) {
          const c = contracts.actions.get(action);
          if (payload(m.data, c?.response, `RES ${action}`)) bump(report.responses, action);
        }
      } else if (kind === "EVENT" || kind === "EVENTB") {
        const m = Event.decode(body) as unknown as { event: string; data?: { value?: string } };
        // A business event has no business on Moleculer's bus (the outbox carries them);
        // infrastructure events (cache.clean.product, $node.*) carry JSON by design.
        if (contracts.events.has(m.event)) report.problems.push(`business event ${m.event} sent as a Moleculer event`);
      }
    } catch (err) {
      report.problems.push(`${target}: ${(err as Error).message}`);
    }
  }
  return report;
}

/** The sum of a counter (all label sets) in a node's Prometheus text. */
export function counterSum(prometheusText: string, name: string): number {
  let sum = 0;
  for (const line of prometheusText.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([0-9.eE+-]+)/);
    if (m && m[1] === name) sum += Number(m[3]);
  }
  return sum;
}
