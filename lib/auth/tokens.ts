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
 *
 * Cost (#16, bench/RESULTS.md): jose verifies through WebCrypto; given a KeyObject it turns it
 * into a CryptoKey on every call (~150 µs of CPU a verification here), given a CryptoKey
 * imported once ~40-75 µs. A verified token is also remembered (the most recent
 * VERIFIED_CACHE_SIZE, by the whole token text, signature included, until its `exp`), so a
 * client's next requests with the same token cost a map lookup. Guarantee and limit: a
 * remembered entry says only what the signature said; whether the login has ended or the role
 * changed is asked of the revocation store on every request all the same (lib/auth/edge-door.ts).
 */
import { randomUUID } from "node:crypto";
import { jwtVerify, SignJWT, errors as joseErrors } from "jose";
import { LRUCache } from "lru-cache";

const ALG = "HS256";
const ISSUER = "meridian";
const AUDIENCE = "meridian-api";
const REQUIRED_CLAIMS = ["exp", "iat", "sub", "sid", "jti"];
/** Verified tokens remembered per process (~0.5 KB each). */
const VERIFIED_CACHE_SIZE = 10_000;

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
  // A CryptoKey imported once, on first use (see the header for what a KeyObject or raw bytes
  // cost); imported lazily so a key WebCrypto refuses fails a request, not the process.
  let imported: ReturnType<typeof crypto.subtle.importKey> | undefined;
  const keyOf = () =>
    (imported ??= crypto.subtle.importKey("raw", Buffer.from(secret, "utf8"), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]));
  const verified = new LRUCache<string, VerifiedToken>({ max: VERIFIED_CACHE_SIZE });
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
        .sign(await keyOf());
    },
    async verify(token) {
      const known = verified.get(token);
      if (known) {
        // jose's rule for `exp` (no clock tolerance): expired from that second on.
        if (known.expiresAt > Math.floor(Date.now() / 1000)) return known;
        verified.delete(token);
        throw new InvalidTokenError("invalid token");
      }
      try {
        const { payload } = await jwtVerify(token, await keyOf(), {
          algorithms: [ALG],
          issuer: ISSUER,
          audience: AUDIENCE,
          requiredClaims: REQUIRED_CLAIMS,
        });
        const { role, sid, sub, jti, exp, iat } = payload;
        if (
          typeof sub !== "string" ||
          typeof sid !== "string" ||
          typeof jti !== "string" ||
          typeof exp !== "number" ||
          typeof iat !== "number" ||
          (role !== "customer" && role !== "admin")
        )
          throw new InvalidTokenError("bad claims");
        const result: VerifiedToken = { id: sub, role, sessionId: sid, tokenId: jti, issuedAt: iat, expiresAt: exp };
        verified.set(token, Object.freeze(result));
        return result;
      } catch (err) {
        if (err instanceof InvalidTokenError || err instanceof joseErrors.JOSEError) throw new InvalidTokenError("invalid token");
        throw err;
      }
    },
  };
}
