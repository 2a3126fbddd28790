/**
 * Moleculer's transit and transporter metrics, counted for a fraction of their cost (#16), as
 * lib/request-metrics.ts counts the request metrics and lib/cacher-metrics.ts the cacher's.
 *
 * Moleculer's Metrics middleware wraps four hooks of every packet a node sends or receives
 * (the transit's publish and message handler, the transporter's send and receive) and updates
 * its registry in each: eight updates per remote call on each side, each through a label hash,
 * an item lookup, a timestamp and a rate, plus two gauges "incremented" by the number of pending
 * requests on every publish (so they only grow). Measured on `GET /api/users/me` through a remote
 * user node: 491 → ~300 µs of CPU per request over both nodes with these hooks replaced
 * (bench/RESULTS.md, "Transit metrics as plain numbers"), far more than their self time in a
 * CPU profile (~3 %) showed; where the rest went was not traced.
 *
 * Here the hooks add to plain numbers, and `/metrics` (lib/metrics.ts's reporter) writes the
 * families Moleculer wrote, with the same names and labels:
 *   moleculer_transit_publish_total, moleculer_transit_receive_total (counters by packet `type`),
 *   moleculer_transporter_packets_{sent,received}_{total,bytes} (counters), and
 *   moleculer_transit_requests_active, moleculer_transit_streams_send_active (gauges), now read
 *   from the transit at scrape time: the requests awaiting an answer and the streams being sent.
 * Dropped from what Moleculer wrote: the counters' `_rate` lines (Prometheus computes rates).
 * Limits: as for the request metrics, only the Prometheus text shows these families, not a
 * Moleculer reporter of another kind. Events' metrics (emit, broadcast, received) stay Moleculer's:
 * business events travel through the outbox (lib/events), not Moleculer's events.
 */
import type { ServiceBroker } from "moleculer";
import type { Labels } from "./request-metrics";

/** Moleculer's names of the families kept here (its METRIC constants), as its registry held them. */
export const TRANSIT_METRICS = [
  "moleculer.transit.publish.total",
  "moleculer.transit.receive.total",
  "moleculer.transit.requests.active",
  "moleculer.transit.streams.send.active",
  "moleculer.transporter.packets.sent.total",
  "moleculer.transporter.packets.sent.bytes",
  "moleculer.transporter.packets.received.total",
  "moleculer.transporter.packets.received.bytes",
] as const;

/** What the gauges read of Moleculer's transit at scrape time. */
interface TransitState {
  pendingRequests: { size: number };
  pendingReqStreams: { size: number };
  pendingResStreams: { size: number };
}

export class TransitMetricStore {
  private readonly published = new Map<string, number>();
  private readonly received = new Map<string, number>();
  private sent = { packets: 0, bytes: 0 };
  private got = { packets: 0, bytes: 0 };

  publish(type: string): void {
    this.published.set(type, (this.published.get(type) ?? 0) + 1);
  }

  receive(type: string): void {
    this.received.set(type, (this.received.get(type) ?? 0) + 1);
  }

  send(bytes: number): void {
    this.sent.packets++;
    this.sent.bytes += bytes;
  }

  arrive(bytes: number): void {
    this.got.packets++;
    this.got.bytes += bytes;
  }

  /** The Prometheus text of the families; `labels` renders a label set as the reporter does. */
  prometheus(labels: (itemLabels: Labels) => string, transit: TransitState | undefined): string {
    const out: string[] = [];
    const family = (name: string, type: "counter" | "gauge", help: string, lines: [Labels, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines.map(([l, n]) => `${name}${labels(l)} ${n}`), "");
    };
    const byType = (counts: Map<string, number>): [Labels, number][] => [...counts].map(([type, n]) => [{ type }, n]);
    family("moleculer_transit_publish_total", "counter", "Number of published packets", byType(this.published));
    family("moleculer_transit_receive_total", "counter", "Number of received packets", byType(this.received));
    family("moleculer_transit_requests_active", "gauge", "Number of active requests", [[{}, transit?.pendingRequests.size ?? 0]]);
    family("moleculer_transit_streams_send_active", "gauge", "Number of active sent streams", [
      [{}, (transit?.pendingReqStreams.size ?? 0) + (transit?.pendingResStreams.size ?? 0)],
    ]);
    family("moleculer_transporter_packets_sent_total", "counter", "Number of sent packets", [[{}, this.sent.packets]]);
    family("moleculer_transporter_packets_sent_bytes", "counter", "Number of sent bytes", [[{}, this.sent.bytes]]);
    family("moleculer_transporter_packets_received_total", "counter", "Number of received packets", [[{}, this.got.packets]]);
    family("moleculer_transporter_packets_received_bytes", "counter", "Number of received bytes", [[{}, this.got.bytes]]);
    return out.join("\n");
  }
}

const stores = new WeakMap<ServiceBroker, TransitMetricStore>();

/** This broker's transit metrics (undefined with metrics off). */
export function transitMetricsOf(broker: ServiceBroker): TransitMetricStore | undefined {
  return stores.get(broker);
}

type Fn<A extends unknown[]> = (...args: A) => unknown;
/** A packet as the transit publishes it, and what its message handler and the transporter's hooks receive. */
type Packet = { type: string };
type Payload = { length?: number } | null | undefined;

/**
 * The four hooks of Moleculer's Metrics middleware that count packets, counting into a new
 * store of `broker` instead of its registry (LeanMetricsMiddleware puts them in place of
 * Moleculer's). Each passes its arguments on unchanged.
 */
export function transitMetricHooks(broker: ServiceBroker) {
  const store = new TransitMetricStore();
  stores.set(broker, store);
  return {
    transitPublish: (next: Fn<[Packet]>) =>
      function (this: unknown, packet: Packet) {
        store.publish(packet.type);
        return next.call(this, packet);
      },
    transitMessageHandler: (next: Fn<[string, unknown]>) =>
      function (this: unknown, cmd: string, packet: unknown) {
        store.receive(cmd);
        return next.call(this, cmd, packet);
      },
    transporterSend: (next: Fn<[string, Payload, unknown]>) =>
      function (this: unknown, topic: string, data: Payload, meta: unknown) {
        store.send(data?.length ?? 0);
        return next.call(this, topic, data, meta);
      },
    transporterReceive: (next: Fn<[string, Payload, unknown]>) =>
      function (this: unknown, cmd: string, data: Payload, s: unknown) {
        store.arrive(data?.length ?? 0);
        return next.call(this, cmd, data, s);
      },
  };
}
