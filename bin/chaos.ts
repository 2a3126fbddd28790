/**
 * `npm run chaos [-- --faults kill,rabbitmq,kill,etcd,kill,mariadb,kill --gap 20
 *   --etcd-outage 60 --shoppers 8 --think-ms 300 --kill-services order,payment,product
 *   --seed N --ha --record]`: the load against a local cluster with private RabbitMQ and MariaDB
 * (never the machine's shared servers) while nodes are killed and restarted (each as a
 * checkout request through its service is sent; `--kill-services`: victims among those
 * services' nodes, one service per kill in turn, default any node), RabbitMQ restarts, etcd
 * stops for a minute and MariaDB restarts; then the checkout invariants
 * (test/support/chaos.ts). Prints the errors per fault and the invariants; exit 1 when an
 * invariant does not hold, or the run could not go on (e.g. an incomplete catalog).
 * `--record` appends the report to bench/RESULTS.md.
 *
 * `--ha` (#17): the bus without a single point, three RabbitMQ nodes clustered and three etcd
 * members; default faults then: each RabbitMQ node killed (-9) in turn, a rolling restart of
 * the three, an etcd member's loss (`etcd`: the whole etcd in the single-member run), a node
 * kill. `rabbitmq-kill` needs --ha.
 */
import os from "node:os";
import { appendResults } from "../bench/support";
import { ALL_SERVICES, type ServiceName } from "../lib/config";
import { FAULT_KINDS, formatChaosReport, runChaos, type FaultKind } from "../test/support/chaos";

const FAULTS: FaultKind[] = ["kill", "rabbitmq", "kill", "etcd", "kill", "mariadb", "kill"];
const HA_FAULTS: FaultKind[] = ["rabbitmq-kill", "rabbitmq-kill", "rabbitmq-kill", "rabbitmq", "kill"];

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const opt = (name: string, fallback: string) => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
  };
  const ha = args.includes("--ha");
  const faults = opt("--faults", (ha ? HA_FAULTS : FAULTS).join(","))
    .split(",")
    .filter(Boolean) as FaultKind[];
  const bad = faults.filter((f) => !FAULT_KINDS.includes(f));
  if (bad.length) {
    process.stderr.write(`--faults: unknown ${bad.join(", ")} (${FAULT_KINDS.join(", ")})\n`);
    return 2;
  }
  if (!ha && faults.includes("rabbitmq-kill")) {
    process.stderr.write("--faults: rabbitmq-kill needs --ha (a single broker's loss is the rabbitmq fault)\n");
    return 2;
  }
  const killServices = opt("--kill-services", "").split(",").filter(Boolean) as ServiceName[];
  const badServices = killServices.filter((s) => !(ALL_SERVICES as readonly string[]).includes(s));
  if (badServices.length) {
    process.stderr.write(`--kill-services: unknown ${badServices.join(", ")} (${ALL_SERVICES.join(", ")})\n`);
    return 2;
  }
  const seedArg = opt("--seed", "");
  if (seedArg && !/^\d+$/.test(seedArg)) {
    process.stderr.write("--seed: a non-negative integer\n");
    return 2;
  }
  const startedAt = new Date();
  const startLoad = os
    .loadavg()
    .map((x) => x.toFixed(1))
    .join(" ");
  const report = await runChaos({
    faults,
    gapS: Number(opt("--gap", "20")),
    etcdOutageS: Number(opt("--etcd-outage", "60")),
    shoppers: Number(opt("--shoppers", "8")),
    thinkMs: Number(opt("--think-ms", "300")),
    reservationTtlS: 20,
    settleTimeoutS: 180,
    ...(killServices.length ? { killServices } : {}),
    ...(seedArg ? { seed: Number(seedArg) } : {}),
    ha,
    log: (line) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`),
  });
  const text = formatChaosReport(report);
  process.stdout.write(`${text}\n`);
  if (args.includes("--record"))
    appendResults(
      [
        "",
        `## Chaos (\`npm run chaos\`), ${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC`,
        "",
        `Local cluster (k8s/base's replica counts, one process per pod) with private ${ha ? "RabbitMQ ×3 (clustered, quorum queues), etcd ×3" : "RabbitMQ"} and MariaDB; faults: ${faults.join(", ")}${faults.includes("etcd") ? `; etcd outage ${opt("--etcd-outage", "60")} s` : ""}. Machine: ${os.cpus().length} vCPUs; load average ${startLoad} at start → ${os
          .loadavg()
          .map((x) => x.toFixed(1))
          .join(" ")} at end.`,
        "",
        "```",
        text,
        "```",
        "",
      ].join("\n"),
    );
  return report.invariants.problems.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`chaos failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
