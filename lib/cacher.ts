/**
 * Moleculer's Redis cacher with two fixes for a Redis that is down:
 * - its `close()` is `quit()`, which waits for a connection that never comes, so the
 *   ioredis client went on reconnecting after the broker stopped and the process never
 *   exited; here close gives `quit()` a second, then drops the connection;
 * - it logs every failed reconnect with a stack (one every 2 s, without end); here an
 *   outage is logged once when it starts, then once a minute, and once when it ends;
 * - a read during an outage waited in ioredis' offline queue and then failed the action;
 *   here commands fail fast (no offline queue, one retry) and a failed read is a cache miss,
 *   a failed write is skipped: the cache is an optimisation, never a dependency of a call.
 */
import Redis from "ioredis";
import { Cachers, type ServiceBroker } from "moleculer";

const QUIT_TIMEOUT_MS = 1000;
const OUTAGE_LOG_INTERVAL_MS = 60_000;
const COMMAND_TIMEOUT_MS = 2000;

/**
 * ioredis options from a redis:// or rediss:// URL, set to fail fast while disconnected.
 *
 * `autoPipelining` (on unless refused): commands issued in the same event-loop turn leave
 * together in one write and come back in one read (ioredis's enableAutoPipelining), at the
 * price of one turn's wait for the first of them and of a pipeline's machinery for a command
 * that goes alone: measured in a loop, ~21 µs more CPU for a lone command, ~2 µs less for each
 * of 20 sent in one turn. Under read load most commands share a turn: a Redis-cached product
 * read measured 103-112 → 81-83 µs of CPU per request; the cluster checkout, whose commands are
 * mostly alone, moved within its noise (#16, bench/RESULTS.md "Redis commands pipelined").
 * Refused by a client that runs Lua through `defineCommand` (the rate limiter's): such a
 * command issued while the offline queue is off and the connection is not ready is reported
 * never to settle when auto-pipelined (ioredis#1511).
 *
 * `commandTimeout`: a command without an answer COMMAND_TIMEOUT_MS after it was written fails
 * (a cache read becomes a miss, a revocation check a 503). Without it, a Redis that stops
 * answering with the connection still open (a host gone, a partition) held every command until
 * the socket died; and with auto-pipelining, the commands issued while a pipeline waits are
 * written only after it: so they fail within twice that at most. Its limit: under a stall of
 * this node's event loop longer than that, a command answered in time can still time out.
 */
export function redisClientOptions(url: string, { autoPipelining = true } = {}) {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    username: decodeURIComponent(u.username) || undefined,
    password: decodeURIComponent(u.password) || undefined,
    db: Number(u.pathname.slice(1) || 0),
    tls: u.protocol === "rediss:" ? {} : undefined,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    enableAutoPipelining: autoPipelining,
    commandTimeout: COMMAND_TIMEOUT_MS,
  };
}

/**
 * A Redis client for a store of ours (revocations, rate limits): fail-fast options, and
 * connection errors kept off the process's unhandled events (callers see a failed command;
 * readiness reports the outage).
 */
export function redisClient(url: string, options: { autoPipelining?: boolean } = {}): Redis {
  const redis = new Redis({ ...redisClientOptions(url, options), lazyConnect: false });
  redis.on("error", () => undefined);
  return redis;
}

export class ResilientRedisCacher extends Cachers.Redis<Redis> {
  constructor(opts: { redisUrl: string; prefix: string; ttl: number }) {
    super({ redis: redisClientOptions(opts.redisUrl), prefix: opts.prefix, ttl: opts.ttl });
  }

  override get(key: string): Promise<Record<string, unknown> | null> {
    // A failed read answers what a miss answers (Moleculer's `missingResponse` option).
    return super.get(key).catch(() => this.opts.missingResponse as Record<string, unknown> | null);
  }

  override set(key: string, data: unknown, ttl?: number): Promise<void> {
    return super.set(key, data, ttl).catch(() => undefined);
  }

  override init(broker: ServiceBroker): void {
    super.init(broker);
    const client = this.client;
    let downSince = 0;
    let lastLog = 0;
    client.removeAllListeners("error");
    client.on("error", (err: Error) => {
      const now = Date.now();
      if (!downSince) {
        downSince = lastLog = now;
        this.logger.warn(`Redis cacher: connection lost (${err.message}); cache reads fall through to the services`);
      } else if (now - lastLog >= OUTAGE_LOG_INTERVAL_MS) {
        lastLog = now;
        this.logger.warn(`Redis cacher: still unreachable after ${Math.round((now - downSince) / 1000)} s (${err.message})`);
      }
      // As Moleculer's own cacher does; a local listener's failure is that listener's to log.
      void this.broker.broadcastLocal("$cacher.error", { error: err, module: "cacher" });
    });
    client.on("ready", () => {
      if (downSince) this.logger.warn(`Redis cacher: connection back after ${Math.round((Date.now() - downSince) / 1000)} s`);
      downSince = 0;
    });
  }

  override async close(): Promise<void> {
    // Undefined when the broker stopped before the cacher's init.
    const client: Redis | undefined = this.client;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([super.close(), new Promise((resolve) => (timer = setTimeout(resolve, QUIT_TIMEOUT_MS)))]);
    } catch {
      // The connection is going away either way.
    } finally {
      clearTimeout(timer);
      client?.disconnect();
    }
  }
}
