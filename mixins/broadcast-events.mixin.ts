/**
 * `BroadcastEventsMixin`: every replica of the service receives every listed business event
 * (lib/events/broadcast.ts), for services that keep a rebuildable copy in memory. Handlers
 * and `onResync` run with the service as `this`. No database needed.
 *
 * `onResync` is called once the subscription is in place (at start, and after every lost
 * and rebound connection in cluster mode), so the service's (re)build always starts AFTER
 * it can no longer miss a change.
 */
import type { Service, ServiceSchema } from "moleculer";
import type { ContractEvent, EventPayload } from "../proto/gen/contracts";
import { typedMixin } from "../lib/service-schema";
import type { AppConfig } from "../lib/config";
import { AmqpLink } from "../lib/events/amqp";
import { AmqpBroadcastConsumer, addEmbeddedBroadcast, type BroadcastHandler, type BroadcastStats } from "../lib/events/broadcast";
import { topology } from "../lib/events/topology";

/** Event name (of the catalog) → its handler, run with the service (`This`) as `this`. */
export type BroadcastHandlers<This> = {
  [E in ContractEvent]?: (this: This, ...args: Parameters<BroadcastHandler<EventPayload<E>>>) => ReturnType<BroadcastHandler>;
};

export interface BroadcastEventsMixinOptions<This> {
  name: string;
  config: AppConfig;
  handlers: BroadcastHandlers<This>;
  onResync: (this: This) => void;
}

interface Runtime {
  link?: AmqpLink;
  consumer?: AmqpBroadcastConsumer;
  embedded?: { stats: BroadcastStats; remove(): void };
}

/** `This`: the service the mixin is listed in (its handlers' `this`). */
export function BroadcastEventsMixin<This>(opts: BroadcastEventsMixinOptions<This>): Partial<ServiceSchema> {
  const { config, name } = opts;
  type Self = This & Service & { $broadcast: Runtime };
  return typedMixin<Self>({
    // What this service consumes, for the check against its contract (proto/contracts.int.spec.ts).
    metadata: { broadcastConsumes: Object.keys(opts.handlers) },
    methods: {
      broadcastStats(this: Self): BroadcastStats {
        const rt = this.$broadcast;
        return { ...(rt.consumer?.stats ?? rt.embedded?.stats ?? { applied: 0, failed: 0, bindings: 0 }) };
      },
    },

    created(this: Self) {
      this.$broadcast = {} satisfies Runtime;
    },

    async started(this: Self) {
      const rt = this.$broadcast;
      const handlers: Record<string, BroadcastHandler> = {};
      for (const [event, fn] of Object.entries(opts.handlers)) if (fn) handlers[event] = fn.bind(this);
      const onResync = () => {
        try {
          opts.onResync.call(this);
        } catch (err) {
          this.logger.error(`Resync of '${name}' failed to start: ${(err as Error).message}`);
        }
      };
      const common = { service: name, nodeId: config.nodeId, handlers, onResync, logger: this.logger };
      if (config.rabbitmqUris) {
        rt.link = new AmqpLink(config.rabbitmqUris, `meridian-broadcast-${name}-${config.nodeId}`);
        rt.consumer = new AmqpBroadcastConsumer({ ...common, link: rt.link, topo: topology(config.namespace) });
        await rt.consumer.start();
      } else {
        rt.embedded = addEmbeddedBroadcast(this.broker, common);
        onResync();
      }
    },

    async stopped(this: Self) {
      const rt = this.$broadcast;
      rt.embedded?.remove();
      await rt.consumer?.stop();
      await rt.link?.close();
    },
  });
}
