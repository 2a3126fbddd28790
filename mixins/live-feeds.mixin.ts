/**
 * `LiveFeedsMixin`: an edge service (the REST gateway, the gRPC edge) keeps `this.liveFeeds`
 * (lib/live/feeds.ts) awake with the business events this node receives: every order and
 * return event that changes an order (`ORDER_EVENTS`) wakes that order's watchers,
 * `notification.created` its user's streams, and a (re)bound broadcast queue wakes every
 * stream (events may have been missed meanwhile).
 */
import type { ServiceSchema } from "moleculer";
import type { AppConfig } from "../lib/config";
import { LiveFeeds } from "../lib/live/feeds";
import { typedMixin } from "../lib/service-schema";
import { Events, type ContractEvent } from "../proto/gen/contracts";
import { BroadcastEventsMixin, type BroadcastHandlers } from "./broadcast-events.mixin";

export interface LiveFeedsThis {
  liveFeeds: LiveFeeds;
}

/**
 * The events that change an order as a customer sees it (all carry `orderId`). Not
 * `order.created`: a stream's first read finds the order or ends the stream (NOT_FOUND), so
 * its creation is always in the first state a stream sends; waking on it only re-read an
 * unchanged order (one `order.get` per checkout, and one broadcast delivery per order to every
 * edge, measured in bench/RESULTS.md "Checkouts watched on the live feeds").
 */
const ORDER_EVENTS = [
  Events.OrderPaid,
  Events.OrderPaymentFailed,
  Events.OrderCancelled,
  Events.OrderShipped,
  Events.OrderDelivered,
  Events.OrderPaymentRefunded,
  Events.OrderRefunded,
  Events.ReturnRequested,
  Events.ReturnApproved,
  Events.ReturnRejected,
] as const satisfies readonly ContractEvent[];

/** `name`: the edge's, for its broadcast queue (`<name>-live`, one per node). */
export function LiveFeedsMixin(name: string, config: AppConfig): Partial<ServiceSchema>[] {
  const handlers: BroadcastHandlers<LiveFeedsThis> = {
    [Events.NotificationCreated]: function (this: LiveFeedsThis, e) {
      this.liveFeeds.notificationCreated(e.userId);
    },
  };
  for (const event of ORDER_EVENTS)
    handlers[event] = function (this: LiveFeedsThis, e: { orderId?: unknown }) {
      this.liveFeeds.orderChanged(e.orderId);
    };
  return [
    typedMixin<LiveFeedsThis & { broker: ConstructorParameters<typeof LiveFeeds>[0] }>({
      created() {
        this.liveFeeds = new LiveFeeds(this.broker);
      },
    }),
    BroadcastEventsMixin<LiveFeedsThis>({
      name: `${name}-live`,
      config,
      handlers,
      onResync(this: LiveFeedsThis) {
        this.liveFeeds.resync();
      },
    }),
  ];
}
