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

/** SQLite's plan of one statement with its bindings, its lines joined with " | ". */
export async function sqlitePlan(knex: Knex, sql: string, bindings: readonly Knex.Value[]): Promise<string> {
  const rows = await knex.raw<{ detail: string }[]>(`EXPLAIN QUERY PLAN ${sql}`, bindings);
  return rows.map((r) => r.detail).join(" | ");
}

/** The plan of every statement `run` sends through `knex` (BEGIN, COMMIT and ROLLBACK aside). */
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
    plans.push({ sql, plan: await sqlitePlan(knex, sql, bindings) });
  }
  return plans;
}
