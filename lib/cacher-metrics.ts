/**
 * Moleculer's cacher metrics, counted for a fraction of their cost (#16), as
 * lib/request-metrics.ts counts the request metrics.
 *
 * Moleculer's cachers (memory, Redis) update its metric registry on every get: two counters and
 * a time histogram, each through a label hash and an item lookup, and the histogram keeps every
 * observation of the last minute for its quantiles, which a `/metrics` scrape sorts while the
 * event loop waits: ~190 ms for a minute at 10,000 reads a second. Measured on the cached product
 * read: 105-114 → 79-87 µs of CPU per request (bench/RESULTS.md, "Cacher metrics as plain numbers").
 *
 * Here the cacher's `metrics` is a small store of plain numbers: each counter a number, each
 * time a histogram in Moleculer's buckets (lib/request-metrics.ts's TimeHistogram). `/metrics`
 * (lib/metrics.ts's reporter) writes the same family names Moleculer wrote, with the same
 * labels (the reporter's default labels: namespace, nodeID):
 *   moleculer_cacher_{get,found,set,del,clean,expired}_total (counters, 0 until counted), and
 *   moleculer_cacher_{get,set,del,clean}_time (histograms in ms: `_bucket`, `_sum`, `_count`).
 * Dropped from what Moleculer wrote (Prometheus computes them from the buckets and counters):
 * the time histograms' quantile lines and `_min`, `_mean`, `_variance`, `_stddev`, `_max`, and
 * the counters' `_rate` lines.
 * Limits: as for the request metrics, only the Prometheus text shows these families, not a
 * Moleculer reporter of another kind; a cacher given to the broker after it was created (none
 * is) would keep Moleculer's registry.
 */
import { performance } from "node:perf_hooks";
import type { ServiceBroker } from "moleculer";
import { TimeHistogram, type Labels } from "./request-metrics";

/** Moleculer's cacher counters and times (its METRIC constants), in the order `/metrics` lists them. */
const COUNTERS = [
  "moleculer.cacher.get.total",
  "moleculer.cacher.found.total",
  "moleculer.cacher.expired.total",
  "moleculer.cacher.set.total",
  "moleculer.cacher.del.total",
  "moleculer.cacher.clean.total",
] as const;
const TIMES = [
  "moleculer.cacher.get.time",
  "moleculer.cacher.set.time",
  "moleculer.cacher.del.time",
  "moleculer.cacher.clean.time",
] as const;

/** The two calls Moleculer's cachers make on `this.metrics` (besides `register`, at init). */
export class CacherMetricStore {
  private readonly counts = new Map<string, number>(COUNTERS.map((name) => [name, 0]));
  private readonly times = new Map<string, TimeHistogram>(TIMES.map((name) => [name, new TimeHistogram()]));

  increment(name: string, _labels?: unknown, value = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + value);
  }

  /** Starts a measurement of `name`; the returned function ends it (Moleculer's `timer`). */
  timer(name: string): () => number {
    const start = performance.now();
    return () => {
      const ms = performance.now() - start;
      this.times.get(name)?.observe(ms);
      return ms;
    };
  }

  /** The Prometheus text of the families; `labels` renders a label set as the reporter does. */
  prometheus(labels: (itemLabels: Labels) => string): string {
    const out: string[] = [];
    const promName = (name: string) => name.replace(/\./g, "_");
    for (const [name, n] of this.counts)
      out.push(`# HELP ${promName(name)} ${name}`, `# TYPE ${promName(name)} counter`, `${promName(name)}${labels({})} ${n}`, "");
    for (const [name, histogram] of this.times)
      out.push(
        `# HELP ${promName(name)} ${name} (millisecond)`,
        `# TYPE ${promName(name)} histogram`,
        ...histogram.lines(promName(name), {}, labels),
        "",
      );
    return out.join("\n");
  }
}

const stores = new WeakMap<ServiceBroker, CacherMetricStore>();

/** This broker's cacher metrics (undefined without a cacher, or with metrics off). */
export function cacherMetricsOf(broker: ServiceBroker): CacherMetricStore | undefined {
  return stores.get(broker);
}

/**
 * Gives the broker's cacher the lean store instead of the registry: called from the
 * CacherMetrics middleware's `created` (moleculer.config.ts), which Moleculer runs after the
 * cacher's `init` registered its items; they are removed so the registry does not list them too.
 */
export function installCacherMetrics(broker: ServiceBroker): void {
  const cacher = broker.cacher;
  if (!cacher || !broker.isMetricsEnabled()) return;
  const store = new CacherMetricStore();
  cacher.metrics = store;
  stores.set(broker, store);
  for (const name of [...COUNTERS, ...TIMES]) broker.metrics.store.delete(name);
}
