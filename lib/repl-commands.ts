/**
 * The REPL's own commands (#18), for what operators otherwise do with separate scripts:
 * `dead-letters list|replay`, `seed`, `business-events`, `invariants`, `recs-rebuild`. Every REPL of the system has them
 * (`npm run repl`, and `npm run dev` through Moleculer's runner: broker option `replOptions`,
 * moleculer.config.ts). They run lib/operations.ts, as `npm run dead-letters` and
 * `npm run seed` do; `npm run recs:rebuild` goes through the gateway instead (it works
 * against any running system), the REPL's command calls the service directly.
 */
import type { ReplOptions, ServiceBroker } from "moleculer";
import type { AppConfig } from "./config";

type ReplCommand = NonNullable<ReplOptions["customCommands"]>[number];
/** What moleculer-repl hands a command: its flags, and its positional arguments by name. */
interface Invocation {
  options: Record<string, unknown>;
  [argument: string]: unknown;
}

/**
 * moleculer's typings call a command's arguments `string[]`; moleculer-repl 0.8 passes an
 * object (`{ options, rawCommand, …positional }`). Checked, not cast.
 */
function invocation(args: unknown): Invocation {
  if (typeof args !== "object" || args === null || typeof (args as { options?: unknown }).options !== "object")
    throw new Error("unexpected REPL arguments");
  return args as Invocation;
}

/**
 * Loaded when a command runs, not with moleculer.config.ts: under `npm run dev --hot`, a file
 * the config imports restarts the whole broker when edited (Moleculer's hot reload), so the
 * event and database modules stay out of that graph.
 */
const operations = () => import("./operations");

/** A command's body; an error is printed, not thrown into the REPL. */
function run(print: (line: string) => void, body: (broker: ServiceBroker, p: Invocation) => Promise<void>): ReplCommand["action"] {
  return async (broker, args) => {
    try {
      await body(broker, invocation(args));
    } catch (err) {
      print(`failed: ${(err as Error).message}`);
    }
  };
}

/** An option's value as text: the REPL's parser gives a string, or a number for digits alone. */
function optionText(value: unknown): string | undefined {
  return typeof value === "string" || typeof value === "number" ? String(value) : undefined;
}

/** `print`: where a command's lines go (the REPL's stdout). */
export function replCommands(
  config: AppConfig,
  print: (line: string) => void = (line) => void process.stdout.write(`${line}\n`),
): ReplCommand[] {
  return [
    {
      command: "dead-letters <action>",
      description: "List or replay (action: list | replay) the business events a consumer gave up on, as npm run dead-letters",
      options: [
        { option: "--service <name>", description: "one service (default: every one with a database)" },
        { option: "--id <messageIds>", description: "replay only these message ids (comma-separated)" },
      ],
      action: run(print, async (_broker, p) => {
        const action = String(p.action);
        if (action !== "list" && action !== "replay") {
          print("usage: dead-letters list|replay [--service <name>] [--id <id,…>]");
          return;
        }
        const service = optionText(p.options.service);
        const id = optionText(p.options.id);
        const { deadLetters } = await operations();
        await deadLetters(config, action, print, service ? [service] : undefined, id ? id.split(",") : undefined);
      }),
    },
    {
      command: "seed",
      description: "Load the demo catalog through the product service, as npm run seed (skus that exist are skipped)",
      options: [{ option: "--count <n>", description: `products (default ${config.demoCatalog.size})` }],
      action: run(print, async (broker, p) => {
        const count = p.options.count === undefined ? config.demoCatalog.size : Number(p.options.count);
        if (!Number.isInteger(count) || count < 1) {
          print("--count must be a positive integer");
          return;
        }
        const { seedDemoCatalog } = await operations();
        await seedDemoCatalog(broker, count, print);
      }),
    },
    {
      command: "business-events",
      description: "The latest business events: each service's outbox row, when the relay sent it, which services' inboxes applied it",
      options: [
        { option: "--order <id>", description: "only the events whose payload names this order" },
        { option: "--last <n>", description: "how many (default 20)" },
      ],
      action: run(print, async (_broker, p) => {
        const last = p.options.last === undefined ? 20 : Number(p.options.last);
        if (!Number.isInteger(last) || last < 1 || last > 1000) {
          print("--last must be an integer from 1 to 1000");
          return;
        }
        const orderId = optionText(p.options.order);
        const { eventTrail } = await operations();
        await eventTrail(config, print, { last, orderId });
      }),
    },
    {
      command: "invariants",
      description:
        "Check the checkout invariants (money to the minor unit, stock, notifications) on this system's databases, as the kill and chaos tests do; for a system at rest",
      action: run(print, async () => {
        const { checkInvariants } = await operations();
        await checkInvariants(config, print);
      }),
    },
    {
      command: "recs-rebuild",
      description: "Rebuild the recommendation model from the order history (or follow the rebuild running)",
      action: run(print, async (broker) => {
        const { rebuildRecommendations } = await operations();
        await rebuildRecommendations(broker, "recommendations", print, 500);
      }),
    },
  ];
}
