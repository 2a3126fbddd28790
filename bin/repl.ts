/**
 * `npm run repl`: Moleculer's REPL. In cluster mode it is a node of its own that runs no
 * service and joins the running system through RabbitMQ, so `nodes`, `services` and
 * `call user.…` reach the real nodes. Embedded mode has no transporter for a second
 * process to join, so there the REPL starts the whole embedded system in this process.
 */
import { createBroker } from "../app";
import { installShutdown, loadConfigOrExit, logWarnings } from "./start";

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const cluster = config.mode === "cluster";
  const broker = createBroker(
    { ...config, nodeId: cluster ? `repl-${process.pid}` : config.nodeId, logLevel: cluster ? "warn" : config.logLevel },
    cluster ? [] : config.services,
  );
  if (!cluster) logWarnings(broker, config);
  installShutdown(() => broker.stop());
  await broker.start();
  process.stdout.write(
    cluster
      ? "Joined the cluster. Try: nodes, services, call user.get --id <id>. Type 'quit' to leave.\n"
      : `Embedded system started (gateway on ${config.publicUrl}). Try: services, actions, call api.live\n`,
  );
  broker.repl();
}

void main();
