/**
 * What every node has besides its services: the readiness probes of the node itself (not
 * ready while starting), its transporter and its cache, and the service that hears of
 * requests whose client gave up (lib/cancellation.ts). One function for both ways a broker is
 * made: app.ts `createBroker` (npm start, the tests) and the runner's `created` hook
 * (moleculer.config.ts's default export).
 */
import type { ServiceBroker } from "moleculer";
import type { AppConfig } from "./config";
import { cancellationService } from "./cancellation";
import { registerProbe } from "./readiness";

export function setUpNode(broker: ServiceBroker, config: AppConfig): void {
  // Not ready while starting: the gateway listens before the other local services have
  // started and registered, and would answer their routes with 503.
  registerProbe(broker, "node", async () => {
    if (!broker.started) throw new Error("still starting");
  });
  if (config.rabbitmqUris)
    registerProbe(broker, "transporter", async () => {
      if (!broker.transit?.connected) throw new Error("not connected to RabbitMQ");
    });
  if (config.redisUrl)
    registerProbe(broker, "cache", async () => {
      await (broker.cacher as unknown as { client: { ping(): Promise<string> } }).client.ping();
    });
  // Every node hears of requests whose client gave up (lib/cancellation.ts).
  broker.createService(cancellationService(config.requestTimeoutMs));
}
