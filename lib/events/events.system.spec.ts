/**
 * The event layer under crashes and outages, with separate node processes, the real
 * MariaDB and RabbitMQ:
 * - the producer is killed right after a commit that wrote an event (fault switch): after
 *   its restart the relay publishes the event, 0 lost;
 * - the consumer is killed while handling a message (its transaction open): the message is
 *   delivered again and applied once;
 * - a PRIVATE RabbitMQ (own node, ports, data dir; test/support/private-rabbitmq.ts) is
 *   stopped amid 1,000 event commits, seen down, 300 commits made while it is down (each
 *   batch unsent right after its commit), then started: once the system is quiet, every
 *   commit is applied exactly once; a planted at-most-once relay fails that same proof.
 *
 * @shares-machine: two or three small node processes and a private RabbitMQ, about one core
 *   for under a minute, much of it waiting on the broker's stop and start (measured); bin/test.ts
 *   runs it beside the cluster-sized files.
 */
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { it } from "mocha";
import { diagnostic } from "../../test/support/diagnostic";
import type { Knex } from "knex";
import type { ServiceBroker } from "moleculer";
import { createKnex } from "../db";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import { startPrivateRabbit } from "../../test/support/private-rabbitmq";
import { spawnTs } from "../../test/support/proc";
import { untilQuiet, unsentOutbox } from "../../test/support/quiet";
import { createVhost } from "../../test/support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../../test/support/servers";
import { consumerService, producerService } from "./fixtures/services";
import { dropAll, eventQueueMessages, eventsConfig, newDataDir, startBroker, svc, waitFor, type EventsTestEnv } from "./support";

const NODE = path.join(__dirname, "fixtures", "node.ts");

function childEnv(t: EventsTestEnv, extra: Record<string, string>): Record<string, string> {
  return {
    NAMESPACE: t.namespace,
    DATA_DIR: t.dataDir,
    MYSQL_URL: t.mysqlUrl,
    RABBITMQ_URI: t.rabbitUri!,
    JWT_SECRET: "x".repeat(40),
    REDIS_URL,
    MIGRATE_ON_START: "true",
    EVENTS_POLL_INTERVAL_MS: "100",
    LOG_LEVEL: "warn",
    LOG_FORMAT: "text",
    MERIDIAN_FAULT: "",
    ...extra,
  };
}

const appliedIds = async (db: Knex, ids?: string[]) => {
  let q = db("effects").whereNot("event", "local");
  if (ids) q = q.whereIn("message_id", ids);
  return (await q.select<{ message_id: string }[]>("message_id")).map((r) => r.message_id);
};

it("producer killed right after the commit: after restart the event is delivered, 0 lost", async () => {
  const vhost = await createVhost();
  const t: EventsTestEnv = {
    namespace: uniqueNamespace(),
    dataDir: newDataDir(),
    db: "mariadb",
    rabbitUri: vhost.uri,
    mysqlUrl: MYSQL_URL,
  };
  const config = eventsConfig(t);
  const consumer = await startBroker("consumer", [consumerService(config, ["order.placed"])]);
  const shopDb = createKnex(config, "shop");
  try {
    const crashing = spawnTs(NODE, {
      name: "producer-crash",
      env: childEnv(t, { FIXTURE_ROLE: "producer", FIXTURE_EMIT: "1", MERIDIAN_FAULT: "crash-after-outbox-commit" }),
    });
    await crashing.waitExit();
    assert.ok(!crashing.lines.some((l) => l.startsWith("EMITTED")), "killed before the action returned");
    const committed = await shopDb("outbox").select<{ id: string; sent_at: number | null }[]>("id", "sent_at");
    assert.equal(committed.length, 1, "the event row committed");
    assert.equal(committed[0].sent_at, null, "and was not published");
    const auditDb = svc<{ db: Knex }>(consumer, "audit").db;
    assert.deepEqual(await appliedIds(auditDb), []);

    const restarted = spawnTs(NODE, { name: "producer", env: childEnv(t, { FIXTURE_ROLE: "producer" }) });
    try {
      await restarted.waitForLine(/READY/);
      await waitFor("the event applied", async () => (await appliedIds(auditDb)).length === 1);
      assert.deepEqual(await appliedIds(auditDb), [committed[0].id], "0 lost");
      await waitFor("marked sent", async () => (await shopDb("outbox").whereNull("sent_at")).length === 0);
    } finally {
      restarted.kill();
      await restarted.waitExit();
    }
  } finally {
    await shopDb.destroy();
    await consumer.stop();
    await dropAll(config, ["shop", "audit"]);
    await vhost.destroy();
  }
});

it("consumer killed mid-handling: the message is delivered again and applied once", async () => {
  const vhost = await createVhost();
  const t: EventsTestEnv = {
    namespace: uniqueNamespace(),
    dataDir: newDataDir(),
    db: "mariadb",
    rabbitUri: vhost.uri,
    mysqlUrl: MYSQL_URL,
  };
  const config = eventsConfig(t);
  const auditDb = createKnex(config, "audit");
  let producer: Awaited<ReturnType<typeof startBroker>> | undefined;
  try {
    const stalled = spawnTs(NODE, { name: "consumer-stall", env: childEnv(t, { FIXTURE_ROLE: "consumer", FIXTURE_STALL: "1" }) });
    await stalled.waitForLine(/READY/);
    producer = await startBroker("producer", [producerService(config)]);
    const [id] = await producer.call<string[], unknown>("shop.emit", { event: "order.placed", payloads: [{ n: 1 }] });
    await stalled.waitForLine(new RegExp(`HANDLING ${id}`));
    stalled.kill("SIGKILL");
    await stalled.waitExit();
    // Its transaction died with it: no effect, no inbox row.
    await waitFor("rollback", async () => (await appliedIds(auditDb)).length === 0 && (await auditDb("inbox")).length === 0);

    const healthy = spawnTs(NODE, { name: "consumer", env: childEnv(t, { FIXTURE_ROLE: "consumer" }) });
    try {
      await healthy.waitForLine(/READY/);
      await waitFor("applied after redelivery", async () => (await appliedIds(auditDb)).length === 1);
      // Counted again once nothing is left to deliver: a second copy would be in a queue until then.
      await untilQuiet("the event layer", {
        "unsent outbox rows": () => unsentOutbox(svc<{ db: Knex }>(producer!, "shop").db),
        "messages in the event queues": async () => (await eventQueueMessages(vhost.uri, t.namespace)).total,
      });
      assert.deepEqual(await appliedIds(auditDb), [id], "applied once");
      assert.equal((await auditDb("inbox").where({ message_id: id })).length, 1);
    } finally {
      healthy.kill();
      await healthy.waitExit();
    }
  } finally {
    await auditDb.destroy();
    await producer?.stop();
    await dropAll(config, ["shop", "audit"]);
    await vhost.destroy();
  }
});

/** True once nothing accepts connections on the broker's AMQP port: its process is gone, not merely stopping. */
function refused(uri: string): Promise<boolean> {
  const { hostname, port } = new URL(uri);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

const TOTAL = 1000;
const BATCH = 10;
/** Committed before the stop, and while the broker is verified down; the rest while it starts and after. */
const BEFORE = 300;
const WHILE_DOWN = 300;

/**
 * The broker-restart proof, with an optional fault planted in the producer before it runs.
 * A private RabbitMQ (its own node, so stopping it disturbs nobody): 300 events committed,
 * the broker stopped and seen down (its port refuses connections), 300 more committed in
 * batches while it is down, each batch's rows read back at once (sent_at IS NULL: nothing
 * could confirm them), then the broker started while the last 400 are committed. Once the
 * system is quiet (no unsent outbox row, no message in any event queue) every commit must
 * have been applied exactly once.
 */
async function restartProof(plant?: (producer: ServiceBroker, shopDb: Knex) => void): Promise<void> {
  const rabbit = await startPrivateRabbit();
  const ctl = rabbit.ctl;
  const t: EventsTestEnv = {
    namespace: uniqueNamespace(),
    dataDir: newDataDir(),
    db: "mariadb",
    rabbitUri: rabbit.uri,
    mysqlUrl: MYSQL_URL,
  };
  const config = eventsConfig(t);
  const brokers = [
    await startBroker("consumer", [consumerService(config, ["order.placed"])], "warn"),
    await startBroker("producer", [producerService(config)], "warn"),
  ];
  const [consumer, producer] = brokers as [ServiceBroker, ServiceBroker];
  const shopDb = svc<{ db: Knex }>(producer, "shop").db;
  const auditDb = svc<{ db: Knex }>(consumer, "audit").db;
  plant?.(producer, shopDb);
  const commit = async (from: number) =>
    await producer.call<string[], unknown>("shop.emit", {
      event: "order.placed",
      payloads: Array.from({ length: BATCH }, (_, j) => ({ n: from + j })),
    });
  try {
    const committed: string[] = [];
    for (let i = 0; i < BEFORE; i += BATCH) committed.push(...(await commit(i)));

    await rabbit.stop();
    await waitFor("RabbitMQ down (its AMQP port refuses connections)", () => refused(rabbit.uri), 30_000, 100);
    const downAt = Date.now();
    const whileDown: { at: number; ids: string[]; unsentThen: number }[] = [];
    for (let i = BEFORE; i < BEFORE + WHILE_DOWN; i += BATCH) {
      const ids = await commit(i);
      const at = Date.now();
      const unsentThen = (await shopDb("outbox").whereIn("id", ids).whereNull("sent_at").count({ n: "*" }).first()) as {
        n: number | string;
      };
      whileDown.push({ at, ids, unsentThen: Number(unsentThen.n) });
      committed.push(...ids);
    }
    // Only this test starts it again; checked anyway, so that "while down" is a fact, not an assumption.
    assert.ok(await refused(rabbit.uri), "RabbitMQ still down after the last batch committed while it was down");
    const downUntil = Date.now();

    const starting = rabbit.start();
    let startedAt = 0;
    void starting.then(
      () => (startedAt = Date.now()),
      () => undefined,
    );
    let committedWhileStarting = 0;
    for (let i = BEFORE + WHILE_DOWN; i < TOTAL; i += BATCH) {
      committed.push(...(await commit(i)));
      if (!startedAt) committedWhileStarting += BATCH;
    }
    await starting;
    assert.equal(committed.length, TOTAL);

    await untilQuiet(
      "the event layer after the restart",
      {
        "unsent outbox rows": () => unsentOutbox(shopDb),
        "messages in the event queues": async () => (await eventQueueMessages(rabbit.uri, t.namespace, ctl)).total,
      },
      180_000,
      250,
    );
    const applied = await appliedIds(auditDb);
    const times = new Map<string, number>();
    for (const id of applied) times.set(id, (times.get(id) ?? 0) + 1);
    const downIds = whileDown.flatMap((b) => b.ids);
    const report = {
      committed: committed.length,
      committedWhileDown: downIds.length,
      committedWhileStarting,
      downMs: downUntil - downAt,
      whileDownFirstAtMs: whileDown[0].at - downAt,
      whileDownLastAtMs: whileDown.at(-1)!.at - downAt,
      restartMs: startedAt - downUntil,
      applied: applied.length,
      duplicatedOnWire: svc<EventsServiceThis>(consumer, "audit").eventStats().duplicates,
    };
    diagnostic(JSON.stringify(report));
    process.stderr.write(`rabbitmq restart: ${JSON.stringify(report)}\n`);

    assert.ok(
      whileDown.length > 0 && whileDown.every((b) => b.at >= downAt && b.at <= downUntil),
      "batches committed between 'seen down' and 'seen still down'",
    );
    assert.deepEqual(
      whileDown.map((b) => b.unsentThen),
      whileDown.map(() => BATCH),
      "each batch committed while RabbitMQ was down: sent_at IS NULL right after its commit",
    );
    assert.equal((await eventQueueMessages(rabbit.uri, t.namespace, ctl)).dead, 0, "nothing dead-lettered");
    assert.deepEqual(
      downIds.filter((id) => times.get(id) !== 1),
      [],
      "every event committed while RabbitMQ was down: applied exactly once",
    );
    const lost = committed.filter((id) => !times.has(id));
    assert.equal(lost.length, 0, `lost: ${lost.length}`);
    assert.deepEqual(
      [...times].filter(([, n]) => n !== 1),
      [],
      "every event applied exactly once",
    );
    assert.equal(applied.length, TOTAL, "nothing applied that was not committed");
  } finally {
    for (const b of brokers.reverse()) {
      const t0 = Date.now();
      await b.stop();
      if (Date.now() - t0 > 5000) process.stderr.write(`stopping ${b.nodeID} took ${Date.now() - t0} ms\n`);
    }
    await rabbit.destroy();
    await dropAll(config, ["shop", "audit"]);
  }
}

it("private RabbitMQ stopped and started amid 1,000 event commits: those committed while it was down stay unsent, and every commit is applied exactly once", async () => {
  await restartProof();
});

it("negative control: a relay that gives up on what it cannot publish (marks it sent) fails the restart proof", async () => {
  // The planted fault: at-most-once. When a pass fails (the broker is down), the rows it
  // could not publish are marked sent anyway, so the events committed during the outage
  // never reach the consumer. The proof above must catch it.
  const plant = (producer: ServiceBroker, shopDb: Knex) => {
    const relay = svc<{ $events: { relay: { pass(): Promise<number> } } }>(producer, "shop").$events.relay;
    const pass = relay.pass.bind(relay);
    relay.pass = async () => {
      try {
        return await pass();
      } catch (err) {
        await shopDb("outbox").whereNull("sent_at").update({ sent_at: Date.now() });
        throw err;
      }
    };
  };
  await assert.rejects(restartProof(plant), (err: Error) => {
    assert.ok(err instanceof assert.AssertionError, `the proof's own assertion failed, not something else: ${err.message}`);
    assert.match(err.message, /sent_at IS NULL|applied exactly once|lost/);
    diagnostic(`the proof failed as it must: ${err.message.split("\n")[0]}`);
    return true;
  });
});
