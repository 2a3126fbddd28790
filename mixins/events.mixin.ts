/**
 * `EventsMixin`: business events through the outbox (lib/events), for any service.
 *
 * - `this.publishEvent(trx, name, payload)` writes the event row in the caller's transaction
 *   (the state change and its event commit together) and, once that transaction commits,
 *   hands the row to the local relay, which publishes it within EVENTS_KICK_DELAY_MS (the
 *   commits of that moment in one pass) without claiming it from the table (relay.ts);
 * - `consumes: { "user.registered": async (trx, payload, envelope) => … }` handlers run
 *   once per message id, inside the transaction that records it in the service's inbox.
 *
 * Cluster mode (RABBITMQ_URI): a relay publishing to RabbitMQ on a ConfirmChannel and an
 * AMQP consumer, on one dedicated connection per service (not the transporter's). Embedded
 * mode: the relay delivers the rows in-process to the consumers of the same broker.
 *
 * It needs `this.db`, migrated, so DbMixin's `started` must run first. Moleculer runs the
 * `started` handlers of `mixins: [A, B]` in the order B, A, then the service's own (and
 * `stopped` in reverse), so list it BEFORE DbMixin: `mixins: [EventsMixin(…), DbMixin(…)]`.
 * `started` checks that the tables exist and says so otherwise.
 */
import type { Knex } from "knex";
import type { Service, ServiceSchema } from "moleculer";
import { typedMixin } from "../lib/service-schema";
import type { DbServiceThis } from "./db.mixin";
import type { ContractEvent, EventPayload } from "../proto/gen/contracts";
import type { AppConfig } from "../lib/config";
import { AmqpLink } from "../lib/events/amqp";
import { periodic, type Periodic } from "../lib/periodic";
import {
  AmqpConsumer,
  busFor,
  embeddedSubscriber,
  newStats,
  replayRequested,
  type ConsumerStats,
  type EmbeddedSubscriber,
  type EventHandler,
} from "../lib/events/consumer";
import { afterOutboxCommit } from "../lib/events/fault";
import { addOutboxEvent } from "../lib/events/outbox";
import { AmqpRelay, EmbeddedRelay } from "../lib/events/relay";
import { topology } from "../lib/events/topology";
import { consumersOf, contracts } from "../lib/serializer/contracts-runtime";

export interface EventsMixinOptions {
  /** The service (its queues are named after it). */
  name: string;
  config: AppConfig;
  /** Handlers run with the service as `this`, each given its event's payload as its contract types it. */
  consumes?: Consumers;
  /** Messages handled at once by this replica (AMQP prefetch). */
  prefetch?: number;
  /** Outbox rows per relay pass. */
  batchSize?: number;
  /**
   * false: each message in a transaction of its own, never in a batch with others
   * (lib/events/consumer.ts): for handlers that call other services inside the transaction.
   */
  batch?: boolean;
}

/** Event name (of the catalog) → its handler. */
export type Consumers = { [E in ContractEvent]?: EventHandler<EventPayload<E>> };

export interface EventsServiceThis {
  /** A business event of the catalog (proto/gen/contracts.ts), its payload typed by its contract. */
  publishEvent<E extends ContractEvent>(trx: Knex.Transaction, name: E, payload: EventPayload<E>): Promise<string>;
  /** The relay's and the consumer's counters (tests, benchmark). */
  eventStats(): { published: number; unroutable: number; relayPasses: { withRows: number; empty: number } } & ConsumerStats;
}

interface Runtime {
  link?: AmqpLink;
  /** From `started` on. */
  relay?: AmqpRelay | EmbeddedRelay;
  consumer?: AmqpConsumer;
  subscriber?: EmbeddedSubscriber;
  markReady?: () => void;
  replay?: Periodic;
  stats: ConsumerStats;
  handlers: Record<string, EventHandler>;
}

/** What the mixin's own handlers see: the service, its database (DbMixin, required), the mixin's runtime. */
type EventsMixinThis = Service & DbServiceThis & { $events: Runtime };

export function EventsMixin(opts: EventsMixinOptions): Partial<ServiceSchema> {
  const { config, name } = opts;
  const consumes = Object.keys(opts.consumes ?? {}).length > 0;
  const topo = topology(config.namespace);

  return typedMixin<EventsMixinThis>({
    // What this service consumes, for the check against its contract (proto/contracts.int.spec.ts).
    metadata: { consumes: Object.keys(opts.consumes ?? {}) },
    methods: {
      async publishEvent(this: EventsMixinThis, trx: Knex.Transaction, event: string, payload: unknown): Promise<string> {
        const relay = this.$events.relay;
        const row = await addOutboxEvent(trx, { name: event, payload }, relay?.leaseFor() ?? 0);
        // After the commit (not on rollback): the fault switch, then the row to the relay.
        trx.executionPromise.then(
          () => {
            afterOutboxCommit();
            relay?.handOver(row);
          },
          () => undefined,
        );
        return row.id;
      },
      eventStats(this: EventsMixinThis) {
        const rt = this.$events;
        return {
          published: rt.relay?.published ?? 0,
          unroutable: rt.relay instanceof AmqpRelay ? rt.relay.unroutable : 0,
          relayPasses: { ...(rt.relay?.passes ?? { withRows: 0, empty: 0 }) },
          ...(rt.consumer?.stats ?? rt.stats),
        };
      },
    },

    created(this: EventsMixinThis) {
      const stats = newStats();
      const handlers: Record<string, EventHandler> = Object.fromEntries(
        Object.entries(opts.consumes ?? {}).map(([event, fn]) => [event, fn.bind(this)]),
      );
      const rt: Runtime = { stats, handlers };
      if (!config.rabbitmqUris && consumes) {
        // Registered now, before any service starts, so no relay can deliver an event
        // before this consumer is known; deliveries wait for `ready` (database migrated).
        const ready = new Promise<void>((r) => (rt.markReady = r));
        rt.subscriber = embeddedSubscriber({
          service: name,
          db: () => this.db,
          handlers,
          stats,
          ready,
          logger: this.logger,
          broker: this.broker,
          batch: opts.batch,
        });
        busFor(this.broker).add(rt.subscriber);
      }
      this.$events = rt;
    },

    async started(this: EventsMixinThis) {
      const rt = this.$events;
      const { handlers } = rt;
      const db = this.db;
      if (!db || !(await db.schema.hasTable("outbox")) || !(await db.schema.hasTable("inbox")))
        throw new Error(
          `EventsMixin('${name}'): no outbox/inbox tables. List EventsMixin before DbMixin in 'mixins' and add a migration calling createEventTables()`,
        );
      const relayOpts = {
        db,
        source: name,
        logger: this.logger,
        pollIntervalMs: config.events.pollIntervalMs,
        kickDelayMs: config.events.kickDelayMs,
        batchSize: opts.batchSize,
        broker: this.broker,
      };
      if (config.rabbitmqUris) {
        rt.link = new AmqpLink(config.rabbitmqUris, `meridian-events-${name}-${config.nodeId}`);
        rt.relay = new AmqpRelay({ ...relayOpts, link: rt.link, topo, consumersOf, publishes: contracts.services.get(name)?.publishes });
        if (consumes) {
          rt.consumer = new AmqpConsumer({
            service: name,
            db,
            link: rt.link,
            topo,
            handlers,
            maxAttempts: config.events.maxAttempts,
            retryDelaysMs: config.events.retryDelaysMs,
            prefetch: opts.prefetch ?? 20,
            logger: this.logger,
            broker: this.broker,
            // Unbatched: every prefetched message in its own transaction at once, as before batches.
            ...(opts.batch === false ? { batchSize: 1, concurrency: opts.prefetch ?? 20 } : {}),
          });
          await rt.consumer.start();
        }
      } else {
        rt.relay = new EmbeddedRelay({
          ...relayOpts,
          bus: busFor(this.broker),
          maxAttempts: config.events.maxAttempts,
          retryDelaysMs: config.events.retryDelaysMs,
        });
        if (consumes) {
          rt.markReady?.();
          rt.replay = periodic(
            `Dead-letter replay of '${name}'`,
            config.events.pollIntervalMs,
            () => replayRequested(db, handlers, rt.stats),
            this.logger,
          );
        }
      }
      rt.relay.start();
    },

    async stopped(this: EventsMixinThis) {
      const rt = this.$events;
      await rt.replay?.stop();
      if (rt.subscriber) busFor(this.broker).remove(rt.subscriber);
      await rt.relay?.stop();
      await rt.consumer?.stop();
      await rt.link?.close();
    },
  });
}
