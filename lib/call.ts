/**
 * A typed call of a business action: the params and the answer are the action's contract
 * types (proto/gen/contracts.ts), so a caller neither builds a shape by hand nor casts what
 * comes back. Through `ctx` (or `broker` with `parentCtx`) the call is a child of the request:
 * its trace and request id, and what is left of its timeout (Moleculer's distributed timeouts,
 * which only `ctx.call` applies: a request whose client gave up, a gRPC deadline say, stops at
 * its next call instead of running on). Through `broker` alone it is a new root call
 * (background work).
 */
import type { CallingOptions, Context, ServiceBroker } from "moleculer";
import type { ActionParams, ActionResponse, ContractAction } from "../proto/gen/contracts";

export function callAction<A extends ContractAction>(
  via: ServiceBroker | Context,
  action: A,
  params: ActionParams<A>,
  opts?: CallingOptions,
): Promise<ActionResponse<A>> {
  const { parentCtx, ...rest } = opts ?? {};
  // The one cast: Moleculer's `call` answers `any`; the contract says what it is.
  if (parentCtx) return parentCtx.call(action, params, rest) as Promise<ActionResponse<A>>;
  return via.call(action, params, opts) as Promise<ActionResponse<A>>;
}
