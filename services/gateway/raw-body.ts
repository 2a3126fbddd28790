/**
 * Request body reader for the payment platforms' callbacks (POST /api/payments/notify/:provider).
 *
 * The platforms sign the exact bytes they send (Alipay a form body, WeChat Pay and the
 * sandbox JSON), so nothing may parse or re-serialise them here: the body is read as bytes
 * (any content type, size-limited by raw-body while streaming) and handed to the action as
 * base64, with the content type and the headers (credentials left out). The query string
 * is dropped: a callback carries nothing there, and nothing from it may mix into the params.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import getRawBody from "raw-body";
import { AppError, malformed } from "../../lib/errors";

type Req = IncomingMessage & { body?: unknown; query?: unknown };
type Next = (err?: unknown) => void;

const DROPPED_HEADERS = new Set(["authorization", "cookie", "proxy-authorization"]);

export function rawCallbackBody(limitBytes: number) {
  return function rawCallbackBodyMiddleware(req: Req, _res: ServerResponse, next: Next): void {
    req.query = {};
    // A list of {name, values} (the contract's `Header`), not an object keyed by name: a
    // dynamic-key object has no protobuf shape.
    const headers: { name: string; values: string[] }[] = [];
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined && !DROPPED_HEADERS.has(name)) headers.push({ name, values: Array.isArray(value) ? value : [value] });
    }
    getRawBody(req, { limit: limitBytes, length: req.headers["content-length"] })
      .then((bytes) => {
        req.body = { rawBody: bytes.toString("base64"), contentType: req.headers["content-type"] ?? "", headers };
        next();
      })
      .catch((err: { type?: string }) => {
        if (err.type === "entity.too.large")
          return next(new AppError("PAYLOAD_TOO_LARGE", `Request body is larger than ${limitBytes} bytes`));
        if (err.type === "request.size.invalid") return next(malformed("Request body length does not match Content-Length"));
        next(malformed("Request body could not be read"));
      });
  };
}
