/** lib/async-scope.ts: the scope follows awaits and promise callbacks, never leaks into another. */
import { it } from "mocha";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { promiseScope } from "./async-scope";

const scope = promiseScope<string>();

/** A promise settled later from a timer callback: outside every scope. */
function later<T>(value: T, ms = 1): Promise<T> {
  return new Promise((resolve) => setTimeout(() => resolve(value), ms));
}

it("current inside run, absent outside, put back when run returns or throws", () => {
  assert.equal(scope.getStore(), undefined);
  assert.equal(
    scope.run("a", () => scope.getStore()),
    "a",
  );
  assert.equal(scope.getStore(), undefined);
  assert.throws(() =>
    scope.run("a", () => {
      throw new Error("boom");
    }),
  );
  assert.equal(scope.getStore(), undefined);
  scope.run("outer", () => {
    assert.equal(
      scope.run("inner", () => scope.getStore()),
      "inner",
    );
    assert.equal(scope.getStore(), "outer");
  });
});

it("kept after every await, whatever settles the awaited promise and from where", async () => {
  const seen = await scope.run("req-1", async () => {
    const stores = [scope.getStore()];
    await later(1); // settled by a timer, outside every scope
    stores.push(scope.getStore());
    await Promise.resolve();
    stores.push(scope.getStore());
    await Promise.all([later(2), sleep(1)]);
    stores.push(scope.getStore());
    await later(3).then(() => stores.push(scope.getStore()));
    try {
      await Promise.reject(new Error("refused"));
    } catch {
      stores.push(scope.getStore());
    }
    return stores;
  });
  assert.deepEqual(seen, Array(6).fill("req-1"));
  assert.equal(scope.getStore(), undefined);
});

it("a callback runs in the scope it was registered in, not the one that settles its promise", async () => {
  let settle!: (v: string) => void;
  const pending = new Promise<string>((resolve) => (settle = resolve));
  const registered = scope.run("registered", () => pending.then(() => scope.getStore()));
  const unscoped = pending.then(() => scope.getStore());
  scope.run("settler", () => settle("go"));
  assert.equal(await registered, "registered");
  assert.equal(await unscoped, undefined);
});

it("interleaved requests never see each other's store", async () => {
  const run = (id: string, delays: number[]) =>
    scope.run(id, async () => {
      const stores: (string | undefined)[] = [];
      for (const ms of delays) {
        await later(null, ms);
        stores.push(scope.getStore());
        // A nested scope inside this one, left before the next await.
        await scope.run(`${id}/inner`, async () => {
          await later(null, 1);
          stores.push(scope.getStore());
        });
        stores.push(scope.getStore());
      }
      return stores;
    });
  const ids = ["a", "b", "c", "d"];
  const results = await Promise.all(
    ids.map((id, i) =>
      run(
        id,
        [3, 1, 2, 1, 3].map((ms) => ms + (i % 2)),
      ),
    ),
  );
  results.forEach((stores, i) => {
    const id = ids[i];
    assert.deepEqual(
      stores,
      Array(5)
        .fill([id, `${id}/inner`, id])
        .flat(),
    );
  });
  assert.equal(scope.getStore(), undefined);
});

it("its limit: a plain callback set up inside a scope (timer, nextTick) runs outside it", async () => {
  const seen = await scope.run("req-2", () =>
    Promise.all([
      new Promise((resolve) => setTimeout(() => resolve(scope.getStore()), 1)),
      new Promise((resolve) => process.nextTick(() => resolve(scope.getStore()))),
    ]),
  );
  assert.deepEqual(seen, [undefined, undefined]);
});
