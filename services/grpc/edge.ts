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
 * A client that cancels gets no answer, and the request stops at its next nested call on any
 * node (lib/cancellation.ts); the step running then finishes (Moleculer cannot interrupt a
 * call in flight), and the deadline bounds the rest if the cancel's broadcast is missed.
 */
import {
  Metadata,
  status as Status,
  type ServerUnaryCall,
  type sendUnaryData,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { ServiceBroker } from "moleculer";
import type protobuf from "protobufjs/light";
import type { ActionContract } from "../../proto/registry";
import { secondTry, transportBack } from "../../lib/edge-retry";
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
import { cancelRequest } from "../../lib/cancellation";

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

/** The grpc-js definition of one method: our codec reads the request; the handler encodes the answer. */
export function methodDefinition(service: string, rpc: string, request: protobuf.Type, responseStream: boolean): ServiceDefinition[string] {
  const codec = codecFor(request);
  return {
    path: `/${service}/${rpc}`,
    requestStream: false,
    responseStream,
    originalName: rpc,
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

/** The grpc-js definition of one protobuf service's unary rpcs. */
export function serviceDefinition(service: string, rpcs: ActionContract[]): ServiceDefinition {
  return Object.fromEntries(rpcs.map((c) => [c.rpc, methodDefinition(service, c.rpc, c.request, false)]));
}

/** A request that did not decode: INVALID_ARGUMENT, naming the message. */
export function undecodable(request: unknown, type: protobuf.Type): AppError | undefined {
  return request instanceof Undecodable ? malformed(`The message is not a ${type.fullName.slice(1)}: ${request.reason}`) : undefined;
}

export const single = (md: Metadata, key: string): string | undefined => {
  const v = md.get(key);
  return v.length === 1 && typeof v[0] === "string" ? v[0] : undefined;
};

/** The client's address: the peer (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`), or x-forwarded-for's entry per TRUST_PROXY. */
export function callerAddress(call: { getPeer(): string; metadata: Metadata }, trustProxyHops: number): string {
  return clientAddress(
    peerAddress(call.getPeer()),
    call.metadata.get("x-forwarded-for").filter((v): v is string => typeof v === "string"),
    trustProxyHops,
  );
}

/**
 * The address of grpc-js's `getPeer()`: `127.0.0.1:5678`, `::1:5678` (IPv6 without brackets),
 * `[::1]:5678`, or with an `ipv4:`/`ipv6:` scheme; undefined for anything else (a Unix socket).
 */
export function peerAddress(peer: string): string | undefined {
  const m = /^(?:ipv[46]:)?\[?([0-9A-Fa-f:.]+?)\]?:(\d+)$/.exec(peer);
  return m?.[1];
}

/** The call's request id (its `x-request-id` when sane), sent back at once in the response headers. */
export function answerRequestId(call: { metadata: Metadata; sendMetadata(md: Metadata): void }): { requestId: string; head: Metadata } {
  const requestId = requestIdOf(single(call.metadata, "x-request-id"));
  const head = new Metadata();
  head.set("x-request-id", requestId);
  call.sendMetadata(head);
  return { requestId, head };
}

/**
 * An answer's bytes. One that does not fit its message throws a plain Error naming the reason:
 * `failureStatus` logs it and answers INTERNAL with a generic message (the reason stays here).
 */
export function encodeAnswer(codec: MessageCodec, type: protobuf.Type, value: unknown): Buffer {
  const bytes = codec.encode(value);
  if (bytes) return Buffer.from(bytes);
  throw new Error(`the answer does not fit ${type.fullName}: ${explainMisfit(type, value)}`);
}

/** A failure as a status (request id in its trailers); an outage is a warning, anything else of 5xx an error with its stack. */
export function failureStatus(deps: EdgeDeps, err: unknown, requestId: string, what: string) {
  const e = toGrpcError(err);
  if (e.httpStatus === 503) deps.logger.warn(logFields({ requestId }), `gRPC ${what}: ${e.details}`);
  else if (e.httpStatus >= 500) deps.logger.error(logFields({ requestId }), `gRPC ${what} failed:`, err);
  e.metadata.set("x-request-id", requestId);
  return { code: e.code, details: e.details, metadata: e.metadata };
}

/** The handlers of one protobuf service's rpcs. */
export function serviceImplementation(deps: EdgeDeps, rpcs: ActionContract[]): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const c of rpcs) {
    const answer: MessageCodec | null = c.response ? codecFor(c.response) : null;
    impl[c.rpc] = (call: ServerUnaryCall<unknown, Buffer>, callback: sendUnaryData<Buffer>) => {
      const { requestId, head } = answerRequestId(call);
      const started = process.hrtime.bigint();
      let cancelled = false;
      call.on("cancelled", () => {
        cancelled = true;
        // Every node skips the request's next calls (lib/cancellation.ts).
        cancelRequest(deps.broker, requestId, deps.config.requestTimeoutMs);
      });
      invoke(deps, c, call, requestId)
        .then(
          (value) => {
            if (cancelled) return;
            if (!answer) return callback(null, Buffer.alloc(0));
            let bytes: Buffer;
            try {
              bytes = encodeAnswer(answer, c.response!, value);
            } catch (err) {
              return callback(failureStatus(deps, err, requestId, c.action), null);
            }
            callback(null, bytes);
          },
          (err: unknown) => {
            if (cancelled) return;
            if (isDeadlineExceeded(err)) return callback({ code: Status.DEADLINE_EXCEEDED, details: err.message, metadata: head }, null);
            callback(failureStatus(deps, err, requestId, c.action), null);
          },
        )
        .catch((err: unknown) => {
          // An answer that could not even be turned into a status: still an answer, never an unhandled rejection.
          deps.logger.error(logFields({ requestId }), `gRPC ${c.action}: answering failed:`, err);
          if (!cancelled) callback({ code: Status.INTERNAL, details: "Internal error" }, null);
        })
        .finally(() => {
          const durationMs = Math.round(Number(process.hrtime.bigint() - started) / 1e5) / 10;
          deps.logger.debug(
            logFields({ kind: "access", rpc: c.rpc, action: c.action, durationMs, requestId, nodeID: deps.broker.nodeID }),
            `gRPC ${call.getPath()}`,
          );
        });
    };
  }
  return impl;
}

async function invoke(deps: EdgeDeps, c: ActionContract, call: ServerUnaryCall<unknown, Buffer>, requestID: string): Promise<unknown> {
  const { broker, config, door } = deps;
  const bad = undecodable(call.request, c.request);
  if (bad) throw bad;
  const d = call.getDeadline();
  const deadline = d instanceof Date ? d.getTime() : Number(d);
  if (deadline <= Date.now()) throw deadlineExceeded();

  const { user, budgetUserId } = await door.authenticate(single(call.metadata, "authorization"), c.auth);
  door.authorize(c.auth, user);
  const ip = callerAddress(call, config.trustProxyHops);
  // The action's own budget (`rateLimit`) is declared on its schema, wherever it runs.
  const rateLimit: NamedLimit | undefined = broker.registry.getActionEndpoints(c.action)?.endpoints[0]?.action.rateLimit;
  await door.spendBudget({ user, budgetUserId, ip, rateLimit });

  const meta: RequestMeta = { clientIp: ip };
  if (user) meta.user = user;
  const key = single(call.metadata, "idempotency-key");
  if (key !== undefined) {
    if (!/^[\x21-\x7e]{1,200}$/.test(key))
      throw malformed("idempotency-key: 1 to 200 printable ASCII characters", [{ field: "idempotency-key" }]);
    meta.idempotencyKey = key;
  }
  if (deadline <= Date.now()) throw deadlineExceeded();
  // What is left of the client's deadline after the door's round trips, within REQUEST_TIMEOUT_MS.
  const send = (nodeID?: string) =>
    broker.call(c.action, call.request as object, {
      timeout: Math.max(1, Math.min(config.requestTimeoutMs, deadline - Date.now())),
      requestID,
      meta,
      nodeID,
    });
  // Past the client's deadline, whatever failed (a timeout, a skipped nested call) failed for want of time.
  const failure = (err: unknown) => (Date.now() >= deadline ? deadlineExceeded() : err);
  try {
    return await send();
  } catch (err) {
    // Lost in transport and safe to repeat: once more, within the client's deadline (lib/edge-retry.ts).
    const next =
      Date.now() < deadline
        ? secondTry({
            err,
            action: c.action,
            contract: c,
            method: c.http?.method,
            idempotencyKey: meta.idempotencyKey,
            failedNode: (err as { data?: { nodeID?: string } }).data?.nodeID,
            endpoints: broker.registry.getActionEndpoints(c.action)?.endpoints ?? [],
            clientGone: call.cancelled,
          })
        : undefined;
    if (!next) throw failure(err);
    // Not sent, or lost with the broker node this node was connected to: either way the second
    // try goes once this node's transporter is back (at once when it is connected).
    // Within the client's deadline, which may be none (Infinity).
    await transportBack(broker, deadline - Date.now());
    if (Date.now() >= deadline) throw deadlineExceeded();
    return await send(next.id).catch((again: unknown) => {
      throw failure(again);
    });
  }
}

/** Not in the error catalog (REST has no deadlines): a status of its own. */
class DeadlineExceeded extends Error {
  readonly grpcCode = Status.DEADLINE_EXCEEDED;
}
const deadlineExceeded = () => new DeadlineExceeded("Deadline exceeded");
export const isDeadlineExceeded = (err: unknown): err is DeadlineExceeded => err instanceof DeadlineExceeded;
