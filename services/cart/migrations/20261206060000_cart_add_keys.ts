import type { Knex } from "knex";

// `Idempotency-Key` on `POST /api/cart/items`: an add is not idempotent by itself (it adds to
// the line), so a client or an edge that sends it again after a lost answer would add twice.
// The key is written in the add's own transaction, so the add and its key commit together.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("cart_add_keys", (t) => {
    // Scoped per user: one user's key never collides with another's.
    t.string("user_id", 64).notNullable();
    t.string("idem_key", 200).notNullable();
    // sha256 of the request (lib/idempotency.ts requestFingerprint): the same key with another body is a 409.
    t.string("fingerprint", 64).notNullable();
    t.bigInteger("created_at").notNullable();
    t.primary(["user_id", "idem_key"]);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("cart_add_keys");
}
