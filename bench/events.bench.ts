/**
 * `npm run bench:events`: business events from commit to the consumer's commit, on MariaDB
 * over the machine's RabbitMQ (a private vhost), against a raw amqplib loop in the same run.
 *
 * - `raw amqplib`: one ConfirmChannel publishing persistent messages to a durable queue in
 *   windows of BENCH_WINDOW, waiting for the confirms of each window; a consumer on its own
 *   connection acks each message. Latency: publish → received. The ceiling of the broker.
 * - `outbox`: BENCH_CONCURRENCY callers each commit one transaction (a row + its event
 *   through `publishEvent`) after another; the relay (MariaDB, SKIP LOCKED, confirms) publishes;
 *   the consumer applies each through its inbox. Latency: producer commit → consumer commit.
 * - `commits only`: the outbox case's producer transactions without the event (latency: the
 *   transaction), for context: an event costs two commits (producer and consumer).
 * Producer and consumer are two brokers in this process (same clock); MariaDB and RabbitMQ
 * run on the same machine. Appends a section to bench/RESULTS.md (BENCH_RECORD=0: print only).
 * Options: BENCH_EVENTS (5000), BENCH_CONCURRENCY (20), BENCH_WINDOW (100).
 */
import os from "node:os";
import { performance } from "node:perf_hooks";
import amqp from "amqplib";
import type { Knex } from "knex";
import { inTransaction } from "../lib/db";
import { consumerService, producerService, recordEffect } from "../lib/events/fixtures/services";
import { dropAll, eventsConfig, newDataDir, startBroker, waitFor } from "../lib/events/support";
import type { EventsServiceThis } from "../mixins/events.mixin";
import { createVhost } from "../test/support/rabbitmq";
import { appendResults, cpuSeconds, pidOf, summaryFigure } from "./support";
import { MYSQL_URL, uniqueNamespace } from "../test/support/servers";
import { mapBounded, range } from "../lib/bounded";

const N = Number(process.env.BENCH_EVENTS ?? 5000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 20);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 100);

interface Result {
  name: string;
  perSecond: number;
  p50: number;
  p99: number;
  seconds: number;
}

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

async function raw(uri: string): Promise<Result> {
  const pubConn = await amqp.connect(uri);
  const subConn = await amqp.connect(uri);
  const pub = await pubConn.createConfirmChannel();
  const sub = await subConn.createChannel();
  const queue = "bench.raw";
  await pub.assertQueue(queue, { durable: true });
  await sub.prefetch(100);
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  let last = 0;
  await sub.consume(queue, (msg) => {
    if (!msg) return;
    const t = performance.now();
    latencies.push(t - sentAt.get(String(msg.properties.messageId))!);
    sub.ack(msg);
    last = t;
    if (latencies.length === N) resolveDone();
  });
  const start = performance.now();
  for (let i = 0; i < N; i += WINDOW) {
    for (let j = i; j < Math.min(N, i + WINDOW); j++) {
      const id = String(j);
      sentAt.set(id, performance.now());
      pub.publish("", queue, Buffer.from(JSON.stringify({ id, payload: { n: j } })), { persistent: true, messageId: id });
    }
    await pub.waitForConfirms();
  }
  await done;
  await pubConn.close();
  await subConn.close();
  const seconds = (last - start) / 1000;
  return {
    name: "raw amqplib (confirmed publish → consume)",
    perSecond: N / seconds,
    p50: pct(latencies, 50),
    p99: pct(latencies, 99),
    seconds,
  };
}

interface OutboxResult extends Result {
  duplicates: number;
  transactions: number;
  /** The producer's relay passes: with rows, and empty ones (nothing handed over, a sweep that found nothing). */
  relay: { withRows: number; empty: number };
  /** When the producers' last commit returned: the rest of `seconds` is the pipeline catching up. */
  producedS: number;
  /** CPU µs per event, by process, over the outbox case. */
  cpuUs: { name: string; us: number | undefined }[];
}

/** CPU seconds of this process (producer, relay and consumer) and of the shared servers. */
function cpuNow(): { name: string; s: number | undefined }[] {
  const self = process.cpuUsage();
  return [
    { name: "this process (producer, relay, consumer)", s: (self.user + self.system) / 1e6 },
    { name: "MariaDB", s: ((pid) => (pid ? cpuSeconds(pid) : undefined))(pidOf("mariadbd", "mysqld")) },
    { name: "RabbitMQ", s: ((pid) => (pid ? cpuSeconds(pid) : undefined))(pidOf("beam.smp")) },
  ];
}

async function outbox(uri: string): Promise<OutboxResult> {
  const t = {
    namespace: uniqueNamespace("b"),
    dataDir: newDataDir(),
    db: "mariadb" as const,
    rabbitUri: uri,
    mysqlUrl: MYSQL_URL,
    env: { EVENTS_POLL_INTERVAL_MS: "1000", LOG_LEVEL: "warn" },
  };
  const config = eventsConfig(t);
  const committedAt = new Map<string, number>();
  const latencies: number[] = [];
  let last = 0;
  const consumer = await startBroker(
    "consumer",
    [
      consumerService(config, ["user.registered"], {
        prefetch: 50,
        handler: async (trx, payload, envelope) => {
          await recordEffect(trx, payload, envelope);
          trx.executionPromise.then(
            () => {
              const now = performance.now();
              latencies.push(now - committedAt.get(envelope.id)!);
              last = now;
            },
            () => undefined,
          );
        },
      }),
    ],
    "warn",
  );
  const producer = await startBroker("producer", [producerService(config)], "warn");
  const shop = producer.getLocalService("shop") as unknown as EventsServiceThis & { db: Knex };
  try {
    const cpu0 = cpuNow();
    const start = performance.now();
    await mapBounded(range(N), CONCURRENCY, async (n) => {
      const id = await inTransaction(shop.db, async (trx) => {
        await trx("effects").insert({ message_id: `local-${n}`, event: "local", payload: "{}", applied_at: Date.now() });
        // A real catalog event: its payload travels as its contract message (protobuf).
        return shop.publishEvent(trx, "user.registered", {
          userId: `bench-${n}`,
          email: `bench-${n}@example.test`,
          name: "Bench",
          occurredAt: new Date().toISOString(),
        });
      });
      committedAt.set(id, performance.now());
    });
    const producedS = (performance.now() - start) / 1000;
    await waitFor("all applied", async () => latencies.length >= N, 300_000, 50);
    const cpu1 = cpuNow();
    const stats = (consumer.getLocalService("audit") as unknown as EventsServiceThis).eventStats();
    const relay = shop.eventStats().relayPasses;
    const seconds = (last - start) / 1000;
    const cpuUs = cpu0.map((c, i) => ({
      name: c.name,
      us: c.s !== undefined && cpu1[i].s !== undefined ? ((cpu1[i].s - c.s) * 1e6) / N : undefined,
    }));
    return {
      name: "outbox → relay → RabbitMQ → inbox (MariaDB)",
      perSecond: N / seconds,
      p50: pct(latencies, 50),
      p99: pct(latencies, 99),
      seconds,
      duplicates: stats.duplicates,
      transactions: stats.transactions,
      producedS,
      cpuUs,
      relay,
    };
  } finally {
    await producer.stop();
    await consumer.stop();
    await dropAll(config, ["shop", "audit"]);
  }
}

/** The same producer transactions without an event: what MariaDB's commits alone allow here. */
async function commitsOnly(): Promise<Result> {
  const t = { namespace: uniqueNamespace("b"), dataDir: newDataDir(), db: "mariadb" as const, mysqlUrl: MYSQL_URL };
  const config = eventsConfig(t);
  const producer = await startBroker("producer", [producerService(config)], "warn");
  const shop = producer.getLocalService("shop") as unknown as { db: Knex };
  try {
    const latencies: number[] = [];
    const start = performance.now();
    await mapBounded(range(N), CONCURRENCY, async (n) => {
      const t0 = performance.now();
      await inTransaction(shop.db, async (trx) => {
        await trx("effects").insert({ message_id: `local-${n}`, event: "local", payload: "{}", applied_at: Date.now() });
      });
      latencies.push(performance.now() - t0);
    });
    const seconds = (performance.now() - start) / 1000;
    return {
      name: "MariaDB commits only (same transaction, no event)",
      perSecond: N / seconds,
      p50: pct(latencies, 50),
      p99: pct(latencies, 99),
      seconds,
    };
  } finally {
    await producer.stop();
    await dropAll(config, ["shop"]);
  }
}

async function main() {
  const vhost = await createVhost();
  const load0 = os.loadavg()[0];
  try {
    process.stderr.write(`raw amqplib: ${N} messages…\n`);
    const r = await raw(vhost.uri);
    process.stderr.write(`outbox: ${N} events, ${CONCURRENCY} concurrent producers…\n`);
    const o = await outbox(vhost.uri);
    process.stderr.write(`MariaDB commits only: ${N} transactions…\n`);
    const c = await commitsOnly();
    const row = (x: Result, ratio: string) =>
      `| ${x.name} | ${Math.round(x.perSecond).toLocaleString("en-US")} | ${ratio} | ${x.p50.toFixed(2)} | ${x.p99.toFixed(2)} |`;
    const table = [
      "| case | events/s | vs raw | p50 ms | p99 ms |",
      "|---|---:|---:|---:|---:|",
      row(r, "100 %"),
      row(o, `${Math.round((o.perSecond / r.perSecond) * 100)} %`),
      row(c, `${Math.round((c.perSecond / r.perSecond) * 100)} %`),
    ].join("\n");
    const section = [
      "",
      "## Business events (`npm run bench:events`)",
      "",
      `**Run of ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC**, ${N} events; outbox: ${CONCURRENCY} concurrent producer transactions (one event each), consumer prefetch 50, MariaDB + the machine's RabbitMQ;`,
      `raw: confirm windows of ${WINDOW}. Latency: outbox = producer commit → consumer commit; raw = publish → received.`,
      `Machine: ${os.cpus().length} vCPUs, Node ${process.version}, load average ${load0.toFixed(1)} → ${os.loadavg()[0].toFixed(1)}; duplicates absorbed by the inbox: ${o.duplicates};`,
      `the consumer applied the ${N} events in ${o.transactions} transactions (${(N / Math.max(1, o.transactions)).toFixed(1)} per transaction: consumer.ts's batches);`,
      `the relay published them in ${o.relay.withRows} passes (${(N / Math.max(1, o.relay.withRows)).toFixed(1)} per pass), plus ${o.relay.empty} passes that found nothing.`,
      `The producers' last commit returned after ${o.producedS.toFixed(2)} s of the outbox case's ${o.seconds.toFixed(2)} s (the rest: relay and consumer catching up; latency counts that wait).`,
      `CPU per event over the outbox case: ${o.cpuUs.map((c) => `${c.name} ${c.us === undefined ? "n/a" : `${Math.round(c.us)} µs`}`).join(", ")}.`,
      "",
      table,
      "",
      `Reading: an outbox event costs two MariaDB commits (the producer's and the consumer's inbox + effect), so the`,
      `"commits only" row halved (${Math.round(c.perSecond / 2).toLocaleString("en-US")}/s) is this machine's ceiling for it; the outbox reached ${Math.round((o.perSecond / (c.perSecond / 2)) * 100)} % of that.`,
      "",
    ].join("\n");
    process.stdout.write(`${section}\n`);
    // Headline figures for `npm run bench` (BENCH_SUMMARY).
    summaryFigure(
      "events",
      `business events commit → applied, events/s (${N} events)`,
      Math.round(o.perSecond).toLocaleString("en-US"),
      ">= 5,000/s",
      o.perSecond >= 5000,
    );
    summaryFigure("events", "business events commit → applied, p99", `${o.p99.toFixed(1)} ms`, "<= 50 ms", o.p99 <= 50);
    // Two commits an event: the commits-only rate halved is this machine's ceiling for events.
    summaryFigure(
      "events",
      "events/s vs this MariaDB's two-commit ceiling (commits alone ÷ 2)",
      `${Math.round((o.perSecond / (c.perSecond / 2)) * 100)} % of ${Math.round(c.perSecond / 2).toLocaleString("en-US")}/s`,
    );
    summaryFigure("events", "check", `OK (all ${N} applied, ${o.duplicates} duplicates absorbed)`, undefined, true);
    if (process.env.BENCH_RECORD !== "0") {
      appendResults(section);
    }
  } finally {
    await vhost.destroy();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(1);
  },
);
