/**
 * One periodic task (a sweep, a reconciliation pass, a replay poll): `task` runs every
 * `everyMs`, never two passes at once. `kick()` asks for a pass now (after an event that
 * makes one useful); a kick that arrives during a pass runs one more pass after it, since the
 * running one may have read its rows before the kick's cause committed. A failing pass is
 * logged and the next one retries. `stop()` stops the timer and waits for the pass in flight,
 * at most `stopWaitMs` (default 10 s: a pass stuck on a remote call must not hold a shutdown
 * past its grace period; what it did not finish, the next start's passes redo). The timer is
 * unref'd: a pending pass never keeps the process alive. Why not a library: these few lines
 * are the whole contract (no overlap, kick, bounded stop), which setInterval alone lacks.
 */
export interface Periodic {
  /** A pass now; during a pass, one more right after it. */
  kick(): void;
  /** Stops the timer; resolves when the pass in flight (if any) has ended, or after stopWaitMs. */
  stop(): Promise<void>;
  /** The pass in flight, if any. */
  readonly running: Promise<void> | undefined;
}

export interface PeriodicOptions {
  stopWaitMs?: number;
}

export function periodic(
  name: string,
  everyMs: number,
  task: () => Promise<unknown>,
  log: { warn(...args: unknown[]): void },
  opts: PeriodicOptions = {},
): Periodic {
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  const pass = () => {
    if (stopped || running) return;
    running = task()
      .then(() => undefined, (err: unknown) => log.warn(`${name} failed; the next pass retries:`, err instanceof Error ? err.message : err))
      .finally(() => {
        running = undefined;
        if (again && !stopped) {
          again = false;
          pass();
        }
      });
  };
  const timer = setInterval(pass, everyMs);
  timer.unref();
  return {
    kick() {
      if (running) again = true;
      else pass();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      if (!running) return;
      let limit: NodeJS.Timeout | undefined;
      await Promise.race([running, new Promise<void>((r) => (limit = setTimeout(r, opts.stopWaitMs ?? 10_000)))]);
      clearTimeout(limit);
    },
    get running() {
      return running;
    },
  };
}
