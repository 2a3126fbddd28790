/**
 * Moleculer's `Promise.prototype.timeout`, with two promises instead of four (#16).
 *
 * Moleculer gives the global Promise a `timeout(ms, message)` method when it has none
 * (`utils.polyfillPromise`, at each broker's construction), and its Timeout middleware calls it on
 * every action call that has a timeout: every call here (REQUEST_TIMEOUT_MS), on the caller's node
 * and again on the callee's. Moleculer's builds a promise for the timer, a `Promise.race` and a
 * `then` and a `catch` around it: 3.3 % of the gateway's busy time on a cached product read (a V8
 * profile, bench/RESULTS.md "Call timeouts with two promises instead of four").
 *
 * This one settles the same way: with the call's value or error, or with Moleculer's own
 * `TimeoutError(message)` once `ms` have passed (what the middleware turns into a
 * RequestTimeoutError), and the timer is cleared as soon as the call settles. `brokerOptions()`
 * (moleculer.config.ts) installs it over Moleculer's, for the whole process: every broker made
 * after that uses it, as Moleculer's polyfill leaves an existing `timeout` alone.
 */
import { Errors } from "moleculer";
import { settleWithin } from "./timeout";

function timeout<T>(this: Promise<T>, ms: number, message?: string): Promise<T> {
  return settleWithin(this, +ms, () => new Errors.TimeoutError(message ?? ""));
}

/** Puts this `timeout` on the global Promise's prototype (where Moleculer's goes). */
export function installPromiseTimeout(): void {
  Reflect.defineProperty(Promise.prototype, "timeout", { value: timeout, writable: true, configurable: true, enumerable: false });
}

/** Whether the global Promise's `timeout` is this module's (a test's question). */
export function promiseTimeoutInstalled(): boolean {
  return (Promise.prototype as { timeout?: unknown }).timeout === timeout;
}
