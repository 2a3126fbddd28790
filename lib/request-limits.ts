/**
 * The request budgets every edge enforces before it calls an action (the REST gateway now,
 * the gRPC edge later), from RATE_LIMIT_*:
 * - general: per signed-in user (RATE_LIMIT_USER), or per client address for anonymous
 *   requests (RATE_LIMIT_IP). Signed-in shoppers behind one address (an office NAT) each
 *   have their own budget; an anonymous flood from one address is throttled as one;
 * - per action (`rateLimit` on the action): sign-ups per address, order creations and
 *   refund/return requests per user; admins are exempt from these (not from the general one).
 * IPv6 clients count by their /64. Limit: N accounts from one address have N user budgets
 * (sign-ups per address bound how fast they are made).
 * Login has its own rules in the user service (it needs the password's verdict).
 */
import { limitKey } from "./client-address";
import type { AppConfig } from "./config";
import { createRateLimitStore, tightest, type RateDecision } from "./rate-limit";

/** A limit an action can declare (`rateLimit: "orders"`), and whose key it counts by. */
export const NAMED_LIMITS = { signup: "ip", orders: "user", refunds: "user" } as const satisfies Record<string, "ip" | "user">;
export type NamedLimit = keyof typeof NAMED_LIMITS;

export interface RequestLimits {
  /** Consumes the caller's budgets for one request; the decision to report (refused, or the tightest). */
  check(caller: { userId?: string; ip: string; action?: NamedLimit; admin?: boolean }): Promise<RateDecision | undefined>;
  close(): Promise<void>;
}

export function requestLimits(config: Pick<AppConfig, "redisUrl" | "namespace" | "rateLimits">): RequestLimits {
  const store = createRateLimitStore(config);
  const r = config.rateLimits;
  const general = { user: store.limiter("user", r.user), ip: store.limiter("ip", r.ip) };
  const named = {
    signup: store.limiter("signup", r.signup),
    orders: store.limiter("orders", r.orders),
    refunds: store.limiter("refunds", r.refunds),
  };
  return {
    async check({ userId, ip: address, action, admin }) {
      // An IPv6 client counts by its /64 (lib/client-address.ts).
      const ip = limitKey(address);
      const pending = [userId ? general.user.consume(userId) : general.ip.consume(ip)];
      // The per-action limits are the customers' (an admin refunds and approves for many of them).
      if (action && !admin) {
        const key = NAMED_LIMITS[action] === "user" ? userId : ip;
        if (key) pending.push(named[action].consume(key));
      }
      return tightest(await Promise.all(pending));
    },
    close: () => store.close(),
  };
}
