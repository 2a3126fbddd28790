/**
 * The gRPC edge (`SERVICES=grpc`; part of the embedded default): every public rpc of the
 * contracts in proto/ over HTTP/2 with @grpc/grpc-js, on GRPC_PORT. Each rpc calls its Moleculer
 * action (edge.ts), so this edge and the REST gateway share every rule; identity, auth levels
 * and request budgets go through the same door (lib/auth/edge-door.ts).
 *
 * Standard services beside them:
 * - `grpc.health.v1.Health`: "" (the whole node) is SERVING while this node is ready (the
 *   same readiness as GET /health/ready: its own dependencies), `meridian.live` while the
 *   process runs, and each contract service (`meridian.order.v1.OrderService`) while some
 *   node of the cluster offers it: Kubernetes' native gRPC probes and load balancers read it;
 * - server reflection (v1 and v1alpha, @grpc/reflection), from the same descriptor the
 *   serializer loads, so `grpcurl -plaintext localhost:50051 list` needs no .proto files.
 */
import { forRunner } from "../../lib/runner";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, protoPath as healthProtoPath } from "grpc-health-check";
import descriptor from "../../proto/gen/descriptor.json";
import { createEdgeDoor, type EdgeDoor } from "../../lib/auth/edge-door";
import type { AppConfig } from "../../lib/config";
import { periodic, type Periodic } from "../../lib/periodic";
import { checkReadiness } from "../../lib/readiness";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { contracts } from "../../lib/serializer/contracts-runtime";
import type { Context } from "moleculer";
import { serviceDefinition, serviceImplementation, servedRpcs } from "./edge";
import { LIVE_SERVICE, liveServiceDefinition, liveServiceImplementation } from "./streams";
import { LiveFeedsMixin, type LiveFeedsThis } from "../../mixins/live-feeds.mixin";

/**
 * The health service name of liveness: SERVING while the process runs (a liveness probe must
 * not restart a node whose dependency is away; "" is readiness).
 */
export const LIVENESS = "meridian.live";

/** How often the health statuses are re-read (and at every change of the service registry). */
const HEALTH_EVERY_MS = 2000;

export interface GrpcThis extends LiveFeedsThis {
  broker: Context["broker"];
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void; debug(...a: unknown[]): void };
  door: EdgeDoor;
  server: grpc.Server;
  health: HealthImplementation;
  healthLoop?: Periodic;
  /** The port bound (GRPC_PORT, or the one the OS chose for 0). */
  port: number;
  /** Aborted when the service stops: open streams end with UNAVAILABLE (reconnect elsewhere). */
  stopping: AbortController;
  refreshHealth(): Promise<void>;
}

export function createGrpcService(config: AppConfig): TypedServiceSchema<GrpcThis> {
  const served = servedRpcs();
  // The Moleculer service behind each protobuf service (for its health status).
  const moleculerOf = new Map([...contracts.services.values()].map((s) => [s.service, s.name]));
  return {
    name: "grpc",
    // The live feeds (meridian.live.v1.LiveService) follow this node's business events.
    mixins: LiveFeedsMixin("grpc", config),

    events: {
      // A node came or went: the per-service statuses change now, not at the next pass.
      "$services.changed"(this: GrpcThis) {
        this.healthLoop?.kick();
      },
    },

    methods: {
      async refreshHealth(this: GrpcThis) {
        const report = await checkReadiness(this.broker);
        this.health.setStatus("", report.ready ? "SERVING" : "NOT_SERVING");
        const offered = new Set(this.broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true }).map((s) => s.name));
        for (const service of served.keys()) {
          const name = moleculerOf.get(service);
          this.health.setStatus(service, name && offered.has(name) ? "SERVING" : "NOT_SERVING");
        }
      },
    },

    created(this: GrpcThis) {
      this.door = createEdgeDoor(config);
      this.server = new grpc.Server({
        // The REST edge's body limit holds here too (grpc-js answers RESOURCE_EXHAUSTED above it).
        "grpc.max_receive_message_length": config.bodyLimitBytes,
        "grpc.max_send_message_length": 16 * 1024 * 1024,
        // Idle connections are closed after 5 minutes; dead peers are found by keepalive pings.
        "grpc.max_connection_idle_ms": 5 * 60_000,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
      });
      const deps = { broker: this.broker, config, door: this.door, logger: this.logger };
      for (const [service, rpcs] of served) this.server.addService(serviceDefinition(service, rpcs), serviceImplementation(deps, rpcs));
      this.stopping = new AbortController();
      this.server.addService(liveServiceDefinition(), liveServiceImplementation(deps, this.liveFeeds, this.stopping.signal));
      this.health = new HealthImplementation({ "": "NOT_SERVING", [LIVENESS]: "SERVING" });
      this.health.addToServer(this.server);
      const reflected = { ...protoLoader.fromJSON(descriptor, { keepCase: false }), ...protoLoader.loadSync(healthProtoPath) };
      new ReflectionService(reflected, { services: [...served.keys(), LIVE_SERVICE, "grpc.health.v1.Health"] }).addToServer(this.server);
    },

    async started(this: GrpcThis) {
      this.port = await new Promise<number>((resolve, reject) =>
        this.server.bindAsync(`0.0.0.0:${config.grpcPort}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
          err ? reject(err) : resolve(port),
        ),
      );
      this.healthLoop = periodic("gRPC health", HEALTH_EVERY_MS, () => this.refreshHealth(), this.logger);
      this.healthLoop.kick();
      this.logger.info(`gRPC edge listening on port ${this.port}: ${served.size} services, ${[...served.values()].flat().length} rpcs`);
    },

    async stopped(this: GrpcThis) {
      await this.healthLoop?.stop();
      this.health.setStatus("", "NOT_SERVING");
      // Streams never end by themselves: end them now, so the shutdown below does not wait for them.
      this.stopping.abort();
      // Calls in flight finish (up to the request timeout); then whatever is left is cut.
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          this.server.forceShutdown();
          resolve();
        }, config.requestTimeoutMs);
        force.unref();
        this.server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      await this.door.close();
    },
  };
}

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createGrpcService);
