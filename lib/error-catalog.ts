/**
 * The one catalog of error codes a client can see, with their HTTP status: the gateway's
 * error mapping (lib/errors.ts) and the OpenAPI document (lib/openapi.ts) both read it, so a
 * code added here is documented everywhere. Pure (no Moleculer), for the document builder.
 */
export const ERROR_STATUS = {
  VALIDATION_ERROR: 422,
  MALFORMED_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  OUT_OF_STOCK: 409,
  UNPAID_LIMIT: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  SERVICE_UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/**
 * The gRPC status of each code (the gRPC edge, services/grpc), beside its HTTP status; the
 * code itself travels in `google.rpc.ErrorInfo.reason`. Two refinements the code alone does
 * not carry: a CONFLICT whose details name a `unique` rule (an e-mail or sku taken) is
 * ALREADY_EXISTS, and RATE_LIMITED carries `google.rpc.RetryInfo`.
 */
export const ERROR_GRPC_STATUS = {
  VALIDATION_ERROR: "INVALID_ARGUMENT",
  MALFORMED_REQUEST: "INVALID_ARGUMENT",
  UNAUTHORIZED: "UNAUTHENTICATED",
  FORBIDDEN: "PERMISSION_DENIED",
  NOT_FOUND: "NOT_FOUND",
  METHOD_NOT_ALLOWED: "UNIMPLEMENTED",
  // A state conflict: the request cannot apply to the thing as it is now.
  CONFLICT: "FAILED_PRECONDITION",
  // The stock was there a moment ago: retrying the whole checkout may succeed (AIP-193's ABORTED).
  OUT_OF_STOCK: "ABORTED",
  // A per-user quota (unpaid orders), not a state conflict.
  UNPAID_LIMIT: "RESOURCE_EXHAUSTED",
  PAYLOAD_TOO_LARGE: "RESOURCE_EXHAUSTED",
  UNSUPPORTED_MEDIA_TYPE: "INVALID_ARGUMENT",
  RATE_LIMITED: "RESOURCE_EXHAUSTED",
  INTERNAL: "INTERNAL",
  SERVICE_UNAVAILABLE: "UNAVAILABLE",
} as const satisfies Record<ErrorCode, string>;
