/**
 * `npm run seed [-- --count N]`: loads the demo catalog (lib/demo-catalog.ts, N products,
 * default DEMO_CATALOG_SIZE = 1000) through the product service, with a progress bar.
 * Idempotent: skus that exist are skipped. Embedded mode runs the product service in this
 * process on the same DATA_DIR; cluster mode joins the cluster and calls a product node.
 */
import { createBroker } from "../app";
import { seedDemoCatalog } from "../lib/operations";
import { installShutdown, loadConfigOrExit } from "./start";

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const i = process.argv.indexOf("--count");
  const total = i > 0 ? Number(process.argv[i + 1]) : config.demoCatalog.size;
  if (!Number.isInteger(total) || total < 1) throw new Error("--count must be a positive integer");
  const cluster = config.mode === "cluster";
  // Embedded: our own product service must not also load the catalog at its start.
  const broker = createBroker(
    { ...config, nodeId: `seed-${process.pid}`, logLevel: "warn", demoCatalog: { ...config.demoCatalog, enabled: false } },
    cluster ? [] : ["product"],
  );
  installShutdown(() => broker.stop());
  await broker.start();
  if (cluster) await broker.waitForServices(["product"], 30_000);
  await seedDemoCatalog(broker, total, (line) => process.stderr.write(`${line}\n`));
  await broker.stop();
}

main().catch((err) => {
  process.stderr.write(`\nSeed failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
