/**
 * SQLite's plan (EXPLAIN QUERY PLAN) of every statement a piece of code sends, for tests that
 * check which index a lookup uses. Without ANALYZE, SQLite has no statistics: between two
 * indexes an equality could use, its choice follows the schema and the statement, not the data,
 * so a plan checked here on a small table is the plan an embedded shop gets at any size.
 */
import type { Knex } from "knex";

export interface SqlitePlan {
  sql: string;
  /** The plan's lines, joined with " | " (e.g. `SEARCH payments USING INDEX payments_order_status (order_id=? AND status=?)`). */
  plan: string;
}

export async function sqlitePlans(knex: Knex, run: () => Promise<unknown>): Promise<SqlitePlan[]> {
  const seen: { sql: string; bindings: readonly Knex.Value[] }[] = [];
  const onQuery = (q: { sql: string; bindings?: readonly Knex.Value[] }) => seen.push({ sql: q.sql, bindings: q.bindings ?? [] });
  knex.on("query", onQuery);
  try {
    await run();
  } finally {
    knex.off("query", onQuery);
  }
  const plans: SqlitePlan[] = [];
  for (const { sql, bindings } of seen) {
    if (/^(BEGIN|COMMIT|ROLLBACK)\b/i.test(sql)) continue;
    const rows = await knex.raw<{ detail: string }[]>(`EXPLAIN QUERY PLAN ${sql}`, bindings);
    plans.push({ sql, plan: rows.map((r) => r.detail).join(" | ") });
  }
  return plans;
}
