import type { Knex } from "knex";

// One row per user whose notifications are written: the inbox transaction that adds a user's
// notification locks that row first, so one user's notifications commit in `seq` order (the
// live feed reads them by `seq`: a row committing after a higher `seq` was read would be
// skipped). Other users' notifications are not held up. The (user_id, seq) index serves the
// feed's reads.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("notification_feeds", (t) => {
    t.string("user_id", 64).primary();
    t.bigInteger("updated_at").notNullable();
  });
  await knex.schema.alterTable("notifications", (t) => {
    t.index(["user_id", "seq"], "notifications_user_seq");
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("notifications", (t) => {
    t.dropIndex(["user_id", "seq"], "notifications_user_seq");
  });
  await knex.schema.dropTable("notification_feeds");
}
