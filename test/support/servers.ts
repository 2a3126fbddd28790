/**
 * The machine's shared servers, as the tests reach them. CI (.ci/run) makes sure they
 * answer; a test never skips because one is missing, it fails. Each run isolates itself
 * with a unique namespace: its own MariaDB databases, Redis key prefix and RabbitMQ vhost.
 */
import { randomBytes } from "node:crypto";

export const MYSQL_URL = process.env.TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306/";
export const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
export const RABBITMQ_URL = process.env.TEST_RABBITMQ_URL ?? "amqp://guest:guest@127.0.0.1:5672";

/** A namespace no other run uses: `t-<10 hex>`. */
export function uniqueNamespace(prefix = "t"): string {
  return `${prefix}-${randomBytes(5).toString("hex")}`;
}
