/**
 * Errors as clients see them. Every error has a stable `code` from the one catalog
 * (lib/error-catalog.ts), and leaves the gateway as `{"error": {"code", "message", "details"}}` (API.md).
 * Services throw `AppError`s; Moleculer serializes `type` (our code), `code` (the HTTP
 * status) and `data` (details) across nodes, so a remote error keeps its meaning.
 */
import { Errors } from "moleculer";
import { ERROR_STATUS, type ErrorCode } from "./error-catalog";

export { ERROR_STATUS, type ErrorCode };

export interface ErrorBody {
  error: { code: string; message: string; details: unknown[] };
}

export class AppError extends Errors.MoleculerClientError {
  constructor(code: ErrorCode, message: string, details: unknown[] = [], status: number = ERROR_STATUS[code]) {
    // A 4xx is an answer, not a fault: it is built without a stack trace. Capturing one, then
    // formatting it through the source maps when Moleculer copies `stack` into the response
    // packet, was ~0.2 ms of the gateway's CPU per refusal in the flash sale (900 of them).
    // A 5xx keeps its stack for the log.
    const limit = Error.stackTraceLimit;
    if (status < 500) Error.stackTraceLimit = 0;
    try {
      // MoleculerClientError: retryable=false; `type` carries our code over the wire.
      super(message, status, code, details);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }
}

export const validationError = (message: string, details: unknown[] = []) => new AppError("VALIDATION_ERROR", message, details);
export const malformed = (message: string, details: unknown[] = []) => new AppError("MALFORMED_REQUEST", message, details, 400);
export const unauthorized = (message = "Authentication required") => new AppError("UNAUTHORIZED", message);
export const forbidden = (message = "Not allowed") => new AppError("FORBIDDEN", message);
/** The catalog code of an error from a call (an AppError, or one rebuilt from the wire), if any. */
export const errorCode = (err: unknown): string | undefined => (err as { type?: string } | undefined)?.type;
export const notFound = (what = "Resource") => new AppError("NOT_FOUND", `${what} not found`);
export const conflict = (message: string, details: unknown[] = []) => new AppError("CONFLICT", message, details);
/**
 * 429 for a refused rate-limit decision; its details carry the figures the gateway turns into
 * `Retry-After` and the IETF draft's `RateLimit-Limit`/`-Remaining`/`-Reset` headers.
 */
export const rateLimited = (d: { name: string; limit: number; resetSeconds: number; retryAfterSeconds?: number }) =>
  new AppError("RATE_LIMITED", "Too many requests, try again later", [
    {
      limitName: d.name,
      limit: d.limit,
      remaining: 0,
      resetSeconds: d.resetSeconds,
      retryAfterSeconds: d.retryAfterSeconds ?? d.resetSeconds,
    },
  ]);

/**
 * Errors that mean a dependency is away for a while (database, message broker), not that the
 * request or the code is wrong: the client may retry, so they are 503, not 500. Found by the
 * chaos runs: a MariaDB restart surfaced as `ECONNREFUSED` from knex, a RabbitMQ restart as
 * Moleculer's `BrokerDisconnectedError`.
 */
const DEPENDENCY_DOWN_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "PROTOCOL_CONNECTION_LOST",
  "ER_SERVER_SHUTDOWN",
  "ER_CON_COUNT_ERROR",
  "ER_LOCK_WAIT_TIMEOUT",
  "ER_LOCK_DEADLOCK",
  "SQLITE_BUSY",
]);
const DEPENDENCY_DOWN_NAMES = new Set(["BrokerDisconnectedError", "KnexTimeoutError"]);

/** A database or broker connection failure (mysql2 marks a dead connection's errors `fatal`). */
export function isDependencyDown(err: unknown): boolean {
  const e = (err ?? {}) as { name?: string; code?: unknown; fatal?: unknown };
  return DEPENDENCY_DOWN_NAMES.has(e.name ?? "") || (typeof e.code === "string" && DEPENDENCY_DOWN_CODES.has(e.code)) || e.fatal === true;
}

const unavailable = () => new AppError("SERVICE_UNAVAILABLE", "A service needed for this request is unavailable");

/**
 * Broker middleware: an action that fails because its database (or the broker) is away
 * answers SERVICE_UNAVAILABLE (503) from where it happened, so the meaning survives the trip to
 * the gateway (a driver error's own properties, such as mysql2's `fatal`, would not).
 */
export const DependencyErrorsMiddleware = {
  name: "DependencyErrors",
  localAction(next: (ctx: unknown) => Promise<unknown>) {
    return (ctx: unknown) =>
      next(ctx).catch((err: unknown) => {
        throw isDependencyDown(err) ? unavailable() : err;
      });
  },
};

/**
 * Maps anything thrown (our errors, Moleculer's, moleculer-web's, body parser's, a bug)
 * to a status and the contract's body. Unknown errors become INTERNAL with a generic
 * message: no stack, no internal message leaves the server.
 */
export function toErrorResponse(err: unknown): { status: number; body: ErrorBody; retryAfter?: number; headers?: Record<string, string> } {
  const e = (err ?? {}) as { name?: string; message?: string; code?: unknown; type?: unknown; data?: unknown };
  const status = typeof e.code === "number" ? e.code : 500;
  const type = typeof e.type === "string" ? e.type : "";
  const body = (code: string, message: string, details: unknown[] = []): ErrorBody => ({
    error: { code, message, details },
  });

  // Moleculer's parameter validator (fastest-validator): 422 with the failed fields only —
  // never `actual` (it would echo the input back, a password included) or the node id.
  if (e.name === "ValidationError" && status === 422) {
    const details = Array.isArray(e.data)
      ? e.data.map((d: { field?: string; message?: string; type?: string }) => ({
          field: d.field,
          message: d.message,
          type: d.type,
        }))
      : [];
    return { status: 422, body: body("VALIDATION_ERROR", "Request parameters are invalid", details) };
  }
  if (type in ERROR_STATUS && status >= 400 && status < 600) {
    const code = type === "MALFORMED_REQUEST" ? "VALIDATION_ERROR" : type;
    const details = Array.isArray(e.data) ? e.data : [];
    if (type === "RATE_LIMITED") {
      const d = (details[0] ?? {}) as { retryAfterSeconds?: number; limit?: number; resetSeconds?: number };
      const headers: Record<string, string> = {};
      if (typeof d.limit === "number" && typeof d.resetSeconds === "number")
        Object.assign(headers, {
          "RateLimit-Limit": String(d.limit),
          "RateLimit-Remaining": "0",
          "RateLimit-Reset": String(d.resetSeconds),
        });
      return { status, body: body(code, e.message ?? code, details), retryAfter: d.retryAfterSeconds, headers };
    }
    return { status, body: body(code, e.message ?? code, details) };
  }
  if (isDependencyDown(err))
    return { status: 503, body: body("SERVICE_UNAVAILABLE", "A service needed for this request is unavailable"), retryAfter: 1 };
  // moleculer-web's own errors.
  switch (e.name) {
    case "NotFoundError":
    case "ServiceNotFoundError":
      // An alias that exists but whose service is gone is an outage, not a missing route.
      if (e.name === "ServiceNotFoundError")
        return { status: 503, body: body("SERVICE_UNAVAILABLE", "A service needed for this request is unavailable") };
      return { status: 404, body: body("NOT_FOUND", "Not found") };
    case "UnAuthorizedError":
      return { status: 401, body: body("UNAUTHORIZED", "Authentication required") };
    case "ForbiddenError":
      return { status: 403, body: body("FORBIDDEN", "Not allowed") };
    case "PayloadTooLarge":
      return { status: 413, body: body("PAYLOAD_TOO_LARGE", "Request body is too large") };
    case "RequestTimeoutError":
    case "RequestSkippedError": // no time left for a nested call of a request that timed out
    case "RequestRejectedError": // the node handling the call went away mid-request (kill -9, restart)
    case "ServiceNotAvailableError":
    case "ServiceUnavailableError": // moleculer-web: an alias whose service no node offers
      return { status: 503, body: body("SERVICE_UNAVAILABLE", "A service needed for this request is unavailable") };
  }
  if (status >= 400 && status < 500) {
    const code =
      status === 401
        ? "UNAUTHORIZED"
        : status === 403
          ? "FORBIDDEN"
          : status === 404
            ? "NOT_FOUND"
            : status === 413
              ? "PAYLOAD_TOO_LARGE"
              : status === 415
                ? "UNSUPPORTED_MEDIA_TYPE"
                : status === 429
                  ? "RATE_LIMITED"
                  : status === 409
                    ? "CONFLICT"
                    : "VALIDATION_ERROR";
    return { status, body: body(code, "The request could not be processed") };
  }
  return { status: 500, body: body("INTERNAL", "Internal server error") };
}
