import assert from "node:assert/strict";
import { mapBounded, range } from "./bounded";

/** Resolves once the microtask queue has drained a few turns (no timer, no clock). */
const turns = async (n = 5) => {
  for (let i = 0; i < n; i++) await Promise.resolve();
};

describe("mapBounded", () => {
  it("runs at most `limit` at a time and answers in the items' order", async () => {
    let inFlight = 0;
    let most = 0;
    const out = await mapBounded(range(20), 3, async (n) => {
      most = Math.max(most, ++inFlight);
      await turns(n % 4);
      inFlight--;
      return n * 2;
    });
    assert.equal(most, 3);
    assert.deepEqual(
      out,
      range(20).map((n) => n * 2),
    );
  });

  it("with `stop`, starts no item once it answers true", async () => {
    const started: number[] = [];
    const out = await mapBounded(
      range(10),
      2,
      async (n) => {
        started.push(n);
        await turns();
        return n;
      },
      { stop: () => started.length >= 4 },
    );
    assert.deepEqual(started, [0, 1, 2, 3]);
    assert.deepEqual(out.slice(0, 4), [0, 1, 2, 3]);
    assert.equal(out[4], undefined);
  });

  it("rejects with the first failure and starts no item after it", async () => {
    const started: number[] = [];
    await assert.rejects(
      mapBounded(range(10), 2, async (n) => {
        started.push(n);
        await turns(n === 1 ? 1 : 3);
        if (n === 1) throw new Error("item 1 failed");
        return n;
      }),
      /item 1 failed/,
    );
    await turns(20);
    assert.deepEqual(started, [0, 1], "item 0 was running beside it; nothing started after");
  });
});
