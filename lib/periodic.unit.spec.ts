/** lib/periodic.ts: no overlap, a kick during a pass runs one more, AGAIN, backoff, a bounded stop. */
import { it } from "mocha";
import assert from "node:assert/strict";
import { AGAIN, periodic } from "./periodic";

const quiet = { warn: () => undefined };
const deferred = () => {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};

it("passes never overlap; a kick during a pass runs exactly one more after it", async () => {
  let runs = 0;
  let concurrent = 0;
  let maxConcurrent = 0;
  const gates = [deferred(), deferred()];
  const p = periodic(
    "t",
    60_000,
    async () => {
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      await gates[runs++].promise;
      concurrent--;
    },
    quiet,
  );
  p.kick();
  p.kick();
  p.kick();
  assert.equal(runs, 1);
  gates[0].resolve();
  await new Promise((r) => setImmediate(r));
  assert.equal(runs, 2, "the kicks during the first pass ran one more");
  gates[1].resolve();
  await p.running;
  await new Promise((r) => setImmediate(r));
  assert.equal(runs, 2);
  assert.equal(maxConcurrent, 1);
  await p.stop();
});

// The test's own timeout is the failure of an unbounded stop (it would wait forever).
it("a failing pass is logged and the next kick runs again; stop waits for the pass, at most stopWaitMs", async () => {
  const warnings: unknown[] = [];
  let fail = true;
  const p = periodic(
    "t",
    60_000,
    async () => {
      if (fail) throw new Error("boom");
    },
    { warn: (...a: unknown[]) => warnings.push(a) },
  );
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
}).timeout(30_000);

const until = async (cond: () => boolean) => {
  while (!cond()) await new Promise((r) => setTimeout(r, 2));
};

it("a pass answering AGAIN (a full batch) is followed at once by another; with no period, passes run only when kicked", async () => {
  let runs = 0;
  const p = periodic("batches", undefined, async () => (++runs < 3 ? AGAIN : undefined), quiet);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(runs, 0, "no period: nothing runs by itself");
  p.kick();
  await until(() => runs === 3 && !p.running);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(runs, 3, "the third pass had nothing more");
  await p.stop();
});

it("with backoff: a failure waits backoffMs(n), kicks do not cut the wait short, the outage is logged once and its end once", async () => {
  const warnings: unknown[] = [];
  const infos: unknown[] = [];
  const asked: number[] = [];
  let runs = 0;
  let failUntil = 3;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const p = periodic(
    "relay",
    undefined,
    async () => {
      runs++;
      if (runs === 2) await gate; // hold the second backoff wait open while we kick
      if (runs <= failUntil) throw new Error(`down ${runs}`);
    },
    { warn: (...a: unknown[]) => warnings.push(a), info: (...a: unknown[]) => infos.push(a) },
    { backoffMs: (n) => (asked.push(n), 5) },
  );
  p.kick();
  await until(() => runs === 2);
  assert.equal(p.failures, 1);
  release();
  await until(() => p.failures === 2 && !p.running);
  for (let i = 0; i < 5; i++) p.kick();
  assert.equal(runs, 2, "kicks during the backoff wait run nothing");
  await until(() => runs === 4 && !p.running);
  assert.equal(p.failures, 0);
  assert.deepEqual(asked, [1, 2, 3]);
  assert.equal(warnings.length, 1, "one warning for the outage");
  assert.match(String((infos[0] as unknown[])[0]), /relay recovered after 3 failed pass\(es\)/);
  failUntil = 0;
  p.kick();
  await until(() => runs === 5 && !p.running);
  await p.stop();
});
