/**
 * `npm run cluster [-- --port 3000 --private-servers --ha --keep --replicas order=3,search=1]`:
 * the Kubernetes topology as separate processes on this machine (test/support/cluster.ts):
 * one node per pod with k8s/base's replica counts, over RabbitMQ, etcd (a private
 * instance), Redis and MariaDB, migrated first like the Job. Prints the gateways' URLs and
 * the admin account, then runs until Ctrl-C (or SIGTERM), when it stops every node
 * gracefully and removes what it created (databases, vhost, Redis keys, etcd) unless --keep.
 *
 * --private-servers: RabbitMQ and MariaDB of its own too (ports and data dirs of its own),
 * as the chaos runner uses; the default shares the machine's servers under a unique vhost
 * and namespace.
 *
 * --ha: no single point in the bus (#17): three private RabbitMQ nodes clustered (quorum
 * queues) and three etcd members, beside a private MariaDB; each node lists the three brokers.
 */
import { randomBytes } from "node:crypto";
import type { ServiceName } from "../lib/config";
import { startLocalCluster } from "../test/support/cluster";

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const replicas: Partial<Record<ServiceName, number>> = {};
  for (const pair of (opt("--replicas") ?? "").split(",").filter(Boolean)) {
    const [name, n] = pair.split("=");
    if (!name || !Number.isInteger(Number(n)) || Number(n) < 1) throw new Error(`--replicas: expected service=N, got "${pair}"`);
    replicas[name as ServiceName] = Number(n);
  }
  const admin = {
    email: process.env.ADMIN_EMAIL ?? "admin@meridian.local",
    password: process.env.ADMIN_PASSWORD ?? randomBytes(12).toString("base64url"),
  };
  const started = Date.now();
  const cluster = await startLocalCluster({
    replicas,
    privateServers: args.includes("--private-servers"),
    ha: args.includes("--ha"),
    gatewayPort: opt("--port") ? Number(opt("--port")) : 3000,
    admin,
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(
    [
      `Meridian cluster up in ${((Date.now() - started) / 1000).toFixed(0)} s: ${cluster.nodes.size} nodes, namespace ${cluster.namespace}`,
      ...cluster.gatewayUrls.map((u, i) => `  gateway ${i + 1}: ${u}/api  (docs ${u}/docs)`),
      ...[...cluster.grpcAddresses.values()].map((a, i) => `  gRPC ${i + 1}: ${a}  (grpcurl -plaintext ${a} list)`),
      `  admin: ${admin.email} / ${admin.password}`,
      ...(cluster.rabbitCluster
        ? [`  RabbitMQ cluster: ${cluster.rabbitCluster.nodes.map((n) => `${n.node} (${new URL(n.uri).port})`).join(", ")}`]
        : []),
      `  etcd: ${cluster.etcd.hosts}`,
      `  logs: ${cluster.logDir}/<node>.log`,
      `  load: ADMIN_EMAIL=${admin.email} ADMIN_PASSWORD=${admin.password} npm run load -- --url ${cluster.gatewayUrls.join(",")}`,
      "Ctrl-C stops it.",
      "",
    ].join("\n"),
  );
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write("Stopping the cluster…\n");
    cluster.stop({ keep: args.includes("--keep") }).then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`Stop failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((err) => {
  process.stderr.write(`cluster failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
