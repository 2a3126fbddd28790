/**
 * The door every edge (the REST gateway, the gRPC edge) lets a request through, written once so
 * both edges hold the same rules:
 * - identity only from a verified bearer access token whose login has not ended and whose
 *   role is read from the revocation store (a role change applies to tokens already issued);
 *   an unreachable store fails closed (SERVICE_UNAVAILABLE), never open;
 * - an action without a declared `auth` level is admin-only;
 * - the request budgets (RATE_LIMITS): the caller's general one (per user when signed in,
 *   else per address) and the action's own, consumed before the call.
 */
import type { AppConfig } from "../config";
import type { AuthLevel } from "../context";
import { AppError, forbidden, rateLimited, unauthorized } from "../errors";
import type { RateDecision } from "../rate-limit";
import { requestLimits, type NamedLimit } from "../request-limits";
import { createRevocations, type TokenStanding } from "./revocations";
import { accessTokens, type AuthUser, type VerifiedToken } from "./tokens";

/** `Bearer <JWT>`: three base64url parts; anything else is malformed. */
const BEARER = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/;

export interface Admission {
  /** The verified caller, on an action that takes identity (auth user/admin). */
  user?: AuthUser;
  /** On a public action, the signed-in caller whose request budget applies (not an identity). */
  budgetUserId?: string;
  /** With `user`: when the token stops working (epoch seconds); a long-lived stream ends then. */
  expiresAt?: number;
}

export interface EdgeDoor {
  /**
   * Who is calling, from the `authorization` value (or none). On a public action a token
   * names only whose budget is spent; elsewhere a malformed, invalid, expired or ended one
   * is UNAUTHORIZED. Does not check the level (see `authorize`).
   */
  authenticate(authorization: string | undefined, level: AuthLevel | undefined): Promise<Admission>;
  /** The level check: UNAUTHORIZED without a caller, FORBIDDEN for a customer on an admin action. */
  authorize(level: AuthLevel | undefined, user: AuthUser | undefined): void;
  /**
   * Spends the request budgets (nothing when RATE_LIMITS is off); answers the tightest
   * decision for the edge to report, or throws RATE_LIMITED with the retry delay.
   */
  spendBudget(r: { user?: AuthUser; budgetUserId?: string; ip: string; rateLimit?: NamedLimit }): Promise<RateDecision | undefined>;
  close(): Promise<void>;
}

export function createEdgeDoor(config: AppConfig): EdgeDoor {
  const tokens = accessTokens(config.jwtSecret, config.accessTokenTtlS);
  const revocations = createRevocations(config);
  const limits = config.rateLimits.enabled ? requestLimits(config) : undefined;
  return {
    async authenticate(authorization, declared) {
      // No level declared (undefined or null) is admin-only: forgetting it fails closed.
      const level = declared ?? "admin";
      if (!authorization) return {};
      const m = BEARER.exec(authorization.trim());
      if (level === "none") {
        // No identity on a public action; but a valid token still names whose request budget
        // it spends, so signed-in shoppers behind one address do not share the anonymous one.
        if (!m || !limits) return {};
        return {
          budgetUserId: await tokens.verify(m[1]).then(
            (t) => t.id,
            () => undefined,
          ),
        };
      }
      if (!m) throw unauthorized("Malformed Authorization header; expected 'Bearer <token>'");
      let token: VerifiedToken;
      try {
        token = await tokens.verify(m[1]);
      } catch {
        throw unauthorized("Invalid or expired access token");
      }
      // A valid signature is not enough: the login may have ended (logout, theft detected)
      // or the role changed since the token was issued. Unknown (store unreachable) fails closed.
      let standing: TokenStanding;
      try {
        standing = await revocations.standing(token.sessionId, token.id, token.issuedAt);
      } catch {
        throw new AppError("SERVICE_UNAVAILABLE", "Sign-in cannot be checked right now; try again");
      }
      if (standing.revoked) throw unauthorized("This session has ended; log in again");
      return { user: { id: token.id, role: standing.role ?? token.role }, expiresAt: token.expiresAt };
    },

    authorize(declared, user) {
      const level = declared ?? "admin";
      if (level === "none" || level === "optional") return;
      if (!user) throw unauthorized();
      if (level === "admin" && user.role !== "admin") throw forbidden();
    },

    async spendBudget({ user, budgetUserId, ip, rateLimit }) {
      if (!limits) return undefined;
      const decision = await limits.check({ userId: user?.id ?? budgetUserId, ip, action: rateLimit, admin: user?.role === "admin" });
      if (decision?.retryAfterSeconds !== undefined) throw rateLimited(decision);
      return decision;
    },

    async close() {
      await Promise.all([revocations.close(), limits?.close()]);
    },
  };
}
