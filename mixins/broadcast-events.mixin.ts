/**
 * `BroadcastEventsMixin`: every replica of the service receives every listed business event
 * (lib/events/broadcast.ts), for services that keep a rebuildable copy in memory. Handlers
 * and `onResync` run with the service as `this`. No database needed.
 *
 * `onResync` is called once the subscription is in place (at start, and after every lost
 * and rebound connection in cluster mode), so the service's (re)build always starts AFTER
 * it can no longer miss a change.
 */
import type { ServiceBroker, ServiceSchema } from "moleculer";
import type { AppConfig } from "../lib/config";
import { AmqpLink } from "../lib/events/amqp";
import { AmqpBroadcastConsumer, addEmbeddedBroadcast, type BroadcastHandler, type BroadcastStats } from "../lib/events/broadcast";
import { topology } from "../lib/events/topology";

export interface BroadcastEventsMixinOptions {
  name: string;
  config: AppConfig;
  handlers: Record<string, (this: any, ...args: Parameters<BroadcastHandler>) => ReturnType<BroadcastHandler>>;
  onResync: (this: any) => void;
}

interface Runtime {
  link?: AmqpLink;
  consumer?: AmqpBroadcastConsumer;
  embedded?: { stats: BroadcastStats; remove(): void };
}

export function BroadcastEventsMixin(opts: BroadcastEventsMixinOptions): Partial<ServiceSchema> {
  const { config, name } = opts;
  return {
    // What this service consumes, for the check against its contract (proto/contracts.int.spec.ts).
    metadata: { broadcastConsumes: Object.keys(opts.handlers) },
    methods: {
      broadcastStats(this: any): BroadcastStats {
        const rt = this.$broadcast as Runtime;
        return { ...(rt.consumer?.stats ?? rt.embedded?.stats ?? { applied: 0, failed: 0, bindings: 0 }) };
      },
    },

    created(this: any) {
      this.$broadcast = {} satisfies Runtime;
    },

    async started(this: any) {
      const rt = this.$broadcast as Runtime;
      const handlers = Object.fromEntries(Object.entries(opts.handlers).map(([event, fn]) => [event, fn.bind(this)]));
      const onResync = () => {
        try {
          opts.onResync.call(this);
        } catch (err) {
          this.logger.error(`Resync of '${name}' failed to start: ${(err as Error).message}`);
        }
      };
      const common = { service: name, nodeId: config.nodeId, handlers, onResync, logger: this.logger };
      if (config.rabbitmqUri) {
        rt.link = new AmqpLink(config.rabbitmqUri, `meridian-broadcast-${name}-${config.nodeId}`);
        rt.consumer = new AmqpBroadcastConsumer({ ...common, link: rt.link, topo: topology(config.namespace) });
        await rt.consumer.start();
      } else {
        rt.embedded = addEmbeddedBroadcast(this.broker as ServiceBroker, common);
        onResync();
      }
    },

    async stopped(this: any) {
      const rt = this.$broadcast as Runtime;
      rt.embedded?.remove();
      await rt.consumer?.stop();
      await rt.link?.close();
    },
  };
}
