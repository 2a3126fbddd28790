/**
 * `npm run dead-letters -- list|replay [--service <name>] [--id <messageId> …]`
 *
 * Lists or replays the business events a service's consumer gave up on (lib/events/dead-letters.ts).
 * Uses the same environment as the services: RABBITMQ_URI (the dead-letter queues) or, without it,
 * the embedded databases in DATA_DIR / MYSQL_URL. Without --service, every service of SERVICES.
 */
import { loadConfig, ConfigError, ALL_SERVICES } from "../lib/config";
import { listDeadLetters, replayDeadLetters } from "../lib/events/dead-letters";

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const command = args[0];
  const opt = (name: string) => args.flatMap((a, i) => (a === name && args[i + 1] ? [args[i + 1]!] : []));
  if (command !== "list" && command !== "replay") {
    process.stderr.write("usage: npm run dead-letters -- list|replay [--service <name>] [--id <messageId> …]\n");
    return 2;
  }
  const config = loadConfig();
  const services = opt("--service").length ? opt("--service") : config.services.filter((s) => s !== "gateway" && s !== "search"); // no database, no dead letters: search rebuilds instead
  const unknown = services.filter((s) => !(ALL_SERVICES as readonly string[]).includes(s));
  if (unknown.length) {
    process.stderr.write(`unknown service(s): ${unknown.join(", ")}\n`);
    return 2;
  }
  let total = 0;
  for (const service of services) {
    const letters = command === "list" ? await listDeadLetters(config, service) : await replayDeadLetters(config, service, opt("--id"));
    total += letters.length;
    process.stdout.write(`${service}: ${letters.length} dead letter(s)${command === "replay" ? " replayed" : ""}\n`);
    for (const l of letters)
      process.stdout.write(`  ${l.messageId}  ${l.event}  attempts=${l.attempts}  failed=${l.failedAt}  ${l.lastError}\n`);
  }
  if (command === "replay" && !config.rabbitmqUris && total)
    process.stdout.write("Embedded mode: the running service applies them at its next poll.\n");
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${err instanceof ConfigError ? err.message : (err as Error).stack}\n`);
    process.exit(1);
  },
);
