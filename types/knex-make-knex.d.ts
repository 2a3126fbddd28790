/**
 * knex's own constructor of a knex instance around a client (what `knex(config)` and each of
 * its transactions call), and the `context` every instance carries, neither declared by knex's
 * typings. lib/db.ts builds its SQLite transactions' instances on them (knex ~3.3, pinned in
 * package.json; lib/db.transaction.int.spec.ts runs every way the code uses an instance).
 */
declare module "knex/lib/knex-builder/make-knex" {
  import type { Knex } from "knex";
  /** What an instance's methods call through `this.context`: the client they run on, and a builder on it. */
  interface KnexContext {
    client: Knex.Client;
    queryBuilder(): Knex.QueryBuilder;
  }
  function makeKnex(client: Knex.Client): Knex & { context: KnexContext };
  export = makeKnex;
}
