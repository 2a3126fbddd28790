/**
 * One more try for a call between services (#17), by the same rule as the edges'
 * (lib/edge-retry.ts `secondTry`): a nested call (`ctx.call` inside an action) that
 * - never left this node (its transporter was between two RabbitMQ connections:
 *   `BrokerDisconnectedError`) goes again, whatever the action, once the transporter is
 *   back: nothing acted on it;
 * - was lost in transport (its node or broker node went away) goes again when the action is
 *   safe to repeat: a read (its REST route is a GET) or marked idempotent in its contract.
 *
 * Calls of the edges themselves (the gateway's `api` service, the gRPC edge, which calls
 * without a parent context) are left to the edges, which retry with the client's request in
 * view: two layers retrying the same call would multiply the tries.
 *
 * The limit: a nested call lost in transport fails after its timeout, which is usually also
 * the end of the caller's own budget; the second try then helps only when it came early (a
 * node that left: `RequestRejectedError`). The not-sent case, the common one while a node
 * moves to another RabbitMQ node, costs no wait but the reconnect's.
 */
import type { Context, Middleware, Service } from "moleculer";
import { contracts } from "./serializer/contracts-runtime";
import { secondTry, transportBack } from "./edge-retry";

/** What is left of the call's timeout (Moleculer's Timeout middleware starts its clock); Infinity without one. */
function timeLeftMs(ctx: Context): number {
  const timeout = ctx.options?.timeout ?? 0;
  if (!(timeout > 0) || !ctx.startHrTime) return Infinity;
  const [s, ns] = process.hrtime(ctx.startHrTime);
  return timeout - (s * 1e3 + ns / 1e6);
}

/** Moleculer services that are edges and retry on their own. */
const EDGES = new Set(["api", "grpc"]);

/**
 * On the caller's side of every remote action (Moleculer's `remoteAction` hook: `next` sends
 * `ctx` to `ctx.nodeID`). It sits inside the request timeout (Moleculer's own middlewares
 * wrap it), so the two tries share the call's one budget, and a timeout is not seen here:
 * what is retried is a call refused before it left or answered "node left".
 */
export function InternalRetryMiddleware(): Middleware {
  return {
    name: "InternalRetry",
    remoteAction(next) {
      return async function (this: Service, ctx: Context): Promise<unknown> {
        const broker = ctx.broker;
        try {
          return await next.call(this, ctx);
        } catch (err) {
          // `caller`: the calling action's service (none for a call from outside an action).
          const caller = ctx.caller ?? undefined;
          const action = ctx.action?.name;
          if (!action || caller === undefined || EDGES.has(caller)) throw err;
          const contract = contracts.actions.get(action);
          const target = secondTry({
            err,
            action,
            contract,
            method: contract?.http?.method,
            idempotencyKey: undefined,
            failedNode: ctx.nodeID ?? undefined,
            endpoints: broker.registry.getActionEndpoints(action)?.endpoints ?? [],
            clientGone: false,
          });
          if (!target || target.local) throw err;
          // At once when the transporter is connected; else once it is back (see the edges), within
          // what is left of the call's timeout: past it, the caller has its RequestTimeoutError
          // already, and a second try would act after that answer.
          const left = timeLeftMs(ctx);
          if (left <= 0) throw err;
          await transportBack(broker, left);
          if (timeLeftMs(ctx) <= 0) throw err;
          broker.logger.warn(`${caller} → ${action}: ${(err as Error).name} on node ${ctx.nodeID}; sent once more, to node ${target.id}`);
          ctx.nodeID = target.id;
          return next.call(this, ctx);
        }
      };
    },
  };
}
