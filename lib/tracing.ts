/**
 * Tracing and request-scoped logging.
 *
 * - `tracingOptions(config)`: Moleculer's tracer behind TRACING_EXPORTER (none | zipkin |
 *   console). Spans carry no params, meta, responses or error data (a login's password or a
 *   token must never leave in a span); the trace id is Moleculer's `ctx.requestID`, which the
 *   gateway sets from the client's `X-Request-Id` (sanitized) or a fresh UUID, and which
 *   travels in every request packet (the protobuf envelope carries `request_id`,
 *   `parent_id` and `tracing`).
 * - `ZipkinExporter`: Moleculer's Zipkin v2 exporter (global `fetch`, no extra package), plus:
 *   ids that are not hex (a client's request id) are hashed into a valid Zipkin id, the
 *   request id is kept as a tag, a post has a timeout, and `stop()` flushes what is queued.
 * - `RequestScopeMiddleware`: runs every local action and event handler inside a request
 *   scope holding its context (lib/async-scope.ts: carried through every await and promise
 *   callback), so (1) the JSON log lines (lib/logger.ts) add `requestId` to every line written
 *   while handling a request, and (2) a `broker.call` made inside a handler without
 *   `parentCtx` still continues the request (its request id and the trace's parent span; NOT
 *   its meta: identity and idempotency keys are passed on only where a service chose to, with
 *   `parentCtx`).
 *   Limits: lines written outside a handler (broker start/stop, transporter, timers started
 *   at service start, the business-event relay and consumers, which run on their own loops)
 *   carry no request id, nor do lines written by a plain callback (a timer, an EventEmitter
 *   listener) that a handler set up: the scope follows promises only.
 */
import { createHash, randomUUID } from "node:crypto";
import { inspect } from "node:util";
import { TracerExporters, type BrokerOptions, type Context, type Middleware } from "moleculer";
import { promiseScope } from "./async-scope";
import type { AppConfig } from "./config";

// ---- request scope ----

interface Scope {
  ctx: Context;
}

const scope = promiseScope<Scope>();

/**
 * A request's id from the client's `X-Request-Id` (an HTTP header, or gRPC metadata) when it is
 * sane; anything else gets a fresh id. It is the trace id too, and every edge sends it back.
 */
const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;
export function requestIdOf(header: string | string[] | undefined): string {
  return typeof header === "string" && REQUEST_ID.test(header) ? header : randomUUID();
}

/** The request id of the action or event handler running now, if any. */
export function currentRequestId(): string | undefined {
  return scope.getStore()?.ctx.requestID ?? undefined;
}

function inScope<T>(ctx: Context, fn: () => T): T {
  const cur = scope.getStore();
  if (cur?.ctx === ctx || !ctx.requestID) return fn();
  return scope.run({ ctx }, fn);
}

type CallOptions = { parentCtx?: unknown; parentSpan?: unknown; requestID?: string } & Record<string, unknown>;

/** See the header: the scope for logs, and calls without `parentCtx` continuing the request. */
export function RequestScopeMiddleware(): Middleware {
  return {
    name: "RequestScope",
    localAction(handler: (ctx: Context) => Promise<unknown>) {
      return function requestScoped(ctx: Context) {
        return inScope(ctx, () => handler(ctx));
      };
    },
    localEvent(handler: (ctx: Context) => Promise<unknown>) {
      return function requestScopedEvent(ctx: Context) {
        return inScope(ctx, () => handler(ctx));
      };
    },
    call(next: (action: unknown, params?: unknown, opts?: CallOptions) => Promise<unknown>) {
      return function callInScope(action: unknown, params?: unknown, opts?: CallOptions) {
        const ctx = scope.getStore()?.ctx;
        if (!ctx || opts?.parentCtx || opts?.parentSpan || opts?.requestID) return next(action, params, opts);
        // Moleculer's own span shape: the child gets this request id, this context as its
        // parent span, and the sampling decision; meta is not merged (unlike parentCtx).
        const parentSpan = {
          id: (ctx as Context & { span?: { id: string } }).span?.id ?? ctx.id,
          traceID: ctx.requestID,
          sampled: ctx.tracing,
        };
        return next(action, params, { ...opts, parentSpan });
      };
    },
  } as unknown as Middleware;
}

// ---- structured logs ----

const FIELDS = Symbol("log fields");

/** Structured fields for a log line: merged into the JSON line, `key=value` in text. */
export class LogFields {
  readonly [FIELDS] = true;
  constructor(readonly fields: Record<string, string | number | boolean | null | undefined>) {}
  [inspect.custom](): string {
    return Object.entries(this.fields)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
  }
}

export const logFields = (fields: LogFields["fields"]): LogFields => new LogFields(fields);

// ---- tracing ----

/** A span as Zipkin's v2 API takes it (what Moleculer's exporter builds; we add a tag). */
type ZipkinPayload = Record<string, unknown> & { tags?: Record<string, string> };
type TracingExporterOption = Extract<NonNullable<Exclude<BrokerOptions["tracing"], boolean | undefined>["exporter"]>, unknown[]>[number];

const ZipkinBase = TracerExporters.Zipkin as unknown as new (opts?: object) => {
  opts: { baseURL: string; headers: Record<string, string> };
  queue: unknown[];
  logger: { warn(...a: unknown[]): void; debug(...a: unknown[]): void };
  generateTracingData(): Record<string, unknown>[];
  makePayload(span: { traceID: string }): ZipkinPayload;
  stop(): Promise<void>;
};

/** A Zipkin id (16 lower-case hex digits) for any Moleculer id, the same on every node. */
export function zipkinId(id: string | null | undefined): string | null {
  if (!id) return null;
  const hex = id.replace(/-/g, "").toLowerCase();
  if (/^[0-9a-f]{16,}$/.test(hex)) return hex.slice(0, 16); // Moleculer's UUIDs, as its exporter does
  return createHash("sha256").update(id).digest("hex").slice(0, 16);
}

export class ZipkinExporter extends ZipkinBase {
  private inFlight: Promise<void> = Promise.resolve();

  convertID(id: string | null | undefined): string | null {
    return zipkinId(id);
  }

  override makePayload(span: { traceID: string }): ZipkinPayload {
    const payload = super.makePayload(span);
    payload.tags = { ...payload.tags, requestId: span.traceID };
    return payload;
  }

  /** Posts what is queued (the base class's timer calls it every `interval` seconds). */
  flush(): Promise<void> {
    if (this.queue.length === 0) return this.inFlight;
    const data = this.generateTracingData();
    this.queue.length = 0;
    const post = fetch(`${this.opts.baseURL}/api/v2/spans`, {
      method: "POST",
      body: JSON.stringify(data),
      headers: this.opts.headers,
      signal: AbortSignal.timeout(5000),
    }).then(
      async (res) => {
        await res.arrayBuffer().catch(() => undefined);
        if (res.status >= 400) this.logger.warn(`Zipkin refused ${data.length} span(s): HTTP ${res.status}`);
      },
      (err: Error) => this.logger.warn(`Unable to send ${data.length} span(s) to Zipkin: ${err.message}`),
    );
    this.inFlight = Promise.all([this.inFlight, post]).then(() => undefined);
    return this.inFlight;
  }

  override async stop(): Promise<void> {
    await super.stop();
    await this.flush();
  }
}

export function tracingOptions(config: AppConfig): BrokerOptions["tracing"] {
  const t = config.tracing;
  if (t.exporter === "none") return { enabled: false };
  return {
    enabled: true,
    events: true,
    sampling: { rate: t.sampleRate },
    // No `data` (a validation error's data holds the value it refused) and no stack.
    errorFields: ["name", "message", "code", "type"],
    stackTrace: false,
    // Moleculer captures every action's params by default: a password or token would leave.
    tags: { action: { params: false, meta: false, response: false }, event: { params: false, meta: false } },
    exporter: [
      t.exporter === "zipkin"
        ? // The cast: Moleculer's tracer takes an exporter instance (its `Exporters.resolve`); its
          // .d.ts lists only `{ type, options }` objects.
          (new ZipkinExporter({
            baseURL: t.zipkinUrl!.replace(/\/$/, ""),
            interval: 5,
            defaultTags: { namespace: config.namespace || "default" },
          }) as unknown as TracingExporterOption)
        : { type: "Console", options: { colors: false, width: 100 } },
    ],
  };
}
