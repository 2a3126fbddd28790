/**
 * Chaos run: the load generator's shoppers against the local cluster (test/support/cluster.ts,
 * private RabbitMQ and MariaDB: the only servers it restarts are its own) while faults are
 * injected one after another, each followed by a wait until the cluster is healthy again:
 * - `kill`: kill -9 of a random service node (any service, gateways included), restarted
 *   after a pause, as Kubernetes restarts a pod;
 * - `rabbitmq`: RabbitMQ stopped and started again (clients reconnect; durable queues and
 *   persistent messages survive);
 * - `etcd`: etcd stopped for `etcdOutageS` (60 s in the full run) and started again: the
 *   cluster must keep serving (the resilient discoverer keeps the known nodes meanwhile);
 * - `mariadb`: MariaDB killed (a crash: InnoDB recovers) and started again.
 * Errors the shoppers see are attributed to the fault whose window (start → healthy again)
 * they fall in, from the load's once-a-second progress. After the load: the system settles
 * (reservation TTL + sweep, reconciliation), then the checkout invariants are read from the
 * databases (test/support/invariants.ts): no paid order lost, none stuck past TTL + sweep, at
 * most one kept charge per order, stock conserved, each paid order notified once.
 */
import type { Knex } from "knex";
import { loadConfig } from "../../lib/config";
import { createKnex } from "../../lib/db";
import { startLocalCluster, type LocalCluster } from "./cluster";
import { checkCheckoutInvariants, type CheckResult } from "./invariants";
import { runLoad, type LoadProgress, type LoadSummary } from "./load";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export type FaultKind = "kill" | "rabbitmq" | "etcd" | "mariadb";

export interface ChaosOptions {
  /** Faults in order; e.g. ["kill", "kill", "rabbitmq", "etcd", "mariadb", "kill"]. */
  faults: FaultKind[];
  /** Seconds of steady load before the first fault and between faults. */
  gapS: number;
  etcdOutageS: number;
  shoppers: number;
  thinkMs: number;
  /** Unpaid orders' hold (RESERVATION_TTL_SECONDS of the nodes). */
  reservationTtlS: number;
  /** How long the invariants may take to hold after the load (refund retries, reconciliation). */
  settleTimeoutS: number;
  log: (line: string) => void;
  /** An existing cluster (with private servers) instead of a new one. */
  cluster?: LocalCluster;
  seed?: number;
}

export interface FaultRecord {
  kind: FaultKind;
  target: string;
  startedAt: number;
  /** When the cluster was healthy again. */
  recoveredAt: number;
  errors: number;
  requests: number;
}

export interface ChaosReport {
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
      env: CHAOS_NODE_ENV(opts.reservationTtlS),
      log,
    }));
  if (!cluster.rabbit || !cluster.mariadb) throw new Error("chaos restarts RabbitMQ and MariaDB: the cluster needs private servers");
  const dbs = new Map<string, Knex>();
  const db = (service: string) => {
    let k = dbs.get(service);
    if (!k) dbs.set(service, (k = createKnex(loadConfig({ ...cluster.env, NODE_ID: "chaos-checker" }), service)));
    return k;
  };
  try {
    // The demo catalog loads in the background of the first product node: wait for it, then
    // note every product's stock (conservation is checked against it).
    let products: { id: string; on_hand: number }[] = [];
    for (const deadline = Date.now() + 120_000; ; ) {
      products = (await db("product")("products").whereNull("deleted_at").select("id", "on_hand")) as { id: string; on_hand: number }[];
      if (products.length >= 1000 || Date.now() > deadline) break;
      await sleep(1000);
    }
    // The stock before any sale: what is on hand now plus what committed reservations took
    // (orders paid before this run, e.g. an earlier load on the same cluster).
    const committed = (await db("product")("reservations").where({ status: "committed" }).groupBy("product_id").select("product_id").sum({ n: "quantity" })) as { product_id: string; n: number | string }[];
    const sold = new Map(committed.map((c) => [c.product_id, Number(c.n)]));
    const initial = new Map(products.map((p) => [p.id, Number(p.on_hand) + (sold.get(p.id) ?? 0)]));
    log(`catalog: ${products.length} products`);

    // Load, with a progress sample each second (errors per second → per fault window).
    const samples: { at: number; errors: number; requests: number }[] = [];
    const abort = new AbortController();
    const totalS = opts.gapS * (opts.faults.length + 1) + 3600; // ended by `abort` once the faults are done
    let last: LoadProgress | undefined;
    const loadRun = runLoad({
      urls: cluster.gatewayUrls,
      shoppers: opts.shoppers,
      durationS: totalS,
      thinkMs: opts.thinkMs,
      seed: opts.seed,
      signal: abort.signal,
      onProgress: (p) => {
        last = p;
        samples.push({ at: Date.now(), errors: p.errors, requests: p.requests });
      },
    });
    const faults: FaultRecord[] = [];
    const victims = [...cluster.nodes.keys()];
    let rnd = opts.seed ?? Date.now();
    const random = () => ((rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    await sleep(opts.gapS * 1000);
    for (const kind of opts.faults) {
      const startedAt = Date.now();
      let target: string = kind;
      log(`fault: ${kind} (load so far: ${last?.requests ?? 0} requests, ${last?.errors ?? 0} errors, ${last?.ordersPaid ?? 0} orders paid)`);
      if (kind === "kill") {
        target = victims[Math.floor(random() * victims.length)]!;
        await cluster.kill(target, "SIGKILL");
        await sleep(3000);
        await cluster.restart(target);
      } else if (kind === "rabbitmq") {
        await cluster.rabbit.stop();
        await sleep(5000);
        await cluster.rabbit.start();
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
      faults.push({ kind, target, startedAt, recoveredAt, errors: 0, requests: 0 });
      log(`  recovered after ${((recoveredAt - startedAt) / 1000).toFixed(1)} s`);
      await sleep(opts.gapS * 1000);
    }
    abort.abort();
    const load = await loadRun;

    // Errors per window: the growth of the cumulative count between samples, given to the
    // fault whose window (plus the sampling interval) holds the sample.
    let steadyErrors = 0;
    for (let i = 1; i < samples.length; i++) {
      const dErr = samples[i]!.errors - samples[i - 1]!.errors;
      const dReq = samples[i]!.requests - samples[i - 1]!.requests;
      const at = samples[i]!.at;
      const f = faults.find((x) => at >= x.startedAt && at <= x.recoveredAt + 2000);
      if (f) {
        f.errors += dErr;
        f.requests += dReq;
      } else steadyErrors += dErr;
    }

    // Settle, then the invariants (retried while refunds and reconciliation finish).
    log(`load done: ${load.requests} requests, ${load.errors.total} errors, ${load.orders.paid} orders paid; settling`);
    await sleep((opts.reservationTtlS + 3) * 1000);
    const check = () => checkCheckoutInvariants(db, { products: products.map((p) => ({ id: p.id })), initialStock: (id) => initial.get(id) ?? 0, logs: [...cluster.nodes.values()].flatMap((n) => n.history) });
    const settleStart = Date.now();
    let invariants = await check();
    while (invariants.problems.length && Date.now() - settleStart < opts.settleTimeoutS * 1000) {
      await sleep(2000);
      invariants = await check();
    }
    const logErrors = [...cluster.nodes.values()].flatMap((n) => n.history.flatMap((c) => c.lines.filter((l) => /"level":"(error|fatal)"/.test(l)).map((l) => `[${c.name}] ${l.slice(0, 300)}`)));
    return { faults, load, steadyErrors, invariants, settleS: (Date.now() - settleStart) / 1000, logErrors: logErrors.slice(0, 30) };
  } finally {
    for (const k of dbs.values()) await k.destroy().catch(() => undefined);
    if (own) await cluster.stop();
  }
}

/** The report as text: faults with their error counts, the load, the invariants. */
export function formatChaosReport(r: ChaosReport): string {
  const lines = [
    "Faults (errors the shoppers saw from the fault until the cluster was healthy again):",
    ...r.faults.map((f) => `  ${f.kind.padEnd(8)} ${f.target.padEnd(36)} recovered in ${((f.recoveredAt - f.startedAt) / 1000).toFixed(1).padStart(5)} s  errors ${f.errors} of ${f.requests} requests`),
    `  steady state (outside the fault windows): ${r.steadyErrors} errors`,
    `Load: ${r.load.requests} requests in ${r.load.durationS.toFixed(0)} s (${r.load.requestsPerS.toFixed(1)}/s), ${r.load.errors.total} errors; orders created ${r.load.orders.created}, paid ${r.load.orders.paid}, out of stock ${r.load.orders.outOfStock}`,
    ...r.load.errors.byKind.slice(0, 10).map((e) => `  ${e.count} × ${e.kind} ${e.route}: ${e.samples[0] ?? ""}`.slice(0, 240)),
    `Invariants after ${r.settleS.toFixed(0)} s of settling: ${r.invariants.problems.length ? `${r.invariants.problems.length} PROBLEM(S)` : "all hold"} ${JSON.stringify(r.invariants.figures)}`,
    ...r.invariants.problems.slice(0, 30).map((p) => `  ${p}`),
  ];
  if (r.logErrors.length) lines.push(`Error lines in the nodes' logs: ${r.logErrors.length}${r.logErrors.length >= 30 ? " or more" : ""}; the first 5:`, ...r.logErrors.slice(0, 5).map((l) => `  ${l.slice(0, 200)}`));
  return lines.join("\n");
}
