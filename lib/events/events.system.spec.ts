/**
 * The event layer under crashes and outages, with separate node processes, the real
 * MariaDB and RabbitMQ:
 * - the producer is killed right after a commit that wrote an event (fault switch): after
 *   its restart the relay publishes the event, 0 lost;
 * - the consumer is killed while handling a message (its transaction open): the message is
 *   delivered again and applied once;
 * - a PRIVATE RabbitMQ (own node, ports, data dir; test/support/private-rabbitmq.ts) is
 *   restarted in the middle of 1,000 event commits: every committed event is applied once.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import type { Knex } from "knex";
import { createKnex } from "../db";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import { startPrivateRabbit } from "../../test/support/private-rabbitmq";
import { spawnTs } from "../../test/support/proc";
import { createVhost } from "../../test/support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../../test/support/servers";
import { consumerService, producerService } from "./fixtures/services";
import { dropAll, eventsConfig, newDataDir, startBroker, svc, waitFor, type EventsTestEnv } from "./support";

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
  return ((await q.select("message_id")) as { message_id: string }[]).map((r) => r.message_id);
};

test("producer killed right after the commit: after restart the event is delivered, 0 lost", async () => {
  const vhost = await createVhost();
  const t: EventsTestEnv = { namespace: uniqueNamespace(), dataDir: newDataDir(), db: "mariadb", rabbitUri: vhost.uri, mysqlUrl: MYSQL_URL };
  const config = eventsConfig(t);
  const consumer = await startBroker("consumer", [consumerService(config, ["order.placed"])]);
  const shopDb = createKnex(config, "shop");
  try {
    const crashing = spawnTs(NODE, { name: "producer-crash", env: childEnv(t, { FIXTURE_ROLE: "producer", FIXTURE_EMIT: "1", MERIDIAN_FAULT: "crash-after-outbox-commit" }) });
    await crashing.waitExit();
    assert.ok(!crashing.lines.some((l) => l.startsWith("EMITTED")), "killed before the action returned");
    const committed = (await shopDb("outbox").select("id", "sent_at")) as { id: string; sent_at: number | null }[];
    assert.equal(committed.length, 1, "the event row committed");
    assert.equal(committed[0]!.sent_at, null, "and was not published");
    const auditDb = svc<{ db: Knex }>(consumer, "audit").db;
    assert.deepEqual(await appliedIds(auditDb), []);

    const restarted = spawnTs(NODE, { name: "producer", env: childEnv(t, { FIXTURE_ROLE: "producer" }) });
    try {
      await restarted.waitForLine(/READY/);
      await waitFor("the event applied", async () => (await appliedIds(auditDb)).length === 1);
      assert.deepEqual(await appliedIds(auditDb), [committed[0]!.id], "0 lost");
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

test("consumer killed mid-handling: the message is delivered again and applied once", async () => {
  const vhost = await createVhost();
  const t: EventsTestEnv = { namespace: uniqueNamespace(), dataDir: newDataDir(), db: "mariadb", rabbitUri: vhost.uri, mysqlUrl: MYSQL_URL };
  const config = eventsConfig(t);
  const auditDb = createKnex(config, "audit");
  let producer: Awaited<ReturnType<typeof startBroker>> | undefined;
  try {
    const stalled = spawnTs(NODE, { name: "consumer-stall", env: childEnv(t, { FIXTURE_ROLE: "consumer", FIXTURE_STALL: "1" }) });
    await stalled.waitForLine(/READY/);
    producer = await startBroker("producer", [producerService(config)]);
    const [id] = (await producer.call("shop.emit", { event: "order.placed", payloads: [{ n: 1 }] })) as string[];
    await stalled.waitForLine(new RegExp(`HANDLING ${id}`));
    stalled.kill("SIGKILL");
    await stalled.waitExit();
    // Its transaction died with it: no effect, no inbox row.
    await waitFor("rollback", async () => (await appliedIds(auditDb)).length === 0 && (await auditDb("inbox")).length === 0);

    const healthy = spawnTs(NODE, { name: "consumer", env: childEnv(t, { FIXTURE_ROLE: "consumer" }) });
    try {
      await healthy.waitForLine(/READY/);
      await waitFor("applied after redelivery", async () => (await appliedIds(auditDb)).length === 1);
      await new Promise((r) => setTimeout(r, 500));
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

test("private RabbitMQ restarted in the middle of 1,000 event commits: every committed event applied once", async (tc) => {
  const rabbit = await startPrivateRabbit();
  const t: EventsTestEnv = { namespace: uniqueNamespace(), dataDir: newDataDir(), db: "mariadb", rabbitUri: rabbit.uri, mysqlUrl: MYSQL_URL };
  const config = eventsConfig(t);
  const brokers = [
    await startBroker("consumer", [consumerService(config, ["order.placed"])], "warn"),
    await startBroker("producer", [producerService(config)], "warn"),
  ];
  const [consumer, producer] = brokers as [typeof brokers[0], typeof brokers[0]];
  try {
    const N = 1000;
    const committed: string[] = [];
    let restart: Promise<void> | undefined;
    const restartStarted = Date.now();
    let outageMs = 0;
    let committedDuringOutage = 0;
    for (let i = 0; i < N; i += 10) {
      committed.push(...((await producer.call("shop.emit", { event: "order.placed", payloads: Array.from({ length: 10 }, (_, j) => ({ n: i + j })) })) as string[]));
      if (i === 300)
        restart = (async () => {
          const t0 = Date.now();
          const before = committed.length;
          await rabbit.stop();
          await new Promise((r) => setTimeout(r, 1000));
          await rabbit.start();
          outageMs = Date.now() - t0;
          committedDuringOutage = committed.length - before;
        })();
    }
    assert.equal(committed.length, N);
    await restart;
    const auditDb = svc<{ db: Knex }>(consumer, "audit").db;
    await waitFor(`${N} applied`, async () => new Set(await appliedIds(auditDb)).size === N, 120_000, 250);
    await new Promise((r) => setTimeout(r, 500));
    const applied = await appliedIds(auditDb);
    const lost = committed.filter((id) => !applied.includes(id)).length;
    const stats = svc<EventsServiceThis>(consumer, "audit").eventStats();
    const report = { committed: N, lost, applied: applied.length, duplicatedOnWire: stats.duplicates, outageMs, committedDuringOutage, totalMs: Date.now() - restartStarted };
    tc.diagnostic(JSON.stringify(report));
    process.stderr.write(`rabbitmq restart: ${JSON.stringify(report)}\n`);
    assert.ok(committedDuringOutage > 0, "commits went on while RabbitMQ was down");
    assert.equal(lost, 0);
    assert.equal(applied.length, N, "each applied exactly once");
    assert.equal(new Set(applied).size, N);
  } finally {
    for (const b of brokers.reverse()) {
      const t0 = Date.now();
      await b.stop();
      if (Date.now() - t0 > 5000) process.stderr.write(`stopping ${b.nodeID} took ${Date.now() - t0} ms\n`);
    }
    await rabbit.destroy();
    await dropAll(config, ["shop", "audit"]);
  }
});
