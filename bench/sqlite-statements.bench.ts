/**
 * `npm run bench:sqlite` (#16): what the prepared-statement cache of
 * lib/db.ts saves per SQLite query through knex, in one run: the same point read (a
 * primary-key lookup, the shape of `user.me` and `product.get`) through
 *   1. better-sqlite3 with one prepared statement (the ceiling),
 *   2. knex as lib/db.ts configures it (statements cached per connection),
 *   3. knex without the cache (as knex's dialect does by itself: prepare per query),
 * each 3 rounds of 20,000 queries after a warm-up; µs per query and the ratio to the ceiling.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import knexFactory, { type Knex } from "knex";
import { loadConfig } from "../lib/config";
import { createKnex } from "../lib/db";
import { progress } from "../lib/progress";
import { markdownTable, summaryFigure } from "./support";

const N = 20_000;
const ROUNDS = 3;

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
    const row = (name: string, us: number) => [name, us.toFixed(1), `${((ceiling / us) * 100).toFixed(0)} %`];
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
        `\n\nThe cache saves ${(without - withCache).toFixed(1)} µs per query (${(((without - withCache) / without) * 100).toFixed(0)} %).\n`,
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
    summaryFigure("sqlite", "check", "OK (every row checked)", undefined, true);
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
