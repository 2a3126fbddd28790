/**
 * One periodic task (a sweep, a reconciliation pass, a replay poll): `task` runs every
 * `everyMs`, never two passes at once; `kick()` asks for a pass now (after an event that
 * makes one useful) and is a no-op while one runs. A failing pass is logged and the next one
 * retries. `stop()` stops the timer and waits for the pass in flight. The timer is unref'd:
 * a pending pass never keeps the process alive. Why not a library: the few lines here are
 * the whole contract (no overlap, kick, stop that waits), which setInterval alone lacks.
 */
export interface Periodic {
  /** A pass now unless one is running (it is then not queued: the running one covers it). */
  kick(): void;
  /** Stops the timer; resolves when the pass in flight (if any) has ended. */
  stop(): Promise<void>;
  /** The pass in flight, if any. */
  readonly running: Promise<void> | undefined;
}

export function periodic(name: string, everyMs: number, task: () => Promise<unknown>, log: { warn(...args: unknown[]): void }): Periodic {
  let running: Promise<void> | undefined;
  let stopped = false;
  const pass = () => {
    if (stopped || running) return;
    running = task()
      .then(() => undefined, (err: unknown) => log.warn(`${name} failed; the next pass retries:`, err instanceof Error ? err.message : err))
      .finally(() => (running = undefined));
  };
  const timer = setInterval(pass, everyMs);
  timer.unref();
  return {
    kick: pass,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
    get running() {
      return running;
    },
  };
}
