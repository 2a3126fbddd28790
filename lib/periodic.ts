/**
 * One periodic task (a sweep, a reconciliation pass, a replay poll, the outbox relay, the
 * e-mail sender, a rebuild retried until it succeeds): `task` runs every `everyMs` after the
 * previous pass ended (or only when kicked, `everyMs` undefined), never two passes at once.
 *
 * - `kick()` asks for a pass now (after an event that makes one useful), or within
 *   `kickDelayMs` when set, so the kicks of that window share one pass; a kick that arrives
 *   during a pass runs one more pass after it, since the running one may have read its rows
 *   before the kick's cause committed.
 * - A pass that resolves to `AGAIN` (a full batch: more is waiting) is followed at once by
 *   another.
 * - A failing pass is retried by the next one. Without `backoffMs`, every failure is logged
 *   and the next pass comes at the usual time. With it, the next pass comes after
 *   `backoffMs(consecutive failures)`, kicks do not cut that wait short (a broker outage must
 *   not turn every local commit into a reconnect), the first failure of an outage is logged
 *   and its end is logged once ("recovered").
 * - `stop()` stops the timer and waits for the pass in flight, at most `stopWaitMs`
 *   (default 10 s: a pass stuck on a remote call must not hold a shutdown past its grace
 *   period; what it did not finish, the next start's passes redo).
 *
 * The timer is unref'd: a pending pass never keeps the process alive. Why not a library:
 * these lines are the whole contract (no overlap, kick, again, backoff, bounded stop), which
 * setInterval alone lacks and job-queue libraries bury under scheduling we do not need.
 */
export const AGAIN = Symbol("periodic.again");

export interface Periodic {
  /** A pass now; during a pass, one more right after it; during a failure backoff, nothing sooner. */
  kick(): void;
  /** Stops the timer; resolves when the pass in flight (if any) has ended, or after stopWaitMs. */
  stop(): Promise<void>;
  /** The pass in flight, if any. */
  readonly running: Promise<void> | undefined;
  /** Consecutive failed passes (0 after a success). */
  readonly failures: number;
}

export interface PeriodicOptions {
  stopWaitMs?: number;
  /** A kick's pass waits this long, and the kicks meanwhile join it (0 or none: at once). */
  kickDelayMs?: number;
  /** The wait before the pass after the n-th consecutive failure (n ≥ 1). */
  backoffMs?: (failures: number) => number;
}

export function periodic(
  name: string,
  everyMs: number | undefined,
  task: () => Promise<unknown>,
  log: { warn(...args: unknown[]): void; info?(...args: unknown[]): void },
  opts: PeriodicOptions = {},
): Periodic {
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  /** A delayed kick's pass is scheduled (kickDelayMs): later kicks join it. */
  let kicked = false;

  const schedule = (ms: number | undefined) => {
    clearTimeout(timer);
    timer = undefined;
    if (stopped || ms === undefined) return;
    timer = setTimeout(pass, ms);
    timer.unref();
  };
  const failed = (err: unknown) => {
    failures++;
    if (!opts.backoffMs || failures === 1) {
      const why = err instanceof Error ? err.message : err;
      log.warn(opts.backoffMs ? `${name} failed, retrying with backoff:` : `${name} failed; the next pass retries:`, why);
    }
  };
  const pass = () => {
    if (stopped || running) return;
    clearTimeout(timer);
    timer = undefined;
    kicked = false;
    running = task()
      .then(
        (result) => {
          if (failures && opts.backoffMs) (log.info ?? log.warn)(`${name} recovered after ${failures} failed pass(es)`);
          failures = 0;
          return result === AGAIN;
        },
        (err: unknown) => {
          failed(err);
          return false;
        },
      )
      .then((more) => {
        running = undefined;
        if (stopped) return;
        const backingOff = failures > 0 && opts.backoffMs !== undefined;
        if (backingOff) {
          again = false;
          schedule(opts.backoffMs!(failures));
        } else if (more || again) {
          again = false;
          pass();
        } else schedule(everyMs);
      });
  };
  schedule(everyMs);
  return {
    kick() {
      if (stopped) return;
      if (running) again = true;
      else if (failures > 0 && opts.backoffMs) return;
      else if (!opts.kickDelayMs) pass();
      else if (!kicked) {
        kicked = true;
        schedule(opts.kickDelayMs);
      }
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      if (!running) return;
      let limit: NodeJS.Timeout | undefined;
      await Promise.race([running, new Promise<void>((r) => (limit = setTimeout(r, opts.stopWaitMs ?? 10_000)))]);
      clearTimeout(limit);
    },
    get running() {
      return running;
    },
    get failures() {
      return failures;
    },
  };
}
