/**
 * meridian.live.v1.LiveService: the live feeds (lib/live/feeds.ts) as gRPC server streams.
 * The caller is a signed-in user (the door's `user` level and general budget); what a stream
 * sends is read through the order and notification services as that user. The stream ends
 * when the client cancels (or its deadline passes), with an error status when a read fails
 * (someone else's order: NOT_FOUND), and at server shutdown (UNAVAILABLE: reconnect, with
 * `after`, to another node).
 */
import { once } from "node:events";
import { status as Status, type ServerWritableStream, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import type protobuf from "protobufjs/light";
import { codecFor, root } from "../../lib/serializer/contracts-runtime";
import { unauthorized } from "../../lib/errors";
import { admitStream, type LiveFeeds, type StreamAdmission, type StreamOptions } from "../../lib/live/feeds";
import { logFields } from "../../lib/tracing";
import { answerRequestId, callerAddress, encodeAnswer, failureStatus, methodDefinition, single, undecodable, type EdgeDeps } from "./edge";
import { toGrpcError } from "./status";

export const LIVE_SERVICE = "meridian.live.v1.LiveService";

interface StreamRpc {
  request: protobuf.Type;
  response: protobuf.Type;
  open(feeds: LiveFeeds, request: Record<string, unknown>, o: StreamOptions): AsyncIterable<unknown>;
}

const RPCS: Record<string, StreamRpc> = {
  WatchOrder: {
    request: root.lookupType("meridian.live.v1.WatchOrderRequest"),
    response: root.lookupType("meridian.live.v1.OrderUpdate"),
    open: (feeds, r, o) => feeds.watchOrder(typeof r.id === "string" ? r.id : "", typeof r.after === "number" ? r.after : undefined, o),
  },
  StreamNotifications: {
    request: root.lookupType("meridian.live.v1.StreamNotificationsRequest"),
    response: root.lookupType("meridian.notification.v1.Notification"),
    open: (feeds, r, o) => feeds.notifications(typeof r.after === "string" ? r.after : undefined, o),
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
      const { requestId, head } = answerRequestId(call);
      const gone = new AbortController();
      const stop = () => gone.abort();
      call.on("cancelled", stop);
      call.on("close", stop);
      stopping.addEventListener("abort", stop, { once: true });
      if (stopping.aborted) stop();
      let admission: StreamAdmission | undefined;
      (async () => {
        const bad = undecodable(call.request, r.request);
        if (bad) throw bad;
        admission = await admitStream(
          deps.door,
          single(call.metadata, "authorization"),
          callerAddress(call, deps.config.trustProxyHops),
          gone.signal,
        );
        const { caller, signal } = admission;
        for await (const item of r.open(feeds, call.request as Record<string, unknown>, { caller, signal })) {
          if (signal.aborted) break;
          if (!call.write(encodeAnswer(answer, r.response, item))) await once(call, "drain", { signal }).catch(() => undefined);
        }
      })()
        .then(
          () => {
            if (call.cancelled) return;
            if (admission?.expired())
              call.emit("error", toGrpcError(unauthorized("The access token expired; reconnect with a fresh one and `after`")));
            else if (stopping.aborted)
              call.emit("error", {
                code: Status.UNAVAILABLE,
                details: "The server is shutting down; reconnect with `after`",
                metadata: head,
              });
            else call.end();
          },
          (err: unknown) => {
            if (!call.cancelled) call.emit("error", failureStatus(deps, err, requestId, rpc));
          },
        )
        .catch((err: unknown) => {
          deps.logger.error(logFields({ requestId }), `gRPC ${rpc}: ending the stream failed:`, err);
          if (!call.cancelled) call.emit("error", { code: Status.INTERNAL, details: "Internal error" });
        })
        .finally(() => {
          admission?.close();
          stopping.removeEventListener("abort", stop);
        });
    };
  }
  return impl;
}
