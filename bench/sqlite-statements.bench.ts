/**
 * `npm run bench:sqlite` (#16): what the prepared-statement cache of
 * lib/db.ts saves per SQLite query through knex, in one run: the same point read (a
 * primary-key lookup, the shape of `user.me` and `product.get`) through
 *   1. better-sqlite3 with one prepared statement (the ceiling),
 *   2. knex as lib/db.ts configures it (statements cached per connection),
 *   3. knex without the cache (as knex's dialect does by itself: prepare per query),
 * each 3 rounds of 20,000 queries after a warm-up; µs per query and the ratio to the ceiling.
 * Then a transaction of a reserve's shape (read a row by key, update it, insert a row) through
 *   1. better-sqlite3 with prepared statements and BEGIN/COMMIT (the ceiling),
 *   2. knex's builder in lib/db.ts inTransaction,
 *   3. the same statements compiled once (lib/db.ts Statement) in inTransaction,
 *   4. the same Statements in knex's own transaction (`db.transaction`, what inTransaction
 *      used on SQLite before its own: the price of knex's transaction framing),
 * µs per transaction, and the counter the updates moved checked against the transactions run.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import knexFactory, { type Knex } from "knex";
import { loadConfig } from "../lib/config";
import { createKnex, inTransaction, param, Statement } from "../lib/db";
import { progress } from "../lib/progress";
import { markdownTable, summaryFigure } from "./support";

const N = 20_000;
const ROUNDS = 3;
/** Transactions per round of the transaction cases. */
const TX = 5_000;

/**
 * Best of ROUNDS rounds of TX runs of `work` (after a warm-up): wall µs per run, and the
 * process's CPU µs per run (with the garbage collector's threads, which knex keeps busy).
 */
async function measureTx(label: string, work: (i: number) => unknown): Promise<{ wall: number; cpu: number }> {
  for (let i = 0; i < 500; i++) await work(i);
  const bar = progress(label, ROUNDS);
  const best = { wall: Infinity, cpu: Infinity };
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    for (let i = 0; i < TX; i++) await work(i);
    const c = process.cpuUsage(c0);
    best.wall = Math.min(best.wall, Number(process.hrtime.bigint() - t0) / 1e3 / TX);
    best.cpu = Math.min(best.cpu, (c.user + c.system) / TX);
    bar.update(r + 1);
  }
  bar.stop();
  return best;
}

// The transaction cases' three statements, written once for lib/db.ts Statement.
const readCounter = new Statement<{ id: string }, { id: string; n: number }>((db) =>
  db("c")
    .where({ id: param("id") })
    .first("id", "n"),
);
const bumpCounter = new Statement<{ id: string; now: number }>((db) =>
  db("c")
    .where({ id: param("id") })
    .update({ n: db.raw("n + 1"), updated_at: param("now") }),
);
const logBump = new Statement<{ id: string; at: number }>((db) => db("log").insert({ counter_id: param("id"), at: param("at") }));

async function measure(label: string, query: (i: number) => unknown): Promise<number> {
  for (let i = 0; i < 2000; i++) await query(i); // warm-up
  const rounds: number[] = [];
  const bar = progress(label, ROUNDS);
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) {
      const row = (await query(i)) as { id?: string } | undefined;
      if (row?.id !== `id${i % 100}`) throw new Error(`${label}: wrong row`);
    }
    rounds.push(Number(process.hrtime.bigint() - t0) / 1e3 / N);
    bar.update(r + 1);
  }
  bar.stop();
  return Math.min(...rounds);
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-bench-sqlite-"));
  try {
    const cached = createKnex(loadConfig({ DATA_DIR: dir }), "bench");
    await cached.schema.createTable("t", (t) => {
      t.string("id").primary();
      t.string("name");
    });
    await cached("t").insert(Array.from({ length: 100 }, (_, i) => ({ id: `id${i}`, name: `n${i}` })));
    const file = path.join(dir, "bench.sqlite");
    const plain: Knex = knexFactory({ client: "better-sqlite3", connection: { filename: file }, useNullAsDefault: true });
    const raw = new Database(file);
    const statement = raw.prepare("select * from `t` where `id` = ? limit 1");

    const ceiling = await measure("better-sqlite3, prepared once", (i) => statement.get(`id${i % 100}`));
    const withCache = await measure("knex, lib/db.ts (cached)", (i) =>
      cached("t")
        .where({ id: `id${i % 100}` })
        .first(),
    );
    const without = await measure("knex, prepare per query", (i) =>
      plain("t")
        .where({ id: `id${i % 100}` })
        .first(),
    );
    // A reserve's shape: a read by key, an update of that row, an insert; each case moves the counters.
    await cached.schema.createTable("c", (t) => {
      t.string("id").primary();
      t.integer("n").notNullable();
      t.bigInteger("updated_at").notNullable();
    });
    await cached.schema.createTable("log", (t) => {
      t.increments("seq");
      t.string("counter_id").notNullable().index();
      t.bigInteger("at").notNullable();
    });
    await cached("c").insert(Array.from({ length: 100 }, (_, i) => ({ id: `c${i}`, n: 0, updated_at: 0 })));
    const [rawRead, rawBump, rawLog] = [
      "select `id`, `n` from `c` where `id` = ?",
      "update `c` set `n` = n + 1, `updated_at` = ? where `id` = ?",
      "insert into `log` (`at`, `counter_id`) values (?, ?)",
    ].map((sql) => raw.prepare(sql));
    const txCeiling = await measureTx("transaction: better-sqlite3, prepared", (i) => {
      const id = `c${i % 100}`;
      raw.exec("BEGIN");
      if (!rawRead.get(id)) throw new Error("missing counter");
      rawBump.run(Date.now(), id);
      rawLog.run(Date.now(), id);
      raw.exec("COMMIT");
    });
    const txBuilder = await measureTx("transaction: knex builder", (i) =>
      inTransaction(cached, async (trx) => {
        const id = `c${i % 100}`;
        if (!(await trx("c").where({ id }).first("id", "n"))) throw new Error("missing counter");
        await trx("c")
          .where({ id })
          .update({ n: trx.raw("n + 1"), updated_at: Date.now() });
        await trx("log").insert({ counter_id: id, at: Date.now() });
      }),
    );
    const statements = async (trx: Knex.Transaction, i: number) => {
      const id = `c${i % 100}`;
      if (!(await readCounter.run(trx, { id })).rows[0]) throw new Error("missing counter");
      await bumpCounter.run(trx, { id, now: Date.now() });
      await logBump.run(trx, { id, at: Date.now() });
    };
    const txStatement = await measureTx("transaction: Statement (lib/db.ts)", (i) => inTransaction(cached, (trx) => statements(trx, i)));
    const txKnex = await measureTx("transaction: Statement in knex's transaction", (i) => cached.transaction((trx) => statements(trx, i)));
    // Every case's transactions committed whole: each moved one counter and logged it once.
    const runs = 4 * (500 + ROUNDS * TX);
    const { total } = await cached("c").sum({ total: "n" }).first<{ total: number }>();
    const { logged } = await cached("log").count({ logged: "*" }).first<{ logged: number }>();
    if (Number(total) !== runs || Number(logged) !== runs) throw new Error(`counters ${total} and log ${logged}, expected ${runs}`);

    const row = (name: string, us: number) => [name, us.toFixed(1), `${((ceiling / us) * 100).toFixed(0)} %`];
    const txRow = (name: string, t: { wall: number; cpu: number }) => [
      name,
      t.wall.toFixed(1),
      t.cpu.toFixed(1),
      `${((txCeiling.cpu / t.cpu) * 100).toFixed(0)} %`,
    ];
    process.stdout.write(
      `\nNode ${process.version}, ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, load ${os.loadavg()[0].toFixed(2)}; best of ${ROUNDS} rounds of ${N} point reads\n\n` +
        markdownTable(
          ["path", "µs per query", "vs prepared once"],
          [
            row("better-sqlite3, prepared once", ceiling),
            row("knex, statements cached (lib/db.ts)", withCache),
            row("knex, prepare per query", without),
          ],
          [false, true, true],
        ) +
        `\n\nThe cache saves ${(without - withCache).toFixed(1)} µs per query (${(((without - withCache) / without) * 100).toFixed(0)} %).\n\n` +
        `A transaction of a reserve's shape (read by key, update, insert), best of ${ROUNDS} rounds of ${TX}:\n\n` +
        markdownTable(
          ["path", "µs per transaction", "CPU µs per transaction", "CPU vs prepared"],
          [
            txRow("better-sqlite3, prepared, BEGIN/COMMIT", txCeiling),
            txRow("knex builder in inTransaction (lib/db.ts)", txBuilder),
            txRow("Statement (lib/db.ts) in inTransaction", txStatement),
            txRow("Statement in knex's own transaction", txKnex),
          ],
          [false, true, true, true],
        ) +
        `\n\nStatement saves ${((txBuilder.cpu - txStatement.cpu) / 3).toFixed(1)} µs of CPU per statement; knex's own transaction costs ~${(txKnex.cpu - txStatement.cpu).toFixed(0)} µs of CPU more than inTransaction's on SQLite, which costs ~${(txStatement.cpu - txCeiling.cpu).toFixed(0)} µs more than BEGIN/COMMIT on the driver; checked: ${runs} transactions, each counted and logged once.\n`,
    );
    // Headline figures for `npm run bench` (BENCH_SUMMARY); the issue sets no targets for these.
    summaryFigure(
      "sqlite",
      "knex point read, statements cached (lib/db.ts)",
      `${withCache.toFixed(1)} µs (${((ceiling / withCache) * 100).toFixed(0)} % of prepared once)`,
    );
    summaryFigure(
      "sqlite",
      "saved by the statement cache per query",
      `${(without - withCache).toFixed(1)} µs (${(((without - withCache) / without) * 100).toFixed(0)} %)`,
    );
    summaryFigure(
      "sqlite",
      "transaction of 3 statements: knex builder → Statement (lib/db.ts)",
      `${txBuilder.cpu.toFixed(0)} → ${txStatement.cpu.toFixed(0)} µs CPU (prepared, BEGIN/COMMIT on the driver: ${txCeiling.cpu.toFixed(0)} µs)`,
    );
    summaryFigure(
      "sqlite",
      "the same Statements: knex's transaction → inTransaction's own (lib/db.ts)",
      `${txKnex.cpu.toFixed(0)} → ${txStatement.cpu.toFixed(0)} µs CPU`,
    );
    summaryFigure("sqlite", "check", "OK (every row checked; every transaction counted once)", undefined, true);
    raw.close();
    await Promise.all([cached.destroy(), plain.destroy()]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
