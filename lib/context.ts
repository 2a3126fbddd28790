/**
 * What the gateway puts in `ctx.meta`. `user` is set only from a verified access token;
 * nothing a client sends in a body, query or header other than that token can set it.
 */
import type { Context } from "moleculer";
import type { AuthUser } from "./auth/tokens";
import { unauthorized } from "./errors";

export interface RequestMeta {
  user?: AuthUser;
  clientIp?: string;
  requestId?: string;
  /** The client's `Idempotency-Key` header (1–200 printable characters), when it sent one. */
  idempotencyKey?: string;
  $statusCode?: number;
  $location?: string;
  $responseType?: string;
  $responseHeaders?: Record<string, string>;
}

export type RequestContext<P = Record<string, unknown>> = Context<P, RequestMeta>;

export function requireUser<P>(ctx: RequestContext<P>): AuthUser {
  const user = ctx.meta.user;
  if (!user) throw unauthorized();
  return user;
}

/** Who may call an action through the gateway; read by the gateway and the OpenAPI generator. */
export type AuthLevel = "none" | "optional" | "user" | "admin";
