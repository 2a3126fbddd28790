/**
 * Request body and query guard for every API route.
 *
 * Written here rather than with body-parser because we need our own answers (415, 413
 * and 400 in the contract's shape) and to refuse `__proto__`, `constructor` and
 * `prototype` keys at any depth, including ones spelled with JSON escapes
 * (`"\u005f_proto__"`), which a text scan would miss: we walk the parsed value. Also
 * `toString` and `valueOf`, the methods JavaScript calls to make a value a string: an array
 * holding `{"toString": 1}` made fastest-validator throw while writing its error message
 * (a 500 on any route with a string field; found by the gateway fuzz). raw-body
 * (body-parser's own reader) enforces the size limit while streaming.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import getRawBody from "raw-body";
import { AppError, malformed } from "../../lib/errors";

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype", "toString", "valueOf"]);
const BODY_METHODS = new Set(["POST", "PUT", "PATCH"]);

type Req = IncomingMessage & { body?: unknown; $rawBody?: Buffer };
type Next = (err?: unknown) => void;

/** Query keys like `a[__proto__][b]` are split on brackets and dots, as `qs` would. */
function forbiddenQueryKey(url: string): string | undefined {
  const q = url.indexOf("?");
  if (q < 0) return undefined;
  let params: URLSearchParams;
  try {
    params = new URLSearchParams(url.slice(q + 1));
  } catch {
    return undefined;
  }
  for (const key of params.keys()) {
    const bad = key.split(/[[\].]+/).find((part) => FORBIDDEN_KEYS.has(part));
    if (bad) return bad;
  }
  return undefined;
}

function isJsonType(contentType: string | undefined): boolean {
  if (!contentType) return false;
  const type = contentType.split(";")[0].trim().toLowerCase();
  return type === "application/json" || (type.startsWith("application/") && type.endsWith("+json"));
}

export function jsonBody(limitBytes: number) {
  return function jsonBodyMiddleware(req: Req, _res: ServerResponse, next: Next): void {
    const badKey = forbiddenQueryKey(req.url ?? "");
    if (badKey) return next(malformed(`Query key '${badKey}' is not allowed`));
    if (!BODY_METHODS.has(req.method ?? "")) {
      // A body on GET/DELETE carries no meaning here; drain it so the socket stays usable.
      req.resume();
      req.body = {};
      return next();
    }
    const declared = req.headers["content-length"];
    const chunked = (req.headers["transfer-encoding"] ?? "").length > 0;
    if (!chunked && (declared === undefined || declared === "0")) {
      req.body = {};
      return next();
    }
    if (!isJsonType(req.headers["content-type"])) {
      req.resume();
      return next(new AppError("UNSUPPORTED_MEDIA_TYPE", "Request body must be application/json"));
    }
    getRawBody(req, { limit: limitBytes, length: declared, encoding: "utf8" })
      .then((text) => {
        if (text.trim() === "") {
          req.body = {};
          return next();
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          return next(malformed("Malformed JSON body"));
        }
        if (hasForbiddenKey(parsed))
          return next(malformed("Keys '__proto__', 'constructor', 'prototype', 'toString' and 'valueOf' are not allowed"));
        if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
          return next(malformed("Request body must be a JSON object"));
        req.body = parsed;
        next();
      })
      .catch((err: { type?: string; status?: number }) => {
        if (err.type === "entity.too.large")
          return next(new AppError("PAYLOAD_TOO_LARGE", `Request body is larger than ${limitBytes} bytes`));
        if (err.type === "request.size.invalid") return next(malformed("Request body length does not match Content-Length"));
        if (err.type === "encoding.unsupported") return next(new AppError("UNSUPPORTED_MEDIA_TYPE", "Unsupported body charset"));
        // Aborted or broken uploads: the client is gone or sent garbage; a 400 either way.
        next(malformed("Request body could not be read"));
      });
  };
}

function hasForbiddenKey(value: unknown, depth = 0): boolean {
  if (depth > 64) return true; // absurd nesting: refuse rather than recurse without end
  if (Array.isArray(value)) return value.some((v) => hasForbiddenKey(v, depth + 1));
  if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (FORBIDDEN_KEYS.has(k) || hasForbiddenKey(v, depth + 1)) return true;
    }
  }
  return false;
}
