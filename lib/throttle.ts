/**
 * "At most once per `ms`" for repeated warnings (a batch that rolled back, events routed to no
 * queue, a live feed's lost wake): the first call is let through, then one per interval.
 */
export function throttle(ms: number): () => boolean {
  let last = -Infinity;
  return () => {
    const now = Date.now();
    if (now - last < ms) return false;
    last = now;
    return true;
  };
}
