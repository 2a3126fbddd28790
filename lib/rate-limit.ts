/**
 * Rate limits through `rate-limiter-flexible`: kept in Redis when REDIS_URL is set, so
 * every replica counts against one budget; in memory otherwise (embedded mode). If Redis
 * is unreachable the limiter falls back to a per-process memory limiter rather than
 * failing the request: a login must not break because the limit store is down.
 */
import Redis from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from "rate-limiter-flexible";
import type { AppConfig } from "./config";

export interface Limiter {
  /** Counts one hit; resolves with the seconds to wait when over the limit, else 0. */
  hit(key: string, points?: number): Promise<number>;
  /** Seconds to wait if the key is blocked right now, without counting a hit. */
  blockedFor(key: string): Promise<number>;
  reset(key: string): Promise<void>;
  close(): Promise<void>;
}

export function createLimiter(
  config: Pick<AppConfig, "redisUrl" | "namespace">,
  name: string,
  points: number,
  durationS: number,
): Limiter {
  const keyPrefix = `meridian:${config.namespace || "default"}:rl:${name}`;
  let redis: Redis | undefined;
  let limiter: RateLimiterAbstract;
  if (config.redisUrl) {
    redis = new Redis(config.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: false });
    // Connection errors are reported by the readiness probe, not as unhandled events.
    redis.on("error", () => undefined);
    limiter = new RateLimiterRedis({
      storeClient: redis,
      keyPrefix,
      points,
      duration: durationS,
      insuranceLimiter: new RateLimiterMemory({ keyPrefix, points, duration: durationS }),
    });
  } else {
    limiter = new RateLimiterMemory({ keyPrefix, points, duration: durationS });
  }
  const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));
  return {
    async hit(key, n = 1) {
      try {
        await limiter.consume(key, n);
        return 0;
      } catch (res) {
        if (res instanceof RateLimiterRes) return seconds(res.msBeforeNext);
        throw res;
      }
    },
    async blockedFor(key) {
      const res = await limiter.get(key);
      return res && res.consumedPoints > points ? seconds(res.msBeforeNext) : 0;
    },
    async reset(key) {
      await limiter.delete(key);
    },
    async close() {
      // disconnect, not quit: quit waits for a connection, which never comes if Redis is down.
      redis?.disconnect();
    },
  };
}
