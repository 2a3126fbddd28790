/**
 * Every statement the embedded system runs under a short shop load (the load generator's whole
 * mix: browsing, search, carts, checkouts paid through the sandbox, recommendations), put
 * through SQLite's EXPLAIN QUERY PLAN: none that looks a row up by an id walks an index that
 * starts with `status` instead. SQLite has no statistics unless ANALYZE ran, so between two
 * indexes it takes one by the schema alone; twice it took the status one, and each lookup read
 * every row in that status (bench/RESULTS.md, #16: 11 ms per payment.create at 50,000
 * payments). This guards the whole class, in every service, against the next such statement.
 */
import assert from "node:assert/strict";
import type { Knex } from "knex";
import { after, before, describe, it } from "mocha";
import { startShopForLoad, type TestApp } from "./support/app";
import { runLoad } from "./support/load";
import { sqlitePlan } from "./support/sqlite-plans";

const ADMIN = { email: "plans-admin@example.com", password: "plans-admin-password" };

/** An equality on an id column (`id`, `order_id`, `user_id`, ...), as knex and our Statements write it. */
const ID_EQUALITY = /`(\w*_)?id` = \?/;
/** A plan step that searches an index by its leading `status` column. */
const STATUS_WALK = /USING (COVERING )?INDEX (\w+) \(status=/;

describe("SQLite plans under a shop load (embedded)", () => {
  let app: TestApp;

  before(async () => {
    app = await startShopForLoad(ADMIN);
  });
  after(async () => app?.stop());

  it("no statement that looks up by an id walks a status index instead, in any service", async function () {
    this.timeout(120_000);
    // Each service's own database, and the statements sent to it (the first bindings seen for each text).
    const dbs = new Map<string, Knex>();
    for (const svc of app.broker.services) {
      const db = (svc as unknown as { db?: Knex }).db;
      if (db && typeof db.raw === "function" && !dbs.has(svc.name)) dbs.set(svc.name, db);
    }
    assert.ok(
      ["order", "payment", "product", "cart", "notification"].every((s) => dbs.has(s)),
      [...dbs.keys()].join(", "),
    );
    const seen = new Map<string, { service: string; sql: string; bindings: readonly Knex.Value[] }>();
    const listeners = [...dbs].map(([service, db]) => {
      const onQuery = (q: { sql: string; bindings?: readonly Knex.Value[] }) => {
        if (/^(select|update|delete)\b/i.test(q.sql) && !seen.has(`${service} ${q.sql}`))
          seen.set(`${service} ${q.sql}`, { service, sql: q.sql, bindings: q.bindings ?? [] });
      };
      db.on("query", onQuery);
      return () => db.off("query", onQuery);
    });
    let summary: Awaited<ReturnType<typeof runLoad>>;
    try {
      // The load generator's own spec's seed (test/support/load.int.spec.ts), for a shorter run:
      // enough for every route and a few paid checkouts, little load beside the tier's other file.
      summary = await runLoad({ urls: [app.baseUrl], shoppers: 4, durationS: 5, thinkMs: 20, seed: 7, admin: ADMIN });
    } finally {
      for (const off of listeners) off();
    }
    // What the plans are read for: the statements of checkouts that went all the way.
    assert.ok(
      summary.orders.paid > 0,
      `checkouts paid: ${JSON.stringify(summary.orders)}; errors: ${JSON.stringify(summary.errors.byKind)}`,
    );

    const walks: string[] = [];
    for (const { service, sql, bindings } of seen.values()) {
      if (!ID_EQUALITY.test(sql)) continue;
      const plan = await sqlitePlan(dbs.get(service)!, sql, bindings);
      if (STATUS_WALK.test(plan)) walks.push(`${service}: ${sql}\n    ${plan}`);
    }
    assert.ok(seen.size > 30, `only ${seen.size} distinct statements seen`);
    assert.deepEqual(walks, [], `lookups by id that walk a status index:\n${walks.join("\n")}`);
  });
});
