/**
 * `Idempotency-Key` for requests that create money-relevant things (an order, a refund, a
 * return, a return's approval), written once (the pattern of eShop's IdentifiedCommandHandler):
 *
 * - the key is claimed first, under the store's primary key (user, key), together with the
 *   fingerprint of the request and the id of the thing it will create; the unique
 *   constraint, not a read, decides who created it;
 * - a concurrent or later request with the same key and fingerprint waits for that thing
 *   and answers it (the first answer); with another fingerprint (another body, or another
 *   operation or target) it is a 409;
 * - if the creation fails, the claim is released, so a corrected retry may use the key;
 * - a claim whose thing never appeared, older than any request can run (`staleMs`), belongs
 *   to a process that died between the claim and the creation: it is taken over.
 * Keys are scoped per user: one user's key never collides with another's.
 */
import { createHash } from "node:crypto";
import { AppError, conflict } from "./errors";
import { protectionOff } from "./protections";

export interface IdempotencyClaim {
  fingerprint: string;
  resourceId: string;
  createdAt: number;
}

/** The table behind it (a service's repo): claims are unique on (userId, key). */
export interface IdempotencyStore {
  /** Inserts the claim; throws what `isConflict` recognises when (userId, key) is taken. */
  claim(userId: string, key: string, claim: IdempotencyClaim): Promise<void>;
  find(userId: string, key: string): Promise<IdempotencyClaim | undefined>;
  /** Deletes the claim only if it still names `resourceId`. */
  release(userId: string, key: string, resourceId: string): Promise<void>;
  isConflict(err: unknown): boolean;
}

export interface IdempotentRequest<T> {
  store: IdempotencyStore;
  userId: string;
  key: string;
  fingerprint: string;
  /** The id the new thing will have (known before it exists: the claim names it). */
  resourceId: string;
  /** How long a request whose key is already claimed waits for the thing (within the caller's timeout). */
  waitMs: number;
  /** A claim without its thing after this long belongs to a request that died. */
  staleMs: number;
  /** Creates the thing with `resourceId`. */
  create(resourceId: string): Promise<T>;
  /** The answer for an existing thing, or undefined while it does not exist (yet). */
  replay(resourceId: string): Promise<T | undefined>;
  now?: () => number;
}

/** Runs `create` once per (user, key); `replayed` says the answer is the first request's. */
export async function idempotent<T>(r: IdempotentRequest<T>): Promise<{ result: T; replayed: boolean }> {
  const now = r.now ?? Date.now;
  const deadline = now() + r.waitMs;
  // BREAK_PROTECTION=idempotency-key (docs/tutorial.md): every request creates.
  if (protectionOff("idempotency-key")) return { result: await r.create(r.resourceId), replayed: false };
  for (;;) {
    try {
      await r.store.claim(r.userId, r.key, { fingerprint: r.fingerprint, resourceId: r.resourceId, createdAt: now() });
      break;
    } catch (err) {
      if (!r.store.isConflict(err)) throw err;
    }
    const claimed = await r.store.find(r.userId, r.key);
    if (claimed) {
      if (claimed.fingerprint !== r.fingerprint) throw keyUsedElsewhere();
      const existing = await r.replay(claimed.resourceId);
      if (existing !== undefined) return { result: existing, replayed: true };
      // The creator died between its claim and its insert: free the claim and claim again.
      if (claimed.createdAt < now() - r.staleMs) {
        await r.store.release(r.userId, r.key, claimed.resourceId);
        continue;
      }
    }
    // Still being created by the first request, or it failed and released the key (then the
    // next round claims it for this one).
    if (now() > deadline) throw new AppError("SERVICE_UNAVAILABLE", "The same request is still being processed; try again");
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  try {
    return { result: await r.create(r.resourceId), replayed: false };
  } catch (err) {
    // Nothing was created: the key is free again for a corrected retry.
    await r.store.release(r.userId, r.key, r.resourceId).catch(() => undefined);
    throw err;
  }
}

/** The 409 for a key repeated with another request (another body, operation or target). */
export function keyUsedElsewhere(): AppError {
  return conflict("This Idempotency-Key was used with another request", [{ field: "Idempotency-Key" }]);
}

/**
 * What makes two requests "the same" for a key: the operation, its target and the body the
 * client sent, with object keys sorted (a re-serialisation by another client library still matches).
 */
export function requestFingerprint(request: unknown): string {
  return createHash("sha256").update(canonicalJson(request)).digest("hex");
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object")
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v ?? null);
}
