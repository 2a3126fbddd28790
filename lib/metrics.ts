/**
 * Prometheus exposition without a second HTTP server: Moleculer's Prometheus reporter
 * always listens on its own port; we want `/metrics` on the gateway (and, later, on each
 * node's health port), so this reporter skips the listen and exposes the text instead.
 */
import { MetricReporters, type ServiceBroker } from "moleculer";

const PrometheusReporter = MetricReporters.Prometheus;
const BaseReporter = MetricReporters.Base;

export class InProcessPrometheusReporter extends PrometheusReporter {
  override init(registry: any): void {
    // The base class sets up logger and options; PrometheusReporter.init would also listen.
    BaseReporter.prototype.init.call(this, registry);
    const labels = (this as any).opts.defaultLabels;
    (this as any).defaultLabels = typeof labels === "function" ? labels.call(this, registry) : labels;
  }

  override stop(): Promise<void> {
    return Promise.resolve();
  }
}

/** The Prometheus text of every metric of this broker. */
export function prometheusText(broker: ServiceBroker): string {
  const reporters = ((broker.metrics as any).reporter ?? []) as unknown[];
  const reporter = reporters.find((r) => r instanceof InProcessPrometheusReporter) as
    | (InProcessPrometheusReporter & { generatePrometheusResponse(): string })
    | undefined;
  return reporter ? reporter.generatePrometheusResponse() : "";
}
