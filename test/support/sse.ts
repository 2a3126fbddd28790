/**
 * An EventSource's view of a Server-Sent Events response (the live feeds, services/gateway/
 * live-sse.ts): the events as they come, parsed, and a wait for the first that matches. Used
 * by the live-feed tests and by `bench:checkout`'s shoppers, who watch their order and their
 * notifications instead of polling. Written here (a few lines on fetch's body reader) rather
 * than with the `eventsource` package: a test and a bench need every event kept and a wait
 * that wakes on the event itself, not reconnection.
 */

export interface SseEvent {
  id?: string;
  event?: string;
  data: any;
}

export interface SseReader {
  /** Every event received so far, in order. */
  readonly events: SseEvent[];
  /**
   * The first event received (so far or later) that `check` accepts: it wakes on the event,
   * without polling. Rejects when the stream ends (or sends a block that is not JSON) first,
   * after `timeoutMs`, or with what `check` threw.
   */
  until(what: string, check: (e: SseEvent) => boolean, timeoutMs?: number): Promise<SseEvent>;
  close(): Promise<void>;
}

export function sseReader(res: Response): SseReader {
  const events: SseEvent[] = [];
  const waiters = new Set<{ offer: (e: SseEvent) => void; reject: (err: Error) => void }>();
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let done = false;
  let failure: Error | undefined;
  const pump = (async () => {
    for (;;) {
      const { value, done: end } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (end) break;
      buffer += decoder.decode(value, { stream: true });
      let i: number;
      while ((i = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const e: SseEvent = { data: undefined };
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const [k, ...rest] = line.split(":");
          const v = rest.join(":").replace(/^ /, "");
          if (k === "id") e.id = v;
          else if (k === "event") e.event = v;
          else if (k === "data") e.data = JSON.parse(v);
        }
        if (e.data === undefined) continue;
        events.push(e);
        for (const w of waiters) w.offer(e);
      }
    }
  })()
    // A block that is not JSON ends the reading: every wait fails with it, none hangs.
    .catch((err: unknown) => void (failure = err instanceof Error ? err : new Error(String(err))))
    .finally(() => {
      done = true;
      for (const w of waiters) w.reject(failure ?? new Error("the stream ended"));
    });
  return {
    events,
    until(what, check, timeoutMs = 10_000) {
      let seen: SseEvent | undefined;
      try {
        seen = events.find(check);
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
      if (seen) return Promise.resolve(seen);
      if (done) return Promise.reject(new Error(`${what}: ${(failure ?? new Error("the stream ended")).message}`));
      return new Promise<SseEvent>((resolve, reject) => {
        const w = {
          // A check that throws fails its own wait, not the reading of the stream.
          offer: (e: SseEvent) => {
            try {
              if (check(e)) finish(() => resolve(e));
            } catch (err) {
              finish(() => reject(err instanceof Error ? err : new Error(String(err))));
            }
          },
          reject: (err: Error) => finish(() => reject(new Error(`${what}: ${err.message}`))),
        };
        const timer = setTimeout(() => w.reject(new Error(`not within ${timeoutMs} ms`)), timeoutMs);
        function finish(settle: () => void) {
          clearTimeout(timer);
          waiters.delete(w);
          settle();
        }
        waiters.add(w);
      });
    },
    async close() {
      await reader.cancel().catch(() => undefined);
      await pump;
    },
  };
}
