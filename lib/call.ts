/**
 * A typed call of a business action: the params and the answer are the action's contract
 * types (proto/gen/contracts.ts), so a caller neither builds a shape by hand nor casts what
 * comes back. Through `ctx` (or `broker` with `parentCtx`) the call is a child of the request:
 * its trace and request id, and what is left of its timeout (Moleculer's distributed timeouts,
 * which only `ctx.call` applies by itself: a request whose client gave up, a gRPC deadline say,
 * stops at its next call, with RequestSkippedError, instead of running on), and a request whose
 * client went away (lib/cancellation.ts) stops there too. Through `broker` alone it is a new
 * root call (background work).
 */
import { Errors, type CallingOptions, type Context, type ServiceBroker } from "moleculer";
import { isCancelled } from "./cancellation";
import type { ActionParams, ActionResponse, ContractAction } from "../proto/gen/contracts";

const isContext = (v: ServiceBroker | Context): v is Context => "requestID" in v && "broker" in v;

export function callAction<A extends ContractAction>(
  via: ServiceBroker | Context,
  action: A,
  params: ActionParams<A>,
  opts?: CallingOptions,
): Promise<ActionResponse<A>> {
  let options = opts;
  const parent = opts?.parentCtx ?? (isContext(via) ? via : undefined);
  // A request whose client gave up (lib/cancellation.ts) stops at its next call.
  if (parent && isCancelled(parent.broker, parent.requestID))
    return Promise.reject(new Errors.RequestSkippedError({ action, nodeID: parent.nodeID ?? "" }));
  if (opts?.parentCtx && parent && (parent.options?.timeout ?? 0) > 0 && parent.startHrTime) {
    // What is left of the request's timeout, as Context.call computes it (Moleculer's
    // timeout middleware stamps startHrTime). Not Context.call itself: it also copies the
    // child's meta into the parent's, and a child's `$statusCode` would become the answer's.
    const [s, ns] = process.hrtime(parent.startHrTime);
    const left = parent.options.timeout! - (s * 1e3 + ns / 1e6);
    if (left <= 0) return Promise.reject(new Errors.RequestSkippedError({ action, nodeID: parent.nodeID ?? "" }));
    options = { ...opts, timeout: opts.timeout && opts.timeout < left ? opts.timeout : left };
  }
  // Moleculer's `call` answers whatever type it is given: the contract says what it is.
  return via.call<ActionResponse<A>, unknown>(action, params, options);
}
