/**
 * A typed call of a business action: the params and the answer are the action's contract
 * types (proto/gen/contracts.ts), so a caller neither builds a shape by hand nor casts what
 * comes back. Through `ctx` the call is a child of the request (its timeout, trace and
 * request id); through `broker` it is a new root call (background work).
 */
import type { CallingOptions, Context, ServiceBroker } from "moleculer";
import type { ActionParams, ActionResponse, ContractAction } from "../proto/gen/contracts";

export function callAction<A extends ContractAction>(
  via: ServiceBroker | Context,
  action: A,
  params: ActionParams<A>,
  opts?: CallingOptions,
): Promise<ActionResponse<A>> {
  // The one cast: Moleculer's `call` answers `any`; the contract says what it is.
  return via.call(action, params, opts) as Promise<ActionResponse<A>>;
}
