/**
 * What a token's signature cannot say: that its login was ended (logout, refresh-token
 * theft detected) or that its holder's role changed since it was issued. The user service
 * writes here; the gateway reads on every authenticated request.
 *
 * - A revoked session (`sid`, the login's refresh-token family) denies every access token
 *   of that login until the longest of them expires (the access token TTL).
 * - A role change is kept for the same TTL: the gateway uses the stored role instead of the
 *   token's, so a demotion (or a promotion) takes effect on the next request; tokens issued
 *   after it carry the new role anyway.
 *
 * Kept in Redis when REDIS_URL is set (required on gateway and user nodes in a cluster, so
 * every replica sees one list); in this process's memory otherwise (embedded mode: the
 * gateway and the user service share the process). Guarantee and limit: if Redis cannot be
 * read, the gateway refuses authenticated requests (503) rather than accept a token it
 * cannot check; a write that fails fails the logout or role change, which can be retried.
 */
import Redis from "ioredis";
import { redisClientOptions } from "../cacher";
import type { Role } from "./tokens";

export interface TokenStanding {
  /** The login was ended: refuse the token. */
  revoked: boolean;
  /** The holder's role since a change (overrides the token's), when one happened within the TTL. */
  role?: Role;
}

export interface Revocations {
  revokeSession(sessionId: string): Promise<void>;
  setRole(userId: string, role: Role): Promise<void>;
  standing(sessionId: string, userId: string): Promise<TokenStanding>;
  close(): Promise<void>;
}

const keyPrefix = (namespace: string) => `meridian:${namespace || "default"}:auth`;

/** Embedded mode: one store per namespace in this process, shared by its gateway and user service. */
const memoryStores = new Map<string, Map<string, { value: string; until: number }>>();

export function createRevocations(config: { redisUrl?: string; namespace: string; accessTokenTtlS: number }): Revocations {
  const ttlS = config.accessTokenTtlS;
  const prefix = keyPrefix(config.namespace);
  if (config.redisUrl) {
    const redis = new Redis({ ...redisClientOptions(config.redisUrl), lazyConnect: false });
    // Outages surface as failed calls (and in readiness through the cacher), not as unhandled events.
    redis.on("error", () => undefined);
    return {
      async revokeSession(sessionId) {
        await redis.set(`${prefix}:sid:${sessionId}`, "1", "EX", ttlS);
      },
      async setRole(userId, role) {
        await redis.set(`${prefix}:role:${userId}`, role, "EX", ttlS);
      },
      async standing(sessionId, userId) {
        const [revoked, role] = await redis.mget(`${prefix}:sid:${sessionId}`, `${prefix}:role:${userId}`);
        return { revoked: revoked !== null, ...(role === "admin" || role === "customer" ? { role } : {}) };
      },
      async close() {
        redis.disconnect();
      },
    };
  }
  let store = memoryStores.get(prefix);
  if (!store) memoryStores.set(prefix, (store = new Map()));
  const entries = store;
  const put = (key: string, value: string) => {
    const now = Date.now();
    // Expired entries go when the next one is written: the map stays as small as the live list.
    for (const [k, e] of entries) if (e.until <= now) entries.delete(k);
    entries.set(key, { value, until: now + ttlS * 1000 });
  };
  const get = (key: string) => {
    const e = entries.get(key);
    return e && e.until > Date.now() ? e.value : undefined;
  };
  return {
    async revokeSession(sessionId) {
      put(`sid:${sessionId}`, "1");
    },
    async setRole(userId, role) {
      put(`role:${userId}`, role);
    },
    async standing(sessionId, userId) {
      const role = get(`role:${userId}`);
      return { revoked: get(`sid:${sessionId}`) !== undefined, ...(role === "admin" || role === "customer" ? { role } : {}) };
    },
    async close() {},
  };
}
