/**
 * Chaos run: the load generator's shoppers against the local cluster (test/support/cluster.ts,
 * private RabbitMQ and MariaDB: the only servers it restarts are its own) while faults are
 * injected one after another, each followed by a wait until the cluster is healthy again:
 * - `kill`: kill -9 of a service node, restarted after a pause, as Kubernetes restarts a pod.
 *   The victim is drawn (by `seed`) among the nodes of `killServices`, taken in turn (one
 *   service per kill), or among all nodes (gateways included) without it; the kill goes out
 *   as a checkout request through the victim's service (CHECKOUT_ROUTES) leaves the load, so
 *   it lands while that checkout is under way (which replica served the request is not
 *   known here); no such request within a minute fails the run;
 * - `rabbitmq`: RabbitMQ stopped and started again (clients reconnect; durable queues and
 *   persistent messages survive); on a three-node RabbitMQ cluster (`ha`), a rolling restart:
 *   each node stopped and started again in turn, the next once the previous is back, as
 *   Kubernetes restarts a StatefulSet's pods;
 * - `rabbitmq-kill` (`ha` only): kill -9 of one RabbitMQ node (the next in turn), started
 *   again after 5 s: the other two keep the quorum queues, the clients move to them;
 * - `etcd`: etcd stopped for `etcdOutageS` (60 s in the full run) and started again: the
 *   cluster must keep serving (the resilient discoverer keeps the known nodes meanwhile);
 * - `mariadb`: MariaDB killed (a crash: InnoDB recovers) and started again.
 * Errors the shoppers see are attributed to the fault whose window (start → healthy again)
 * they fall in, from the load's once-a-second progress. After the load the checkout invariants
 * are read from the databases (lib/invariants.ts) until they hold or `settleTimeoutS` passes
 * (holds expiring after the reservation TTL + sweep, reconciliation): every order answered 201
 * exists, none left PENDING_PAYMENT, money refunded exactly (a kept charge what its order counts, any other charge
 * its amount), stock conserved, each paid order notified once. The run refuses to start on
 * an incomplete catalog (fewer products than the demo catalog's size after seeding).
 * Beside the invariants, the business events: after settling no outbox row is unsent, no
 * message waits in an event queue and none was dead-lettered (a lost event would show as an
 * invariant's failure; one stuck or given up shows here).
 */
import type { Knex } from "knex";
import { loadConfig, type ServiceName } from "../../lib/config";
import { createKnex } from "../../lib/db";
import { rng } from "../../lib/demo-catalog";
import { eventQueueMessages } from "../../lib/events/support";
import { DB_SERVICES, startLocalCluster, type LocalCluster } from "./cluster";
import { checkCheckoutInvariants, type CheckResult } from "../../lib/invariants";
import { ROUTES, runLoad, type LoadProgress, type LoadSummary } from "./load";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export type FaultKind = "kill" | "rabbitmq" | "rabbitmq-kill" | "etcd" | "mariadb";
export const FAULT_KINDS: readonly FaultKind[] = ["kill", "rabbitmq", "rabbitmq-kill", "etcd", "mariadb"];

/**
 * The load's checkout requests that go through each service, which time a kill of one of
 * its nodes: `POST /api/orders` (the order service creates, the product service reserves
 * the stock), pay (the order service asks the payment service for a trade), complete (the
 * payment service records the success; the order and product services apply it through
 * events right after: PAID, the stock committed).
 */
export const CHECKOUT_ROUTES: Readonly<Partial<Record<ServiceName, readonly string[]>>> = {
  order: [ROUTES.createOrder, ROUTES.pay, ROUTES.complete],
  payment: [ROUTES.pay, ROUTES.complete],
  product: [ROUTES.createOrder, ROUTES.complete],
};
const ANY_CHECKOUT: readonly string[] = [ROUTES.createOrder, ROUTES.pay, ROUTES.complete];
/** How long a kill waits for a checkout request to time it by: shoppers check out every few seconds. */
const KILL_TIMING_WAIT_MS = 60_000;

/**
 * Until the product table holds `expected` products (the demo catalog the first product node
 * seeds before it reports started), or throws: a run on a partial catalog would check stock
 * and invariants against a shop nobody meant to build, so it does not go on.
 */
export async function waitForCatalog(db: Knex, expected: number, timeoutMs: number): Promise<{ id: string; on_hand: number }[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const products = await db("products").whereNull("deleted_at").select<{ id: string; on_hand: number }[]>("id", "on_hand");
    if (products.length >= expected) return products;
    if (Date.now() > deadline)
      throw new Error(
        `the catalog is incomplete after seeding: ${products.length} of ${expected} products (DEMO_CATALOG_SIZE); chaos does not run on a partial catalog`,
      );
    await sleep(500);
  }
}

export interface ChaosOptions {
  /** Faults in order; e.g. ["kill", "kill", "rabbitmq", "etcd", "mariadb", "kill"]. */
  faults: FaultKind[];
  /** Seconds of steady load before the first fault and between faults. */
  gapS: number;
  etcdOutageS: number;
  shoppers: number;
  thinkMs: number;
  /** Unpaid orders' hold (RESERVATION_TTL_SECONDS) of the nodes a run starts itself (a given `cluster` has its own). */
  reservationTtlS: number;
  /** How long the invariants may take to hold after the load (holds expiring, refund retries, reconciliation). */
  settleTimeoutS: number;
  log: (line: string) => void;
  /** An existing cluster (with private servers) instead of a new one. */
  cluster?: LocalCluster;
  /**
   * Services whose nodes the kills take, in turn (the first kill one of the first service's
   * nodes, the next one of the second's, and round again). Default: any node.
   */
  killServices?: ServiceName[];
  /** Seeds the load and the choice of victims; random when absent (reported). */
  seed?: number;
  /** A new cluster's bus: three RabbitMQ nodes and three etcd members (LocalClusterOptions.ha). */
  ha?: boolean;
}

export interface FaultRecord {
  kind: FaultKind;
  /** The node killed, or the server restarted. */
  target: string;
  /** A kill: the victim's service, and the checkout request whose start the kill went out with. */
  service?: ServiceName;
  during?: string;
  startedAt: number;
  /** When the cluster was healthy again. */
  recoveredAt: number;
  errors: number;
  requests: number;
  /**
   * Seconds from the fault to the last failed request of its window (to the second of the
   * load's progress samples): how long the shoppers saw failures, 0 when none.
   */
  failingForS: number;
}

export interface ChaosReport {
  seed: number;
  faults: FaultRecord[];
  load: LoadSummary;
  /** Errors outside every fault window (steady state). */
  steadyErrors: number;
  invariants: CheckResult;
  settleS: number;
  /** Error and fatal lines of the nodes' logs (first few). */
  logErrors: string[];
}

export const CHAOS_NODE_ENV = (ttlS: number): Record<string, string> => ({
  RESERVATION_TTL_SECONDS: String(ttlS),
  RESERVATION_SWEEP_INTERVAL_MS: "1000",
  PAYMENT_PENDING_TIMEOUT_S: "10",
  PAYMENT_RECONCILE_INTERVAL_MS: "2000",
  LOGIN_RATE_LIMIT: "100000",
  // A fault that hits a checkout leaves its order unpaid until the TTL: those must not turn
  // the shopper's next checkouts into UNPAID_LIMIT errors (the limits have their own tests).
  MAX_UNPAID_ORDERS: "1000",
  MAX_UNPAID_UNITS_PER_PRODUCT: "100000",
});

export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const log = opts.log;
  const own = !opts.cluster;
  const cluster =
    opts.cluster ??
    (await startLocalCluster({
      privateServers: true,
      ha: opts.ha,
      env: CHAOS_NODE_ENV(opts.reservationTtlS),
      log,
    }));
  const brokers = cluster.rabbitCluster?.nodes ?? (cluster.rabbit ? [cluster.rabbit] : []);
  if (!brokers.length || !cluster.mariadb) throw new Error("chaos restarts RabbitMQ and MariaDB: the cluster needs private servers");
  if (opts.faults.includes("rabbitmq-kill") && brokers.length < 2)
    throw new Error("rabbitmq-kill: needs a RabbitMQ cluster (ha); a single broker's loss is the `rabbitmq` fault");
  // The cluster's settings as its nodes read them (the checker's own connections, the catalog's size, the request timeout).
  const nodeConfig = loadConfig({ ...cluster.env, NODE_ID: "chaos-checker" });
  const dbs = new Map<string, Knex>();
  const db = (service: string) => {
    let k = dbs.get(service);
    if (!k) dbs.set(service, (k = createKnex(nodeConfig, service)));
    return k;
  };
  const abort = new AbortController();
  let loadRun: Promise<LoadSummary> | undefined;
  try {
    // The first product node seeds the demo catalog before it reports started; a start that
    // was retried after a partial seed does not seed again (the table is not empty), so the
    // count is checked, then every product's stock noted (conservation is checked against it).
    const products = await waitForCatalog(db("product"), nodeConfig.demoCatalog.size, 30_000);
    // The stock before any sale: what is on hand now plus what committed reservations took
    // (orders paid before this run, e.g. an earlier load on the same cluster).
    const committed = await db("product")("reservations")
      .where({ status: "committed" })
      .groupBy("product_id")
      .select("product_id")
      .sum<{ product_id: string; n: number | string }[]>({ n: "quantity" });
    const sold = new Map(committed.map((c) => [c.product_id, Number(c.n)]));
    const initial = new Map(products.map((p) => [p.id, Number(p.on_hand) + (sold.get(p.id) ?? 0)]));
    log(`catalog: ${products.length} products`);

    // Load, with a progress sample each second (errors per second → per fault window).
    const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
    log(`seed ${seed}`);
    const samples: { at: number; errors: number; requests: number }[] = [];
    const totalS = opts.gapS * (opts.faults.length + 1) + 3600; // ended by `abort` once the faults are done
    let last: LoadProgress | undefined;
    /** Set while a kill waits for a checkout request to go out with. */
    let armed: ((route: string) => void) | undefined;
    loadRun = runLoad({
      urls: cluster.gatewayUrls,
      shoppers: opts.shoppers,
      durationS: totalS,
      thinkMs: opts.thinkMs,
      seed,
      signal: abort.signal,
      onRequest: (route) => armed?.(route),
      onProgress: (p) => {
        last = p;
        samples.push({ at: Date.now(), errors: p.errors, requests: p.requests });
      },
    });
    const faults: FaultRecord[] = [];
    const random = rng(seed ^ 0x5eed);
    let kills = 0;
    let brokerKills = 0;
    await sleep(opts.gapS * 1000);
    for (const kind of opts.faults) {
      let startedAt = Date.now();
      let target: string = kind;
      let service: ServiceName | undefined;
      let during: string | undefined;
      log(
        `fault: ${kind} (load so far: ${last?.requests ?? 0} requests, ${last?.errors ?? 0} errors, ${last?.ordersPaid ?? 0} orders paid)`,
      );
      if (kind === "kill") {
        const only = opts.killServices?.length ? opts.killServices[kills++ % opts.killServices.length] : undefined;
        const pool = [...cluster.nodes.values()].filter((n) => !only || n.service === only);
        if (!pool.length) throw new Error(`kill: the cluster has no ${only} node`);
        const victim = pool[Math.floor(random() * pool.length)];
        target = victim.id;
        service = victim.service;
        const routes = CHECKOUT_ROUTES[victim.service] ?? ANY_CHECKOUT;
        log(`  victim ${target} (${service}): killed as the next checkout request through it (${routes.join(", ")}) is sent`);
        // cluster.kill sends the signal synchronously, from the load's hook, as the request
        // leaves: the checkout is under way when the node dies.
        let killed: Promise<void> | undefined;
        during = await new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => {
            armed = undefined;
            reject(
              new Error(`kill ${target}: no checkout request (${routes.join(", ")}) within ${KILL_TIMING_WAIT_MS / 1000} s to time it by`),
            );
          }, KILL_TIMING_WAIT_MS);
          armed = (route) => {
            if (!routes.includes(route)) return;
            armed = undefined;
            clearTimeout(timer);
            killed = cluster.kill(target, "SIGKILL");
            // The fault's window (its errors) starts with the kill, not with the wait for it.
            startedAt = Date.now();
            resolve(route);
          };
        });
        await killed;
        log(`  kill -9 ${target} (${service}) as ${during} was sent`);
        await sleep(3000);
        await cluster.restart(target);
      } else if (kind === "rabbitmq") {
        target = brokers.length > 1 ? `rolling restart of ${brokers.length} RabbitMQ nodes` : "RabbitMQ";
        for (const b of brokers) {
          await b.stop();
          if (brokers.length === 1) await sleep(5000);
          await b.start();
          log(`  ${b.node} restarted`);
        }
      } else if (kind === "rabbitmq-kill") {
        const victim = brokers[brokerKills++ % brokers.length];
        target = victim.node;
        await victim.kill();
        log(`  kill -9 ${victim.node}`);
        await sleep(5000);
        await victim.start();
      } else if (kind === "etcd") {
        await cluster.etcd.stop();
        await sleep(opts.etcdOutageS * 1000);
        await cluster.etcd.start();
      } else if (kind === "mariadb") {
        await cluster.mariadb.kill();
        await sleep(5000);
        await cluster.mariadb.start();
      }
      await cluster.waitHealthy(180_000);
      const recoveredAt = Date.now();
      faults.push({
        kind,
        target,
        ...(service ? { service, during } : {}),
        startedAt,
        recoveredAt,
        errors: 0,
        requests: 0,
        failingForS: 0,
      });
      log(`  recovered after ${((recoveredAt - startedAt) / 1000).toFixed(1)} s`);
      await sleep(opts.gapS * 1000);
    }
    abort.abort();
    const load = await loadRun;

    // Errors per window: the growth of the cumulative count between samples, given to the
    // fault whose window (plus the sampling interval) holds the sample.
    let steadyErrors = 0;
    for (let i = 1; i < samples.length; i++) {
      const dErr = samples[i].errors - samples[i - 1].errors;
      const dReq = samples[i].requests - samples[i - 1].requests;
      const at = samples[i].at;
      const f = faults.find((x) => at >= x.startedAt && at <= x.recoveredAt + 2000);
      if (f) {
        f.errors += dErr;
        f.requests += dReq;
        if (dErr > 0) f.failingForS = Math.max(f.failingForS, (at - f.startedAt) / 1000);
      } else steadyErrors += dErr;
    }

    // Settle, then the invariants, retried until they hold (unpaid holds expiring, refunds and
    // reconciliation finishing) or `settleTimeoutS` passes. No wait for the holds' TTL first: an
    // order still PENDING_PAYMENT, a payment or refund still PENDING and a unit still reserved
    // are problems at any age (lib/invariants.ts), so the check cannot pass before every hold
    // of the run has expired or been paid. Only the calls still inside the nodes when the
    // shoppers stopped (an aborted client does not stop a call under way) are waited for: they
    // end within the nodes' request timeout.
    log(`load done: ${load.requests} requests, ${load.errors.total} errors, ${load.orders.paid} orders paid; settling`);
    await sleep(nodeConfig.requestTimeoutMs);
    const check = () =>
      checkCheckoutInvariants(db, {
        products: products.map((p) => ({ id: p.id })),
        initialStock: (id) => initial.get(id) ?? 0,
        // Every order a shopper was answered 201 for must exist.
        knownOrderIds: load.orderIds,
        // The load places and pays orders; it never ships or refunds.
        finalStatuses: ["PAID", "CANCELLED"],
        logs: [...cluster.nodes.values()].flatMap((n) => n.history),
      });
    // Business events: all published (outbox), all consumed (queues empty), none given up.
    const eventsSettled = async (result: CheckResult): Promise<CheckResult> => {
      let unsent = 0;
      for (const service of DB_SERVICES)
        if (await db(service).schema.hasTable("outbox"))
          unsent += Number((await db(service)("outbox").whereNull("sent_at").count<{ n: number | string }[]>({ n: "*" }))[0].n);
      const queues = await eventQueueMessages(brokers[0].uri, cluster.namespace, brokers[0].ctl);
      const problems = [
        ...(unsent ? [`events: ${unsent} outbox row(s) not published`] : []),
        ...(queues.total - queues.dead ? [`events: ${queues.total - queues.dead} message(s) still waiting in the event queues`] : []),
        ...(queues.dead ? [`events: ${queues.dead} message(s) dead-lettered`] : []),
      ];
      return { ...result, problems: [...result.problems, ...problems] };
    };
    // The event queues are read with rabbitmqctl (seconds per call): only once the databases
    // hold. They are read after the databases, so a message consumed in between (a duplicate
    // applied, say) shows in neither read: once the queues are empty, the databases once more.
    const settled = async (): Promise<{ result: CheckResult; eventsRead: boolean }> => {
      const databases = await check();
      if (databases.problems.length) return { result: databases, eventsRead: false };
      const withEvents = await eventsSettled(databases);
      if (withEvents.problems.length) return { result: withEvents, eventsRead: true };
      const again = await check();
      return { result: again, eventsRead: !again.problems.length };
    };
    const settleStart = Date.now();
    let round = await settled();
    while (round.result.problems.length && Date.now() - settleStart < opts.settleTimeoutS * 1000) {
      await sleep(2000);
      round = await settled();
    }
    // A report of what is left: the events too, when the last round did not read them.
    const invariants = round.eventsRead ? round.result : await eventsSettled(round.result);
    const logErrors = [...cluster.nodes.values()].flatMap((n) =>
      n.history.flatMap((c) => c.lines.filter((l) => /"level":"(error|fatal)"/.test(l)).map((l) => `[${c.name}] ${l.slice(0, 300)}`)),
    );
    return { seed, faults, load, steadyErrors, invariants, settleS: (Date.now() - settleStart) / 1000, logErrors: logErrors.slice(0, 30) };
  } finally {
    // A run that failed part-way stops its shoppers too.
    abort.abort();
    await loadRun?.catch(() => undefined);
    for (const k of dbs.values()) await k.destroy().catch(() => undefined);
    if (own) await cluster.stop();
  }
}

/** The report as text: faults with their error counts, the load, the invariants. */
export function formatChaosReport(r: ChaosReport): string {
  const lines = [
    `Faults (errors the shoppers saw from the fault until the cluster was healthy again), seed ${r.seed}:`,
    ...r.faults.map(
      (f) =>
        `  ${f.kind.padEnd(13)} ${f.target.padEnd(36)} recovered in ${((f.recoveredAt - f.startedAt) / 1000).toFixed(1).padStart(5)} s  errors ${f.errors} of ${f.requests} requests${f.errors ? ` (${((100 * f.errors) / Math.max(1, f.requests)).toFixed(1)} %, for ${f.failingForS.toFixed(0)} s)` : ""}${f.during ? `  (killed as ${f.during} was sent)` : ""}`,
    ),
    `  steady state (outside the fault windows): ${r.steadyErrors} errors`,
    `Load: ${r.load.requests} requests in ${r.load.durationS.toFixed(0)} s (${r.load.requestsPerS.toFixed(1)}/s), ${r.load.errors.total} errors; orders created ${r.load.orders.created}, paid ${r.load.orders.paid}, out of stock ${r.load.orders.outOfStock}`,
    ...r.load.errors.byKind.slice(0, 10).map((e) => `  ${e.count} × ${e.kind} ${e.route}: ${e.samples[0] ?? ""}`.slice(0, 240)),
    `Invariants after ${r.settleS.toFixed(0)} s of settling: ${r.invariants.problems.length ? `${r.invariants.problems.length} PROBLEM(S)` : "all hold"} ${JSON.stringify(r.invariants.figures)}`,
    ...r.invariants.problems.slice(0, 30).map((p) => `  ${p}`),
  ];
  if (r.logErrors.length)
    lines.push(
      `Error lines in the nodes' logs: ${r.logErrors.length}${r.logErrors.length >= 30 ? " or more" : ""}; the first 5:`,
      ...r.logErrors.slice(0, 5).map((l) => `  ${l.slice(0, 200)}`),
    );
  return lines.join("\n");
}
