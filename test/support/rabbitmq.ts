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

/**
 * Messages in each queue of `vhost` whose name starts with `prefix`: ready plus delivered
 * but not yet acknowledged (`rabbitmqctl list_queues`' `messages`, read from the queues
 * themselves, not from the management plugin's sampled statistics). A consumer acks after
 * its transaction commits, so 0 everywhere means nothing is waiting or being handled.
 */
export async function queueMessages(vhost: string, prefix = "", ctl: Rabbitmqctl = rabbitmqctl): Promise<Map<string, number>> {
  const out = await ctl("-q", "list_queues", "--vhost", vhost, "--no-table-headers", "name", "messages");
  const depths = new Map<string, number>();
  for (const line of out.split("\n")) {
    const [name, messages] = line.trim().split(/\s+/);
    if (name && name.startsWith(prefix) && messages !== undefined) depths.set(name, Number(messages));
  }
  return depths;
}
