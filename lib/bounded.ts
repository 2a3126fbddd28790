/**
 * `fn` over `items`, at most `limit` at a time, the answers in the items' order: for a burst
 * sent as so many requests where what counts is a total and not a race between them all at once
 * (a race of `limit` at a time remains), and for a benchmark's N workers pulling from one list.
 * With `stop`, no item starts once it answers true (what has not started stays undefined); none
 * starts after a failure either, which rejects the whole.
 * Written here rather than taken from p-limit and the like: this loop is the whole of it.
 */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  opts: { stop?: () => boolean } = {},
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  // The first failure rejects the whole (as Promise.all does); no item starts after it.
  let failed = false;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length && !failed && !opts.stop?.()) {
        const i = next++;
        try {
          out[i] = await fn(items[i], i);
        } catch (err) {
          failed = true;
          throw err;
        }
      }
    }),
  );
  return out;
}

/** 0, 1, …, n − 1: the items of a loop over a count. */
export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
