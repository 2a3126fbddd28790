/**
 * The gRPC edge's methods, derived from the contracts: every published rpc that is not
 * `http_only` is served at `/<package>.<Service>/<Rpc>` and calls its Moleculer action, so the
 * gRPC and REST edges share every rule (validation, ownership, idempotency, state machines).
 *
 * Per call, in order:
 * 1. the message is decoded with the contract's codec (the serializer's, so the action gets
 *    exactly the plain value a REST call would give it); bytes that are not that message are
 *    INVALID_ARGUMENT, never a crash;
 * 2. the client's deadline becomes the action's timeout (capped by REQUEST_TIMEOUT_MS); one
 *    already past is DEADLINE_EXCEEDED without a call. Moleculer passes the remaining time on
 *    to every nested call (distributed timeouts), so a create whose deadline passes stops at its
 *    next call and runs its undo (services/order/checkout.actions.ts);
 * 3. identity from `authorization: Bearer …` only, the auth level and the request budgets:
 *    the REST gateway's door (lib/auth/edge-door.ts);
 * 4. `idempotency-key` and `x-request-id` metadata as the REST headers; the request id comes
 *    back in the response's initial metadata;
 * 5. the answer is encoded with the contract; one that does not fit it is INTERNAL (logged with
 *    the reason), never a half-encoded message.
 * Limit: a client that cancels stops waiting and the edge answers nothing more, but an action
 * already running on some node runs on until it ends or its timeout (Moleculer has no remote
 * cancellation); its deadline bounds that.
 */
import { Metadata, status as Status, type ServerUnaryCall, type sendUnaryData, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import type { ServiceBroker } from "moleculer";
import type { ActionContract } from "../../proto/registry";
import { contracts, codecFor } from "../../lib/serializer/contracts-runtime";
import { explainMisfit, type MessageCodec } from "../../lib/serializer/contract-codec";
import type { EdgeDoor } from "../../lib/auth/edge-door";
import { clientAddress } from "../../lib/client-address";
import type { AppConfig } from "../../lib/config";
import type { RequestMeta } from "../../lib/context";
import { AppError, malformed } from "../../lib/errors";
import type { NamedLimit } from "../../lib/request-limits";
import { logFields, requestIdOf } from "../../lib/tracing";
import { toGrpcError } from "./status";

/** An incoming message that could not be decoded: answered INVALID_ARGUMENT by the handler. */
class Undecodable {
  constructor(readonly reason: string) {}
}

export interface EdgeDeps {
  broker: ServiceBroker;
  config: AppConfig;
  door: EdgeDoor;
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void; debug(...a: unknown[]): void };
}

/** The protobuf services the edge serves, each with its rpcs' contracts (published, not http_only). */
export function servedRpcs(): Map<string, ActionContract[]> {
  const out = new Map<string, ActionContract[]>();
  for (const c of contracts.actions.values()) {
    if (c.visibility !== "published" || c.httpOnly) continue;
    out.set(c.service, [...(out.get(c.service) ?? []), c]);
  }
  return out;
}

/** The grpc-js definition of one protobuf service: our codecs on the wire, the answer encoded by the handler. */
export function serviceDefinition(service: string, rpcs: ActionContract[]): ServiceDefinition {
  const def: Record<string, ServiceDefinition[string]> = {};
  for (const c of rpcs) {
    const codec = codecFor(c.request);
    def[c.rpc] = {
      path: `/${service}/${c.rpc}`,
      requestStream: false,
      responseStream: false,
      originalName: c.rpc,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return codec.decode(bytes);
        } catch (err) {
          return new Undecodable((err as Error).message);
        }
      },
      requestSerialize: (value: unknown) => Buffer.from(codec.encode(value) ?? new Uint8Array()),
      responseSerialize: (bytes: Buffer) => bytes,
      responseDeserialize: (bytes: Buffer) => bytes,
    };
  }
  return def;
}

const single = (md: Metadata, key: string): string | undefined => {
  const v = md.get(key);
  return v.length === 1 && typeof v[0] === "string" ? v[0] : undefined;
};

/** `ipv4:1.2.3.4:5678` / `ipv6:[::1]:5678` → the address. */
function peerAddress(peer: string): string | undefined {
  const m = /^ipv4:([^:]+):\d+$/.exec(peer) ?? /^ipv6:\[([^\]]+)\]:\d+$/.exec(peer);
  return m?.[1];
}

/** The handlers of one protobuf service's rpcs. */
export function serviceImplementation(deps: EdgeDeps, rpcs: ActionContract[]): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const c of rpcs) {
    const answer: MessageCodec | null = c.response ? codecFor(c.response) : null;
    impl[c.rpc] = (call: ServerUnaryCall<unknown, Buffer>, callback: sendUnaryData<Buffer>) => {
      const requestId = requestIdOf(single(call.metadata, "x-request-id"));
      const started = process.hrtime.bigint();
      const head = new Metadata();
      head.set("x-request-id", requestId);
      call.sendMetadata(head);
      let cancelled = false;
      call.on("cancelled", () => (cancelled = true));
      invoke(deps, c, call, requestId).then(
        (value) => {
          if (cancelled) return;
          if (!answer) return callback(null, Buffer.alloc(0));
          const bytes = answer.encode(value);
          if (bytes) return callback(null, Buffer.from(bytes));
          deps.logger.error(logFields({ requestId }), `gRPC ${c.action}: the answer does not fit ${c.response!.fullName}: ${explainMisfit(c.response!, value)}`);
          callback(toGrpcError(new AppError("INTERNAL", "Internal error")), null);
        },
        (err: unknown) => {
          if (cancelled) return;
          if (isDeadlineExceeded(err)) return callback({ code: Status.DEADLINE_EXCEEDED, details: err.message, metadata: head }, null);
          const e = toGrpcError(err);
          if (e.httpStatus === 503) deps.logger.warn(logFields({ requestId }), `gRPC ${c.action}: ${e.details}`);
          else if (e.httpStatus >= 500) deps.logger.error(logFields({ requestId }), `gRPC ${c.action} failed:`, err);
          e.metadata.set("x-request-id", requestId);
          callback(e, null);
        },
      ).finally(() => {
        const durationMs = Math.round(Number(process.hrtime.bigint() - started) / 1e5) / 10;
        deps.logger.debug(logFields({ kind: "access", rpc: c.rpc, action: c.action, durationMs, requestId, nodeID: deps.broker.nodeID }), `gRPC ${call.getPath()}`);
      });
    };
  }
  return impl;
}

async function invoke(deps: EdgeDeps, c: ActionContract, call: ServerUnaryCall<unknown, Buffer>, requestID: string): Promise<unknown> {
  const { broker, config, door } = deps;
  if (call.request instanceof Undecodable) throw malformed(`The message is not a ${c.request.fullName.slice(1)}: ${call.request.reason}`);
  const deadline = call.getDeadline();
  const left = deadline instanceof Date ? deadline.getTime() - Date.now() : Number.isFinite(deadline) ? Number(deadline) - Date.now() : Infinity;
  if (left <= 0) throw deadlineExceeded();
  const timeout = Math.max(1, Math.min(config.requestTimeoutMs, left));

  const { user, budgetUserId } = await door.authenticate(single(call.metadata, "authorization"), c.auth);
  door.authorize(c.auth, user);
  const ip = clientAddress(peerAddress(call.getPeer()), call.metadata.get("x-forwarded-for").filter((v): v is string => typeof v === "string"), config.trustProxyHops);
  // The action's own budget (`rateLimit`) is declared on its schema, wherever it runs.
  const rateLimit: NamedLimit | undefined = broker.registry.getActionEndpoints(c.action)?.endpoints[0]?.action.rateLimit;
  await door.spendBudget({ user, budgetUserId, ip, rateLimit });

  const meta: RequestMeta = { clientIp: ip };
  if (user) meta.user = user;
  const key = single(call.metadata, "idempotency-key");
  if (key !== undefined) {
    if (!/^[\x21-\x7e]{1,200}$/.test(key)) throw malformed("idempotency-key: 1 to 200 printable ASCII characters", [{ field: "idempotency-key" }]);
    meta.idempotencyKey = key;
  }
  try {
    return await broker.call(c.action, call.request as object, { timeout, requestID, meta });
  } catch (err) {
    // The client's deadline, not an outage: a timeout within it is the server's (UNAVAILABLE).
    if ((err as { name?: string }).name === "RequestTimeoutError" && timeout < config.requestTimeoutMs) throw deadlineExceeded();
    throw err;
  }
}

/** Not in the error catalog (REST has no deadlines): a status of its own. */
class DeadlineExceeded extends Error {
  readonly grpcCode = Status.DEADLINE_EXCEEDED;
}
const deadlineExceeded = () => new DeadlineExceeded("Deadline exceeded");
export const isDeadlineExceeded = (err: unknown): err is DeadlineExceeded => err instanceof DeadlineExceeded;
