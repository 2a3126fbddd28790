/**
 * Access tokens: short-lived JWTs signed with HS256 through `jose`. The algorithm,
 * issuer and audience are pinned on verification, so a token signed with `none`, with
 * another algorithm or for another audience is refused. Identity in a request comes only
 * from a token that passed `verifyAccessToken` (the gateway puts it in `ctx.meta.user`).
 */
import { createSecretKey } from "node:crypto";
import { jwtVerify, SignJWT, errors as joseErrors } from "jose";

const ALG = "HS256";
const ISSUER = "meridian";
const AUDIENCE = "meridian-api";

export type Role = "customer" | "admin";

export interface AuthUser {
  id: string;
  role: Role;
}

export interface AccessTokens {
  sign(user: AuthUser): Promise<string>;
  verify(token: string): Promise<AuthUser>;
  ttlSeconds: number;
}

export class InvalidTokenError extends Error {}

export function accessTokens(secret: string, ttlSeconds: number): AccessTokens {
  // A KeyObject built once: given raw bytes, jose imports a key on every call (~25 µs each).
  const key = createSecretKey(Buffer.from(secret, "utf8"));
  return {
    ttlSeconds,
    async sign(user) {
      return new SignJWT({ role: user.role })
        .setProtectedHeader({ alg: ALG, typ: "JWT" })
        .setSubject(user.id)
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setIssuedAt()
        .setExpirationTime(`${ttlSeconds}s`)
        .sign(key);
    },
    async verify(token) {
      try {
        const { payload } = await jwtVerify(token, key, { algorithms: [ALG], issuer: ISSUER, audience: AUDIENCE });
        const role = payload.role;
        if (typeof payload.sub !== "string" || (role !== "customer" && role !== "admin")) throw new InvalidTokenError("bad claims");
        return { id: payload.sub, role };
      } catch (err) {
        if (err instanceof InvalidTokenError || err instanceof joseErrors.JOSEError) throw new InvalidTokenError("invalid token");
        throw err;
      }
    },
  };
}
