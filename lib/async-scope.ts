/**
 * A value scoped to a piece of work and the promise continuations it starts (#16): the request
 * scope of lib/tracing.ts, written here because Node 20's `AsyncLocalStorage` costs the whole
 * process too much. Its store travels by async_hooks, which, once one scope has been entered,
 * give every promise of the process an async id, a resource and several hook calls: measured
 * 23-33 µs of CPU of a 121-136 µs `GET /api/users/me` against 3-6 µs for this scope (a
 * prototype, three triples), then 7-20 µs less per `/health/live` and 1-11 µs less per
 * `users/me` for this file against the commit before (bench/RESULTS.md, "Request scope without
 * async_hooks"). `AsyncContextFrame` (opt-in in Node 22, the default from Node 24) gives
 * `AsyncLocalStorage` that price natively; on Node 20 there is no library that does it more
 * cheaply than Node's own hooks, so this uses V8's promise hooks (`node:v8` `promiseHooks`,
 * which async_hooks itself is built on) and nothing else.
 *
 * What it carries, as `AsyncLocalStorage` does:
 * - the synchronous part of `run(store, fn)`;
 * - every `await` and `then`/`catch`/`finally` callback registered while a scope is current, in
 *   that scope, whatever resolves the promise and from where (a socket callback, a timer,
 *   another request's code): V8 calls `init` when the continuation is created, then `before`
 *   and `after` around it, and the scope of its creation is put back for it;
 * - scopes nest and interleave: two requests awaiting in turn never see each other's store.
 * Its limit, unlike `AsyncLocalStorage`: a callback that is not a promise continuation
 * (`setTimeout`, `setImmediate`, `process.nextTick`, an EventEmitter listener, a driver's
 * callback) runs outside any scope, even when it was set up inside one. Code that needs the
 * scope there awaits a promise instead (`await new Promise((r) => setTimeout(r, ms))` keeps it).
 *
 * The hooks are installed when the first scope is entered, and stay: a process that never
 * enters one pays nothing.
 */
import { promiseHooks } from "node:v8";

export interface PromiseScope<T> {
  /** The store of the scope running now, or undefined outside every scope. */
  getStore(): T | undefined;
  /** Runs `fn` with `store` current; continuations `fn` starts keep it (see the header). */
  run<R>(store: T, fn: () => R): R;
}

export function promiseScope<T>(): PromiseScope<T> {
  // The store a continuation was created under, kept on its promise (a property is faster
  // than a WeakMap lookup, and dies with the promise).
  const KEY = Symbol("promise scope");
  type Tagged = Promise<unknown> & { [KEY]?: T };
  let current: T | undefined;
  // The stores to put back after each continuation: V8 calls before/after in nested pairs.
  const outer: (T | undefined)[] = [];
  let installed = false;

  const install = () => {
    installed = true;
    promiseHooks.createHook({
      init(promise: Tagged) {
        if (current !== undefined) promise[KEY] = current;
      },
      before(promise: Tagged) {
        outer.push(current);
        current = promise[KEY];
      },
      after() {
        current = outer.pop();
      },
    });
  };

  return {
    getStore: () => current,
    run<R>(store: T, fn: () => R): R {
      if (!installed) install();
      const previous = current;
      current = store;
      try {
        return fn();
      } finally {
        current = previous;
      }
    },
  };
}
