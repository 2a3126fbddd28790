/**
 * `npm run dead-letters -- list|replay [--service <name>] [--id <messageId> …]`
 *
 * Lists or replays the business events a service's consumer gave up on (lib/events/dead-letters.ts).
 * Uses the same environment as the services: RABBITMQ_URI (the dead-letter queues) or, without it,
 * the embedded databases in DATA_DIR / MYSQL_URL. Without --service, every service of SERVICES.
 */
import { loadConfig, ConfigError } from "../lib/config";
import { deadLetters, UnknownServiceError } from "../lib/operations";

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const command = args[0];
  const opt = (name: string) => args.flatMap((a, i) => (a === name && args[i + 1] ? [args[i + 1]] : []));
  if (command !== "list" && command !== "replay") {
    process.stderr.write("usage: npm run dead-letters -- list|replay [--service <name>] [--id <messageId> …]\n");
    return 2;
  }
  try {
    await deadLetters(loadConfig(), command, (line) => process.stdout.write(`${line}\n`), opt("--service"), opt("--id"));
  } catch (err) {
    if (!(err instanceof UnknownServiceError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${err instanceof ConfigError ? err.message : (err as Error).stack}\n`);
    process.exit(1);
  },
);
