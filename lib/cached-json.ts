/**
 * The JSON of a value the in-process cache holds, written once per value (#16).
 *
 * Moleculer's memory cacher (the embedded default) hands every reader the very object it holds,
 * so a cached product or account read through the gateway was serialized anew on every request:
 * `JSON.stringify` was the largest single item of a cached `GET /api/products/:id` (~10 % of the
 * gateway's busy time in a V8 profile, bench/RESULTS.md "Cached answers serialized once").
 *
 * - `holdCachedValues(broker)`: every object the broker's memory cacher stores (an action's
 *   `cache`, and `readThrough` in lib/cache-clean.ts) is deep-frozen and registered.
 * - `jsonOf(value)`: the gateway's response body (moleculer-web's `encodeResponse`): a registered
 *   value's JSON is written the first time it is sent and kept beside it; anything else is
 *   `JSON.stringify` as before.
 *
 * The guarantee and its limit:
 * - the kept JSON is the value's JSON, because the value cannot change: it is frozen when the
 *   cacher stores it, and code that then tried to change it throws (every module is strict)
 *   instead of corrupting what every later reader of the cache sees, which it silently did before;
 * - a kept JSON lives exactly as long as its value (a WeakMap): once the cache let the value go
 *   (TTL, a clean) and the last response that used it is sent, both are collected;
 * - only the memory cacher's values (embedded, or a node without REDIS_URL): the Redis cacher
 *   answers a fresh copy on every read (nothing to reuse), and a value from another node arrives
 *   as a fresh copy too;
 * - the price: a value sent at least once keeps its JSON beside it for as long as the cache holds
 *   it, so the memory of the entries served roughly doubles (the memory cacher has a TTL, 300 s,
 *   and no size bound).
 */
import { Cachers, type ServiceBroker } from "moleculer";

/** The values the memory cacher holds, and their JSON once written (undefined until then). */
const held = new WeakMap<object, string | undefined>();

/**
 * Freezes an object and every object reachable from it, an already frozen one's children too
 * (`seen` guards cycles). A cached value is plain JSON data (objects, arrays, strings, numbers);
 * the contents of a Date, Map, Set or typed array cannot be frozen this way, and none is cached.
 */
function freezeDeep(value: unknown, seen = new Set<object>()): void {
  // A typed array or Buffer with elements cannot be frozen; such a value is not JSON data anyway.
  if (value === null || typeof value !== "object" || seen.has(value) || ArrayBuffer.isView(value)) return;
  seen.add(value);
  Object.freeze(value);
  for (const key of Object.keys(value)) freezeDeep((value as Record<string, unknown>)[key], seen);
}

/** Registers (and freezes) every object the broker's memory cacher stores from now on. */
export function holdCachedValues(broker: ServiceBroker): void {
  const cacher = broker.cacher;
  if (!(cacher instanceof Cachers.Memory)) return;
  const set = cacher.set.bind(cacher);
  cacher.set = (key: string, data: unknown, ttl?: number) => {
    if (data !== null && typeof data === "object") {
      freezeDeep(data);
      if (!held.has(data)) held.set(data, undefined);
    }
    return set(key, data, ttl);
  };
}

/** `JSON.stringify(value)`, written once for a value the memory cacher holds. */
export function jsonOf(value: unknown): string {
  if (value !== null && typeof value === "object" && held.has(value)) {
    let json = held.get(value);
    if (json === undefined) held.set(value, (json = JSON.stringify(value)));
    return json;
  }
  return JSON.stringify(value);
}
