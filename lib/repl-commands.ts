/**
 * The REPL's own commands (#18), for what operators otherwise do with separate scripts:
 * `dead-letters list|replay`, `seed`, `recs-rebuild`. Every REPL of the system has them
 * (`npm run repl`, and `npm run dev` through Moleculer's runner: broker option `replOptions`,
 * moleculer.config.ts); each runs the same function as its script (lib/operations.ts).
 */
import type { ReplOptions, ServiceBroker } from "moleculer";
import type { AppConfig } from "./config";
import { deadLetters, rebuildRecommendations, seedDemoCatalog } from "./operations";

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
  if (typeof args !== "object" || args === null || typeof (args as { options?: unknown }).options !== "object") throw new Error("unexpected REPL arguments");
  return args as Invocation;
}

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

/** `print`: where a command's lines go (the REPL's stdout). */
export function replCommands(config: AppConfig, print: (line: string) => void = (line) => void process.stdout.write(`${line}\n`)): ReplCommand[] {
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
        const { service, id } = p.options;
        await deadLetters(config, action, print, service ? [String(service)] : undefined, id ? String(id).split(",") : undefined);
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
        await seedDemoCatalog(broker, count, print);
      }),
    },
    {
      command: "recs-rebuild",
      description: "Rebuild the recommendation model from the order history (or follow the rebuild running), as npm run recs:rebuild",
      action: run(print, async (broker) => {
        await rebuildRecommendations(broker, "recommendations", print, 500);
      }),
    },
  ];
}
