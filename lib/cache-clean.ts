/**
 * A service's cached reads cleaned after its writes commit, on every node (the product
 * service's catalog, the user service's rows):
 * 1. the writer cleans its own cacher;
 * 2. it broadcasts `cache.clean.<service>` (a hint, not a business fact: a Moleculer event)
 *    that every other node applies to its own cacher; a shared cacher (Redis, cluster mode)
 *    was cleaned by step 1 and ignores it;
 * 3. it cleans again SECOND_CLEAN_MS later, here and through the hint: a read that loaded the
 *    old row just before the commit and stored it just after the first clean is gone then.
 * Limit: a read slower than that delay can still store a stale entry, which then lives until
 * the entry's TTL; a write from another process (a CLI on the database) cleans nothing, and
 * shows when the TTL ends.
 */
import type { ServiceBroker } from "moleculer";

/** Wait before the second clean of a write. */
export const SECOND_CLEAN_MS = 250;

/** The cacher's own key for an action cached by `keys` (as its middleware computes it). */
export function actionCacheKey(
  cacher: NonNullable<ServiceBroker["cacher"]>,
  action: string,
  keys: string[],
  params: Record<string, unknown>,
): string {
  return cacher.getCacheKey({ name: action } as never, { keys }, { params } as never);
}

/**
 * One entry read through the cacher: its value when cached, else `load`'s, stored for `ttlS`
 * (undefined: not stored, as an action's error is not). A cacher that fails is skipped.
 */
export async function readThrough<T>(
  cacher: ServiceBroker["cacher"],
  key: string,
  ttlS: number,
  load: () => Promise<T | undefined>,
): Promise<T | undefined> {
  if (!cacher) return load();
  const hit = (await Promise.resolve(cacher.get(key)).catch(() => null)) as T | null | undefined;
  if (hit !== null && hit !== undefined) return hit;
  const value = await load();
  if (value !== undefined) await Promise.resolve(cacher.set(key, value, ttlS)).catch(() => undefined);
  return value;
}

export class CacheCleaner<Hint extends object> {
  private readonly pending = new Set<NodeJS.Timeout>();

  /**
   * `service`: the hint's name (`cache.clean.<service>`); `clean`: what a hint means for this
   * node's cacher; `shared`: the cacher is one for every node (Redis).
   */
  constructor(
    private readonly broker: ServiceBroker,
    private readonly logger: { warn(...args: unknown[]): void },
    private readonly service: string,
    private readonly clean: (cacher: NonNullable<ServiceBroker["cacher"]>, hint: Hint) => Promise<unknown>,
    private readonly shared: boolean,
  ) {}

  get event(): string {
    return `cache.clean.${this.service}`;
  }

  /** After a commit: clean here, tell the other nodes, and again a moment later. Never throws (the write is committed). */
  async afterCommit(hint: Hint): Promise<void> {
    await this.cleanHere(hint).catch((err) =>
      this.logger.warn(`Cache clean (${this.service}) failed`, err instanceof Error ? err.message : err),
    );
    await Promise.resolve(this.broker.broadcast(this.event, hint)).catch((err) =>
      this.logger.warn(`${this.event} broadcast failed`, err instanceof Error ? err.message : err),
    );
    const timer = setTimeout(() => {
      this.pending.delete(timer);
      this.cleanHere(hint).catch(() => undefined);
      Promise.resolve(this.broker.broadcast(this.event, hint)).catch(() => undefined);
    }, SECOND_CLEAN_MS);
    timer.unref();
    this.pending.add(timer);
  }

  /** Another node's hint (the `cache.clean.<service>` event's handler). */
  async received(fromNode: string, hint: Hint): Promise<void> {
    // The writer cleaned its own cacher; a shared (Redis) cacher needs nothing more.
    if (fromNode === this.broker.nodeID || this.shared) return;
    await this.cleanHere(hint);
  }

  /** At the service's stop: the second cleans not yet run are dropped. */
  stop(): void {
    for (const t of this.pending) clearTimeout(t);
    this.pending.clear();
  }

  private async cleanHere(hint: Hint): Promise<void> {
    const cacher = this.broker.cacher;
    if (cacher) await this.clean(cacher, hint);
  }
}
