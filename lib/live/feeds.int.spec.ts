/**
 * A lost wake only delays a live feed (lib/live/feeds.ts): with no business event reaching
 * the edge, a stream still sends what committed, at its next re-read. Plain brokers with
 * stand-ins for the two actions the feeds read (`notification.since`, `order.get`).
 */
import assert from "node:assert/strict";
import { after, before, it } from "mocha";
import { ServiceBroker } from "moleculer";
import { AppError } from "../errors";
import { LiveFeeds } from "./feeds";

const USER = { id: "u1", role: "customer" };
const notes: { id: string; seq: number }[] = [];
let orderHistory = 1;
let broker: ServiceBroker;
const logged: string[] = [];
/** Reads of `notification.since` that fail as a dependency away would (503) before it answers again. */
let outage = 0;

before(async () => {
  broker = new ServiceBroker({ logger: { type: "Console", options: { level: "warn" } } as never });
  broker.createService({
    name: "notification",
    actions: {
      since(ctx) {
        if (outage > 0 && outage--) throw new AppError("SERVICE_UNAVAILABLE", "A service needed for this request is unavailable");
        const { after, newest } = ctx.params as { after?: string; newest?: boolean };
        if (newest) return { items: notes.slice(-1) };
        const from = after === undefined ? -1 : notes.find((n) => n.id === after)!.seq;
        return { items: notes.filter((n) => n.seq > from) };
      },
    },
  });
  broker.createService({
    name: "order",
    actions: {
      get(ctx) {
        return {
          id: (ctx.params as { id: string }).id,
          status: "PAID",
          history: Array.from({ length: orderHistory }, (_, i) => ({ status: `S${i}` })),
        };
      },
    },
  });
  await broker.start();
  const logger = broker.getLogger("live");
  const warn = logger.warn.bind(logger);
  logger.warn = (...a: unknown[]) => {
    logged.push(a.map(String).join(" "));
    return warn(...a);
  };
  broker.getLogger = () => logger;
});
after(async () => {
  await broker.stop();
});

it("without any wake, a notifications stream and an order stream send what committed at their next re-read, and say a wake was lost", async () => {
  const feeds = new LiveFeeds(broker, 50);
  const stop = new AbortController();
  let opened!: () => void;
  const firstRead = new Promise<void>((r) => (opened = r));
  notes.push({ id: "n0", seq: 0 });
  const stream = feeds.notifications(undefined, { caller: async () => USER as never, signal: stop.signal, opened });
  const watch = feeds.watchOrder("o1", undefined, { caller: async () => USER as never, signal: stop.signal });
  try {
    assert.equal((await watch.next()).value?.sequence, 1, "the order's state first");
    const nextNote = stream.next();
    await firstRead; // the stream starts after n0 and waits
    // Committed, but no notification.created / order event reaches this edge (no kick).
    notes.push({ id: "n1", seq: 1 });
    orderHistory = 2;
    assert.equal(((await nextNote).value as { id: string }).id, "n1");
    assert.equal((await watch.next()).value?.sequence, 2);
    assert.ok(
      logged.some((l) => /without a wake/.test(l)),
      logged.join("\n"),
    );
  } finally {
    stop.abort();
    await stream.return(undefined);
    await watch.return(undefined);
  }
}).timeout(20_000);

it("a re-read that meets a passing outage (503) keeps the stream: the next one sends what committed", async () => {
  const feeds = new LiveFeeds(broker, 50);
  const stop = new AbortController();
  let opened!: () => void;
  const firstRead = new Promise<void>((r) => (opened = r));
  const stream = feeds.notifications(undefined, { caller: async () => USER as never, signal: stop.signal, opened });
  try {
    const next = stream.next();
    await firstRead;
    outage = 3;
    notes.push({ id: `n${notes.length}`, seq: notes.length });
    assert.equal(((await next).value as { id: string }).id, notes.at(-1)!.id);
    assert.equal(outage, 0, "the re-reads met the outage first");
  } finally {
    stop.abort();
    await stream.return(undefined);
  }
}).timeout(20_000);
