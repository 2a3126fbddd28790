/**
 * "Applied once" / "notified once" are counts of what the system did, so they are taken
 * when it has nothing left to do, not right after the first arrival (a duplicate would
 * come later). `untilQuiet` polls named in-flight counts (unsent outbox rows, messages in
 * the event queues, callbacks still being sent, …) until every one is 0 in two polls in a
 * row (one zero can be a broker's non-answer: test/support/rabbitmq.ts queueMessages); the
 * test counts again after that. It waits on the system's own state, never on a fixed
 * time, and fails naming what was still busy.
 */
import assert from "node:assert/strict";
import type { Knex } from "knex";

export type InFlight = Record<string, () => Promise<number> | number>;

export async function untilQuiet(what: string, inFlight: InFlight, timeoutMs = 60_000, intervalMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let quietPolls = 0;
  for (;;) {
    const busy: string[] = [];
    for (const [name, count] of Object.entries(inFlight)) {
      const n = await count();
      if (n !== 0) busy.push(`${name}: ${n}`);
    }
    quietPolls = busy.length ? 0 : quietPolls + 1;
    if (quietPolls === 2) return;
    if (Date.now() > deadline) assert.fail(`${what}: not quiet within ${timeoutMs} ms (${busy.join("; ")})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Outbox rows not yet marked sent (published and confirmed, or delivered in-process). */
export async function unsentOutbox(db: Knex): Promise<number> {
  const row = (await db("outbox").whereNull("sent_at").count({ n: "*" }).first()) as { n: number | string } | undefined;
  return Number(row?.n ?? 0);
}
