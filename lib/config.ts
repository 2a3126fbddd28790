/**
 * Configuration: parsed and validated once, at start, from the environment alone.
 * A bad or missing value stops the process with a message naming the variable
 * (fail fast). Secrets have no fallback in cluster mode; embedded mode generates its
 * JWT secret once into DATA_DIR so `npm start` works on a fresh clone.
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { z } from "zod";
import { ensurePrivateDir, readOrCreatePrivateFile } from "./private-files";
import { BREAK_PROTECTION, PROTECTIONS, brokenProtections } from "./protections";
import { placeholderProblems } from "./secrets";

export const ALL_SERVICES = [
  "gateway",
  "grpc",
  "user",
  "product",
  "search",
  "notification",
  "cart",
  "payment",
  "order",
  "recommendation",
] as const;
export type ServiceName = (typeof ALL_SERVICES)[number];

const bool = z.enum(["true", "false", "1", "0", "yes", "no"]).transform((v) => v === "true" || v === "1" || v === "yes");
/** `points/seconds`, e.g. `10/600`: at most 10 in any 600 s window. */
const rate = z
  .string()
  .regex(/^\d{1,7}\/\d{1,6}$/, "must be <points>/<seconds>, e.g. 10/600")
  .transform((v) => {
    const [points, windowS] = v.split("/").map(Number) as [number, number];
    return { points, windowS };
  })
  .refine((r) => r.points >= 1 && r.windowS >= 1, "points and seconds must be at least 1");
const int = (min: number, max: number) =>
  z.coerce
    .number({ error: `must be an integer from ${min} to ${max}` })
    .int(`must be an integer from ${min} to ${max}`)
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`);
const url = (protocols: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    },
    `must be a URL with protocol ${protocols.join(" or ")}`,
  );

/** A comma list of such URLs (at least one), e.g. a cluster's nodes. */
const urlList = (protocols: string[]) =>
  z
    .string()
    .transform((v) =>
      v
        .split(",")
        .map((u) => u.trim())
        .filter(Boolean),
    )
    .pipe(z.array(url(protocols)).min(1, "must hold at least one URL"));

const EnvSchema = z.object({
  PORT: int(0, 65535).default(3000),
  // The gRPC edge's port (services/grpc), on a node that runs it. 0: any free port (tests).
  GRPC_PORT: int(0, 65535).default(50051),
  // The internal listener (lib/health-server.ts): GET /metrics on every node, never on the
  // public gateway port, plus /health/live and /health/ready (the probes of a node without
  // the gateway). 0: none. Embedded default 3030; in a cluster off unless given (k8s/base's
  // ConfigMap sets it): several nodes on one machine (`npm run cluster`) need a port each.
  METRICS_PORT: int(0, 65535).optional(),
  // Renamed to METRICS_PORT (it now serves /metrics on gateway nodes too); refused with that message.
  HEALTH_PORT: z.string().optional(),
  NODE_ENV: z.string().optional(),
  DATA_DIR: z.string().min(1).default("./data"),
  SERVICES: z.string().default("all"),
  NODE_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,100}$/, "letters, digits, . _ - only")
    .optional(),
  NAMESPACE: z
    .string()
    .regex(/^[a-z0-9-]{0,40}$/, "lower-case letters, digits and - only")
    .default(""),
  // One broker, or the nodes of a RabbitMQ cluster as a comma list (or one address that
  // reaches the cluster, e.g. a Kubernetes Service): a node connects to one and moves to
  // another when it goes (lib/events/amqp.ts, lib/transporter/safe-amqp-transporter.ts).
  RABBITMQ_URI: urlList(["amqp:", "amqps:"]).optional(),
  ETCD_HOSTS: z.string().optional(),
  ETCD_USERNAME: z.string().min(1).optional(),
  ETCD_PASSWORD: z.string().min(1).optional(),
  // etcd's administrator, for `npm run etcd:auth` only (a node refuses it).
  ETCD_ROOT_PASSWORD: z.string().min(1).optional(),
  REDIS_URL: url(["redis:", "rediss:"]).optional(),
  MYSQL_URL: url(["mysql:"]).optional(),
  SERIALIZER: z.enum(["protobuf", "json"]).optional(),
  JWT_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
  ADMIN_EMAIL: z.email().optional(),
  ADMIN_PASSWORD: z.string().min(8, "must be at least 8 characters").max(256).optional(),
  PUBLIC_URL: url(["http:", "https:"]).optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace"]).default("info"),
  LOG_FORMAT: z.enum(["json", "text"]).optional(),
  // How many proxies in front of the gateway append to X-Forwarded-For (Express's `trust
  // proxy` as a hop count): the client address is the entry that many from the right.
  TRUST_PROXY: z
    .string()
    .regex(
      /^(\d{1,2}|false)$/,
      'must be a hop count (0 to 99; 1 behind one proxy such as ingress-nginx); "true" is no longer accepted: it meant the leftmost entry, which the client writes',
    )
    .transform((v) => (v === "false" ? 0 : Number(v)))
    .default(0),
  BODY_LIMIT_BYTES: int(1024, 10 * 1024 * 1024).default(100 * 1024),
  REQUEST_TIMEOUT_MS: int(100, 120_000).default(5000),
  HEARTBEAT_INTERVAL_S: int(1, 60).default(2),
  HEARTBEAT_TIMEOUT_S: int(2, 300).default(6),
  ACCESS_TOKEN_TTL_S: int(30, 86_400).default(900),
  REFRESH_TOKEN_TTL_S: int(60, 90 * 86_400).default(30 * 86_400),
  LOGIN_RATE_LIMIT: int(1, 100_000).default(10),
  LOGIN_RATE_WINDOW_S: int(1, 86_400).default(300),
  // Request limits (lib/rate-limit.ts), `<points>/<seconds>`; RATE_LIMITS=off turns off all but login's.
  RATE_LIMITS: z.enum(["on", "off"]).default("on"),
  RATE_LIMIT_SIGNUP: rate.default({ points: 10, windowS: 600 }),
  RATE_LIMIT_ORDERS: rate.default({ points: 20, windowS: 600 }),
  RATE_LIMIT_REFUNDS: rate.default({ points: 10, windowS: 3600 }),
  RATE_LIMIT_USER: rate.default({ points: 600, windowS: 60 }),
  RATE_LIMIT_IP: rate.default({ points: 1200, windowS: 60 }),
  // Hoarding limits (order service): per user, an admin may raise them per user.
  MAX_UNPAID_ORDERS: int(1, 1000).default(3),
  MAX_UNPAID_UNITS_PER_PRODUCT: int(1, 1_000_000).default(5),
  RETURN_WINDOW_DAYS: int(1, 3650).default(30),
  MIGRATE_ON_START: bool.optional(),
  DEMO_CATALOG: bool.optional(),
  DEMO_CATALOG_SIZE: int(1, 1_000_000).default(1000),
  // Business events (lib/events): the relay's sweep of the outbox, consumer attempts before the dead-letter
  // queue, and the retry delays (one per retry step; the last repeats).
  EVENTS_POLL_INTERVAL_MS: int(10, 60_000).default(1000),
  // How long a relay handed a commit's rows waits for more commits before its pass (0: at once).
  EVENTS_KICK_DELAY_MS: int(0, 1000).default(2),
  EVENTS_MAX_ATTEMPTS: int(1, 100).default(5),
  EVENTS_RETRY_DELAYS_MS: z
    .string()
    .regex(/^\d{1,9}(,\d{1,9})*$/, "a comma list of milliseconds")
    .default("1000,10000,60000"),
  // Stock reservations (product service): how long a hold lives, and how often the sweep
  // looks for expired ones (default: a quarter of the TTL, at most 30 s).
  RESERVATION_TTL_SECONDS: int(1, 7 * 86_400).default(900),
  RESERVATION_SWEEP_INTERVAL_MS: int(50, 3_600_000).optional(),
  // Search: Elasticsearch when its node is given, else the in-process engine per replica.
  ELASTIC_SEARCH_NODE: url(["http:", "https:"]).optional(),
  ELASTIC_SEARCH_USERNAME: z.string().min(1).optional(),
  ELASTIC_SEARCH_PASSWORD: z.string().min(1).optional(),
  ELASTIC_SEARCH_INDEX: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,200}$/, "a lower-case Elasticsearch index name")
    .optional(),
  // Notification e-mail: SMTP when SMTP_URL is given (any mode), else kept in the database.
  SMTP_URL: url(["smtp:", "smtps:"]).optional(),
  MAIL_FROM: z
    .string()
    .max(320)
    .regex(/^(?:[^<>\r\n]{0,200}<[^\s@<>]+@[^\s@<>]+>|[^\s@<>]+@[^\s@<>]+)$/, 'an address, or "Name <address>"')
    .default("Meridian <no-reply@localhost>"),
  MAIL_MAX_ATTEMPTS: int(1, 100).default(8),
  MAIL_RETRY_BASE_MS: int(10, 3_600_000).default(30_000),
  // Payments: a payment still PENDING this long after its creation is queried from its
  // platform and settled either way (reconciliation); how often each replica looks.
  PAYMENT_PENDING_TIMEOUT_S: int(1, 7 * 86_400).default(900),
  PAYMENT_RECONCILE_INTERVAL_MS: int(50, 3_600_000).default(30_000),
  // A success the order service has not acknowledged this long after it was recorded (its
  // event dead-lettered, say) is handed to the order service again by reconciliation.
  PAYMENT_ORDER_ACK_TIMEOUT_S: int(1, 7 * 86_400).default(600),
  // The built-in sandbox platform (anyone can "pay" with no money): on by default except
  // under NODE_ENV=production; in a cluster it also needs its key pair.
  SANDBOX_PAY: bool.optional(),
  // Recommendations: how long a ranking is reused from the cacher (Redis in cluster mode); 0: never.
  RECS_CACHE_TTL_S: int(0, 3600).default(30),
  // Tracing (lib/tracing.ts): Moleculer's tracer, spans to Zipkin (or Jaeger's Zipkin
  // endpoint) or to the log; none: off.
  TRACING_EXPORTER: z.enum(["none", "zipkin", "console"]).default("none"),
  ZIPKIN_URL: url(["http:", "https:"]).optional(),
  TRACING_SAMPLE_RATE: z.coerce
    .number({ error: "must be a number from 0 to 1" })
    .min(0, "must be from 0 to 1")
    .max(1, "must be from 0 to 1")
    .default(1),
});

/** Every variable this module validates (the manifests' test checks theirs against it). */
export const ENV_NAMES: readonly string[] = Object.keys(EnvSchema.shape);

export interface AppConfig {
  mode: "embedded" | "cluster";
  port: number;
  grpcPort: number;
  /** The internal listener: /metrics (every node) and the health routes; 0: none. */
  metricsPort: number;
  /** NODE_ENV=production: no sandbox payments unless asked for, placeholder secrets refused. */
  production: boolean;
  dataDir: string;
  services: ServiceName[];
  nodeId: string;
  namespace: string;
  /** RABBITMQ_URI's URLs (a cluster's nodes, in the order given); none in embedded mode. */
  rabbitmqUris?: string[];
  /** `rootPassword`: a tool's only (`npm run etcd:auth`); a node refuses ETCD_ROOT_PASSWORD. */
  etcd?: { hosts: string[]; username?: string; password?: string; rootPassword?: string };
  redisUrl?: string;
  mysqlUrl?: string;
  serializer: "protobuf" | "json";
  jwtSecret: string;
  admin?: { email: string; password: string };
  publicUrl: string;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace";
  logFormat: "json" | "text";
  /** Proxies to trust in X-Forwarded-For, counted from the right (0: the socket's address). */
  trustProxyHops: number;
  bodyLimitBytes: number;
  requestTimeoutMs: number;
  heartbeatIntervalS: number;
  heartbeatTimeoutS: number;
  accessTokenTtlS: number;
  refreshTokenTtlS: number;
  loginRateLimit: RateBudget;
  /** Request limits other than login's; `enabled: false` (RATE_LIMITS=off) turns them off. */
  rateLimits: { enabled: boolean; signup: RateBudget; orders: RateBudget; refunds: RateBudget; user: RateBudget; ip: RateBudget };
  /** Hoarding limits per user (defaults; an admin may raise them per user). */
  unpaidLimits: { maxOrders: number; maxUnitsPerProduct: number };
  returnWindowDays: number;
  migrateOnStart: boolean;
  /** Load the demo catalog when the product database is empty (embedded default). */
  demoCatalog: { enabled: boolean; size: number };
  events: { pollIntervalMs: number; kickDelayMs: number; maxAttempts: number; retryDelaysMs: number[] };
  reservations: { ttlSeconds: number; sweepIntervalMs: number };
  /** Absent: the in-process engine (MiniSearch), one index per search replica. */
  elasticsearch?: { node: string; username?: string; password?: string; index: string };
  /** Notification e-mail; no `smtpUrl`: e-mails are kept in the notification database only. */
  mail: { smtpUrl?: string; from: string; maxAttempts: number; retryBaseMs: number };
  /** Payment reconciliation (payment service; the platforms' own variables are read by services/payment/platforms/config.ts). */
  payments: { pendingTimeoutS: number; reconcileIntervalMs: number; orderAckTimeoutS: number; sandbox: boolean | undefined };
  /** Things the start log must say (a protection turned off, a renamed setting). */
  warnings: string[];
  /** Recommendation rankings kept in the broker's cacher this long (0: not cached). */
  recommendations: { cacheTtlS: number };
  /** Moleculer tracing: exporter, Zipkin base URL (zipkin only), share of traces sampled. */
  tracing: { exporter: "none" | "zipkin" | "console"; zipkinUrl?: string; sampleRate: number };
}

export interface RateBudget {
  points: number;
  windowS: number;
}

export class ConfigError extends Error {
  constructor(public readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/** Reads `JWT_SECRET` from DATA_DIR or creates it (0600) — embedded mode only. */
function embeddedSecret(dataDir: string): string {
  ensurePrivateDir(dataDir);
  return readOrCreatePrivateFile(path.join(dataDir, "jwt-secret"), () => randomBytes(48).toString("base64url")).trim();
}

/**
 * `tool`: a one-off command (migrate, admin) rather than a node: it signs no token and
 * serves no request, so the nodes' JWT_SECRET and REDIS_URL requirements do not apply.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, opts: { tool?: boolean } = {}): AppConfig {
  // Empty strings count as unset: `FOO=` in a .env or a manifest means "not given".
  const given = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = EnvSchema.safeParse(given);
  const problems: string[] = parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join(".") || "environment"}: ${i.message}`);
  // Rules between variables are checked on the raw values too, so one run reports every problem.
  const cluster = Boolean(given.RABBITMQ_URI);
  const production = given.NODE_ENV === "production";
  const runs = (name: ServiceName) =>
    !given.SERVICES || given.SERVICES.trim() === "all" || given.SERVICES.split(",").some((s) => s.trim() === name);
  // Only the nodes that sign or verify tokens get the secret (a Deployment mounts what its service uses).
  const node = !opts.tool;
  const edge = runs("gateway") || runs("grpc");
  if (node && cluster && !given.JWT_SECRET && (edge || runs("user")))
    problems.push("JWT_SECRET: required in cluster mode (no fallback for secrets)");
  // Token revocations and request limits must be one list for every replica: Redis.
  if (node && cluster && !given.REDIS_URL && (edge || runs("user")))
    problems.push(
      "REDIS_URL: required in cluster mode on gateway, grpc and user nodes (token revocations and rate limits are shared there)",
    );
  if (given.HEALTH_PORT)
    problems.push("HEALTH_PORT: renamed to METRICS_PORT (the internal listener now serves /metrics on every node, the gateway's too)");
  if (cluster || production) problems.push(...placeholderProblems(given));
  if (Boolean(given.ADMIN_EMAIL) !== Boolean(given.ADMIN_PASSWORD)) problems.push("ADMIN_EMAIL/ADMIN_PASSWORD: give both or neither");
  const broken = brokenProtections(given);
  problems.push(...broken.problems);
  if (!parsed.success) throw new ConfigError(problems);
  const e = parsed.data;

  let services: ServiceName[] = [...ALL_SERVICES];
  if (e.SERVICES.trim() !== "all") {
    const names = e.SERVICES.split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    const unknown = names.filter((n) => !(ALL_SERVICES as readonly string[]).includes(n));
    if (unknown.length || names.length === 0)
      problems.push(`SERVICES: unknown service(s) ${unknown.join(", ") || "(empty)"}; known: ${ALL_SERVICES.join(", ")} or "all"`);
    services = names.filter((n): n is ServiceName => (ALL_SERVICES as readonly string[]).includes(n));
  }
  if (!cluster && e.SERVICES.trim() !== "all" && !services.includes("gateway"))
    problems.push("SERVICES: without RABBITMQ_URI all services run in one process; a subset needs a transporter");

  let etcd: AppConfig["etcd"];
  if (e.ETCD_HOSTS) {
    const hosts = e.ETCD_HOSTS.split(",")
      .map((h) => h.trim())
      .filter(Boolean);
    const bad = hosts.filter((h) => !/^https?:\/\/[^/\s]+$/.test(h) && !/^[^/\s:]+:\d+$/.test(h));
    if (!hosts.length || bad.length)
      problems.push(`ETCD_HOSTS: expected a comma list of host:port or http(s)://host:port, got ${bad.join(", ") || "(empty)"}`);
    // A tool (npm run etcd:auth) talks to etcd alone.
    if (!cluster && node) problems.push("ETCD_HOSTS: etcd discovery needs a transporter (RABBITMQ_URI)");
    if (Boolean(e.ETCD_USERNAME) !== Boolean(e.ETCD_PASSWORD)) problems.push("ETCD_USERNAME/ETCD_PASSWORD: give both or neither");
    if (e.ETCD_ROOT_PASSWORD && node)
      problems.push("ETCD_ROOT_PASSWORD: for npm run etcd:auth only; a node must not hold etcd's root password");
    etcd = {
      hosts: hosts.map((h) => (h.includes("://") ? h : `http://${h}`)),
      username: e.ETCD_USERNAME,
      password: e.ETCD_PASSWORD,
      ...(!node && e.ETCD_ROOT_PASSWORD ? { rootPassword: e.ETCD_ROOT_PASSWORD } : {}),
    };
  } else if (e.ETCD_USERNAME || e.ETCD_PASSWORD || e.ETCD_ROOT_PASSWORD) {
    problems.push("ETCD_USERNAME/ETCD_PASSWORD/ETCD_ROOT_PASSWORD: set without ETCD_HOSTS");
  }

  if (Boolean(e.ELASTIC_SEARCH_USERNAME) !== Boolean(e.ELASTIC_SEARCH_PASSWORD))
    problems.push("ELASTIC_SEARCH_USERNAME/ELASTIC_SEARCH_PASSWORD: give both or neither");
  if ((e.ELASTIC_SEARCH_USERNAME || e.ELASTIC_SEARCH_INDEX) && !e.ELASTIC_SEARCH_NODE)
    problems.push("ELASTIC_SEARCH_USERNAME/ELASTIC_SEARCH_INDEX: set without ELASTIC_SEARCH_NODE");

  if (e.TRACING_EXPORTER === "zipkin" && !e.ZIPKIN_URL) problems.push("ZIPKIN_URL: required when TRACING_EXPORTER is zipkin");
  if (e.ZIPKIN_URL && e.TRACING_EXPORTER !== "zipkin") problems.push("ZIPKIN_URL: set without TRACING_EXPORTER=zipkin");

  if (e.HEARTBEAT_TIMEOUT_S <= e.HEARTBEAT_INTERVAL_S) problems.push("HEARTBEAT_TIMEOUT_S: must be greater than HEARTBEAT_INTERVAL_S");
  if (problems.length) throw new ConfigError(problems);

  const dataDir = path.resolve(e.DATA_DIR);
  return {
    mode: cluster ? "cluster" : "embedded",
    port: e.PORT,
    grpcPort: e.GRPC_PORT,
    metricsPort: e.METRICS_PORT ?? (cluster ? 0 : 3030),
    production,
    dataDir,
    services,
    nodeId: e.NODE_ID ?? `${os.hostname()}-${process.pid}`,
    namespace: e.NAMESPACE,
    rabbitmqUris: e.RABBITMQ_URI,
    etcd,
    redisUrl: e.REDIS_URL,
    mysqlUrl: e.MYSQL_URL,
    serializer: e.SERIALIZER ?? (cluster ? "protobuf" : "json"),
    // A tool signs nothing (and must not leave a secret file behind); a cluster node has no fallback.
    jwtSecret: e.JWT_SECRET ?? (cluster || opts.tool ? "" : embeddedSecret(dataDir)),
    admin: e.ADMIN_EMAIL && e.ADMIN_PASSWORD ? { email: e.ADMIN_EMAIL, password: e.ADMIN_PASSWORD } : undefined,
    publicUrl: (e.PUBLIC_URL ?? `http://localhost:${e.PORT}`).replace(/\/$/, ""),
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT ?? (cluster ? "json" : "text"),
    trustProxyHops: e.TRUST_PROXY,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
    requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    heartbeatIntervalS: e.HEARTBEAT_INTERVAL_S,
    heartbeatTimeoutS: e.HEARTBEAT_TIMEOUT_S,
    accessTokenTtlS: e.ACCESS_TOKEN_TTL_S,
    refreshTokenTtlS: e.REFRESH_TOKEN_TTL_S,
    loginRateLimit: { points: e.LOGIN_RATE_LIMIT, windowS: e.LOGIN_RATE_WINDOW_S },
    rateLimits: {
      enabled: e.RATE_LIMITS === "on",
      signup: e.RATE_LIMIT_SIGNUP,
      orders: e.RATE_LIMIT_ORDERS,
      refunds: e.RATE_LIMIT_REFUNDS,
      user: e.RATE_LIMIT_USER,
      ip: e.RATE_LIMIT_IP,
    },
    unpaidLimits: { maxOrders: e.MAX_UNPAID_ORDERS, maxUnitsPerProduct: e.MAX_UNPAID_UNITS_PER_PRODUCT },
    returnWindowDays: e.RETURN_WINDOW_DAYS,
    migrateOnStart: e.MIGRATE_ON_START ?? !cluster,
    demoCatalog: { enabled: e.DEMO_CATALOG ?? !cluster, size: e.DEMO_CATALOG_SIZE },
    events: {
      pollIntervalMs: e.EVENTS_POLL_INTERVAL_MS,
      kickDelayMs: e.EVENTS_KICK_DELAY_MS,
      maxAttempts: e.EVENTS_MAX_ATTEMPTS,
      retryDelaysMs: e.EVENTS_RETRY_DELAYS_MS.split(",").map(Number),
    },
    reservations: {
      ttlSeconds: e.RESERVATION_TTL_SECONDS,
      sweepIntervalMs:
        e.RESERVATION_SWEEP_INTERVAL_MS ?? Math.max(1000, Math.min(30_000, Math.floor((e.RESERVATION_TTL_SECONDS * 1000) / 4))),
    },
    mail: { smtpUrl: e.SMTP_URL, from: e.MAIL_FROM, maxAttempts: e.MAIL_MAX_ATTEMPTS, retryBaseMs: e.MAIL_RETRY_BASE_MS },
    payments: {
      pendingTimeoutS: e.PAYMENT_PENDING_TIMEOUT_S,
      reconcileIntervalMs: e.PAYMENT_RECONCILE_INTERVAL_MS,
      orderAckTimeoutS: e.PAYMENT_ORDER_ACK_TIMEOUT_S,
      sandbox: e.SANDBOX_PAY,
    },
    warnings: [
      ...(e.RATE_LIMITS === "off"
        ? ["RATE_LIMITS=off: every request limit but login's is OFF (load tests and benchmarks only; never in production)"]
        : []),
      ...broken.off.map((p) => `${BREAK_PROTECTION}=${p}: ${PROTECTIONS[p]} (tutorial only)`),
    ],
    recommendations: { cacheTtlS: e.RECS_CACHE_TTL_S },
    tracing: { exporter: e.TRACING_EXPORTER, zipkinUrl: e.ZIPKIN_URL?.replace(/\/$/, ""), sampleRate: e.TRACING_SAMPLE_RATE },
    elasticsearch: e.ELASTIC_SEARCH_NODE
      ? {
          node: e.ELASTIC_SEARCH_NODE,
          username: e.ELASTIC_SEARCH_USERNAME,
          password: e.ELASTIC_SEARCH_PASSWORD,
          index: e.ELASTIC_SEARCH_INDEX ?? `meridian${e.NAMESPACE ? `-${e.NAMESPACE}` : ""}-products`,
        }
      : undefined,
  };
}
