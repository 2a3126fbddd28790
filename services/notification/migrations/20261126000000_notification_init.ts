import type { Knex } from "knex";
import { createEventTables, dropEventTables } from "../../../lib/events/migrations";

// In-app notifications, the e-mail outbox, and the service's outbox/inbox (it consumes the
// order service's business events). Times are epoch milliseconds (BIGINT).
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("notifications", (t) => {
    // Insert order: the tie-break of "newest first" within one millisecond.
    t.bigIncrements("seq");
    t.string("id", 36).notNullable().unique();
    t.string("user_id", 64).notNullable();
    t.string("type", 32).notNullable();
    t.string("title", 300).notNullable();
    t.text("body").notNullable();
    t.text("data").notNullable();
    t.bigInteger("read_at").nullable();
    t.bigInteger("created_at").notNullable();
    // The business event it came from: one notification per event, whatever the inbox says.
    t.string("source_message_id", 64).notNullable().unique();
    t.index(["user_id", "created_at"], "notifications_user_created");
    t.index(["user_id", "read_at", "created_at"], "notifications_user_unread");
  });
  // The e-mail outbox: written with its notification in the event handler's transaction,
  // sent by the sender loop of any replica (claim, send, mark).
  await knex.schema.createTable("emails", (t) => {
    t.string("id", 36).primary();
    // One e-mail per business event: the unique key is the event's message id.
    t.string("source_message_id", 64).notNullable().unique();
    t.string("notification_id", 36).notNullable().unique();
    t.string("user_id", 64).notNullable();
    t.string("type", 32).notNullable();
    // pending → sent (SMTP accepted it) | stored (no SMTP_URL: kept here) | failed (gave up)
    t.string("status", 16).notNullable();
    // The Message-ID header, stable across resends so receivers can drop a duplicate.
    t.string("message_id_header", 200).notNullable();
    // Resolved when sending (the user's current address and name).
    t.string("to_address", 320).nullable();
    t.string("subject", 400).nullable();
    t.text("text", "mediumtext").nullable();
    t.text("html", "mediumtext").nullable();
    t.integer("attempts").notNullable().defaultTo(0);
    t.bigInteger("next_attempt_at").notNullable();
    // A replica's claim: nobody else takes the row before `claimed_until`.
    t.string("claimed_by", 100).nullable();
    t.bigInteger("claimed_until").nullable();
    t.bigInteger("last_attempt_at").nullable();
    t.string("last_error", 500).nullable();
    t.bigInteger("sent_at").nullable();
    t.bigInteger("created_at").notNullable();
    t.index(["status", "next_attempt_at"], "emails_due");
    t.index(["user_id", "created_at"], "emails_user");
  });
  await createEventTables(knex);
}

export async function down(knex: Knex): Promise<void> {
  await dropEventTables(knex);
  await knex.schema.dropTableIfExists("emails");
  await knex.schema.dropTableIfExists("notifications");
}
