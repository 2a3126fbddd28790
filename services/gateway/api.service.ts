/**
 * The HTTP gateway (moleculer-web). Its conventions hold for every route, present and
 * future: explicit aliases only (`mappingPolicy: "restrict"`), one error shape, JSON
 * bodies guarded (size, syntax, prototype keys), identity only from a verified bearer
 * token, and each action's `auth` level enforced here before the call.
 */
import { forRunner } from "../../lib/runner";
import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import ApiGateway from "moleculer-web";
import serveStatic from "serve-static";
import type { Context, Logger, ServiceBroker, ServiceSettingSchema } from "moleculer";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { createEdgeDoor } from "../../lib/auth/edge-door";
import { cancelRequest } from "../../lib/cancellation";
import { clientAddress } from "../../lib/client-address";
import type { AppConfig } from "../../lib/config";
import type { AuthLevel, RequestMeta } from "../../lib/context";
import { DOCS_CONTENT_SECURITY_POLICY, DOCS_INIT_SCRIPT_NAME, docsHtml, docsInitJs, swaggerUiDistPath } from "../../lib/docs-page";
import { convertQueryParams } from "./query-params";
import { contractAliases } from "./routes";
import { withContracts } from "./contract-docs";
import { AppError, toErrorResponse } from "../../lib/errors";
import { rateLimitHeaders } from "../../lib/rate-limit";
import type { NamedLimit } from "../../lib/request-limits";
import { buildOpenApiDocument } from "../../lib/openapi";
import { checkReadiness } from "../../lib/readiness";
import { logFields, requestIdOf } from "../../lib/tracing";
import { jsonBody } from "./json-body";
import { liveSseAliases, liveSseOpenApiPaths } from "./live-sse";
import { LiveFeedsMixin, type LiveFeedsThis } from "../../mixins/live-feeds.mixin";
import type { LiveFeeds } from "../../lib/live/feeds";
import { rawCallbackBody } from "./raw-body";
import { secondTry, transportBack } from "../../lib/edge-retry";
import { contracts } from "../../lib/serializer/contracts-runtime";
import { jsonOf } from "../../lib/cached-json";

/**
 * What the gateway's callbacks use of `this` (the moleculer-web service). moleculer-web's
 * typings declare some of them as other shapes (`rootCallOptions` as an object), so the
 * schema keeps one cast below; the callbacks themselves are typed.
 */
interface GatewayThis extends LiveFeedsThis {
  broker: ServiceBroker;
  logger: Logger;
  sendError(req: Req, res: ServerResponse, err: unknown): void;
}

type Req = IncomingMessage & {
  $action?: { auth?: AuthLevel; rateLimit?: NamedLimit; name?: string };
  /** The node moleculer-web chose for the call (its balancer), which callAction calls. */
  $endpoint?: { id: string; isAvailable?: boolean };
  $ctx?: Context<unknown, RequestMeta>;
  $alias?: { fullPath?: string; handler?: unknown };
  /** On a public route, the signed-in caller whose request budget applies (not an identity). */
  $budgetUserId?: string;
  originalUrl?: string;
};

/**
 * What happens once a response is done or its client went away, in one `close` listener per
 * request (#16: the two listeners and the BigInt clock it had cost ~10 µs of CPU a request):
 * - a client that left before its answer stops its request at the next call (lib/cancellation.ts);
 * - one access line: method, route (the alias template), path (no query string), status,
 *   duration, request id, node. Never headers or bodies (a token or a password). Probes log at debug.
 */
function onResponseClosed(svc: GatewayThis, req: Req, res: ServerResponse, requestId: string, requestTimeoutMs: number): void {
  const started = performance.now();
  res.once("close", () => {
    const finished = res.writableFinished;
    if (!finished) cancelRequest(svc.broker, requestId, requestTimeoutMs);
    const url = req.originalUrl ?? req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const status = finished ? res.statusCode : 499; // 499: the client closed first
    svc.logger[path.startsWith("/health/") ? "debug" : "info"](
      logFields({
        kind: "access",
        method: req.method,
        route: req.$alias?.fullPath ?? null,
        path,
        status,
        durationMs: Math.round((performance.now() - started) * 10) / 10,
        requestId,
        nodeID: svc.broker.nodeID,
      }),
      `${req.method} ${path} ${status}`,
    );
  });
}

/**
 * The payment platforms' callbacks: a route of their own whose body reader passes the raw
 * bytes (signatures are over them) instead of parsing JSON (raw-body.ts).
 */
export const PAYMENT_NOTIFY_PATH = "/api/payments/notify";

/**
 * The REST contract's routes (API.md): the business ones from the contracts' HTTP rules
 * (routes.ts), and the gateway's own document.
 */
export const API_ALIASES: Record<string, string> = {
  ...contractAliases("/api", [PAYMENT_NOTIFY_PATH]),
  "GET /openapi.json": "api.openapi",
};

export const OPS_ALIASES: Record<string, string> = {
  "GET /health/live": "api.live",
  "GET /health/ready": "api.ready",
  "GET /docs": "api.docs",
};

export const PAYMENT_NOTIFY_ALIASES: Record<string, string> = contractAliases(PAYMENT_NOTIFY_PATH);
/** The built-in sandbox platform's pay page (HTML). */
export const SANDBOX_PAGE_ALIASES: Record<string, string> = contractAliases("/sandbox");

const DOCS_ASSETS = "/docs/assets";

/**
 * moleculer-web's settings, as it reads them. Not its ApiSettingsSchema type: that declares
 * `rootCallOptions` as an object, while moleculer-web also takes (and we use) a function.
 */
type GatewaySettings = ServiceSettingSchema & Record<string, unknown>;

/** moleculer-web's own callAction (ours wraps it with one more try: lib/edge-retry.ts). */
const webCallAction = ApiGateway.methods!.callAction;

export function createGatewayService(config: AppConfig): TypedServiceSchema<GatewayThis, GatewaySettings> {
  // Identity, auth levels and request budgets: the same door as the gRPC edge's (lib/auth/edge-door.ts).
  const door = createEdgeDoor(config);
  // The live feeds' SSE routes (live-sse.ts) reach this service's feeds once it exists. Their
  // handlers, and only they, check identity, level and budget themselves.
  const live: { feeds?: LiveFeeds; logger?: Logger; stopping: AbortController } = { stopping: new AbortController() };
  const sse = liveSseAliases(
    {
      door,
      stopping: live.stopping.signal,
      trustProxyHops: config.trustProxyHops,
      logger: { warn: (...a: unknown[]) => live.logger?.warn(...a), error: (...a: unknown[]) => live.logger?.error(...a) },
    },
    () => live.feeds!,
  );
  const guarded = new Set<unknown>(Object.values(sse));
  const selfGuarded = (req: Req) => req.$action === undefined && guarded.has(req.$alias?.handler);

  // Shared by every route: the conventions live here once.
  const conventions = {
    mappingPolicy: "restrict",
    autoAliases: false,
    // Our own reader: JSON only, size-limited, prototype keys refused (json-body.ts).
    bodyParsers: false,
    use: [jsonBody(config.bodyLimitBytes)],
    authentication: true,
    authorization: true,
    mergeParams: true,
    // moleculer-web's own request and response lines (debug level) build their text, colours and
    // timings even when debug is off: only when they print (#16). The access line is ours (info).
    logging: config.logLevel === "debug" || config.logLevel === "trace",
    callOptions: { timeout: config.requestTimeoutMs },
    onBeforeCall(
      ctx: Context<unknown, RequestMeta>,
      _route: unknown,
      req: IncomingMessage & { $params?: Record<string, unknown>; query?: Record<string, unknown>; $action?: { name?: string } },
    ) {
      if (req.$params && req.$action?.name) convertQueryParams(req.method, req.$action.name, req.$params, req.query);
      ctx.meta.clientIp = clientAddress(req.socket.remoteAddress, req.headers["x-forwarded-for"], config.trustProxyHops);
      // Nothing a client sends may pre-set identity; only `authenticate` below sets it.
      delete ctx.meta.user;
      const key = req.headers["idempotency-key"];
      if (typeof key === "string" && /^[\x21-\x7e]{1,200}$/.test(key)) ctx.meta.idempotencyKey = key;
      else delete ctx.meta.idempotencyKey;
    },
    onAfterCall(ctx: Context<unknown, RequestMeta>, _route: unknown, _req: IncomingMessage, res: ServerResponse, data: unknown) {
      res.setHeader("X-Request-Id", ctx.requestID ?? "");
      return data;
    },
  };

  return {
    name: "api",
    mixins: [ApiGateway, ...LiveFeedsMixin("gateway", config)],
    settings: {
      port: config.port,
      ip: "0.0.0.0",
      log4XXResponses: false,
      logRequest: "debug",
      logResponse: "debug",
      logRequestParams: null,
      logResponseData: null,
      // Every request's Moleculer context (and so every call it makes, on any node) gets the
      // request id: the client's X-Request-Id when sane (X-Correlation-Id is not used), else
      // a new UUID. It is the trace id too, and comes back in the X-Request-Id header.
      rootCallOptions(this: GatewayThis, options: { requestID?: string }, req: Req, res: ServerResponse) {
        const requestId = requestIdOf(req.headers["x-request-id"]);
        options.requestID = requestId;
        res.setHeader("X-Request-Id", requestId);
        // A client that leaves before its answer stops its request; the access line.
        onResponseClosed(this, req, res, requestId, config.requestTimeoutMs);
      },
      routes: [
        // `budget`: requests here count against the request budgets (not the probes, the
        // docs' assets or the platforms' callbacks, which are verified by signature).
        // With the Server-Sent Events of the live feeds, whose handlers check identity, level and
        // budget themselves (live-sse.ts; `selfGuarded` below).
        { ...conventions, path: "/api", aliases: { ...API_ALIASES, ...sse }, budget: true },
        // Swagger UI's files from node_modules (no CDN); served before the catch-all route.
        {
          ...conventions,
          path: DOCS_ASSETS,
          aliases: { [`GET /${DOCS_INIT_SCRIPT_NAME}`]: "api.docsInit" },
          use: [serveStatic(swaggerUiDistPath, { index: false, fallthrough: true, maxAge: "1h" })],
        },
        { ...conventions, path: PAYMENT_NOTIFY_PATH, use: [rawCallbackBody(config.bodyLimitBytes)], aliases: PAYMENT_NOTIFY_ALIASES },
        { ...conventions, path: "/sandbox", aliases: SANDBOX_PAGE_ALIASES, budget: true },
        { ...conventions, path: "", aliases: OPS_ALIASES },
      ],
      onError(this: GatewayThis, req: Req, res: ServerResponse, err: unknown) {
        const { status, body, retryAfter, headers } = toErrorResponse(err);
        const requestId = req.$ctx?.requestID;
        // One line per failure, and no stack for an expected outage (503): a readiness probe
        // polled every few seconds while a dependency is down must not flood the log.
        if (status === 503)
          this.logger.warn(
            logFields({ requestId }),
            `${req.method} ${req.url}: ${body.error.message} (${(err as Error | undefined)?.name ?? "error"})`,
          );
        else if (status >= 500) this.logger.error(logFields({ requestId }), `${req.method} ${req.url} failed:`, err);
        if (res.headersSent) return void res.end();
        res.statusCode = status;
        res.setHeader("Content-Type", "application/json; charset=utf-8");
        if (retryAfter) res.setHeader("Retry-After", String(retryAfter));
        for (const [name, value] of Object.entries(headers ?? {})) res.setHeader(name, value);
        if (status === 401) res.setHeader("WWW-Authenticate", 'Bearer realm="meridian"');
        if (requestId) res.setHeader("X-Request-Id", requestId);
        res.end(JSON.stringify(body));
      },
    },

    actions: {
      live: {
        auth: "none",
        openapi: {
          summary: "Liveness: the process is up",
          tags: ["operations"],
          response: { type: "object", properties: { status: { type: "string" } } },
        },
        handler() {
          return { status: "ok" };
        },
      },
      ready: {
        auth: "none",
        openapi: {
          summary: "Readiness: every dependency of this node answers (503 names the one that does not)",
          tags: ["operations"],
          errors: [503],
          response: {
            type: "object",
            properties: { status: { type: "string" }, checks: { type: "object", additionalProperties: { type: "string" } } },
          },
        },
        async handler(this: GatewayThis) {
          const report = await checkReadiness(this.broker);
          if (!report.ready)
            throw new AppError("SERVICE_UNAVAILABLE", `Not ready: ${report.down.map((d) => d.dependency).join(", ")} down`, report.down);
          return { status: "ready", checks: report.checks };
        },
      },
      openapi: {
        auth: "none",
        openapi: { summary: "This OpenAPI document, generated from the actions' parameter schemas", tags: ["operations"] },
        handler(this: GatewayThis) {
          const actions = Object.fromEntries(
            (
              this.broker.registry.getActionList({ onlyAvailable: false, skipInternal: true, withEndpoints: false }) as {
                name: string;
                action: object;
              }[]
            ).map((a) => [a.name, a.action]),
          );
          const doc = buildOpenApiDocument({
            info: { title: "Meridian API", version: "1.0.0", description: "Meridian e-commerce backend. Contract: API.md." },
            serverUrl: config.publicUrl,
            routes: [
              { path: "/api", aliases: API_ALIASES },
              // Documented as a raw body ("stream:"), which is what the notify route reads.
              {
                path: PAYMENT_NOTIFY_PATH,
                aliases: Object.fromEntries(Object.entries(PAYMENT_NOTIFY_ALIASES).map(([k, v]) => [k, `stream:${v}`])),
              },
              { path: "/sandbox", aliases: SANDBOX_PAGE_ALIASES },
              { path: "", aliases: OPS_ALIASES },
            ],
            actions: withContracts(actions),
          });
          Object.assign(doc.paths, liveSseOpenApiPaths());
          return doc;
        },
      },
      docs: {
        auth: "none",
        openapi: {
          summary: "Browsable API documentation (Swagger UI)",
          tags: ["operations"],
          contentType: "text/html",
          response: { type: "string" },
        },
        handler(ctx: Context<unknown, RequestMeta>) {
          ctx.meta.$responseType = "text/html; charset=utf-8";
          ctx.meta.$responseHeaders = { "Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY };
          return docsHtml({ specUrl: "/api/openapi.json", assetBase: DOCS_ASSETS });
        },
      },
      docsInit: {
        auth: "none",
        openapi: {
          summary: "Swagger UI initializer script of the docs page",
          tags: ["operations"],
          contentType: "application/javascript",
          response: { type: "string" },
        },
        handler(ctx: Context<unknown, RequestMeta>) {
          ctx.meta.$responseType = "application/javascript; charset=utf-8";
          return docsInitJs;
        },
      },
    },

    // Readiness is this node's own dependencies (its databases, the transporter, the cache:
    // API.md). A service missing elsewhere is not one: with it, one service down would take
    // every gateway out of the load balancer; without it, only that service's routes answer 503.
    methods: {
      /**
       * moleculer-web's call, sent once more when the first was lost in transport and the
       * request is safe to repeat (lib/edge-retry.ts: reads, idempotent actions, keyed writes). A body
       * streamed to the action (a platform's callback) is read once and never repeated.
       */
      async callAction(
        this: GatewayThis,
        route: unknown,
        actionName: string,
        req: Req,
        res: ServerResponse,
        params: unknown,
        isStream?: boolean,
      ): Promise<unknown> {
        try {
          return await webCallAction.call(this, route, actionName, req, res, params, isStream);
        } catch (err) {
          const failed = req.$endpoint;
          const next = isStream
            ? undefined
            : secondTry({
                err,
                action: actionName,
                contract: contracts.actions.get(actionName),
                method: req.method,
                idempotencyKey: req.$ctx?.meta.idempotencyKey,
                failedNode: failed?.id,
                endpoints: this.broker.registry.getActionEndpoints(actionName)?.endpoints ?? [],
                clientGone: res.destroyed,
              });
          if (!next) throw err;
          // Not sent, or lost with the broker node this node was connected to: either way the
          // second try goes once this node's transporter is back (at once when it is connected).
          await transportBack(this.broker);
          if (res.destroyed) throw err; // the client left during the wait
          req.$endpoint = next;
          this.logger.warn(
            logFields({ requestId: req.$ctx?.requestID }),
            `${req.method} ${req.url}: ${(err as Error).name} on node ${failed?.id}; sent once more, to node ${next.id}`,
          );
          return webCallAction.call(this, route, actionName, req, res, params, isStream);
        }
      },
      /** The response body: a value the memory cacher holds is serialized once (lib/cached-json.ts). */
      encodeResponse(_req: Req, _res: ServerResponse, data: unknown): string {
        return jsonOf(data);
      },
      /** Replaces moleculer-web's handler, which logs every non-4xx with its stack: `onError` logs. */
      errorHandler(this: GatewayThis, req: Req, res: ServerResponse, err: unknown) {
        this.sendError(req, res, err);
      },
      /** Identity comes from a verified bearer token and nothing else (lib/auth/edge-door.ts). */
      async authenticate(_ctx: Context, _route: unknown, req: Req) {
        if (selfGuarded(req)) return null;
        const { user, budgetUserId } = await door.authenticate(req.headers.authorization, req.$action?.auth);
        req.$budgetUserId = budgetUserId;
        return user ?? null;
      },
      /**
       * The action's `auth` level (none declared: admin-only, so forgetting it fails closed),
       * then the request budgets on routes that count them; the tightest is reported in
       * `RateLimit-*` headers, and a refusal is a 429 with `Retry-After`.
       */
      async authorize(ctx: Context<unknown, RequestMeta>, route: { opts?: { budget?: boolean } }, req: Req, res: ServerResponse) {
        if (selfGuarded(req)) return;
        door.authorize(req.$action?.auth, ctx.meta.user);
        if (!route.opts?.budget) return;
        const decision = await door.spendBudget({
          user: ctx.meta.user,
          budgetUserId: req.$budgetUserId,
          ip: ctx.meta.clientIp ?? "unknown",
          rateLimit: req.$action?.rateLimit,
        });
        if (decision) for (const [name, value] of Object.entries(rateLimitHeaders(decision))) res.setHeader(name, value);
      },
    },

    created(this: GatewayThis) {
      live.feeds = this.liveFeeds;
      live.logger = this.logger;
    },

    // Runs before moleculer-web's own `stopped` (Moleculer stops a service's own handler first):
    // open streams end here, or the HTTP server's close would wait for them.
    async stopped() {
      live.stopping.abort();
      await door.close();
    },
  };
}

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createGatewayService);
