import type { Knex } from "knex";
import { createEventTables, dropEventTables } from "../../../lib/events/migrations";

// The user service's outbox (it publishes `user.registered`), inbox and dead letters.
export async function up(knex: Knex): Promise<void> {
  await createEventTables(knex);
}

export async function down(knex: Knex): Promise<void> {
  await dropEventTables(knex);
}
