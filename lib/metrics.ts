/**
 * Prometheus exposition without a second HTTP server: Moleculer's Prometheus reporter
 * always listens on its own port; we want `/metrics` on the gateway (and, later, on each
 * node's health port), so this reporter skips the listen and exposes the text instead.
 */
import { type MetricRegistry, MetricReporters, type ServiceBroker } from "moleculer";
import { cacherMetricsOf } from "./cacher-metrics";
import { transitMetricsOf } from "./transit-metrics";
import { requestMetricsOf, type Labels } from "./request-metrics";

const PrometheusReporter = MetricReporters.Prometheus;
const BaseReporter = MetricReporters.Base;

export class InProcessPrometheusReporter extends PrometheusReporter {
  /** The labels of every sample: set by PrometheusReporter.init in Moleculer's source, absent from its .d.ts. */
  declare defaultLabels: Record<string, unknown> | undefined;

  override init(registry: MetricRegistry): void {
    // The base class sets up logger and options; PrometheusReporter.init would also listen.
    BaseReporter.prototype.init.call(this, registry);
    // A function of the registry (the .d.ts), or the labels themselves (Moleculer's source takes both).
    const labels: ((registry: MetricRegistry) => Record<string, unknown>) | Record<string, unknown> | undefined = this.opts.defaultLabels;
    this.defaultLabels = typeof labels === "function" ? labels.call(this, registry) : labels;
  }

  override stop(): Promise<void> {
    return Promise.resolve();
  }

  /** Moleculer's families, then the request, cacher and packet metrics counted outside its registry (lib/request-metrics.ts, lib/cacher-metrics.ts, lib/transit-metrics.ts). */
  override generatePrometheusResponse(): string {
    const broker = this.registry.broker;
    const labels = (itemLabels: Labels) => this.labelsToStr(itemLabels);
    const requests = requestMetricsOf(broker)?.prometheus(labels) ?? "";
    const cacher = cacherMetricsOf(broker)?.prometheus(labels) ?? "";
    const transit = transitMetricsOf(broker)?.prometheus(labels, broker.transit) ?? "";
    return super.generatePrometheusResponse() + requests + cacher + transit;
  }
}

/** The Prometheus text of every metric of this broker. */
export function prometheusText(broker: ServiceBroker): string {
  const reporters: unknown[] = broker.metrics.reporter ?? [];
  const reporter = reporters.find<(InProcessPrometheusReporter & { generatePrometheusResponse(): string }) | undefined>(
    (r) => r instanceof InProcessPrometheusReporter,
  );
  return reporter ? reporter.generatePrometheusResponse() : "";
}

// ---- business counters ----

/**
 * The business counters, registered in Moleculer's metrics registry (so every reporter sees
 * them). Names use Moleculer's dotted style; its Prometheus reporter turns `.` and `-` into
 * `_` and adds no suffix, so `meridian.orders.created.total` is scraped as
 * `meridian_orders_created_total` (the Prometheus convention for a counter).
 * docs/operations.md's "Observability" lists them with queries.
 */
export const BUSINESS_COUNTERS = {
  orders_created: {
    name: "meridian.orders.created.total",
    labelNames: [],
    description: "Orders created (stock reserved, order row committed)",
  },
  orders_paid: { name: "meridian.orders.paid.total", labelNames: ["provider"], description: "Orders that became PAID" },
  orders_cancelled: {
    name: "meridian.orders.cancelled.total",
    labelNames: ["reason"],
    description: "Orders cancelled (reason: user, admin, expired)",
  },
  payments_succeeded: { name: "meridian.payments.succeeded.total", labelNames: ["provider"], description: "Payments settled as succeeded" },
  payments_failed: { name: "meridian.payments.failed.total", labelNames: ["provider"], description: "Payments settled as failed" },
  refunds: {
    name: "meridian.refunds.total",
    labelNames: ["result"],
    description: "Refunds settled by the platform (result: succeeded, failed)",
  },
  oversell_refused: {
    name: "meridian.oversell.refused.total",
    labelNames: [],
    description: "Stock reservations refused with OUT_OF_STOCK (one per refused request)",
  },
  events_published: {
    name: "meridian.events.published.total",
    labelNames: ["service", "event"],
    description: "Business events published (confirmed by RabbitMQ, or delivered in-process)",
  },
  events_applied: {
    name: "meridian.events.applied.total",
    labelNames: ["service", "event"],
    description: "Business events applied by a consumer (inbox committed)",
  },
  events_duplicates: {
    name: "meridian.events.duplicates.total",
    labelNames: ["service", "event"],
    description: "Business events received again and ignored (already in the inbox)",
  },
  events_retried: {
    name: "meridian.events.retried.total",
    labelNames: ["service", "event"],
    description: "Business event deliveries that failed and were scheduled for a retry",
  },
  serializer_json_fallback: {
    name: "meridian.serializer.json_fallback.total",
    labelNames: ["packet", "name"],
    description:
      "Payloads of business actions and events sent as generic JSON: no contract, or a value that does not fit it (packet: REQ, RES, EVENT, AMQP)",
  },
  events_dead_lettered: {
    name: "meridian.events.dead_lettered.total",
    labelNames: ["service", "event"],
    description: "Business events moved to the dead letters after the last attempt",
  },
} as const satisfies Record<string, { name: string; labelNames: readonly string[]; description: string }>;

export type BusinessCounter = keyof typeof BUSINESS_COUNTERS;
type LabelsOf<C extends BusinessCounter> = (typeof BUSINESS_COUNTERS)[C]["labelNames"][number];
export type BusinessLabels<C extends BusinessCounter> = [LabelsOf<C>] extends [never] ? undefined : Record<LabelsOf<C>, string>;

interface MetricsRegistry {
  isEnabled(): boolean;
  hasMetric(name: string): boolean;
  register(opts: object): unknown;
  increment(name: string, labels?: Record<string, string> | null, value?: number): unknown;
}

const registryOf = (broker: ServiceBroker | undefined): MetricsRegistry | undefined => {
  const metrics = (broker as unknown as { metrics?: MetricsRegistry } | undefined)?.metrics;
  return metrics?.isEnabled() ? metrics : undefined;
};

function ensure(metrics: MetricsRegistry, counter: BusinessCounter): string {
  const def = BUSINESS_COUNTERS[counter];
  if (!metrics.hasMetric(def.name)) {
    // `register` replaces an existing metric (its values would be lost): only once per broker.
    metrics.register({ type: "counter", name: def.name, labelNames: [...def.labelNames], description: def.description });
    // A counter without labels is shown at 0 from the start, so `rate()` and alerts see it.
    if (def.labelNames.length === 0) metrics.increment(def.name, null, 0);
  }
  return def.name;
}

/** Registers every business counter (at broker start): the label-less ones scrape as 0 before their first event. */
export function registerBusinessMetrics(broker: ServiceBroker): void {
  const metrics = registryOf(broker);
  if (metrics) for (const counter of Object.keys(BUSINESS_COUNTERS) as BusinessCounter[]) ensure(metrics, counter);
}

type Trx = { executionPromise: Promise<unknown> };
type CountArgs<C extends BusinessCounter> =
  BusinessLabels<C> extends undefined ? [labels?: undefined, trx?: Trx] : [labels: BusinessLabels<C>, trx?: Trx];

/**
 * Adds one to a business counter. With `trx`, only once that transaction commits (a rolled
 * back change is not counted); without, at once. Never throws: metrics must not fail a request.
 */
export function countBusiness<C extends BusinessCounter>(broker: ServiceBroker | undefined, counter: C, ...rest: CountArgs<C>): void;
export function countBusiness(broker: ServiceBroker | undefined, counter: BusinessCounter, ...rest: unknown[]): void {
  const [labels, trx] = rest as [Record<string, string> | undefined, Trx | undefined];
  const inc = () => {
    try {
      const metrics = registryOf(broker);
      if (metrics) metrics.increment(ensure(metrics, counter), labels ?? null, 1);
    } catch {
      // A metrics problem is not the business's problem.
    }
  };
  if (trx) trx.executionPromise.then(inc, () => undefined);
  else inc();
}
