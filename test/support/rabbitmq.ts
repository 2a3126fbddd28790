/**
 * Test isolation on the machine's shared RabbitMQ (`TEST_RABBITMQ_URL`, by default
 * amqp://guest:guest@127.0.0.1:5672): each call creates a uniquely named vhost with
 * `rabbitmqctl` (needs root) and `destroy()` deletes it with everything in it. The broker
 * itself is never restarted or reconfigured.
 *
 * The vhost's URI is `TEST_RABBITMQ_URL`'s host, port and credentials with the vhost as
 * its path, and its user is the one given the vhost's permissions. AMQP cannot create a
 * vhost, so `rabbitmqctl` on this machine still does: the URL must name a broker that this
 * machine's `rabbitmqctl` manages (its default node, or the one `RABBITMQ_NODENAME` names).
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import amqp, { type Channel } from "amqplib";
import { RABBITMQ_URL } from "./servers";

export interface RabbitVhost {
  vhost: string;
  /** amqp:// URI of the vhost, for amqplib / Moleculer's AMQP transporter. */
  uri: string;
  /** Delete the vhost. Safe to call more than once. */
  destroy(): Promise<void>;
}

/** Runs a `rabbitmqctl` command; resolves with its standard output. */
export type Rabbitmqctl = (...args: string[]) => Promise<string>;

const rabbitmqctl: Rabbitmqctl = async (...args) => (await promisify(execFile)("rabbitmqctl", args, { timeout: 30_000 })).stdout;

/** `base` (an amqp(s):// URL) with `vhost` as its path; any vhost `base` names is replaced. */
export function vhostUri(base: string, vhost: string): string {
  const url = new URL(base);
  url.pathname = `/${encodeURIComponent(vhost)}`;
  return url.toString();
}

export async function createVhost(base = RABBITMQ_URL): Promise<RabbitVhost> {
  const vhost = `meridian-test-${randomBytes(6).toString("hex")}`;
  const user = decodeURIComponent(new URL(base).username) || "guest";
  let deleted: Promise<void> | null = null;
  const destroy = () => (deleted ??= rabbitmqctl("delete_vhost", vhost).then(() => undefined));
  await rabbitmqctl("add_vhost", vhost);
  try {
    await rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*");
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }
  return { vhost, uri: vhostUri(base, vhost), destroy };
}

/** The vhost an amqp(s):// URI names ("/" when it names none). */
export function vhostOf(uri: string): string {
  const path = new URL(uri).pathname;
  return path.length > 1 ? decodeURIComponent(path.slice(1)) : "/";
}

/**
 * Messages in each queue whose name starts with `prefix`, in the vhost `uri` names: ready
 * plus delivered but not yet acknowledged. A consumer acks after its transaction commits, so
 * 0 everywhere means nothing is waiting or being handled.
 *
 * `rabbitmqctl list_queues`' counts of a quorum queue are its metrics, refreshed on its tick
 * (every 5 s on 3.10) and 0 for the first tick after a restart. Measured: 100 confirmed
 * messages read as 0 for 4 s. A proof that waited for "no message in the queues" on those
 * counts declared quiet over a backlog (the CI failure of stop 31). So a quorum queue is also
 * read live: its ready messages by a passive declare (the leader's state), read before and
 * after its unacknowledged ones, which come from the channels consuming it (`list_channels`,
 * each channel's own state), so that a message moving from ready to delivered in between is
 * counted. (Not the larger of that and the metrics: those lag after a drain too, and every
 * wait would last until the next tick.) The limits: a passive declare answers 0 when the
 * leader does not answer within 250 ms (an election), which is why `untilQuiet` wants two
 * quiet readings in a row; a channel consuming several queues has its
 * unacknowledged messages counted on the first (the event consumers use one per queue). A
 * classic queue's `list_queues` counts come from the queue process and are live.
 */
export async function queueMessages(uri: string, prefix = "", ctl: Rabbitmqctl = rabbitmqctl): Promise<Map<string, number>> {
  const vhost = vhostOf(uri);
  const rows = (await ctl("-q", "list_queues", "--vhost", vhost, "--no-table-headers", "name", "type", "messages"))
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter(([name, type, messages]) => name?.startsWith(prefix) && type !== undefined && messages !== undefined);
  const depths = new Map<string, number>(rows.map(([name, , messages]) => [name, Number(messages)]));
  const quorum = rows.filter(([, type]) => type === "quorum").map(([name]) => name);
  if (!quorum.length) return depths;

  const conn = await amqp.connect(uri);
  conn.on("error", () => undefined); // a broker stopping in a fault test: the reads below fail instead
  try {
    const before = await readyMessages(conn, quorum);
    const unacked = await unackedByQueue(vhost, ctl);
    const after = await readyMessages(conn, quorum);
    for (const name of quorum) {
      if (!before.has(name) && !after.has(name))
        depths.delete(name); // deleted since it was listed
      else depths.set(name, Math.max(before.get(name) ?? 0, after.get(name) ?? 0) + (unacked.get(name) ?? 0));
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
  return depths;
}

/** Ready messages by passive declare; a queue deleted since (404) is left out. */
async function readyMessages(conn: amqp.ChannelModel, queues: string[]): Promise<Map<string, number>> {
  const ready = new Map<string, number>();
  let ch: Channel | undefined;
  for (const name of queues) {
    if (!ch) {
      ch = await conn.createChannel();
      ch.on("error", () => undefined);
    }
    try {
      ready.set(name, (await ch.checkQueue(name)).messageCount);
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      ch = undefined; // the failed declare closed the channel
    }
  }
  await ch?.close().catch(() => undefined);
  return ready;
}

/** Unacknowledged messages per queue, from the channels consuming them. */
async function unackedByQueue(vhost: string, ctl: Rabbitmqctl): Promise<Map<string, number>> {
  const byChannel = new Map<string, number>();
  for (const line of (await ctl("-q", "list_channels", "--no-table-headers", "pid", "messages_unacknowledged")).split("\n")) {
    const [pid, unacked] = line.trim().split(/\s+/);
    if (pid && unacked !== undefined) byChannel.set(pid, Number(unacked));
  }
  const unacked = new Map<string, number>();
  const counted = new Set<string>();
  for (const line of (await ctl("-q", "list_consumers", "--vhost", vhost, "--no-table-headers", "queue_name", "channel_pid")).split("\n")) {
    const [queue, pid] = line.trim().split(/\s+/);
    if (!queue || !pid || counted.has(pid)) continue;
    counted.add(pid);
    unacked.set(queue, (unacked.get(queue) ?? 0) + (byChannel.get(pid) ?? 0));
  }
  return unacked;
}
