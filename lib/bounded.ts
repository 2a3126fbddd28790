/**
 * `fn` over `items`, at most `limit` at a time, the answers in the items' order: for a burst a
 * test sends as many requests, where what is checked is a count and not a race between them all
 * at once (a race of `limit` at a time remains).
 */
export async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}
