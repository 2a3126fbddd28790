/**
 * The REPL's own commands (lib/repl-commands.ts) on an embedded system: what a REPL of the
 * system gets from its broker options, run as moleculer-repl runs them.
 */
import assert from "node:assert/strict";
import { after, before, it } from "mocha";
import { startTestApp, type TestApp } from "../test/support/app";
import { replCommands } from "./repl-commands";

let app: TestApp;
before(async () => {
  app = await startTestApp({ services: ["user", "product", "order", "recommendation"] });
});
after(async () => {
  await app.stop();
});

/** Runs a command by name with moleculer-repl's arguments; resolves with what it printed. */
async function run(command: string, args: Record<string, unknown> = {}, options: Record<string, unknown> = {}): Promise<string> {
  const printed: string[] = [];
  const def = replCommands(app.config, (line) => printed.push(line)).find((c) => c.command.split(" ")[0] === command)!;
  await def.action(app.broker, { options, rawCommand: command, ...args } as never, {});
  return printed.join("\n");
}

it("every REPL of the system has the commands (broker option replOptions)", () => {
  assert.deepEqual(
    (app.broker.options.replOptions?.customCommands ?? []).map((c) => c.command),
    ["dead-letters <action>", "seed", "recs-rebuild"],
  );
});

it("seed loads the demo catalog through the product service, and a second run skips what exists", async () => {
  assert.match(await run("seed", {}, { count: "30" }), /Done: 30 new, 0 already there\./);
  assert.match(await run("seed", {}, { count: "40" }), /Done: 10 new, 30 already there\./);
  assert.equal((await app.broker.call<{ items: unknown[] }, unknown>("product.list", { pageSize: 100 })).items.length, 40);
  assert.match(await run("seed", {}, { count: "zero" }), /--count must be a positive integer/);
});

it("dead-letters lists per service (none here), refuses an unknown service and a wrong action", async () => {
  const out = await run("dead-letters", { action: "list" });
  for (const s of ["user", "product", "order", "recommendation"]) assert.match(out, new RegExp(`^${s}: 0 dead letter\\(s\\)$`, "m"));
  assert.match(await run("dead-letters", { action: "list" }, { service: "nope" }), /failed: unknown service\(s\): nope/);
  assert.match(await run("dead-letters", { action: "drop" }), /usage: dead-letters list\|replay/);
});

it("recs-rebuild rebuilds the recommendation model and says when it is done", async () => {
  assert.match(await run("recs-rebuild"), /recommendations: model rebuilt in [\d.]+ s/);
  assert.equal((await app.broker.call<{ status: string }>("recommendation.rebuildStatus")).status, "done");
});
