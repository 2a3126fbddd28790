/**
 * Rate limits through `rate-limiter-flexible`: kept in Redis when REDIS_URL is set (one
 * connection per process, shared by every limiter), so every replica counts against one
 * budget; in memory otherwise (embedded mode). If Redis is unreachable a limiter falls back
 * to a per-process memory limiter rather than failing the request: a login or an order must
 * not break because the limit store is down (the limit is then per replica for a while).
 *
 * Every consume is atomic in the store (Redis: one INCR-and-expire script), so N concurrent
 * requests are N increments: of a burst, exactly the budget passes and the rest is refused,
 * whatever the interleaving. That is why limits are consumed *before* the work they guard.
 */
import type Redis from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from "rate-limiter-flexible";
import { redisClient } from "./cacher";
import type { AppConfig, RateBudget } from "./config";

/** The figures of the IETF draft's `RateLimit-*` headers, for one limit and one key. */
export interface RateDecision {
  /** Which limit (for logs and the error's details). */
  name: string;
  limit: number;
  remaining: number;
  /** Points counted in the window so far, this request's included (over `limit` when refused). */
  count: number;
  /** Seconds until the window (or a block) ends. */
  resetSeconds: number;
  /** Set when this request is refused: seconds to wait (the Retry-After header). */
  retryAfterSeconds?: number;
}

export interface Limiter {
  readonly name: string;
  readonly budget: RateBudget;
  /** Counts `points` now; refused (retryAfterSeconds set) when that goes over the budget. */
  consume(key: string, points?: number): Promise<RateDecision>;
  /** Gives points back (a request that turned out not to count, such as a correct password). */
  reward(key: string, points?: number): Promise<void>;
  /** Refuses the key for `seconds` from now, whatever its count. */
  block(key: string, seconds: number): Promise<void>;
  reset(key: string): Promise<void>;
}

export interface RateLimitStore {
  limiter(name: string, budget: RateBudget): Limiter;
  close(): Promise<void>;
}

const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

export function createRateLimitStore(config: Pick<AppConfig, "redisUrl" | "namespace">): RateLimitStore {
  const prefix = `meridian:${config.namespace || "default"}:rl`;
  let redis: Redis | undefined;
  if (config.redisUrl) {
    // A failed command falls to the insurance limiter below.
    // Not auto-pipelined: rate-limiter-flexible's consume is a `defineCommand` script (lib/cacher.ts says why).
    redis = redisClient(config.redisUrl, { autoPipelining: false });
  }
  return {
    limiter(name, budget) {
      const opts = { keyPrefix: `${prefix}:${name}`, points: budget.points, duration: budget.windowS };
      const limiter: RateLimiterAbstract = redis
        ? new RateLimiterRedis({ ...opts, storeClient: redis, insuranceLimiter: new RateLimiterMemory(opts) })
        : new RateLimiterMemory(opts);
      const decision = (res: RateLimiterRes, refused: boolean): RateDecision => ({
        name,
        limit: budget.points,
        remaining: Math.max(0, res.remainingPoints),
        count: res.consumedPoints,
        resetSeconds: seconds(res.msBeforeNext),
        ...(refused ? { retryAfterSeconds: seconds(res.msBeforeNext) } : {}),
      });
      return {
        name,
        budget,
        async consume(key, points = 1) {
          try {
            return decision(await limiter.consume(key, points), false);
          } catch (res) {
            if (res instanceof RateLimiterRes) return decision(res, true);
            throw res;
          }
        },
        async reward(key, points = 1) {
          await limiter.reward(key, points);
        },
        async block(key, s) {
          await limiter.block(key, s);
        },
        async reset(key) {
          await limiter.delete(key);
        },
      };
    },
    async close() {
      // disconnect, not quit: quit waits for a connection, which never comes if Redis is down.
      redis?.disconnect();
    },
  };
}

/** The decision to report in headers: a refusal first, else the one with the least left. */
export function tightest(decisions: readonly RateDecision[]): RateDecision | undefined {
  return [...decisions].sort(
    (a, b) =>
      Number(b.retryAfterSeconds !== undefined) - Number(a.retryAfterSeconds !== undefined) ||
      a.remaining / a.limit - b.remaining / b.limit,
  )[0];
}

/** The IETF draft's headers (draft-ietf-httpapi-ratelimit-headers): limit, what is left, seconds to reset. */
export function rateLimitHeaders(d: Pick<RateDecision, "limit" | "remaining" | "resetSeconds">): Record<string, string> {
  return { "RateLimit-Limit": String(d.limit), "RateLimit-Remaining": String(d.remaining), "RateLimit-Reset": String(d.resetSeconds) };
}
