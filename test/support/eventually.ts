/**
 * Polls `check` until it returns a truthy value (returned) or fails the test after
 * `timeoutMs`, naming what it waited for. For effects that arrive asynchronously (business
 * events, callbacks, sweeps): tests wait for the outcome instead of sleeping a fixed time.
 */
import assert from "node:assert/strict";

export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
