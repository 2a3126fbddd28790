/**
 * Dead letters: list and replay, for `npm run dead-letters`.
 *
 * Cluster mode: the service's RabbitMQ dead-letter queue. Listing takes the messages with
 * `basic.get` without acking and closes the channel, which puts them all back (in order); so
 * while a listing runs they are invisible to a concurrent replay. Replay republishes each
 * chosen message to the service's work queue (confirmed, `x-attempts` reset) and only then
 * acks it in the dead-letter queue: a crash in between leaves a copy in both, and the inbox
 * absorbs the second application. At most `limit` messages per run.
 *
 * Embedded mode: the service's `dead_letters` table; replay marks rows
 * (`replay_requested_at`), and the running service applies them at its next poll.
 */
import fs from "node:fs";
import path from "node:path";
import type { AppConfig } from "../config";
import { createKnex } from "../db";
import { AmqpLink } from "./amqp";
import { topology } from "./topology";

export interface DeadLetter {
  messageId: string;
  event: string;
  attempts: number;
  lastError: string;
  failedAt: string;
  replayRequested?: boolean;
}

export async function listDeadLetters(config: AppConfig, service: string, limit = 1000): Promise<DeadLetter[]> {
  return config.rabbitmqUris ? amqpDeadLetters(config, service, "list", undefined, limit) : tableDeadLetters(config, service, "list");
}

/** Replays the given message ids (all when none given); returns the dead letters replayed. */
export async function replayDeadLetters(config: AppConfig, service: string, ids?: string[], limit = 1000): Promise<DeadLetter[]> {
  return config.rabbitmqUris ? amqpDeadLetters(config, service, "replay", ids, limit) : tableDeadLetters(config, service, "replay", ids);
}

async function amqpDeadLetters(
  config: AppConfig,
  service: string,
  mode: "list" | "replay",
  ids: string[] | undefined,
  limit: number,
): Promise<DeadLetter[]> {
  const topo = topology(config.namespace);
  const link = new AmqpLink(config.rabbitmqUris!, `meridian-dead-letters-${service}`);
  const conn = await link.connection();
  try {
    // A missing queue closes the channel that asked: probe on a throwaway one.
    const probe = await conn.createChannel();
    probe.on("error", () => undefined);
    try {
      await probe.checkQueue(topo.deadQueue(service));
      await probe.close();
    } catch {
      return []; // the service never consumed anything: no dead-letter queue
    }
    const ch = await conn.createChannel();
    const pub = await conn.createConfirmChannel();
    const out: DeadLetter[] = [];
    for (let i = 0; i < limit; i++) {
      const msg = await ch.get(topo.deadQueue(service), { noAck: false });
      if (!msg) break;
      const h = msg.properties.headers ?? {};
      const letter: DeadLetter = {
        messageId: String(msg.properties.messageId),
        event: String(msg.properties.type ?? h["x-routing-key"] ?? ""),
        attempts: Number(h["x-attempts"] ?? 0),
        lastError: String(h["x-last-error"] ?? ""),
        failedAt: String(h["x-dead-lettered-at"] ?? ""),
      };
      if (mode === "list") {
        out.push(letter);
        continue;
      }
      if (ids?.length && !ids.includes(letter.messageId)) continue;
      const headers = { ...h, "x-attempts": 0, "x-replayed-at": new Date().toISOString() };
      await new Promise<void>((resolve, reject) =>
        // amqplib confirms with null, or an Error (nacked, channel closed): lib/channel.js
        pub.sendToQueue(topo.workQueue(service), msg.content, { ...msg.properties, headers, persistent: true }, (e: Error | null) =>
          e ? reject(e) : resolve(),
        ),
      );
      ch.ack(msg);
      out.push(letter);
    }
    // Closing returns every unacked message (listed or not chosen) to the queue.
    await ch.close();
    await pub.close();
    return out;
  } finally {
    await link.close();
  }
}

async function tableDeadLetters(config: AppConfig, service: string, mode: "list" | "replay", ids?: string[]): Promise<DeadLetter[]> {
  // Never create an empty SQLite file just to look into it.
  if (!config.mysqlUrl && !fs.existsSync(path.join(config.dataDir, `${service}.sqlite`))) return [];
  const db = createKnex(config, service);
  try {
    if (!(await db.schema.hasTable("dead_letters"))) return [];
    let q = db("dead_letters").orderBy("failed_at");
    if (mode === "replay" && ids?.length) q = q.whereIn("message_id", ids);
    const rows = (await q) as {
      message_id: string;
      event: string;
      attempts: number;
      last_error: string | null;
      failed_at: number;
      replay_requested_at: number | null;
    }[];
    if (mode === "replay" && rows.length)
      await db("dead_letters")
        .whereIn(
          "message_id",
          rows.map((r) => r.message_id),
        )
        .update({ replay_requested_at: Date.now() });
    return rows.map((r) => ({
      messageId: r.message_id,
      event: r.event,
      attempts: r.attempts,
      lastError: r.last_error ?? "",
      failedAt: new Date(Number(r.failed_at)).toISOString(),
      replayRequested: mode === "replay" || r.replay_requested_at !== null,
    }));
  } finally {
    await db.destroy();
  }
}
