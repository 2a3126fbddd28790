/**
 * Composition root: one broker with the services this node runs (SERVICES) and the
 * node-level readiness probes (transporter, cache). Used by `npm start`, the REPL,
 * the tests and the benchmarks alike.
 */
import { ServiceBroker, type Middleware } from "moleculer";
import type { AnyServiceSchema } from "./lib/service-schema";
import { brokerOptions } from "./moleculer.config";
import { createCartService } from "./services/cart/cart.service";
import { createGatewayService } from "./services/gateway/api.service";
import { createGrpcService } from "./services/grpc/grpc.service";
import { createNotificationService } from "./services/notification/notification.service";
import { createPaymentService } from "./services/payment/payment.service";
import { createOrderService } from "./services/order/order.service";
import { createProductService } from "./services/product/product.service";
import { createRecommendationService } from "./services/recommendation/recommendation.service";
import { createSearchService } from "./services/search/search.service";
import { createUserService } from "./services/user/user.service";
import type { AppConfig, ServiceName } from "./lib/config";
import type { LogDestination } from "./lib/logger";
import { setUpNode } from "./lib/node-setup";

/** Each factory's schema is typed by its own service (`this`); Moleculer takes any of them. */
export const SERVICE_FACTORIES: Record<ServiceName, (config: AppConfig) => AnyServiceSchema> = {
  gateway: createGatewayService,
  grpc: createGrpcService,
  user: createUserService,
  product: createProductService,
  search: (config) => createSearchService(config),
  notification: createNotificationService,
  cart: createCartService,
  payment: (config) => createPaymentService(config),
  order: createOrderService,
  recommendation: createRecommendationService,
};

/**
 * `middlewares`: added after the node's own (lib/…) and before Moleculer's internal ones
 * (moleculer.config.ts); a test uses it to hold or count calls of one action (a gate that
 * makes a slow call without a timing). `logDestination`: where its log lines go (lib/logger.ts).
 */
export function createBroker(
  config: AppConfig,
  services: ServiceName[] = config.services,
  opts: { middlewares?: Middleware[]; logDestination?: LogDestination } = {},
): ServiceBroker {
  const broker = new ServiceBroker(brokerOptions(config, opts.middlewares, { logDestination: opts.logDestination }));
  setUpNode(broker, config);
  for (const name of services) broker.createService(SERVICE_FACTORIES[name](config));
  return broker;
}
