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
