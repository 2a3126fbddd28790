/**
 * What a token's signature cannot say: that its login was ended (logout, refresh-token
 * theft detected) or that its holder's role changed since it was issued. The user service
 * writes here; the gateway reads on every authenticated request.
 *
 * - A revoked session (`sid`, the login's refresh-token family) denies every access token
 *   of that login until the longest of them expires (the access token TTL).
 * - A role change is kept for the same TTL with its time: the gateway uses the stored role
 *   instead of the claim of a token issued at or before the change, so a demotion (or a
 *   promotion) takes effect on the next request. Tokens issued after it carry the role of
 *   their issue and are left alone (a later change made where this store cannot see it, by
 *   `npm run admin` embedded, still reaches every new login).
 *
 * Kept in Redis when REDIS_URL is set (required on gateway and user nodes in a cluster, so
 * every replica sees one list); in this process's memory otherwise (embedded mode: the
 * gateway and the user service share the process). Guarantee and limit: if Redis cannot be
 * read, the gateway refuses authenticated requests (503) rather than accept a token it
 * cannot check; a write that fails fails the logout or role change, which can be retried.
 */
import { redisClient } from "../cacher";
import type { Role } from "./tokens";

export interface TokenStanding {
  /** The login was ended: refuse the token. */
  revoked: boolean;
  /** The holder's role since a change (overrides the claim of a token issued at or before it), when one happened within the TTL. */
  role?: Role;
}

export interface Revocations {
  revokeSession(sessionId: string): Promise<void>;
  setRole(userId: string, role: Role, now?: number): Promise<void>;
  /** `issuedAt`: the token's `iat` (epoch seconds). */
  standing(sessionId: string, userId: string, issuedAt: number): Promise<TokenStanding>;
  close(): Promise<void>;
}

/** `<role>|<epoch seconds of the change>`: a role change as stored. */
const roleEntry = (role: Role, now: number) => `${role}|${Math.floor(now / 1000)}`;
/**
 * The role that applies to a token issued at `issuedAt` (whole seconds): the stored one if
 * the token is not newer than the change by more than a second. The second's grace covers
 * a token signed just after a change it did not see (its `iat` rounds up past the change);
 * the stored role is the latest one, so applying it to a token that did see it is harmless.
 */
function roleFor(entry: string | null | undefined, issuedAt: number): Role | undefined {
  if (!entry) return undefined;
  const [role, at] = entry.split("|");
  if ((role !== "admin" && role !== "customer") || !(issuedAt <= Number(at) + 1)) return undefined;
  return role;
}

const keyPrefix = (namespace: string) => `meridian:${namespace || "default"}:auth`;

/** Embedded mode: one store per namespace in this process, shared by its gateway and user service. */
const memoryStores = new Map<string, Map<string, { value: string; until: number }>>();

export function createRevocations(config: { redisUrl?: string; namespace: string; accessTokenTtlS: number }): Revocations {
  const ttlS = config.accessTokenTtlS;
  const prefix = keyPrefix(config.namespace);
  if (config.redisUrl) {
    const redis = redisClient(config.redisUrl);
    return {
      async revokeSession(sessionId) {
        await redis.set(`${prefix}:sid:${sessionId}`, "1", "EX", ttlS);
      },
      async setRole(userId, role, now = Date.now()) {
        await redis.set(`${prefix}:role:${userId}`, roleEntry(role, now), "EX", ttlS);
      },
      async standing(sessionId, userId, issuedAt) {
        const [revoked, entry] = await redis.mget(`${prefix}:sid:${sessionId}`, `${prefix}:role:${userId}`);
        const role = roleFor(entry, issuedAt);
        return { revoked: revoked !== null, ...(role ? { role } : {}) };
      },
      async close() {
        redis.disconnect();
      },
    };
  }
  let store = memoryStores.get(prefix);
  if (!store) memoryStores.set(prefix, (store = new Map<string, { value: string; until: number }>()));
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
    async setRole(userId, role, now = Date.now()) {
      put(`role:${userId}`, roleEntry(role, now));
    },
    async standing(sessionId, userId, issuedAt) {
      const role = roleFor(get(`role:${userId}`), issuedAt);
      return { revoked: get(`sid:${sessionId}`) !== undefined, ...(role ? { role } : {}) };
    },
    async close() {},
  };
}
