/**
 * Moleculer's request metrics, counted for a fraction of their cost (#16).
 *
 * Moleculer's Metrics middleware updates five registry metrics on every action call: each
 * update hashes the label values into a string, looks the item up, updates a rate and tells
 * the reporters, and the time histogram keeps a quantile reservoir. Measured here: ~25 µs of
 * CPU and the garbage that goes with it per gateway request (bench/RESULTS.md, #16).
 *
 * This middleware replaces its action part (`localAction`, `remoteAction`), and its packet
 * counters with lib/transit-metrics.ts's, and keeps the rest of Moleculer's (events' counters). Per request it adds to plain
 * numbers in a cell found once per action and caller; nothing else happens until `/metrics`
 * is scraped, when `prometheus()` writes the same families Moleculer wrote:
 *   moleculer_request_total, moleculer_request_active, moleculer_request_error_total,
 *   moleculer_request_levels (counters/gauge, the same labels), and moleculer_request_time,
 *   a histogram in milliseconds with Moleculer's default buckets, `_bucket`, `_sum` and `_count`.
 * Dropped from what Moleculer wrote (Prometheus computes them from the buckets and counters):
 *   the time histogram's quantile lines and its `_min`, `_mean`, `_variance`, `_stddev`, `_max`,
 *   and the `_rate` lines of moleculer_request_total, _error_total and _time.
 * Limits: these five live outside Moleculer's metric registry, so only the Prometheus text
 * (lib/metrics.ts's reporter, the gateway's and every node's `/metrics`) shows them, not a
 * Moleculer reporter of another kind; their names are fixed, so a name prefix or an
 * includes/excludes filter set on the reporter (none is) would not apply to them.
 */
import { performance } from "node:perf_hooks";
import { INTERNAL_MIDDLEWARES, Middlewares, type ServiceBroker } from "moleculer";
import { TRANSIT_METRICS, transitMetricHooks } from "./transit-metrics";

/** The buckets of Moleculer's registry (`defaultBuckets`), in milliseconds. */
const BUCKETS_MS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000] as const;

export type LabelValue = string | number | null | undefined;
export type Labels = Record<string, LabelValue>;

/** A time histogram in Moleculer's buckets, as plain numbers: what a request adds to (also lib/cacher-metrics.ts). */
export class TimeHistogram {
  sumMs = 0;
  /** Observations per bucket (not cumulative); the last slot is above the largest bound. */
  readonly buckets = new Array<number>(BUCKETS_MS.length + 1).fill(0);

  observe(ms: number): void {
    this.sumMs += ms;
    let i = 0;
    while (i < BUCKETS_MS.length && ms > BUCKETS_MS[i]) i++;
    this.buckets[i]++;
  }

  /** Prometheus's `_bucket`, `_sum` and `_count` lines of `name` under `labels`, rendered by `render`. */
  lines(name: string, labels: Labels, render: (labels: Labels) => string): string[] {
    const out: string[] = [];
    let cumulative = 0;
    BUCKETS_MS.forEach((le, i) => {
      cumulative += this.buckets[i];
      out.push(`${name}_bucket${render({ ...labels, le })} ${cumulative}`);
    });
    const count = cumulative + this.buckets[BUCKETS_MS.length];
    out.push(`${name}_bucket${render({ ...labels, le: "+Inf" })} ${count}`);
    out.push(`${name}_sum${render(labels)} ${this.sumMs}`);
    out.push(`${name}_count${render(labels)} ${count}`);
    return out;
  }
}

/** Names Moleculer's Metrics middleware registers for actions, dropped from its registry here (this module counts them). */
const ACTION_METRICS = [
  "moleculer.request.total",
  "moleculer.request.active",
  "moleculer.request.error.total",
  "moleculer.request.time",
  "moleculer.request.levels",
];

interface Cell {
  labels: { service: LabelValue; action: string; type: string; caller: LabelValue };
  total: number;
  active: number;
  time: TimeHistogram;
  /** Errors by `errorName|errorCode|errorType`. */
  errors: Map<string, { name: LabelValue; code: LabelValue; type: LabelValue; count: number }>;
}

export class RequestMetricStore {
  private readonly cells = new Map<string, Cell>();
  private readonly levels = new Map<number, number>();

  cell(service: LabelValue, action: string, type: string, caller: LabelValue): Cell {
    const key = `${type}|${action}|${caller ?? ""}`;
    let cell = this.cells.get(key);
    if (!cell) {
      cell = {
        labels: { service, action, type, caller },
        total: 0,
        active: 0,
        time: new TimeHistogram(),
        errors: new Map(),
      };
      this.cells.set(key, cell);
    }
    return cell;
  }

  started(cell: Cell, level: number): void {
    cell.total++;
    cell.active++;
    this.levels.set(level, (this.levels.get(level) ?? 0) + 1);
  }

  finished(cell: Cell, ms: number, err?: { name?: string; code?: unknown; type?: unknown } | null): void {
    cell.active--;
    cell.time.observe(ms);
    if (err !== undefined) {
      const name = err?.name ?? null;
      const code = (err?.code as LabelValue) ?? null;
      const type = (err?.type as LabelValue) ?? null;
      const key = `${name}|${code}|${type}`;
      const e = cell.errors.get(key);
      if (e) e.count++;
      else cell.errors.set(key, { name, code, type, count: 1 });
    }
  }

  /** Total calls of `action` (all callers and types): what a test asks of the counter. */
  totalOf(action: string): number {
    let n = 0;
    for (const c of this.cells.values()) if (c.labels.action === action) n += c.total;
    return n;
  }

  /**
   * The Prometheus text of the five families; `labels(extra)` renders a label set the way the
   * reporter renders Moleculer's own (its default labels first), so both halves of `/metrics` agree.
   */
  prometheus(labels: (itemLabels: Labels) => string): string {
    if (this.cells.size === 0) return "";
    const cells = [...this.cells.values()];
    const out: string[] = [];
    const family = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    family("moleculer_request_total", "counter", "Number of requests");
    for (const c of cells) out.push(`moleculer_request_total${labels(c.labels)} ${c.total}`);
    out.push("");
    family("moleculer_request_active", "gauge", "Number of active requests");
    for (const c of cells) out.push(`moleculer_request_active${labels(c.labels)} ${c.active}`);
    out.push("");
    const withErrors = cells.filter((c) => c.errors.size > 0);
    if (withErrors.length > 0) {
      family("moleculer_request_error_total", "counter", "Number of request errors");
      for (const c of withErrors)
        for (const e of c.errors.values())
          out.push(
            `moleculer_request_error_total${labels({ ...c.labels, errorName: e.name, errorCode: e.code, errorType: e.type })} ${e.count}`,
          );
      out.push("");
    }
    family("moleculer_request_time", "histogram", "Request times in milliseconds");
    for (const c of cells) out.push(...c.time.lines("moleculer_request_time", c.labels, labels));
    out.push("");
    family("moleculer_request_levels", "counter", "Number of requests by context level");
    for (const [level, n] of this.levels) out.push(`moleculer_request_levels${labels({ level })} ${n}`);
    out.push("");
    return out.join("\n");
  }
}

const stores = new WeakMap<ServiceBroker, RequestMetricStore>();

/** This broker's request metrics (undefined when metrics are off). */
export function requestMetricsOf(broker: ServiceBroker): RequestMetricStore | undefined {
  return stores.get(broker);
}

type ActionDef = { name: string; service?: { fullName: string } | null };
type Handler = (ctx: { caller?: string | null; level: number }) => Promise<unknown>;

/** Moleculer's Metrics middleware with its action part replaced (see the header). */
export function LeanMetricsMiddleware(broker: ServiceBroker) {
  const moleculers = Middlewares.Metrics(broker);
  if (!broker.isMetricsEnabled()) return moleculers;
  const store = new RequestMetricStore();
  stores.set(broker, store);

  const wrap = (type: "local" | "remote", next: Handler, action: ActionDef): Handler => {
    const service = action.service ? action.service.fullName : null;
    // One cell per caller, found once: the request path only adds to numbers.
    const byCaller = new Map<string | null | undefined, Cell>();
    return function leanMetrics(ctx) {
      let cell = byCaller.get(ctx.caller);
      if (!cell) byCaller.set(ctx.caller, (cell = store.cell(service, action.name, type, ctx.caller ?? null)));
      const c = cell;
      store.started(c, ctx.level);
      const start = performance.now();
      return next(ctx).then(
        (res) => {
          store.finished(c, performance.now() - start);
          return res;
        },
        (err: { name?: string; code?: unknown; type?: unknown } | null) => {
          store.finished(c, performance.now() - start, err ?? null);
          throw err;
        },
      );
    };
  };

  return {
    ...moleculers,
    // The packet counters too, as plain numbers (lib/transit-metrics.ts).
    ...transitMetricHooks(broker),
    name: "Metrics",
    created(b: ServiceBroker) {
      moleculers.created?.call(b, b);
      // Its `created` registered the action and packet metrics too; they are kept outside its registry instead.
      for (const name of [...ACTION_METRICS, ...TRANSIT_METRICS]) broker.metrics.store.delete(name);
    },
    localAction: (next: Handler, action: ActionDef) => wrap("local", next, action),
    remoteAction: (next: Handler, action: ActionDef) => wrap("remote", next, action),
  };
}

/**
 * Moleculer's internal middlewares in its own order, with LeanMetricsMiddleware where its
 * Metrics was: given as `middlewares` with `internalMiddlewares: false`. Moleculer adds its
 * HotReload middleware only with its internal list: a broker with `hotReload` must add
 * "HotReload" after these itself.
 */
export function internalMiddlewares(): Array<string | typeof LeanMetricsMiddleware> {
  return INTERNAL_MIDDLEWARES.map((name) => (name === "Metrics" ? LeanMetricsMiddleware : name));
}
