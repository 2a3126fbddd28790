/**
 * Test isolation on the machine's shared RabbitMQ (127.0.0.1:5672, guest/guest): each call creates a
 * uniquely named vhost with `rabbitmqctl` (needs root) and `destroy()` deletes it with everything in
 * it. The broker itself is never restarted or reconfigured.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";

export interface RabbitVhost {
  vhost: string;
  /** amqp:// URI of the vhost, for amqplib / Moleculer's AMQP transporter. */
  uri: string;
  /** Delete the vhost. Safe to call more than once. */
  destroy(): Promise<void>;
}

const rabbitmqctl = (...args: string[]) => promisify(execFile)("rabbitmqctl", args, { timeout: 30_000 });

export async function createVhost(): Promise<RabbitVhost> {
  const vhost = `meridian-test-${randomBytes(6).toString("hex")}`;
  let deleted: Promise<void> | null = null;
  const destroy = () => (deleted ??= rabbitmqctl("delete_vhost", vhost).then(() => undefined));
  await rabbitmqctl("add_vhost", vhost);
  try {
    await rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*");
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }
  return { vhost, uri: `amqp://guest:guest@127.0.0.1:5672/${encodeURIComponent(vhost)}`, destroy };
}
