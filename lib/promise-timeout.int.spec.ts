/**
 * lib/promise-timeout.ts: the call timeout Moleculer's Timeout middleware uses, on its own and in
 * a broker built from moleculer.config.ts: a call answers its value or error, a call past its
 * timeout is Moleculer's REQUEST_TIMEOUT (its middleware recognizes our TimeoutError), and no
 * timer is left behind by a call that settled.
 */
import assert from "node:assert/strict";
import { describe, it } from "mocha";
import { Errors, ServiceBroker } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import { loadConfig } from "./config";
import { installPromiseTimeout, promiseTimeoutInstalled } from "./promise-timeout";

type WithTimeout<T> = Promise<T> & { timeout(ms: number, message?: string): Promise<T> };
const withTimeout = <T>(p: Promise<T>) => p as WithTimeout<T>;

/** Records the timers set and cleared until restoreTimers() (the module calls the globals). */
const realSet = globalThis.setTimeout;
const realClear = globalThis.clearTimeout;
function timerSpy() {
  const set: unknown[] = [];
  const clear: unknown[] = [];
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    const t = realSet(...args);
    set.push(t);
    return t;
  }) as typeof setTimeout;
  globalThis.clearTimeout = (t: Parameters<typeof clearTimeout>[0]) => {
    clear.push(t);
    realClear(t);
  };
  return { set, clear };
}
function restoreTimers() {
  globalThis.setTimeout = realSet;
  globalThis.clearTimeout = realClear;
}

describe("lib/promise-timeout: Moleculer's call timeout with two promises instead of four", function () {
  this.timeout(20_000);

  it("settles with the value or the error, or TimeoutError after the time; a settled call leaves no timer", async () => {
    installPromiseTimeout();
    // A call that settles while its timer runs: that timer is cleared at once (not left for its 10 s).
    for (const outcome of ["value", "error"] as const) {
      const boom = new Error("boom");
      const { set, clear } = timerSpy();
      let call: Promise<number>;
      try {
        call = withTimeout(outcome === "value" ? Promise.resolve(42) : Promise.reject(boom)).timeout(10_000);
        if (outcome === "value") assert.equal(await call, 42);
        else await assert.rejects(call, (err) => err === boom);
      } finally {
        restoreTimers();
      }
      assert.equal(set.length, 1, `${outcome}: one timer`);
      assert.deepEqual(clear, set, `${outcome}: that timer cleared`);
    }
    const never = new Promise<never>(() => undefined);
    await assert.rejects(withTimeout(never).timeout(20, "too slow"), (err: Error) => {
      assert.ok(err instanceof Errors.TimeoutError, "Moleculer's TimeoutError");
      assert.equal(err.message, "too slow");
      return true;
    });
  });

  it("in a broker from moleculer.config.ts: installed over Moleculer's, answers pass, a slow call is REQUEST_TIMEOUT", async () => {
    // As in a process where nothing installed it yet (the test above did).
    delete (Promise.prototype as { timeout?: unknown }).timeout;
    const config = loadConfig({ LOG_LEVEL: "warn", JWT_SECRET: "x".repeat(32) });
    const broker = new ServiceBroker({ ...brokerOptions(config), logger: false });
    broker.createService({
      name: "probe",
      actions: {
        quick: (ctx) => ({ got: ctx.params.n }),
        slow: () => new Promise((resolve) => setTimeout(() => resolve("late"), 300)),
      },
    });
    await broker.start();
    try {
      assert.ok(promiseTimeoutInstalled(), "Moleculer's polyfill did not replace it");
      assert.deepEqual(await broker.call("probe.quick", { n: 1 }, { timeout: 1000 }), { got: 1 });
      await assert.rejects(broker.call("probe.slow", {}, { timeout: 50 }), (err: Error) => {
        assert.ok(err instanceof Errors.RequestTimeoutError, `${err.name}: ${err.message}`);
        return true;
      });
    } finally {
      await broker.stop();
    }
  });
});
