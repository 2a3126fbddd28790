/**
 * Login throttling (LOGIN_RATE_LIMIT failures per LOGIN_RATE_WINDOW_S). The rules:
 * - **Per account, whatever the address**: a guesser rotating addresses (or forging
 *   X-Forwarded-For) still gets LOGIN_RATE_LIMIT tries per window on one account, then the
 *   account is locked for a growing time (lockoutSeconds: one window, doubling per lockout
 *   within a day). The price, a known one: anyone can lock an account out for a while by
 *   failing on it; the lock never reveals or changes the password.
 * - **Per address, in distinct accounts**: one address may fail on at most ten times as
 *   many different accounts per window (password spraying). Failures against one account
 *   count once here, so a correct login for account A is never refused because of failures
 *   against account B from the same address (an office NAT).
 * - **Consumed before the password is checked**, atomically in the store: of a burst of
 *   concurrent guesses, at most the remaining budget is evaluated and the rest is 429. A
 *   correct password gives its attempt back and clears the account's failures.
 * While locked, even the right password is refused (429), or the lock would be an oracle.
 */
import type { RateBudget } from "../../lib/config";
import { rateLimited } from "../../lib/errors";
import { limitKey } from "../../lib/client-address";
import type { RateLimitStore } from "../../lib/rate-limit";
import { lockoutSeconds } from "./user.domain";

export interface LoginAttempt {
  readonly email: string;
  readonly ip: string;
  /** This attempt was the first of its (address, account) pair in the window: counted per address too. */
  readonly countedForAddress: boolean;
}

export interface LoginThrottle {
  /** Reserves one attempt; throws RATE_LIMITED (nothing counted) when a budget is spent. */
  begin(email: string, ip: string): Promise<LoginAttempt>;
  /** The password was right: the attempt does not count, the account's failures are cleared. */
  succeeded(attempt: LoginAttempt): Promise<void>;
}

export function createLoginThrottle(store: RateLimitStore, budget: RateBudget): LoginThrottle {
  const account = store.limiter("login-account", budget);
  const pair = store.limiter("login-pair", budget);
  const address = store.limiter("login-address", { points: budget.points * 10, windowS: budget.windowS });
  // How many times an account was locked within a day: the back-off's exponent.
  const lockouts = store.limiter("login-lockouts", { points: 1_000_000, windowS: 86_400 });
  const pairKey = (email: string, ip: string) => `${ip}|${email}`;
  return {
    async begin(email, clientIp) {
      // An IPv6 client counts by its /64 (lib/client-address.ts).
      const ip = limitKey(clientIp);
      const p = await pair.consume(pairKey(email, ip));
      const countedForAddress = p.count === 1;
      const giveBack = async () => {
        await pair.reward(pairKey(email, ip));
        if (countedForAddress) await address.reward(ip);
      };
      if (countedForAddress) {
        const a = await address.consume(ip);
        if (a.retryAfterSeconds !== undefined) {
          await giveBack();
          throw rateLimited(a);
        }
      }
      const acc = await account.consume(email);
      if (acc.retryAfterSeconds !== undefined) {
        await giveBack();
        // The first refusal of a window locks the account for a growing time; later ones
        // (a burst's rest, or tries during the lock) only report it.
        if (acc.count === budget.points + 1) {
          const n = (await lockouts.consume(email)).count;
          const s = lockoutSeconds(budget.windowS, n);
          await account.block(email, s);
          throw rateLimited({ ...acc, resetSeconds: s, retryAfterSeconds: s });
        }
        throw rateLimited(acc);
      }
      return { email, ip, countedForAddress };
    },
    async succeeded(attempt) {
      await Promise.all([
        account.reset(attempt.email),
        pair.reset(pairKey(attempt.email, attempt.ip)),
        attempt.countedForAddress ? address.reward(attempt.ip) : undefined,
      ]);
    },
  };
}
