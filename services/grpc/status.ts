/**
 * Errors as a gRPC client sees them: the status code of the error catalog
 * (lib/error-catalog.ts ERROR_GRPC_STATUS), the message of the REST answer, and the rich error
 * model (google.rpc.Status in the `grpc-status-details-bin` trailer, as Google's APIs send it):
 * - `google.rpc.ErrorInfo`: reason = the catalog code (`OUT_OF_STOCK`), domain
 *   `meridian`, metadata `httpStatus` and, when there are any, the REST answer's `details` as JSON;
 * - `google.rpc.BadRequest`: one field violation per detail that names a field (INVALID_ARGUMENT);
 * - `google.rpc.RetryInfo`: the delay after which a retry may pass (a rate limit, an outage).
 * The mapping starts from `toErrorResponse`, the REST edge's own: anything unknown is INTERNAL
 * with a generic message, and no stack or internal message leaves the server.
 */
import path from "node:path";
import { Metadata, status as Status } from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { ERROR_GRPC_STATUS, type ErrorCode } from "../../lib/error-catalog";
import { toErrorResponse } from "../../lib/errors";

/** googleapis' google/rpc/*.proto, from the google-proto-files package (no copy of our own). */
const GOOGLE_PROTOS = path.dirname(require.resolve("google-proto-files/package.json"));
const rpc = (() => {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(GOOGLE_PROTOS, target);
  // keepCase: protobufjs's google.protobuf.Any knows only `type_url` (camelCase would drop it).
  root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
  root.resolveAll();
  return {
    Status: root.lookupType("google.rpc.Status"),
    ErrorInfo: root.lookupType("google.rpc.ErrorInfo"),
    BadRequest: root.lookupType("google.rpc.BadRequest"),
    RetryInfo: root.lookupType("google.rpc.RetryInfo"),
  };
})();

export const ERROR_DOMAIN = "meridian";
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

const any = (type: protobuf.Type, value: object) => ({
  type_url: `type.googleapis.com/${type.fullName.slice(1)}`,
  value: type.encode(type.fromObject(value)).finish(),
});

export interface GrpcError {
  code: Status;
  details: string;
  metadata: Metadata;
  /** The catalog code, for logs and metrics. */
  reason: string;
  /** The REST edge's status for the same error (5xx are logged). */
  httpStatus: number;
}

type Detail = { field?: unknown; message?: unknown; type?: unknown };

/** Any error thrown by a call → the gRPC status and its rich details. */
export function toGrpcError(err: unknown): GrpcError {
  const { status: httpStatus, body, retryAfter } = toErrorResponse(err);
  const reason = body.error.code;
  const details = body.error.details as Detail[];
  let name: keyof typeof Status = (ERROR_GRPC_STATUS as Record<string, keyof typeof Status>)[reason as ErrorCode] ?? "INTERNAL";
  if (reason === "CONFLICT" && details.some((d) => d?.type === "unique")) name = "ALREADY_EXISTS";
  const code = Status[name];

  const metadataOfInfo: Record<string, string> = { httpStatus: String(httpStatus) };
  if (details.length) metadataOfInfo.details = JSON.stringify(details);
  const extra = [any(rpc.ErrorInfo, { reason, domain: ERROR_DOMAIN, metadata: metadataOfInfo })];
  const violations = details.filter((d) => typeof d?.field === "string");
  if (code === Status.INVALID_ARGUMENT && violations.length)
    extra.push(
      any(rpc.BadRequest, {
        field_violations: violations.map((d) => ({
          field: d.field,
          description: typeof d.message === "string" ? d.message : typeof d.type === "string" ? d.type : body.error.message,
        })),
      }),
    );
  if (retryAfter !== undefined) extra.push(any(rpc.RetryInfo, { retry_delay: { seconds: retryAfter } }));

  const metadata = new Metadata();
  metadata.set(
    STATUS_DETAILS_KEY,
    Buffer.from(rpc.Status.encode(rpc.Status.fromObject({ code, message: body.error.message, details: extra })).finish()),
  );
  return { code, details: body.error.message, metadata, reason, httpStatus };
}
