/**
 * Tables of the event layer, created in each service's own database by one of that
 * service's migrations (`createEventTables` in `up`, `dropEventTables` in `down`). They run
 * on SQLite and MariaDB alike; times are epoch milliseconds (BIGINT) as everywhere else.
 */
import type { Knex } from "knex";

export async function createEventTables(knex: Knex): Promise<void> {
  // Events this service published, written in the same transaction as the state change.
  await knex.schema.createTable("outbox", (t) => {
    // Publication order; the relay claims the lowest pending `seq` first.
    t.bigIncrements("seq");
    // The message id on the wire (AMQP `messageId`), what consumers dedupe on.
    t.string("id", 36).notNullable().unique();
    t.string("event", 100).notNullable();
    t.text("payload", "mediumtext").notNullable();
    t.bigInteger("occurred_at").notNullable();
    // Embedded delivery's retry backoff: not delivered before this time.
    t.bigInteger("available_at").notNullable();
    t.integer("attempts").notNullable().defaultTo(0);
    t.string("last_error", 500).nullable();
    // Set only after the broker confirmed the message (or every local consumer handled it).
    t.bigInteger("sent_at").nullable();
    t.index(["sent_at", "seq"], "outbox_pending");
  });
  // Messages this service applied: the primary key is the dedupe guard.
  await knex.schema.createTable("inbox", (t) => {
    t.string("message_id", 64).primary();
    t.string("event", 100).notNullable();
    t.bigInteger("received_at").notNullable().index("inbox_received_at");
  });
  // Embedded mode's dead-letter queue (cluster mode uses a RabbitMQ queue).
  await knex.schema.createTable("dead_letters", (t) => {
    t.string("message_id", 64).primary();
    t.string("event", 100).notNullable();
    t.text("envelope", "mediumtext").notNullable();
    t.integer("attempts").notNullable();
    t.string("last_error", 500).nullable();
    t.bigInteger("failed_at").notNullable();
    t.bigInteger("replay_requested_at").nullable();
  });
}

export async function dropEventTables(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("dead_letters");
  await knex.schema.dropTableIfExists("inbox");
  await knex.schema.dropTableIfExists("outbox");
}
