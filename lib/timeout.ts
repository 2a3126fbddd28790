/**
 * Settles as `p` does, or rejects with `timedOut()` once `ms` have passed; the timer is cleared as
 * soon as `p` settles. The underlying work is not cancelled. One promise and one reaction: it is
 * also every Moleculer call's timeout (lib/promise-timeout.ts), on the hot path.
 */
export function settleWithin<T>(p: PromiseLike<T>, ms: number, timedOut: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(timedOut()), ms);
    p.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the work's own reason, passed on as it is
        reject(err);
      },
    );
  });
}

/** Rejects after `ms` with an Error naming `what` (the underlying work is not cancelled). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return settleWithin(p, ms, () => new Error(`${what}: no answer within ${ms} ms`));
}
