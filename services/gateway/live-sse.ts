/**
 * The live feeds (lib/live/feeds.ts) on REST as Server-Sent Events, the same feeds the gRPC
 * edge streams (meridian.live.v1.LiveService):
 * - `GET /api/orders/:id/events`: `event: order`, `id:` the order's sequence (its status
 *   changes so far), `data:` `{"sequence", "order"}` (the order as GET /api/orders/:id);
 * - `GET /api/notifications/stream`: `event: notification`, `id:` the notification's id,
 *   `data:` the notification as GET /api/notifications lists it.
 * A reconnecting EventSource sends `Last-Event-ID` (or `?after=` by hand): the stream resumes
 * after it, missing nothing (see lib/live/feeds.ts for what that means per feed). A comment
 * line every 15 s keeps proxies from closing an idle stream. Errors before the stream starts
 * are the usual JSON error answer (401, 404, 429); after it, an `event: error` with the same
 * body, then the end.
 */
import { once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { EdgeDoor } from "../../lib/auth/edge-door";
import { clientAddress } from "../../lib/client-address";
import { toErrorResponse, unauthorized, validationError } from "../../lib/errors";
import { admitStream, type LiveFeeds, type StreamAdmission, type StreamOptions } from "../../lib/live/feeds";
import { periodic } from "../../lib/periodic";
import { logFields } from "../../lib/tracing";

/** How often an idle stream gets a comment line (proxies close idle connections, often at 60 s). */
const HEARTBEAT_MS = 15_000;

export interface SseDeps {
  door: EdgeDoor;
  /** Aborted when the gateway stops: open streams end, so its server can close. */
  stopping: AbortSignal;
  trustProxyHops: number;
  logger: { warn(...a: unknown[]): void; error(...a: unknown[]): void };
}

interface SseEvent {
  id: string;
  event: string;
  data: unknown;
}

type Req = IncomingMessage & { $params?: Record<string, unknown>; $ctx?: { requestID?: string | null } };
type Next = (err?: unknown) => void;

/** The `id` of the last event the client had: `Last-Event-ID` (EventSource's reconnect), else `?after=`. */
function lastEventId(req: Req): string | undefined {
  const header = req.headers["last-event-id"];
  const v = typeof header === "string" && header !== "" ? header : req.$params?.after;
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(v))
    throw validationError("Last-Event-ID (or after): the id of an event of this stream", [{ field: "Last-Event-ID" }]);
  return v;
}

async function stream(
  deps: SseDeps,
  req: Req,
  res: ServerResponse,
  next: Next,
  open: (after: string | undefined, o: StreamOptions) => AsyncIterable<SseEvent>,
): Promise<void> {
  // The response's 'close' (the client left, or the answer ended): the request's own 'close'
  // fired already, when its empty body was read.
  const gone = new AbortController();
  const stop = () => gone.abort();
  res.once("close", stop);
  deps.stopping.addEventListener("abort", stop, { once: true });
  if (deps.stopping.aborted) stop();
  let started = false;
  let heartbeat: { stop(): Promise<void> } | undefined;
  let admission: StreamAdmission | undefined;
  // The answer starts once the feed's first read succeeded: before that, a failure (someone
  // else's order: 404) is a plain error answer.
  const start = () => {
    if (started) return;
    started = true;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache, no-transform",
      // nginx (ingress-nginx) buffers responses unless told not to.
      "X-Accel-Buffering": "no",
      ...(req.$ctx?.requestID ? { "X-Request-Id": req.$ctx.requestID } : {}),
    });
    res.write(": stream open\n\n");
    heartbeat = periodic("SSE heartbeat", HEARTBEAT_MS, async () => void res.write(": keep-alive\n\n"), deps.logger);
  };
  try {
    const after = lastEventId(req);
    admission = await admitStream(
      deps.door,
      req.headers.authorization,
      clientAddress(req.socket.remoteAddress, req.headers["x-forwarded-for"], deps.trustProxyHops),
      gone.signal,
    );
    const { caller, signal } = admission;
    for await (const e of open(after, { caller, signal, opened: start })) {
      if (signal.aborted) break;
      start();
      if (!res.write(`id: ${e.id}\nevent: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`))
        await once(res, "drain", { signal }).catch(() => undefined);
    }
    if (admission.expired()) throw unauthorized("The access token expired; reconnect with a fresh one (Last-Event-ID resumes)");
    res.end();
  } catch (err) {
    if (gone.signal.aborted) return void res.end();
    if (!started) return next(err);
    const { status, body } = toErrorResponse(err);
    if (status >= 500 && status !== 503)
      deps.logger.error(logFields({ requestId: req.$ctx?.requestID ?? undefined }), `${req.url}: the stream failed:`, err);
    res.end(`event: error\ndata: ${JSON.stringify(body)}\n\n`);
  } finally {
    admission?.close();
    deps.stopping.removeEventListener("abort", stop);
    gone.abort();
    await heartbeat?.stop();
  }
}

/** The gateway's SSE aliases (function aliases of moleculer-web), bound to the gateway's feeds. */
export function liveSseAliases(deps: SseDeps, feeds: () => LiveFeeds): Record<string, (req: Req, res: ServerResponse, next: Next) => void> {
  return {
    "GET /orders/:id/events": (req, res, next) =>
      void stream(deps, req, res, next, async function* (after, o) {
        const since = after === undefined ? undefined : Number(after);
        if (since !== undefined && !Number.isInteger(since))
          throw validationError("Last-Event-ID (or after): an order stream's sequence", [{ field: "Last-Event-ID" }]);
        for await (const u of feeds().watchOrder(typeof req.$params?.id === "string" ? req.$params.id : "", since, o))
          yield { id: String(u.sequence), event: "order", data: u };
      }),
    "GET /notifications/stream": (req, res, next) =>
      void stream(deps, req, res, next, async function* (after, o) {
        for await (const n of feeds().notifications(after, o)) yield { id: n.id, event: "notification", data: n };
      }),
  };
}

/** The SSE routes in the OpenAPI document (moleculer-web function aliases are not actions: described here, beside them). */
export function liveSseOpenApiPaths(): Record<string, object> {
  const resume = [
    {
      name: "Last-Event-ID",
      in: "header",
      required: false,
      description: "The `id` of the last event received (an EventSource sends it when it reconnects): the stream resumes after it.",
      schema: { type: "string", maxLength: 64 },
    },
    {
      name: "after",
      in: "query",
      required: false,
      description: "As Last-Event-ID, for a client that cannot set headers.",
      schema: { type: "string", maxLength: 64 },
    },
  ];
  const errors = (codes: number[]) =>
    Object.fromEntries(
      codes.map((c) => [
        String(c),
        {
          $ref: `#/components/responses/${({ 401: "Unauthorized", 404: "NotFound", 422: "UnprocessableEntity", 429: "TooManyRequests", 503: "ServiceUnavailable" } as Record<number, string>)[c]}`,
        },
      ]),
    );
  const stream = (description: string) => ({
    description,
    content: {
      "text/event-stream": {
        schema: {
          type: "string",
          description: "Server-Sent Events: `id:`, `event:`, `data:` (JSON) per event; a comment line every 15 s.",
        },
      },
    },
  });
  return {
    "/api/orders/{id}/events": {
      get: {
        operationId: "liveOrderEvents",
        tags: ["orders"],
        summary: "Live: the order now, then at each status change (Server-Sent Events; gRPC: LiveService/WatchOrder)",
        security: [{ bearerAuth: [] }],
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string", maxLength: 64 } }, ...resume],
        responses: {
          "200": stream(
            '`event: order`, `id:` the sequence (status changes so far), `data:` `{"sequence", "order"}` (the order as GET /api/orders/{id}).',
          ),
          ...errors([401, 404, 422, 429, 503]),
        },
      },
    },
    "/api/notifications/stream": {
      get: {
        operationId: "liveNotifications",
        tags: ["notifications"],
        summary: "Live: my notifications as they are created (Server-Sent Events; gRPC: LiveService/StreamNotifications)",
        security: [{ bearerAuth: [] }],
        parameters: resume,
        responses: {
          "200": stream(
            "`event: notification`, `id:` the notification's id, `data:` the notification (as GET /api/notifications lists it).",
          ),
          ...errors([401, 404, 422, 429, 503]),
        },
      },
    },
  };
}
