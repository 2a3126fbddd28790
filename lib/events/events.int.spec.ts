/**
 * The event layer in this process, against the real MariaDB and the machine's RabbitMQ (a
 * private vhost per test): duplicates applied once, retries then the dead-letter queue and
 * replay, two relay replicas sharing one outbox, `user.registered` from the user service,
 * and embedded (in-process) delivery on SQLite with the same semantics.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "mocha";
import amqp from "amqplib";
import type { ServiceBroker } from "moleculer";
import { createUserService } from "../../services/user/user.service";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import { untilQuiet, unsentOutbox } from "../../test/support/quiet";
import { createVhost, type RabbitVhost } from "../../test/support/rabbitmq";
import { MYSQL_URL, uniqueNamespace } from "../../test/support/servers";
import { listDeadLetters, replayDeadLetters } from "./dead-letters";
import { consumerService, producerService, recordEffect } from "./fixtures/services";
import { EMBEDDED_BATCH, type EventHandler } from "./consumer";
import type { Envelope } from "./outbox";
import { dropAll, eventQueueMessages, eventsConfig, newDataDir, startBroker, svc, waitFor, type EventsTestEnv } from "./support";
import { topology } from "./topology";

type Events = EventsServiceThis & { db: import("knex").Knex };

const effects = async (broker: ServiceBroker, service = "audit") =>
  await svc<Events>(broker, service).db("effects").whereNot("event", "local").select<{ message_id: string }[]>("message_id");

describe("events over RabbitMQ on MariaDB", () => {
  let vhost: RabbitVhost;
  before(async () => {
    vhost = await createVhost();
  });
  after(async () => {
    await vhost.destroy();
  });
  const env = (extra: Record<string, string> = {}): EventsTestEnv => ({
    namespace: uniqueNamespace(),
    dataDir: newDataDir(),
    db: "mariadb",
    rabbitUri: vhost.uri,
    mysqlUrl: MYSQL_URL,
    env: { EVENTS_MAX_ATTEMPTS: "3", EVENTS_RETRY_DELAYS_MS: "50,100", ...extra },
  });

  it("publish → consume: outbox rows marked sent after the confirm; the same message 3 times gives one effect", async () => {
    const t = env();
    const config = eventsConfig(t);
    const broker = await startBroker("n1", [producerService(config), consumerService(config, ["order.placed"])]);
    try {
      const ids: string[] = await broker.call("shop.emit", { event: "order.placed", payloads: [{ n: 1 }, { n: 2 }, { n: 3 }] });
      await waitFor("3 effects", async () => (await effects(broker)).length === 3);
      const shop = svc<Events>(broker, "shop");
      await waitFor("outbox sent", async () => (await shop.db("outbox").whereNull("sent_at")).length === 0);
      assert.deepEqual((await effects(broker)).map((r) => r.message_id).sort(), [...ids].sort());

      // The same message (same messageId) on the wire 3 times: one effect, two duplicates.
      const conn = await amqp.connect(vhost.uri);
      const ch = await conn.createConfirmChannel();
      const envelope: Envelope = {
        id: randomUUID(),
        name: "order.placed",
        source: "test",
        occurredAt: new Date().toISOString(),
        payload: { n: 4 },
      };
      for (let i = 0; i < 3; i++)
        ch.publish(topology(config.namespace).exchange, "order.placed", Buffer.from(JSON.stringify(envelope)), {
          persistent: true,
          messageId: envelope.id,
        });
      await ch.waitForConfirms();
      await conn.close();
      const audit = svc<Events>(broker, "audit");
      await waitFor("3 deliveries", async () => audit.eventStats().applied + audit.eventStats().duplicates >= 6);
      // Counted again once the queues are empty (nothing waiting, nothing unacknowledged).
      await untilQuiet("the event layer", {
        "unsent outbox rows": () => unsentOutbox(shop.db),
        "messages in the event queues": async () => (await eventQueueMessages(vhost.uri, t.namespace)).total,
      });
      const rows = (await effects(broker)).filter((r) => r.message_id === envelope.id);
      assert.equal(rows.length, 1, "exactly one effect");
      assert.equal(audit.eventStats().applied, 4);
      assert.equal(audit.eventStats().duplicates, 2);
    } finally {
      await broker.stop();
      await dropAll(config, ["shop", "audit"]);
    }
  });

  it("a message that always fails: retried through the retry queues, dead-lettered after N attempts, listed and replayed", async () => {
    const t = env();
    const config = eventsConfig(t);
    let failing = true;
    let calls = 0;
    const broker = await startBroker("n1", [
      producerService(config),
      consumerService(config, ["order.placed"], {
        handler: async (trx, payload, envelope) => {
          calls++;
          if (failing) throw new Error("handler refuses");
          await trx("effects").insert({
            message_id: envelope.id,
            event: envelope.name,
            payload: JSON.stringify(payload),
            applied_at: Date.now(),
          });
        },
      }),
    ]);
    try {
      const [id] = await broker.call<string[], unknown>("shop.emit", { event: "order.placed", payloads: [{ poison: true }] });
      const audit = svc<Events>(broker, "audit");
      await waitFor("dead-lettered", async () => audit.eventStats().deadLettered === 1);
      assert.equal(calls, 3, "EVENTS_MAX_ATTEMPTS=3 attempts");
      assert.equal(audit.eventStats().retried, 2);
      assert.equal((await effects(broker)).length, 0);
      // The failed transactions rolled back their inbox rows too.
      assert.equal((await audit.db("inbox").where({ message_id: id })).length, 0);

      const listed = await listDeadLetters(config, "audit");
      assert.equal(listed.length, 1);
      assert.equal(listed[0].messageId, id);
      assert.equal(listed[0].attempts, 3);
      assert.match(listed[0].lastError, /handler refuses/);
      // Listing puts them back.
      assert.equal((await listDeadLetters(config, "audit")).length, 1);

      failing = false;
      const replayed = await replayDeadLetters(config, "audit");
      assert.equal(replayed.length, 1);
      await waitFor("replayed effect", async () => (await effects(broker)).length === 1);
      assert.equal((await listDeadLetters(config, "audit")).length, 0);
      assert.equal((await effects(broker))[0].message_id, id);
    } finally {
      await broker.stop();
      await dropAll(config, ["shop", "audit"]);
    }
  });

  it("an earlier deployment's classic queues are emptied into the quorum queues: every event applied once, dead letters kept; a queue still consumed by an old node stays until it leaves", async () => {
    const t = env();
    const config = eventsConfig(t);
    const topo = topology(t.namespace);
    const old = topo.legacy;
    const conn = await amqp.connect(vhost.uri);
    const queueExists = async (q: string) => {
      const ch = await conn.createChannel();
      ch.on("error", () => undefined);
      return ch.checkQueue(q).then(
        (ok) => (ch.close().catch(() => undefined), ok),
        () => undefined,
      );
    };
    try {
      // The classic topology as the previous version declared it, with messages in each queue.
      const ch = await conn.createConfirmChannel();
      await ch.assertExchange(topo.exchange, "topic", { durable: true });
      await ch.assertQueue(old.workQueue("audit"), { durable: true });
      await ch.bindQueue(old.workQueue("audit"), topo.exchange, "order.placed");
      // A long TTL: the message is still waiting there when the new version starts.
      await ch.assertQueue(old.retryQueue("audit", 50), {
        durable: true,
        arguments: { "x-message-ttl": 600_000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": old.workQueue("audit") },
      });
      await ch.assertQueue(old.deadQueue("audit"), { durable: true });
      const envelope = (n: number): Envelope => ({
        id: randomUUID(),
        name: "order.placed",
        source: "test",
        occurredAt: new Date().toISOString(),
        payload: { n },
      });
      const send = (queue: string | undefined, e: Envelope, headers: Record<string, unknown> = {}) =>
        queue
          ? ch.sendToQueue(queue, Buffer.from(JSON.stringify(e)), { persistent: true, messageId: e.id, type: e.name, headers })
          : ch.publish(topo.exchange, e.name, Buffer.from(JSON.stringify(e)), { persistent: true, messageId: e.id, type: e.name });
      const waiting = [envelope(1), envelope(2), envelope(3)];
      for (const e of waiting) send(undefined, e);
      const retrying = envelope(4);
      send(old.retryQueue("audit", 50), retrying, { "x-attempts": 1 });
      send(old.retryQueue("audit", 50), waiting[1], { "x-attempts": 1 }); // also in the work queue: applied once
      const dead = envelope(5);
      send(old.deadQueue("audit"), dead, { "x-attempts": 3, "x-last-error": "gave up", "x-dead-lettered-at": new Date().toISOString() });
      // A node of the old version still consuming: it holds one message (the first), unacknowledged.
      const oldNode = await amqp.connect(vhost.uri);
      const oldCh = await oldNode.createChannel();
      await oldCh.prefetch(1);
      const held = new Promise<void>((resolve) => void oldCh.consume(old.workQueue("audit"), () => resolve(), { noAck: false }));
      await held;
      await ch.waitForConfirms();

      let broker = await startBroker("n1", [consumerService(config, ["order.placed"])]);
      try {
        // Everything but the held message reached the quorum queues; the old work queue is
        // kept (in use), unbound, and so are its retry queues (empty now).
        await waitFor("3 applied", async () => (await effects(broker)).length === 3);
        await waitFor("the old dead letters moved", async () => (await queueExists(old.deadQueue("audit"))) === undefined);
        assert.equal((await queueExists(old.workQueue("audit")))?.consumerCount, 1, "the old node's queue stays");
        assert.ok(await queueExists(old.retryQueue("audit", 50)), "its retry queue stays while it is in use");
        assert.equal((await queueExists(old.retryQueue("audit", 50)))?.messageCount, 0);
        const fresh = envelope(6);
        send(undefined, fresh);
        await ch.waitForConfirms();
        await waitFor("a new event applied", async () => (await effects(broker)).some((r) => r.message_id === fresh.id));
        assert.equal((await queueExists(old.workQueue("audit")))?.messageCount, 0, "a new event no longer reaches the old queue");

        // The old node leaves (its message is ready again); the next start moves it and deletes the rest.
        await oldNode.close();
        await broker.stop();
        broker = await startBroker("n2", [consumerService(config, ["order.placed"])]);
        await waitFor("5 applied", async () => (await effects(broker)).length === 5);
        await waitFor("the classic queues deleted", async () => {
          for (const q of [old.workQueue("audit"), old.retryQueue("audit", 50), old.deadQueue("audit")])
            if (await queueExists(q)) return false;
          return true;
        });
        assert.deepEqual(
          (await effects(broker)).map((r) => r.message_id).sort(),
          [...waiting, retrying, fresh].map((e) => e.id).sort(),
          "each event applied once",
        );
        const letters = await listDeadLetters(config, "audit");
        assert.deepEqual(
          letters.map((l) => [l.messageId, l.attempts, l.lastError]),
          [[dead.id, 3, "gave up"]],
          "the dead letter kept, with its history",
        );
        assert.equal((await queueExists(topo.workQueue("audit")))?.messageCount, 0);
      } finally {
        await broker.stop();
      }
    } finally {
      await conn.close().catch(() => undefined);
      await dropAll(config, ["audit"]);
    }
  });

  /**
   * A backlog of `payloads` waiting in the consumer's work queue (declared by a first start,
   * then filled while no consumer runs), and a consumer started on it: the burst a consumer
   * sees after a restart or behind a busy producer. Resolves once every message was handled.
   */
  async function burst(payloads: object[], handler: EventHandler = recordEffect) {
    const t = env();
    const config = eventsConfig(t);
    const service = () => consumerService(config, ["order.placed"], { prefetch: 60, handler });
    await (await startBroker("c0", [service()])).stop();
    const producer = await startBroker("p", [producerService(config)]);
    const ids: string[] = await producer.call("shop.emit", { event: "order.placed", payloads });
    const queue = topology(t.namespace).workQueue("audit");
    await waitFor(
      "the backlog queued",
      async () => (await eventQueueMessages(vhost.uri, t.namespace)).byQueue.get(queue) === payloads.length,
    );
    const consumer = await startBroker("c1", [service()]);
    const audit = svc<Events>(consumer, "audit");
    await waitFor(`${payloads.length} applied`, async () => audit.eventStats().applied === payloads.length);
    await untilQuiet("the event layer", {
      "unsent outbox rows": () => unsentOutbox(svc<Events>(producer, "shop").db),
      "messages in the event queues": async () => (await eventQueueMessages(vhost.uri, t.namespace)).total,
    });
    return {
      ids,
      stats: audit.eventStats(),
      effects: (await effects(consumer)).map((r) => r.message_id),
      stop: async () => {
        await consumer.stop();
        await producer.stop();
        await dropAll(config, ["shop", "audit"]);
      },
    };
  }

  it("a burst is applied in batches: many messages per transaction, each once", async () => {
    const run = await burst(Array.from({ length: 60 }, (_, n) => ({ n })));
    try {
      assert.deepEqual([...run.effects].sort(), [...run.ids].sort());
      assert.equal(run.stats.duplicates, 0);
      // prefetch 60, 8 batches in flight of up to 8: a handful of transactions, not one per message.
      assert.ok(run.stats.transactions <= 20, `60 messages in ${run.stats.transactions} transactions`);
    } finally {
      await run.stop();
    }
  });

  it("a message that fails inside a batch: retried alone; its neighbours applied once, none retried", async () => {
    let failures = 0;
    const run = await burst(
      Array.from({ length: 60 }, (_, n) => ({ n, poison: n === 20 })),
      async (trx, payload, envelope) => {
        // Twice: once in its batch (rolled back), once on its own (then retried).
        if ((payload as { poison: boolean }).poison && failures++ < 2) throw new Error("fails twice");
        await recordEffect(trx, payload, envelope);
      },
    );
    try {
      assert.deepEqual([...run.effects].sort(), [...run.ids].sort());
      assert.equal(run.stats.retried, 1, `only the failing message went to the retry queue: ${JSON.stringify(run.stats)}`);
      assert.equal(run.stats.duplicates, 0);
      assert.equal(run.stats.deadLettered, 0);
    } finally {
      await run.stop();
    }
  });

  it("two relay replicas on one outbox (SKIP LOCKED): every row published once", async () => {
    const t = env();
    const config = eventsConfig(t, { EVENTS_POLL_INTERVAL_MS: "20" });
    const consumer = await startBroker("c", [consumerService(config, ["order.placed"])]);
    // Rows committed before any relay runs, so both replicas start on the same backlog.
    const first = await startBroker("p0", [producerService(config)]);
    const shop0 = svc<Events & { $events: { relay: { stop(): Promise<void> } } }>(first, "shop");
    await shop0.$events.relay.stop();
    const N = 600;
    for (let i = 0; i < N; i += 100)
      await first.call("shop.emit", { event: "order.placed", payloads: Array.from({ length: 100 }, (_, j) => ({ n: i + j })) });
    const replicas = [await startBroker("p1", [producerService(config)]), await startBroker("p2", [producerService(config)])];
    try {
      const audit = svc<Events>(consumer, "audit");
      await waitFor(`${N} applied`, async () => audit.eventStats().applied === N, 30_000);
      // Counted once nothing is left in flight: a row published twice would still be on its way.
      await untilQuiet("the event layer", {
        "unsent outbox rows": () => unsentOutbox(svc<Events>(first, "shop").db),
        "messages in the event queues": async () => (await eventQueueMessages(vhost.uri, t.namespace)).total,
      });
      const published = replicas.map((b) => svc<Events>(b, "shop").eventStats().published);
      assert.equal(published[0] + published[1], N, `published per replica: ${published.join(",")}`);
      assert.ok(published[0] > 0 && published[1] > 0, `both replicas worked: ${published.join(",")}`);
      assert.equal(audit.eventStats().duplicates, 0);
      assert.equal((await effects(consumer)).length, N);
    } finally {
      for (const b of [...replicas, first, consumer]) await b.stop();
      await dropAll(config, ["shop", "audit"]);
    }
  });

  it("a committed event is handed to its own relay: published and marked with no claim of the table and no transaction", async () => {
    const t = env();
    // No sweep after the first pass: only the hand-overs can publish in the window.
    const config = eventsConfig(t, { EVENTS_POLL_INTERVAL_MS: "60000" });
    const broker = await startBroker("n1", [producerService(config), consumerService(config, ["order.placed"])]);
    const shop = svc<Events>(broker, "shop");
    try {
      await waitFor("the start's sweep", async () => shop.eventStats().relayPasses.empty + shop.eventStats().relayPasses.withRows > 0);
      const statements: string[] = [];
      const record = (q: { sql: string }) => statements.push(q.sql);
      shop.db.on("query", record);
      try {
        for (let n = 0; n < 5; n++) await broker.call("shop.emit", { event: "order.placed", payloads: [{ n }] });
        await waitFor("5 published and marked", async () => shop.eventStats().published === 5 && (await unsentOutbox(shop.db)) === 0);
      } finally {
        shop.db.off("query", record);
      }
      assert.equal((await effects(broker)).length, 5);
      // Neither the rows' inserts nor this test's own count of unsent rows (unsentOutbox).
      const relayStatements = statements.filter((sql) => /outbox/i.test(sql) && !/^insert/i.test(sql) && !/^select count/i.test(sql));
      assert.ok(relayStatements.length > 0 && relayStatements.length <= 5, `a mark per pass at most: ${relayStatements.join(" | ")}`);
      assert.ok(
        relayStatements.every((sql) => /^update `outbox` set `sent_at`/i.test(sql)),
        `only marks, no claim: ${relayStatements.join(" | ")}`,
      );
      assert.equal(statements.filter((sql) => /isolation level|for update/i.test(sql)).length, 0, "no relay transaction");
    } finally {
      await broker.stop();
      await dropAll(config, ["shop", "audit"]);
    }
  });

  it("the marks of rows published one pass after another wait and go in one statement; a stop marks them; a row near its lease's end is marked at once", async () => {
    const t = env();
    const config = eventsConfig(t, { EVENTS_POLL_INTERVAL_MS: "50" });
    const broker = await startBroker("n1", [producerService(config), consumerService(config, ["order.placed"])]);
    type Relay = { markDelayMs: number; leaseMs: number; stop(): Promise<void>; start(): void };
    const shop = svc<Events & { $events: { relay: Relay } }>(broker, "shop");
    const relay = shop.$events.relay;
    // Longer than the test, and a lease longer still: only the stop marks them.
    relay.markDelayMs = 60_000;
    relay.leaseMs = 120_000;
    const marks: string[] = [];
    const record = (q: { sql: string; bindings?: unknown[] }) => {
      if (/^update `outbox` set `sent_at`/i.test(q.sql)) marks.push(String(q.bindings?.length ?? 0));
    };
    try {
      shop.db.on("query", record);
      const ids: string[] = [];
      for (let n = 0; n < 5; n++)
        ids.push(...(await broker.call<string[], unknown>("shop.emit", { event: "order.placed", payloads: [{ n }] })));
      await waitFor("5 applied", async () => (await effects(broker)).length === 5);
      const passesBefore = shop.eventStats().relayPasses;
      await waitFor("a few passes after", async () => shop.eventStats().relayPasses.empty >= passesBefore.empty + 4);
      assert.deepEqual(marks, [], "no mark before the delay");
      assert.equal(await unsentOutbox(shop.db), 5, "published, not yet marked");
      assert.equal(shop.eventStats().published, 5);
      await relay.stop();
      assert.deepEqual(marks, ["6"], "one statement (sent_at and the 5 ids) marks them at the stop");
      assert.equal(await unsentOutbox(shop.db), 0);

      // A lease shorter than the delay: the mark goes before the lease ends (another replica's
      // sweep could take the row then), not after the delay.
      relay.leaseMs = 1_000;
      relay.start();
      const [late] = await broker.call<string[], unknown>("shop.emit", { event: "order.placed", payloads: [{ n: 5 }] });
      await waitFor("marked", async () => (await unsentOutbox(shop.db)) === 0, 10_000);
      assert.ok((await effects(broker)).some((r) => r.message_id === late));
      assert.deepEqual((await effects(broker)).map((r) => r.message_id).sort(), [...ids, late].sort());
      assert.equal(svc<Events>(broker, "audit").eventStats().duplicates, 0);
    } finally {
      shop.db.off("query", record);
      await broker.stop();
      await dropAll(config, ["shop", "audit"]);
    }
  });

  /** A consumer and two producer replicas (one to crash), sweeping every 100 ms; stopped and dropped after `body`. */
  const withTwoProducers = async (
    body: (b: { t: EventsTestEnv; consumer: ServiceBroker; crashing: ServiceBroker; other: ServiceBroker }) => Promise<void>,
  ) => {
    const t = env();
    const config = eventsConfig(t, { EVENTS_POLL_INTERVAL_MS: "100" });
    const consumer = await startBroker("c", [consumerService(config, ["order.placed"])]);
    const crashing = await startBroker("p1", [producerService(config)]);
    const other = await startBroker("p2", [producerService(config)]);
    try {
      await body({ t, consumer, crashing, other });
    } finally {
      for (const b of [other, crashing, consumer]) await b.stop();
      await dropAll(config, ["shop", "audit"]);
    }
  };

  it("a row published and never marked (a crash before its mark) is published again by another replica after its lease, and applied once", () =>
    withTwoProducers(async ({ consumer, crashing, other }) => {
      const shop = svc<Events & { $events: { relay: { markLater(rows: unknown[]): void; leaseMs: number } } }>(crashing, "shop");
      const relay = shop.$events.relay;
      // A relay whose first pass has run (its channel ready) writes its rows with its lease and takes them by hand-over.
      await waitFor("the first pass", async () => shop.eventStats().relayPasses.empty + shop.eventStats().relayPasses.withRows > 0);
      // The planted crash: published and confirmed, its mark never made.
      relay.markLater = () => undefined;
      const [id] = await crashing.call<string[], unknown>("shop.emit", { event: "order.placed", payloads: [{ n: 1 }] });
      const row = await shop.db("outbox").where({ id }).first<{ occurred_at: number; available_at: number }>();
      assert.equal(Number(row.available_at) - Number(row.occurred_at), relay.leaseMs, "written with the relay's lease");
      const audit = svc<Events>(consumer, "audit");
      await waitFor("applied", async () => audit.eventStats().applied === 1);
      await crashing.stop();
      const db = svc<Events>(other, "shop").db;
      assert.equal(await unsentOutbox(db), 1, "not marked");
      await waitFor("published again and marked", async () => (await unsentOutbox(db)) === 0, 20_000);
      assert.equal(svc<Events>(other, "shop").eventStats().published, 1, "the other replica published it after the lease");
      await waitFor("the duplicate absorbed", async () => audit.eventStats().duplicates === 1);
      assert.deepEqual(
        (await effects(consumer)).map((r) => r.message_id),
        [id],
        "applied once",
      );
    }));

  it("a row its process never handed over (a crash between commit and hand-over) is published by another replica once its lease ends, once", () =>
    withTwoProducers(async ({ t, consumer, crashing, other }) => {
      type RelayHandle = { $events: { relay: { handOver(row: unknown): void; leaseMs: number } } };
      const relay = svc<Events & RelayHandle>(crashing, "shop").$events.relay;
      // The planted crash: this process commits the row and never publishes it.
      relay.handOver = () => undefined;
      const [id] = await crashing.call<string[], unknown>("shop.emit", { event: "order.placed", payloads: [{ n: 1 }] });
      await crashing.stop();
      const db = svc<Events>(other, "shop").db;
      const row = await db("outbox").where({ id }).first<{ occurred_at: number; available_at: number }>();
      assert.equal(Number(row.available_at) - Number(row.occurred_at), relay.leaseMs, "written with the relay's lease");
      const audit = svc<Events>(consumer, "audit");
      await waitFor("applied", async () => audit.eventStats().applied === 1, relay.leaseMs + 15_000);
      const sent = await db("outbox").where({ id }).first<{ sent_at: number; available_at: number }>();
      assert.ok(Number(sent.sent_at) >= Number(sent.available_at), "published by a sweep, after the lease");
      assert.equal(svc<Events>(other, "shop").eventStats().published, 1, "the other replica published it");
      await untilQuiet("the event layer", {
        "unsent outbox rows": () => unsentOutbox(db),
        "messages in the event queues": async () => (await eventQueueMessages(vhost.uri, t.namespace)).total,
      });
      assert.deepEqual(
        (await effects(consumer)).map((r) => r.message_id),
        [id],
        "applied once",
      );
    }));

  /** An `order.created` payload (a catalog event: the contracts say the notification service consumes it). */
  const orderCreated = (n: number) => ({
    orderId: `order-${n}`,
    userId: "user-1",
    total: { amount: 100 * n, currency: "CNY" },
    items: [],
    occurredAt: new Date().toISOString(),
  });

  it("an event committed before its consumer ever started waits in the queue the publisher declared for it (the contracts name the consumer), and is applied once it starts", async () => {
    const t = env();
    const config = eventsConfig(t);
    const producer = await startBroker("p", [producerService(config)]);
    let consumer: ServiceBroker | undefined;
    try {
      const [id] = await producer.call<string[], unknown>("shop.emit", { event: "order.created", payloads: [orderCreated(1)] });
      await waitFor("published", async () => (await unsentOutbox(svc<Events>(producer, "shop").db)) === 0);
      // No consumer has ever run in this namespace: the message is in the queue the relay declared.
      assert.equal((await eventQueueMessages(vhost.uri, t.namespace)).byQueue.get(topology(t.namespace).workQueue("notification")), 1);
      consumer = await startBroker("c", [consumerService(config, ["order.created"], { name: "notification" })]);
      await waitFor("applied", async () => (await effects(consumer!, "notification")).length === 1);
      assert.deepEqual(
        (await effects(consumer, "notification")).map((r) => r.message_id),
        [id],
      );
    } finally {
      await consumer?.stop();
      await producer.stop();
      await dropAll(config, ["shop", "notification"]);
    }
  });

  it("a binding the broker lost: the message RabbitMQ routed to no queue stays pending, the relay binds the queue again, and the event is applied once", async () => {
    const t = env();
    const config = eventsConfig(t);
    const broker = await startBroker("n", [producerService(config), consumerService(config, ["order.created"], { name: "notification" })]);
    const conn = await amqp.connect(vhost.uri);
    try {
      const shop = svc<Events>(broker, "shop");
      const [first] = await broker.call<string[], unknown>("shop.emit", { event: "order.created", payloads: [orderCreated(1)] });
      await waitFor("the first applied", async () => (await effects(broker, "notification")).length === 1);
      // The broker "forgets" the binding (rabbitmq-server#8994): nothing routes order.created now.
      const topo = topology(t.namespace);
      const ch = await conn.createChannel();
      await ch.unbindQueue(topo.workQueue("notification"), topo.exchange, "order.created");
      const [second] = await broker.call<string[], unknown>("shop.emit", { event: "order.created", payloads: [orderCreated(2)] });
      await waitFor("the second applied", async () => (await effects(broker, "notification")).length === 2);
      assert.ok(shop.eventStats().unroutable >= 1, "RabbitMQ returned it at least once (the relay saw the lost binding)");
      const row = (await shop.db("outbox").where({ id: second }).first()) as { attempts: number; sent_at: number | null };
      assert.ok(row.attempts >= 1 && row.sent_at !== null, "kept pending, then published again");
      await untilQuiet("the event layer", {
        "unsent outbox rows": () => unsentOutbox(shop.db),
        "messages in the event queues": async () => (await eventQueueMessages(vhost.uri, t.namespace)).total,
      });
      assert.deepEqual(
        (await effects(broker, "notification")).map((r) => r.message_id).sort(),
        [first, second].sort(),
        "each applied once",
      );
    } finally {
      await conn.close().catch(() => undefined);
      await broker.stop();
      await dropAll(config, ["shop", "notification"]);
    }
  });

  it("a consumer's queue that refuses the relay's declaration (other arguments) holds back only its event: the others flow, it stays pending", async () => {
    const t = env();
    const config = eventsConfig(t);
    const topo = topology(t.namespace);
    const conn = await amqp.connect(vhost.uri);
    const broker = await (async () => {
      // The notification service's work queue as an old deployment left it: classic, so the
      // relay's quorum declaration is refused (PRECONDITION_FAILED closes that channel).
      const ch = await conn.createChannel();
      await ch.assertQueue(topo.workQueue("notification"), { durable: true });
      return startBroker("n", [producerService(config), consumerService(config, ["order.placed"])]);
    })();
    try {
      const shop = svc<Events>(broker, "shop");
      const [held] = await broker.call<string[], unknown>("shop.emit", { event: "order.created", payloads: [orderCreated(1)] });
      // Returned once (no binding): from then on every pass tries to declare its consumer's queue first.
      await waitFor("the held one routed to no queue", async () => shop.eventStats().unroutable >= 1);
      const [flowing] = await broker.call<string[], unknown>("shop.emit", { event: "order.placed", payloads: [{ n: 1 }] });
      await waitFor("the other event applied", async () => (await effects(broker)).some((r) => r.message_id === flowing));
      const row = (await shop.db("outbox").where({ id: held }).first()) as { sent_at: number | null };
      assert.equal(row.sent_at, null, "kept pending, not marked sent");
    } finally {
      await conn.close().catch(() => undefined);
      await broker.stop();
      await dropAll(config, ["shop", "audit"]);
    }
  });

  it("user.registered: the account and its event commit together, and a consumer applies it", async () => {
    const t = env();
    const config = eventsConfig(t);
    const broker = await startBroker("n1", [createUserService(config), consumerService(config, ["user.registered"])]);
    try {
      const res: { user: { id: string } } = await broker.call("user.register", {
        email: "ada@example.com",
        password: "correct horse battery",
        name: "Ada",
      });
      const rows = await waitFor("user.registered applied", async () => {
        const r = (await svc<Events>(broker, "audit").db("effects").where({ event: "user.registered" })) as { payload: string }[];
        return r.length ? r : undefined;
      });
      const payload = JSON.parse(rows[0].payload);
      assert.equal(payload.userId, res.user.id);
      assert.equal(payload.email, "ada@example.com");
      assert.equal(payload.name, "Ada");
      assert.ok(!Number.isNaN(Date.parse(payload.occurredAt)));
      // A registration that fails (duplicate e-mail) leaves no event behind.
      await assert.rejects(broker.call("user.register", { email: "ada@example.com", password: "correct horse battery", name: "Ada" }));
      assert.equal((await svc<Events>(broker, "user").db("outbox")).length, 1);
    } finally {
      await broker.stop();
      await dropAll(config, ["user", "audit"]);
    }
  });
});

describe("embedded delivery (no RabbitMQ) on SQLite", () => {
  const env = (): EventsTestEnv => ({
    namespace: uniqueNamespace(),
    dataDir: newDataDir(),
    db: "sqlite",
    mysqlUrl: MYSQL_URL,
    env: { EVENTS_MAX_ATTEMPTS: "3", EVENTS_RETRY_DELAYS_MS: "50,100", EVENTS_POLL_INTERVAL_MS: "50" },
  });

  /**
   * A producer and consumers: audit, picky (refuses a message when `refuses(poison)` says so),
   * and solo (never batched).
   */
  const withPicky = (config: ReturnType<typeof eventsConfig>, refuses: (poison: boolean) => boolean) =>
    startBroker("n1", [
      producerService(config),
      consumerService(config, ["order.placed"]),
      consumerService(config, ["order.placed"], { name: "solo", batch: false }),
      consumerService(config, ["order.placed"], {
        name: "picky",
        handler: async (trx, payload, envelope) => {
          if (refuses(Boolean((payload as { poison?: boolean }).poison))) throw new Error("picky refuses");
          await recordEffect(trx, payload, envelope);
        },
      }),
    ]);

  it("commits within EVENTS_KICK_DELAY_MS leave in one relay pass (0: a pass per commit)", async () => {
    for (const [delay, passes] of [
      ["1000", (n: number) => n === 1],
      ["0", (n: number) => n > 1],
    ] as const) {
      // No poll in the window: only the commits' kicks start passes.
      const config = eventsConfig(env(), { EVENTS_KICK_DELAY_MS: delay, EVENTS_POLL_INTERVAL_MS: "60000" });
      const broker = await startBroker("n1", [producerService(config), consumerService(config, ["order.placed"])]);
      try {
        await broker.call("shop.emit", { event: "order.placed", payloads: Array.from({ length: 10 }, (_, n) => ({ n })) });
        await waitFor("10 effects", async () => (await effects(broker)).length === 10);
        const { withRows } = svc<Events>(broker, "shop").eventStats().relayPasses;
        assert.ok(passes(withRows), `EVENTS_KICK_DELAY_MS=${delay}: ${withRows} passes with rows for 10 commits`);
      } finally {
        await broker.stop();
        await dropAll(config, ["shop", "audit"]);
      }
    }
  });

  it("rows delivered in-process once; a failing consumer is retried, dead-lettered in its table, replayed", async () => {
    const config = eventsConfig(env());
    let failing = true;
    let calls = 0;
    const broker = await withPicky(config, (poison) => {
      calls++;
      return failing && poison;
    });
    try {
      const ids: string[] = await broker.call("shop.emit", {
        event: "order.placed",
        payloads: Array.from({ length: 20 }, (_, n) => ({ n })),
      });
      await waitFor(
        "20 effects in both",
        async () => (await effects(broker)).length === 20 && (await effects(broker, "picky")).length === 20,
      );
      const [poison] = await broker.call<string[], unknown>("shop.emit", { event: "order.placed", payloads: [{ poison: true }] });
      const picky = svc<Events>(broker, "picky");
      await waitFor("dead letter", async () => picky.eventStats().deadLettered === 1);
      // The healthy consumer applied it once although the row was delivered 3 times.
      assert.equal((await effects(broker)).filter((r) => r.message_id === poison).length, 1);
      assert.equal(svc<Events>(broker, "audit").eventStats().duplicates, 2);
      assert.equal(calls, 23);
      const shop = svc<Events>(broker, "shop");
      await waitFor("every row marked", async () => (await unsentOutbox(shop.db)) === 0);
      assert.deepEqual(
        (await listDeadLetters(config, "picky")).map((d) => d.messageId),
        [poison],
      );

      failing = false;
      await replayDeadLetters(config, "picky");
      await waitFor("replayed", async () => (await effects(broker, "picky")).some((r) => r.message_id === poison));
      assert.equal((await listDeadLetters(config, "picky")).length, 0);
      assert.deepEqual((await effects(broker, "picky")).map((r) => r.message_id).sort(), [...ids, poison].sort());
    } finally {
      await broker.stop();
      await dropAll(config, ["shop", "audit", "picky", "solo"]);
    }
  });

  it("a pass's rows reach each consumer in batches (one transaction per message with batch: false); a row that fails there is retried alone", async () => {
    const config = eventsConfig(env());
    let failures = 0;
    // Twice: in its batch (rolled back), then on its own (the row is retried).
    const broker = await withPicky(config, (poison) => poison && failures++ < 2);
    try {
      // A backlog: rows committed while the relay is stopped, then one pass over all of them.
      const relay = svc<Events & { $events: { relay: { stop(): Promise<void>; start(): void } } }>(broker, "shop").$events.relay;
      await relay.stop();
      const ids: string[] = await broker.call("shop.emit", {
        event: "order.placed",
        payloads: Array.from({ length: 20 }, (_, n) => ({ n, poison: n === 7 })),
      });
      relay.start();
      await waitFor(
        "20 effects in both",
        async () => (await effects(broker)).length === 20 && (await effects(broker, "picky")).length === 20,
      );
      const audit = svc<Events>(broker, "audit").eventStats();
      const picky = svc<Events>(broker, "picky").eventStats();
      const solo = svc<Events>(broker, "solo").eventStats();
      assert.equal(
        audit.transactions,
        Math.ceil(20 / EMBEDDED_BATCH),
        `audit: 20 rows in batches of ${EMBEDDED_BATCH}: ${JSON.stringify(audit)}`,
      );
      assert.equal(solo.transactions, 20, `solo (batch: false): one transaction per row: ${JSON.stringify(solo)}`);
      assert.equal(audit.batchesRolledBack, 0);
      assert.equal(picky.batchesRolledBack, 1, "picky's batch with the failing row rolled back once");
      assert.equal(audit.duplicates, 1, "the retried row came again to audit, a duplicate there");
      assert.deepEqual((await effects(broker, "picky")).map((r) => r.message_id).sort(), [...ids].sort());
      assert.equal(failures, 3, "the failing row ran in its batch, on its own, and once more when retried");
      assert.equal(picky.applied, 20);
      await waitFor("every row marked", async () => (await unsentOutbox(svc<Events>(broker, "shop").db)) === 0);
    } finally {
      await broker.stop();
      await dropAll(config, ["shop", "audit", "picky", "solo"]);
    }
  });

  it("user.registered is delivered in-process (npm start needs no server)", async () => {
    const config = eventsConfig(env());
    const broker = await startBroker("n1", [createUserService(config), consumerService(config, ["user.registered"])]);
    try {
      const res: { user: { id: string } } = await broker.call("user.register", {
        email: "bob@example.com",
        password: "correct horse battery",
        name: "Bob",
      });
      const rows = await waitFor("applied", async () => {
        const r = (await svc<Events>(broker, "audit").db("effects").where({ event: "user.registered" })) as { payload: string }[];
        return r.length ? r : undefined;
      });
      assert.equal(JSON.parse(rows[0].payload).userId, res.user.id);
    } finally {
      await broker.stop();
      await dropAll(config, ["user", "audit"]);
    }
  });
});
