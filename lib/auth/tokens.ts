/**
 * Access tokens: short-lived JWTs signed with HS256 through `jose`. The algorithm,
 * issuer and audience are pinned on verification, and `exp`, `iat`, `sub`, `sid` and `jti`
 * are required, so a token signed with `none`, with another algorithm, for another
 * audience, or without an expiry is refused. Identity in a request comes only from a token
 * that passed `verify` (the gateway puts it in `ctx.meta.user`).
 *
 * `sid` is the login the token belongs to (its refresh-token family): logging out or a
 * detected refresh-token theft revokes that session, and the gateway then refuses every
 * access token carrying its `sid` until they expire (lib/auth/revocations.ts). A token's
 * signature alone cannot say that.
 */
import { createSecretKey, randomUUID } from "node:crypto";
import { jwtVerify, SignJWT, errors as joseErrors } from "jose";

const ALG = "HS256";
const ISSUER = "meridian";
const AUDIENCE = "meridian-api";
const REQUIRED_CLAIMS = ["exp", "iat", "sub", "sid", "jti"];

export type Role = "customer" | "admin";

export interface AuthUser {
  id: string;
  role: Role;
}

/** A token that passed verification: who, which login, and when it stops working. */
export interface VerifiedToken extends AuthUser {
  sessionId: string;
  tokenId: string;
  /** Epoch seconds. */
  issuedAt: number;
  /** Epoch seconds. */
  expiresAt: number;
}

export interface AccessTokens {
  sign(user: AuthUser & { sessionId: string }): Promise<string>;
  verify(token: string): Promise<VerifiedToken>;
  ttlSeconds: number;
}

export class InvalidTokenError extends Error {}

export function accessTokens(secret: string, ttlSeconds: number): AccessTokens {
  // A KeyObject built once: given raw bytes, jose imports a key on every call (~25 µs each).
  const key = createSecretKey(Buffer.from(secret, "utf8"));
  return {
    ttlSeconds,
    async sign(user) {
      return new SignJWT({ role: user.role, sid: user.sessionId })
        .setProtectedHeader({ alg: ALG, typ: "JWT" })
        .setSubject(user.id)
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setJti(randomUUID())
        .setIssuedAt()
        .setExpirationTime(`${ttlSeconds}s`)
        .sign(key);
    },
    async verify(token) {
      try {
        const { payload } = await jwtVerify(token, key, { algorithms: [ALG], issuer: ISSUER, audience: AUDIENCE, requiredClaims: REQUIRED_CLAIMS });
        const { role, sid, sub, jti, exp, iat } = payload;
        if (typeof sub !== "string" || typeof sid !== "string" || typeof jti !== "string" || typeof exp !== "number" || typeof iat !== "number" || (role !== "customer" && role !== "admin"))
          throw new InvalidTokenError("bad claims");
        return { id: sub, role, sessionId: sid, tokenId: jti, issuedAt: iat, expiresAt: exp };
      } catch (err) {
        if (err instanceof InvalidTokenError || err instanceof joseErrors.JOSEError) throw new InvalidTokenError("invalid token");
        throw err;
      }
    },
  };
}
