/**
 * meridian.live.v1.LiveService: the live feeds (lib/live/feeds.ts) as gRPC server streams.
 * The caller is a signed-in user (the door's `user` level and general budget); what a stream
 * sends is read through the order and notification services as that user. The stream ends
 * when the client cancels (or its deadline passes), with an error status when a read fails
 * (someone else's order: NOT_FOUND), and at server shutdown (UNAVAILABLE: reconnect, with
 * `after`, to another node).
 */
import { once } from "node:events";
import { Metadata, status as Status, type ServerWritableStream, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import type protobuf from "protobufjs/light";
import { codecFor, root } from "../../lib/serializer/contracts-runtime";
import { explainMisfit } from "../../lib/serializer/contract-codec";
import type { AuthUser } from "../../lib/auth/tokens";
import { AppError } from "../../lib/errors";
import type { LiveFeeds } from "../../lib/live/feeds";
import { logFields, requestIdOf } from "../../lib/tracing";
import { callerAddress, methodDefinition, single, undecodable, type EdgeDeps } from "./edge";
import { toGrpcError } from "./status";

export const LIVE_SERVICE = "meridian.live.v1.LiveService";

interface StreamRpc {
  request: protobuf.Type;
  response: protobuf.Type;
  open(feeds: LiveFeeds, user: AuthUser, request: Record<string, unknown>, signal: AbortSignal): AsyncIterable<unknown>;
}

const RPCS: Record<string, StreamRpc> = {
  WatchOrder: {
    request: root.lookupType("meridian.live.v1.WatchOrderRequest"),
    response: root.lookupType("meridian.live.v1.OrderUpdate"),
    open: (feeds, user, r, signal) => feeds.watchOrder(user, String(r.id ?? ""), typeof r.after === "number" ? r.after : undefined, signal),
  },
  StreamNotifications: {
    request: root.lookupType("meridian.live.v1.StreamNotificationsRequest"),
    response: root.lookupType("meridian.notification.v1.Notification"),
    open: (feeds, user, r, signal) => feeds.notifications(user, typeof r.after === "string" ? r.after : undefined, signal),
  },
};

export function liveServiceDefinition(): ServiceDefinition {
  return Object.fromEntries(Object.entries(RPCS).map(([rpc, r]) => [rpc, methodDefinition(LIVE_SERVICE, rpc, r.request, true)]));
}

export function liveServiceImplementation(deps: EdgeDeps, feeds: LiveFeeds, stopping: AbortSignal): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [rpc, r] of Object.entries(RPCS)) {
    const answer = codecFor(r.response);
    impl[rpc] = (call: ServerWritableStream<unknown, Buffer>) => {
      const requestId = requestIdOf(single(call.metadata, "x-request-id"));
      const head = new Metadata();
      head.set("x-request-id", requestId);
      call.sendMetadata(head);
      const gone = new AbortController();
      const stop = () => gone.abort();
      call.on("cancelled", stop);
      call.on("close", stop);
      stopping.addEventListener("abort", stop, { once: true });
      (async () => {
        const bad = undecodable(call.request, r.request);
        if (bad) throw bad;
        const { user } = await deps.door.authenticate(single(call.metadata, "authorization"), "user");
        deps.door.authorize("user", user);
        await deps.door.spendBudget({ user, ip: callerAddress(call, deps.config.trustProxyHops) });
        for await (const item of r.open(feeds, user!, call.request as Record<string, unknown>, gone.signal)) {
          if (gone.signal.aborted) break;
          const bytes = answer.encode(item);
          if (!bytes) {
            deps.logger.error(logFields({ requestId }), `gRPC ${rpc}: an update does not fit ${r.response.fullName}: ${explainMisfit(r.response, item)}`);
            throw new AppError("INTERNAL", "Internal error");
          }
          if (!call.write(Buffer.from(bytes))) await Promise.race([once(call, "drain"), once(gone.signal, "abort")]);
        }
      })().then(
        () => {
          if (stopping.aborted && !call.cancelled) call.emit("error", { code: Status.UNAVAILABLE, details: "The server is shutting down; reconnect with `after`", metadata: head });
          else if (!call.cancelled) call.end();
        },
        (err: unknown) => {
          if (call.cancelled) return;
          const e = toGrpcError(err);
          if (e.httpStatus >= 500 && e.httpStatus !== 503) deps.logger.error(logFields({ requestId }), `gRPC ${rpc} failed:`, err);
          e.metadata.set("x-request-id", requestId);
          call.emit("error", { code: e.code, details: e.details, metadata: e.metadata });
        },
      ).catch((err: unknown) => {
        deps.logger.error(logFields({ requestId }), `gRPC ${rpc}: ending the stream failed:`, err);
        if (!call.cancelled) call.emit("error", { code: Status.INTERNAL, details: "Internal error" });
      }).finally(() => stopping.removeEventListener("abort", stop));
    };
  }
  return impl;
}
