/**
 * Broker options, derived from the validated config only: the same code runs embedded
 * (no transporter, memory cache, local discovery) or as a cluster node (AMQP transporter,
 * etcd discovery, Redis cache), chosen by environment variables alone.
 */
import { StrictNullValidator } from "./lib/validator";
import { ServiceBroker, type BrokerOptions, type Middleware } from "moleculer";
import { ResilientRedisCacher } from "./lib/cacher";
import { installCacherMetrics } from "./lib/cacher-metrics";
import { holdCachedValues } from "./lib/cached-json";
import { installPromiseTimeout } from "./lib/promise-timeout";
import { DependencyErrorsMiddleware } from "./lib/errors";
import type { AppConfig } from "./lib/config";
import { checkEtcdAccess, discoveryPrefix } from "./lib/discovery/etcd-access";
import { ResilientEtcd3Discoverer } from "./lib/discovery/resilient-etcd3-discoverer";
import { InProcessPrometheusReporter, registerBusinessMetrics } from "./lib/metrics";
import { ContractAuditMiddleware } from "./lib/serializer/contract-audit";
import { ProtobufSerializer } from "./lib/serializer/protobuf-serializer";
import { internalMiddlewares } from "./lib/request-metrics";
import { AppLogger, type LogDestination } from "./lib/logger";
import { RequestScopeMiddleware, tracingOptions } from "./lib/tracing";
import { SafeAmqpTransporter } from "./lib/transporter/safe-amqp-transporter";
import { InternalRetryMiddleware } from "./lib/internal-retry";
import { setUpNode } from "./lib/node-setup";
import { replCommands } from "./lib/repl-commands";
import { runnerConfig } from "./lib/runner";

type MetricsReporterOption = NonNullable<Exclude<BrokerOptions["metrics"], boolean | undefined>["reporter"]>;

/**
 * `extraMiddlewares` (a test's gate or counter) run after the node's own and before Moleculer's
 * internal ones, where Moleculer itself would have put them: inside validation, caching,
 * timeouts and metrics. Given as `middlewares` over this object instead, they would replace
 * the list, and with `internalMiddlewares: false` that drops Moleculer's own middlewares too.
 * `logDestination`: where log lines go (lib/logger.ts); synchronous stdout unless given.
 */
export function brokerOptions(
  config: AppConfig,
  extraMiddlewares: NonNullable<BrokerOptions["middlewares"]> = [],
  opts: { logDestination?: LogDestination } = {},
): BrokerOptions {
  // Every call's timeout with two promises instead of Moleculer's four (lib/promise-timeout.ts).
  installPromiseTimeout();
  // The etcd client's hosts and credentials (ETCD_HOSTS, ETCD_USERNAME / ETCD_PASSWORD).
  const etcd = config.etcd && {
    hosts: config.etcd.hosts,
    auth: config.etcd.username ? { username: config.etcd.username, password: config.etcd.password! } : undefined,
  };
  const middlewares: unknown[] = [
    RequestScopeMiddleware(),
    DependencyErrorsMiddleware,
    // A call between services lost or not sent goes once more when safe (lib/internal-retry.ts).
    InternalRetryMiddleware(),
    // The business counters (lib/metrics.ts), registered once so the label-less ones scrape as 0.
    { name: "BusinessMetrics", created: (broker: ServiceBroker) => registerBusinessMetrics(broker) },
    // The cacher's counters and times as plain numbers (lib/cacher-metrics.ts), once its init registered Moleculer's.
    { name: "CacherMetrics", created: (broker: ServiceBroker) => installCacherMetrics(broker) },
    // The memory cacher's values frozen, and their JSON written once for the gateway (lib/cached-json.ts).
    { name: "CachedJson", created: (broker: ServiceBroker) => holdCachedValues(broker) },
    // MERIDIAN_CONTRACT_AUDIT (lib/serializer/contract-audit.ts): off unless set.
    ...[ContractAuditMiddleware()].filter((m) => m !== null),
    // etcd refusing this node's credentials stops its start (lib/discovery/etcd-access.ts).
    ...(etcd
      ? [
          {
            name: "EtcdAccess",
            starting: (broker: ServiceBroker) =>
              checkEtcdAccess({ ...etcd, prefix: discoveryPrefix(broker.namespace), nodeID: broker.nodeID }),
          } satisfies Middleware,
        ]
      : []),
    ...extraMiddlewares,
    ...internalMiddlewares(),
  ];
  const options: BrokerOptions = {
    nodeID: config.nodeId,
    namespace: config.namespace,
    // pino (lib/logger.ts): JSON lines with `requestId` inside a request, or Moleculer's short text;
    // to the destination the entry point chose (bin/start.ts: asynchronous stdout).
    logger: new AppLogger({
      level: config.logLevel,
      format: config.logFormat,
      colors: Boolean(process.stdout.isTTY),
      destination: opts.logDestination ?? process.stdout,
    }),
    // Moleculer's default is no timeout: a call to a node that died hangs until discovery
    // drops it. With a timeout the caller gets a clean 503 after REQUEST_TIMEOUT_MS.
    requestTimeout: config.requestTimeoutMs,
    // Short heartbeats: after `kill -9` of a node, callers stop routing to it within
    // ~HEARTBEAT_TIMEOUT_S (docs/decisions/amqp-transporter.md: 2 s / 6 s → 6 s, against 24 s by default).
    heartbeatInterval: config.heartbeatIntervalS,
    heartbeatTimeout: config.heartbeatTimeoutS,
    // Business events never travel as Moleculer events (docs/decisions/outbox-not-moleculer-events.md); no retries here
    // either: a retried non-idempotent call could act twice. Idempotency lives in the actions.
    retryPolicy: { enabled: false },
    tracking: { enabled: true, shutdownTimeout: 10_000 },
    // The REPL's own commands (dead letters, seed, recommendation rebuild), for any REPL of the
    // system (npm run repl, npm run dev); nothing runs until a REPL calls one.
    replOptions: { customCommands: replCommands(config) },
    // The cast: Moleculer's registry takes a reporter instance (its `Reporters.resolve`); its
    // .d.ts lists only `{ type, options }` objects.
    metrics: { enabled: true, reporter: new InProcessPrometheusReporter({}) as unknown as MetricsReporterOption },
    // TRACING_EXPORTER (lib/tracing.ts); the trace id is the request id (X-Request-Id).
    tracing: tracingOptions(config),
    // Moleculer's internal middlewares, listed by lib/request-metrics.ts with its lean request
    // metrics in place of Moleculer's (the same families, ~25 µs less per request).
    internalMiddlewares: false,
    // The cast: Moleculer takes middleware objects, names and factories (broker => middleware),
    // and calls a `call` hook for the wrapped call it returns (lib/serializer/contract-audit.ts);
    // its .d.ts lists objects and names only, with that hook typed as returning the call's result.
    middlewares: middlewares as BrokerOptions["middlewares"],
    cacher: config.redisUrl
      ? new ResilientRedisCacher({
          redisUrl: config.redisUrl,
          prefix: `MOL-${config.namespace || "meridian"}-`,
          ttl: 300,
        })
      : { type: "Memory", options: { ttl: 300, maxParamsLength: 200 } },
    // fastest-validator, with `null` refused where a rule is not nullable (lib/validator.ts).
    validator: new StrictNullValidator() as unknown as BrokerOptions["validator"],
    serializer: config.serializer === "protobuf" ? new ProtobufSerializer() : "JSON",
    skipProcessEventRegistration: true,
  };

  if (config.rabbitmqUris) {
    // Moleculer's AMQP defaults (prefetch 1, Nagle on) measured 23 calls/s here; prefetch
    // 100 with noDelay measured ~16k calls/s (docs/decisions/amqp-transporter.md). The typings know neither the URL
    // in `options` nor `socketOptions`, hence the cast.
    // SafeAmqpTransporter: Moleculer's, without an unhandled rejection at shutdown (see there).
    options.transporter = new SafeAmqpTransporter({
      url: config.rabbitmqUris,
      prefetch: 100,
      socketOptions: { noDelay: true },
      // Queues of nodes that went away are deleted after 2 minutes of disuse.
      autoDeleteQueues: 2 * 60 * 1000,
    }) as unknown as BrokerOptions["transporter"];
  }
  if (etcd) {
    options.registry = {
      discoverer: new ResilientEtcd3Discoverer({
        etcd,
        heartbeatInterval: config.heartbeatIntervalS,
        heartbeatTimeout: config.heartbeatTimeoutS,
      }),
    };
  }
  return options;
}

/**
 * For Moleculer's runner (`npm run dev`, lib/runner.ts): the broker options of the validated
 * configuration, and the node's probes and cancellation service once the broker exists, as
 * `createBroker` gives every other node. The runner calls this with itself as `this`.
 */
export default function runnerBrokerOptions(this: { flags?: { hot?: boolean } } | undefined): BrokerOptions {
  const config = runnerConfig();
  const options = brokerOptions(config);
  // `--hot`: Moleculer adds its HotReload middleware only to its own internal list, which
  // these options replace (lib/request-metrics.ts), so it is added here, after them.
  if (this?.flags?.hot) options.middlewares = [...(options.middlewares ?? []), "HotReload"];
  const hidden = hideFromRunner(options, config);
  return {
    ...options,
    // The runner installs no signal handlers (npm start's bin/start.ts does): the broker's own.
    skipProcessEventRegistration: false,
    created: (broker: ServiceBroker) => {
      Object.assign(process.env, hidden);
      setUpNode(broker, config);
    },
  };
}

/**
 * The runner sets a broker option from any variable named after its path (`TRACING_EXPORTER`
 * → tracing.exporter, `SERIALIZER`, `NAMESPACE`, Moleculer's own `TRANSPORTER`, `NODEID`…):
 * several of ours have such names with another meaning (`SERIALIZER=protobuf` would replace
 * the serializer with a name Moleculer does not know). lib/config.ts stays the only reader:
 * those variables are hidden from the runner until the broker exists (`created` puts them
 * back), and `SERVICES` is given the validated list (the runner reads it as paths under
 * `SERVICEDIR`; "all" or a trailing comma would mean something else to it).
 */
function hideFromRunner(options: BrokerOptions, config: AppConfig): Record<string, string> {
  const hidden: Record<string, string> = {};
  const isPlain = (v: unknown): v is Record<string, unknown> => {
    if (typeof v !== "object" || v === null) return false;
    const proto: unknown = Object.getPrototypeOf(v);
    return proto === Object.prototype || proto === null;
  };
  const visit = (obj: Record<string, unknown>, prefix: string) => {
    for (const [key, value] of Object.entries(obj)) {
      const name = (prefix ? `${prefix}_${key}` : key).toUpperCase();
      const set = process.env[name];
      if (set !== undefined) {
        hidden[name] = set;
        delete process.env[name];
      }
      if (isPlain(value)) visit(value, name);
    }
  };
  visit({ ...ServiceBroker.defaultOptions }, "");
  visit({ ...options }, "");
  process.env.SERVICEDIR ??= "services";
  process.env.SERVICES = config.services.join(",");
  return hidden;
}
