/**
 * The live feeds every edge serves (meridian.live.v1.LiveService over gRPC; Server-Sent
 * Events on REST): an order's state at each status change, and a user's new notifications.
 *
 * How they hold, and their limits:
 * - Fed by the business events this node receives (mixins/live-feeds.mixin.ts: a broadcast
 *   queue per node, so every edge replica gets every event), but an event only WAKES the
 *   streams it concerns: what a stream sends it reads again through the order and
 *   notification services' actions, as its caller (`order.get` with the caller's identity:
 *   someone else's order is NOT_FOUND, as on every route). So a stream never sends a state that
 *   did not commit, and an event lost or late only delays a send until the next one (or the
 *   resync after a reconnection of the broadcast queue, which wakes every stream).
 * - A stream registers for wake-ups BEFORE its first read: a change that commits in between
 *   wakes it, so nothing falls between the first read and the live part.
 * - Orders: one update per read that finds more status changes than the last one sent (the
 *   order's `history` length is its sequence). Several changes close together may come as one
 *   update, the latest state, whose history lists every change: nothing is lost, some
 *   intermediate states are not sent on their own. `after` (the last sequence a client got)
 *   resumes: the current state comes first only if it changed since.
 * - Notifications: in creation order, each exactly once per stream, read with
 *   `notification.since` after the last one sent; `after` (the id of the last one a client
 *   got) resumes with everything created after it, whatever happened meanwhile. Without
 *   `after`, the stream starts at the newest existing notification.
 */
import type { ServiceBroker } from "moleculer";
import type { AuthUser } from "../auth/tokens";
import { callAction } from "../call";
import type { ActionResponse } from "../../proto/gen/contracts";

export type LiveOrder = ActionResponse<"order.get">;
export type LiveNotification = ActionResponse<"notification.since">["items"][number];
export interface OrderUpdate {
  sequence: number;
  order: LiveOrder;
}

/** Notifications read per `notification.since` call. */
const PAGE = 100;

/** A wake-up that is never lost: a kick while nobody waits is kept for the next wait. */
class Wakeup {
  private pending = false;
  private waiting?: () => void;

  kick(): void {
    this.pending = true;
    this.waiting?.();
  }

  /** Resolves at the next kick (at once if one came since the last wait), or when `signal` aborts. */
  async wait(signal: AbortSignal): Promise<void> {
    if (!this.pending && !signal.aborted)
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener("abort", done);
          this.waiting = undefined;
          resolve();
        };
        this.waiting = done;
        signal.addEventListener("abort", done, { once: true });
      });
    this.pending = false;
  }
}

class Registry<K> {
  private byKey = new Map<K, Set<Wakeup>>();

  add(key: K, w: Wakeup): () => void {
    let set = this.byKey.get(key);
    if (!set) this.byKey.set(key, (set = new Set()));
    set.add(w);
    return () => {
      set!.delete(w);
      if (!set!.size) this.byKey.delete(key);
    };
  }

  kick(key: K): void {
    for (const w of this.byKey.get(key) ?? []) w.kick();
  }

  kickAll(): void {
    for (const set of this.byKey.values()) for (const w of set) w.kick();
  }

  get size(): number {
    let n = 0;
    for (const set of this.byKey.values()) n += set.size;
    return n;
  }
}

export class LiveFeeds {
  private orders = new Registry<string>();
  private users = new Registry<string>();

  constructor(private readonly broker: ServiceBroker) {}

  /** Open streams (for metrics and tests). */
  get open(): { orders: number; notifications: number } {
    return { orders: this.orders.size, notifications: this.users.size };
  }

  /** An order's business event (any `order.*` or `return.*`): its watchers read it again. */
  orderChanged(orderId: unknown): void {
    if (typeof orderId === "string") this.orders.kick(orderId);
  }

  /** `notification.created`: the user's streams read what is new. */
  notificationCreated(userId: unknown): void {
    if (typeof userId === "string") this.users.kick(userId);
  }

  /** The broadcast queue was (re)bound: events may have been missed, every stream reads again. */
  resync(): void {
    this.orders.kickAll();
    this.users.kickAll();
  }

  /**
   * The order's state now and at each status change, as `user` may see it (NOT_FOUND otherwise).
   * `opened` is called once the first read succeeded (an SSE answer starts then).
   */
  async *watchOrder(user: AuthUser, id: string, after: number | undefined, signal: AbortSignal, opened?: () => void): AsyncGenerator<OrderUpdate> {
    const wake = new Wakeup();
    const remove = this.orders.add(id, wake);
    try {
      let last = after ?? -1;
      while (!signal.aborted) {
        const order = await callAction(this.broker, "order.get", { id }, { meta: { user } });
        opened?.();
        const sequence = order.history.length;
        if (sequence > last) {
          last = sequence;
          yield { sequence, order };
        }
        await wake.wait(signal);
      }
    } finally {
      remove();
    }
  }

  /** `user`'s notifications created after `after` (after the newest existing one without it), as they come; `opened` as for watchOrder. */
  async *notifications(user: AuthUser, after: string | undefined, signal: AbortSignal, opened?: () => void): AsyncGenerator<LiveNotification> {
    const wake = new Wakeup();
    const remove = this.users.add(user.id, wake);
    try {
      let cursor = after;
      if (cursor === undefined) {
        const newest = await callAction(this.broker, "notification.list", { page: 1, pageSize: 1 }, { meta: { user } });
        cursor = newest.items[0]?.id;
      }
      while (!signal.aborted) {
        const { items }: ActionResponse<"notification.since"> = await callAction(this.broker, "notification.since", { userId: user.id, after: cursor, limit: PAGE });
        opened?.();
        for (const n of items) {
          cursor = n.id;
          yield n;
        }
        if (items.length < PAGE) await wake.wait(signal);
      }
    } finally {
      remove();
    }
  }
}
