/** lib/periodic.ts: no overlap, a kick during a pass runs one more, a bounded stop. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { periodic } from "./periodic";

const quiet = { warn: () => undefined };
const deferred = () => {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};

test("passes never overlap; a kick during a pass runs exactly one more after it", async () => {
  let runs = 0;
  let concurrent = 0;
  let maxConcurrent = 0;
  const gates = [deferred(), deferred()];
  const p = periodic("t", 60_000, async () => {
    concurrent++;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    await gates[runs++]!.promise;
    concurrent--;
  }, quiet);
  p.kick();
  p.kick();
  p.kick();
  assert.equal(runs, 1);
  gates[0]!.resolve();
  await new Promise((r) => setImmediate(r));
  assert.equal(runs, 2, "the kicks during the first pass ran one more");
  gates[1]!.resolve();
  await p.running;
  await new Promise((r) => setImmediate(r));
  assert.equal(runs, 2);
  assert.equal(maxConcurrent, 1);
  await p.stop();
});

// The test's own timeout is the failure of an unbounded stop (it would wait forever).
test("a failing pass is logged and the next kick runs again; stop waits for the pass, at most stopWaitMs", { timeout: 30_000 }, async () => {
  const warnings: unknown[] = [];
  let fail = true;
  const p = periodic("t", 60_000, async () => {
    if (fail) throw new Error("boom");
  }, { warn: (...a: unknown[]) => warnings.push(a) });
  p.kick();
  await p.running;
  assert.equal(warnings.length, 1);
  fail = false;
  p.kick();
  await p.running;
  assert.equal(warnings.length, 1);
  await p.stop();

  const stuck = periodic("stuck", 60_000, () => new Promise(() => undefined), quiet, { stopWaitMs: 20 });
  stuck.kick();
  await stuck.stop(); // resolves although the pass never ends
  stuck.kick();
  assert.ok(stuck.running, "the stuck pass is still in flight; no new pass starts after stop");
});
