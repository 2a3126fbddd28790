/**
 * Cancelled requests. An edge whose client gave up (a gRPC cancel, an HTTP client that closed
 * the connection before its answer) broadcasts the request's id; every node remembers it for
 * REQUEST_TIMEOUT_MS, and a nested call of that request (lib/call.ts) is then skipped with
 * RequestSkippedError, as one past its deadline is: the action stops at its next call and runs
 * its undo. Moleculer itself has no cancellation of a call in flight.
 *
 * Limits: the step running when the cancel arrives finishes (a database transaction is not
 * interrupted); the broadcast is a Moleculer event, so a node that misses it (away at that
 * moment) runs its part of the request to its deadline. It is a hint, not a business fact:
 * nothing depends on it for correctness, only for not doing work nobody waits for.
 */
import type { ServiceBroker, ServiceSchema } from "moleculer";

const EVENT = "request.cancelled";
const cancelled = new WeakMap<ServiceBroker, Map<string, number>>();

function remember(broker: ServiceBroker, requestID: string, ttlMs: number): void {
  let ids = cancelled.get(broker);
  if (!ids) cancelled.set(broker, (ids = new Map<string, number>()));
  const now = Date.now();
  // Expired ids go as new ones come: the map holds at most the cancels of one timeout.
  for (const [id, until] of ids) if (until <= now) ids.delete(id);
  ids.set(requestID, now + ttlMs);
}

/** Whether a request of this node's broker was cancelled (within the last timeout). */
export function isCancelled(broker: ServiceBroker, requestID: string | null | undefined): boolean {
  if (!requestID) return false;
  const until = cancelled.get(broker)?.get(requestID);
  return until !== undefined && until > Date.now();
}

/** An edge's client gave up on `requestID`: every node (this one at once) skips the request's next calls. */
export function cancelRequest(broker: ServiceBroker, requestID: string, ttlMs: number): void {
  remember(broker, requestID, ttlMs);
  void broker.broadcast(EVENT, { requestID }).catch(() => undefined);
}

/** The listener every node runs (app.ts adds it to each broker): `$`-named, so internal. */
export function cancellationService(ttlMs: number): ServiceSchema {
  return {
    name: "$cancellations",
    events: {
      [EVENT](ctx: { params: { requestID?: unknown }; broker: ServiceBroker }) {
        if (typeof ctx.params?.requestID === "string" && ctx.params.requestID.length <= 128)
          remember(ctx.broker, ctx.params.requestID, ttlMs);
      },
    },
  };
}
