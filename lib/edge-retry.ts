/**
 * One more try for a request lost in transport (#17), for both edges (the REST gateway, the
 * gRPC edge): when the node or the broker node that carried a call went away before it
 * answered, the edge sends it once more, if sending it twice is safe:
 * - a read (GET, HEAD: no change, by HTTP's own rules and by our contract; over gRPC, an rpc
 *   whose REST route is a GET);
 * - an action idempotent by design (its contract: protobuf's `idempotency_level`);
 * - a write whose action replays a repeated Idempotency-Key (its contract's
 *   `idempotency_key`) when the request carries one.
 * Anything else answers 503 with Retry-After, as before: the first attempt may have acted.
 *
 * Not sent: the call never left this node (`BrokerDisconnectedError`: Moleculer refuses to
 * publish while its transporter is disconnected, and SafeAmqpTransporter reports a packet a
 * closing channel refused the same way). Nothing acted, so any call may go again, a write
 * without a key too, once the transporter is back (`transportBack`, a bounded wait): during
 * a move to another RabbitMQ node, which takes well under a second, these were the requests
 * the shoppers saw fail.
 *
 * Lost in transport: the call to a remote node timed out (`RequestTimeoutError`: the request
 * or its answer was lost with a broker node, or the node died holding it) or was rejected
 * because its node left (`RequestRejectedError`). Not an answer of the service, not a
 * timeout of a call the action itself made (passed back by a node that did answer), not a
 * handler of this very node that is slow (a second run beside the first helps nothing), nor
 * "no node offers it" (a second try could not find one either). The second try goes to
 * another node offering the action when there is one (the first may be dead and not yet
 * dropped by discovery), else to the same one while it is listed (a lost broker node, the
 * service alive); none when the client has gone. Either second try waits for this node's
 * transporter first (`transportBack`, at once when it is connected): a call lost with the
 * broker node this node was connected to times out while this node is still moving, and sent
 * at once it would only be refused as not sent. Its price: a lost request answers after up
 * to two request timeouts (and that wait) instead of one, and a slow remote node gets a read
 * twice (reads only, and once).
 */
import type { ActionContract } from "../proto/registry";

const SAFE_METHODS = new Set(["GET", "HEAD"]);
const LOST_IN_TRANSPORT = new Set(["RequestTimeoutError", "RequestRejectedError"]);

/** `err` ended the call of `action` on a remote node (see the header); `local`: the call ran on this node. */
export function lostInTransport(err: unknown, action: string, local = false): boolean {
  const e = err as { name?: string; data?: { action?: unknown } } | null;
  return !local && LOST_IN_TRANSPORT.has(e?.name ?? "") && e?.data?.action === action;
}

/** The call never left this node (see the header): sending it again is safe whatever it does. */
export function notSent(err: unknown): boolean {
  return (err as { name?: string } | null)?.name === "BrokerDisconnectedError";
}

/** The longest a second try waits for this node's transporter (a move to another RabbitMQ node takes well under it). */
const TRANSPORT_WAIT_MS = 3000;

/**
 * Resolves at once when this broker's transporter is connected, else once it is, or after
 * TRANSPORT_WAIT_MS or `limitMs` (the caller's budget left), whichever comes first (the
 * second try then fails as the first did). Polled: Moleculer's transporter emits no event a
 * caller can await.
 */
export async function transportBack(broker: { transit?: { tx: { connected: boolean } } }, limitMs = Infinity, everyMs = 50): Promise<void> {
  const deadline = Date.now() + Math.min(TRANSPORT_WAIT_MS, Math.max(0, limitMs));
  while (broker.transit?.tx.connected !== true && Date.now() < deadline) await new Promise((r) => setTimeout(r, everyMs));
}

/** Whether this request may be sent a second time (see the header). */
export function safeToRepeat(
  method: string | undefined,
  contract: Pick<ActionContract, "idempotency"> | undefined,
  idempotencyKey: string | undefined,
): boolean {
  if (SAFE_METHODS.has((method ?? "").toUpperCase())) return true;
  if (contract?.idempotency === "idempotent") return true;
  return contract?.idempotency === "key" && Boolean(idempotencyKey);
}

/**
 * The endpoint of the second try, given the node of the first: another available one when
 * there is one, else the same (undefined when the registry no longer lists it).
 */
export function retryEndpoint<E extends { id: string; isAvailable?: boolean }>(
  failedNode: string | undefined,
  candidates: readonly E[],
  random = Math.random,
): E | undefined {
  const others = candidates.filter((e) => e.isAvailable !== false && e.id !== failedNode);
  return others.length ? others[Math.floor(random() * others.length)] : candidates.find((e) => e.id === failedNode);
}

/**
 * The one decision both edges make after a failed call: the endpoint to send it to once more,
 * or undefined (rethrow `err`). `endpoints`: the registry's endpoints of the action now;
 * `failedNode`: the node of the first try; `clientGone`: the client left meanwhile.
 */
export function secondTry<E extends { id: string; isAvailable?: boolean; local?: boolean }>(q: {
  err: unknown;
  contract: Pick<ActionContract, "idempotency"> | undefined;
  action: string;
  method: string | undefined;
  idempotencyKey: string | undefined;
  failedNode: string | undefined;
  endpoints: readonly E[];
  clientGone: boolean;
}): E | undefined {
  if (q.clientGone) return undefined;
  if (notSent(q.err)) return retryEndpoint(q.failedNode, q.endpoints);
  const local = q.endpoints.some((e) => e.id === q.failedNode && e.local === true);
  if (!lostInTransport(q.err, q.action, local) || !safeToRepeat(q.method, q.contract, q.idempotencyKey)) return undefined;
  return retryEndpoint(q.failedNode, q.endpoints);
}
