/**
 * Knex connections and migrations, one database per service: its own SQLite file in
 * DATA_DIR (embedded) or its own MariaDB/MySQL database on MYSQL_URL (cluster).
 * No service reads another's tables (docs/architecture.md, "Who owns what").
 */
import fs from "node:fs";
import path from "node:path";
import { ensurePrivateDir, ensurePrivateFile } from "./private-files";
import makeKnex from "knex/lib/knex-builder/make-knex";
import knexFactory, { type Knex } from "knex";
import type { AppConfig } from "./config";
import { withTimeout } from "./timeout";

export type Db = Knex;

export function databaseName(config: Pick<AppConfig, "namespace">, service: string): string {
  const ns = config.namespace ? `${config.namespace.replace(/-/g, "_")}_` : "";
  return `meridian_${ns}${service}`;
}

function mysqlConnection(mysqlUrl: string, database?: string): Knex.MySql2ConnectionConfig {
  const u = new URL(mysqlUrl);
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 3306,
    user: decodeURIComponent(u.username || "root"),
    password: decodeURIComponent(u.password),
    database,
    // Timestamps are stored as epoch milliseconds (BIGINT), so no time-zone conversion
    // applies; `supportBigNumbers` keeps BIGINT as a number while it fits in 2^53.
    supportBigNumbers: true,
    charset: "utf8mb4",
  };
}

export function createKnex(config: AppConfig, service: string): Knex {
  if (config.mysqlUrl) {
    return knexFactory({
      client: "mysql2",
      connection: mysqlConnection(config.mysqlUrl, databaseName(config, service)),
      pool: { min: 0, max: 10 },
    });
  }
  // Owner-only files (lib/private-files.ts): created 0600 before SQLite opens them.
  ensurePrivateDir(config.dataDir);
  const filename = path.join(config.dataDir, `${service}.sqlite`);
  ensurePrivateFile(filename);
  // A journal left by an older install (or a crash) is narrowed too; new ones take the file's mode.
  for (const suffix of ["-wal", "-shm"]) if (fs.existsSync(filename + suffix)) ensurePrivateFile(filename + suffix);
  return knexFactory({
    client: "better-sqlite3",
    connection: { filename },
    useNullAsDefault: true,
    // knex keeps one connection for SQLite, so transactions are serialized in-process;
    // WAL + busy_timeout let a second process (migrate, REPL) share the file safely.
    pool: {
      afterCreate(conn: SqliteConnection, done: (err: Error | null, conn: unknown) => void) {
        conn.pragma("journal_mode = WAL");
        conn.pragma("foreign_keys = ON");
        conn.pragma("busy_timeout = 5000");
        cachePreparedStatements(conn);
        done(null, conn);
      },
    },
  });
}

/** The part of a better-sqlite3 connection used here. */
interface SqliteConnection extends PoolConnection {
  pragma(s: string): unknown;
  prepare(sql: string): { busy: boolean };
  exec(sql: string): unknown;
  readonly inTransaction: boolean;
}

/** Prepared statements kept per SQLite connection (the most recently used ones). */
const STATEMENT_CACHE_SIZE = 256;

/**
 * knex's better-sqlite3 dialect prepares every statement anew (measured: ~38 µs a query
 * against ~7 µs for a prepared one, #16): here the connection keeps its statements by SQL
 * text, least recently used out first. Safe because knex only calls `all`/`run` on them
 * (a statement is never left mid-iteration, `busy`) and sets no per-statement mode (no
 * `safeIntegers` option is used); SQLite re-prepares a cached statement by itself after a
 * schema change (a migration).
 */
function cachePreparedStatements(conn: SqliteConnection): void {
  const prepare = conn.prepare.bind(conn);
  const cache = new Map<string, { busy: boolean }>();
  conn.prepare = (sql: string) => {
    const cached = cache.get(sql);
    if (cached && !cached.busy) {
      cache.delete(sql);
      cache.set(sql, cached);
      return cached;
    }
    const statement = prepare(sql);
    cache.set(sql, statement);
    if (cache.size > STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
    return statement;
  };
}

/** Creates the service's MariaDB database when missing (no-op on SQLite). */
export async function ensureDatabase(config: AppConfig, service: string): Promise<void> {
  if (!config.mysqlUrl) return;
  const admin = knexFactory({ client: "mysql2", connection: mysqlConnection(config.mysqlUrl), pool: { min: 0, max: 1 } });
  try {
    await admin.raw("CREATE DATABASE IF NOT EXISTS ?? CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", [databaseName(config, service)]);
  } finally {
    await admin.destroy();
  }
}

export async function dropDatabase(config: AppConfig, service: string): Promise<void> {
  if (!config.mysqlUrl) {
    for (const suffix of ["", "-wal", "-shm"]) fs.rmSync(path.join(config.dataDir, `${service}.sqlite${suffix}`), { force: true });
    return;
  }
  const admin = knexFactory({ client: "mysql2", connection: mysqlConnection(config.mysqlUrl), pool: { min: 0, max: 1 } });
  try {
    await admin.raw("DROP DATABASE IF EXISTS ??", [databaseName(config, service)]);
  } finally {
    await admin.destroy();
  }
}

/**
 * A service's migrations, recorded under one name whatever the build (#18). knex's own
 * directory source records each file's name with its extension, so a database migrated under
 * tsx (`….ts`) was "corrupt" to the compiled build (`….js`) and the other way round. Every
 * database so far was migrated under tsx (the image ran tsx until the compiled build), so this
 * source records every migration as `<name>.ts`, the name they all already have, and loads the
 * running build's file (.ts under tsx, .js after `npm run build`; never a type declaration
 * or a source map). No stored row changes: an older version, a rollback of the image and
 * both builds read the same history.
 */
class MigrationFiles implements Knex.MigrationSource<string> {
  private readonly ext = path.extname(__filename);
  constructor(private readonly dir: string) {}

  /** The migrations by base name, in file-name order (as knex's own source sorts them). */
  async getMigrations(): Promise<string[]> {
    return fs
      .readdirSync(this.dir)
      .filter((f) => f.endsWith(this.ext) && !f.endsWith(".d.ts"))
      .map((f) => f.slice(0, -this.ext.length))
      .sort();
  }

  getMigrationName(base: string): string {
    return `${base}.ts`;
  }

  async getMigration(base: string): Promise<Knex.Migration> {
    // Loaded on demand as knex's directory source does (compiled to `require`: CommonJS, tsx or built).
    return (await import(path.join(this.dir, `${base}${this.ext}`))) as Knex.Migration;
  }
}

function migratorConfig(migrationsDir: string): Knex.MigratorConfig {
  return { tableName: "knex_migrations", migrationSource: new MigrationFiles(migrationsDir) };
}

/** Applies pending migrations. knex's lock table makes concurrent runs from replicas safe. */
export async function migrateLatest(db: Knex, migrationsDir: string): Promise<string[]> {
  const [, applied] = (await db.migrate.latest(migratorConfig(migrationsDir))) as [number, string[]];
  return applied;
}

export async function migrateDown(db: Knex, migrationsDir: string): Promise<void> {
  await db.migrate.rollback(migratorConfig(migrationsDir), true);
}

/** Undoes one applied migration by its name (`<timestamp>_<name>.ts`): a schema as it was, measured beside the current one. */
export async function migrateDownOne(db: Knex, migrationsDir: string, name: string): Promise<void> {
  const [, undone] = (await db.migrate.down({ ...migratorConfig(migrationsDir), name })) as [number, string[]];
  if (undone.length !== 1 || undone[0] !== name) throw new Error(`Expected to undo ${name}; undid ${undone.join(", ") || "nothing"}`);
}

export async function pendingMigrations(db: Knex, migrationsDir: string): Promise<number> {
  const [, pending] = (await db.migrate.list(migratorConfig(migrationsDir))) as [unknown[], unknown[]];
  return pending.length;
}

const RETRYABLE = new Set(["ER_LOCK_DEADLOCK", "ER_LOCK_WAIT_TIMEOUT", "SQLITE_BUSY"]);

/**
 * Runs `work` in a transaction (REPEATABLE READ on InnoDB unless `isolation` says otherwise,
 * serialized on SQLite whatever it says) and retries it from the start when the database
 * chose it as a deadlock victim: the transaction was rolled back whole, so running it again
 * is safe.
 */
export async function inTransaction<T>(
  db: Knex,
  work: (trx: Knex.Transaction) => Promise<T>,
  attempts = 3,
  isolation?: "read committed",
): Promise<T> {
  // Inside a transaction already: knex's nested transaction (a savepoint), which one of ours refuses.
  const framing = db.isTransaction ? undefined : FRAMING[engineOf(db)];
  // SQLite has one writer at a time and no isolation levels to choose (knex would refuse one).
  const mysqlIsolation = isolation && isMysql(db) ? isolation : undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await (framing
        ? driverTransaction(db, work, framing, mysqlIsolation)
        : db.transaction(work, mysqlIsolation ? { isolationLevel: mysqlIsolation } : undefined));
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (attempt >= attempts || !code || !RETRYABLE.has(code)) throw err;
      await new Promise((r) => setTimeout(r, 5 * attempt + Math.random() * 20));
    }
  }
}

/** A pool connection of either driver, as a driver transaction holds it. */
interface PoolConnection {
  /** knex's mark of a connection its pool must not hand out again (lib/client.js, `connectionIsDisposed`). */
  __knex__disposed?: unknown;
}

/** The part of a mysql2 connection a driver transaction and a `Statement` drive. */
interface MysqlConnection extends PoolConnection {
  query(sql: string, values: unknown[], done: (err: Error | null, result?: unknown) => void): unknown;
  destroy(): void;
}

/** How an engine's driver runs a transaction's framing statements (BEGIN, COMMIT, ROLLBACK). */
interface Framing {
  exec(connection: PoolConnection, sql: string): Promise<void>;
  /** After a failure: whether the connection may still be inside the transaction (a ROLLBACK is due). */
  mayBeOpen(connection: PoolConnection): boolean;
  /** Closes a connection whose ROLLBACK failed or went unanswered, whatever it still waits for. */
  discard(connection: PoolConnection): void;
}

/** One statement on a mysql2 connection, as knex's mysql2 dialect sends it (its `_query`). */
function mysqlQuery(connection: MysqlConnection, sql: string, values: unknown[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    connection.query(sql, values, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

/** A ROLLBACK that MariaDB has not answered by then is given up, as knex gives up its own. */
const ROLLBACK_TIMEOUT_MS = 5_000;

const FRAMING: Record<string, Framing | undefined> = {
  "better-sqlite3": {
    // The driver is synchronous: each framing statement has run when exec returns.
    exec: async (connection, sql) => void (connection as SqliteConnection).exec(sql),
    // SQLite may have rolled back by itself (e.g. a full disk) and says so.
    mayBeOpen: (connection) => (connection as SqliteConnection).inTransaction,
    // Closed by the pool at its next acquire (knex's mark); nothing can be waiting on a synchronous driver.
    discard: () => undefined,
  },
  mysql2: {
    exec: async (connection, sql) => void (await mysqlQuery(connection as MysqlConnection, sql, [])),
    // A failed statement leaves MariaDB's transaction open (only a deadlock ends it): always roll back.
    mayBeOpen: () => true,
    // Its socket ended at once: `end()`, what the pool would call, queues behind a ROLLBACK still
    // waiting for an answer and would keep the connection (and its locks) as long as that waits.
    discard: (connection) => (connection as MysqlConnection).destroy(),
  },
};

/**
 * A transaction without knex's `Transaction` (#16): the pool's connection, `BEGIN` and `COMMIT`
 * (or `ROLLBACK`) on the driver, and a knex instance bound to that connection for the work's
 * statements. Measured: knex's costs ~70 µs of CPU more on SQLite (bench:sqlite, the same
 * Statements in both) and ~140 µs more on MariaDB (bench:catalog's reserve cases: the knex
 * instance it builds per transaction, its Transaction object and promise chains, a runner for
 * each framing statement), on ~9–14 transactions per checkout (bench/RESULTS.md).
 *
 * What it keeps of knex's transaction, each proved on both engines in lib/db.transaction.int.spec.ts:
 * - the connection is the transaction's alone: it comes from knex's pool (one connection for
 *   SQLite, so a transaction, or any statement outside one, waits until the one before released
 *   it; on MariaDB transactions run side by side on their own connections, as with knex);
 * - all or nothing: an error from the work (or from COMMIT) rolls back everything it wrote, and
 *   is what the caller sees (inTransaction retries deadlocks and SQLITE_BUSY from the start);
 * - a connection whose ROLLBACK failed (or, on MariaDB, went unanswered for 5 s, knex's limit)
 *   may still be inside the transaction: it is closed (on MariaDB its socket at once, on SQLite
 *   by the pool), so the server rolls back, and marked as knex marks a broken connection, so its
 *   pool never hands it out again;
 * - a statement the work left running (not awaited) that reaches the driver once the work has
 *   ended is refused ("Transaction query already complete"): the transaction counts as complete
 *   before COMMIT is sent, so nothing runs after COMMIT outside it or inside the next one;
 * - `executionPromise` resolves with the work's answer after COMMIT and rejects after ROLLBACK;
 * - knex's `query` event for every statement, the framing included; READ COMMITTED as knex
 *   asks for it (`SET TRANSACTION ISOLATION LEVEL …` before `BEGIN`).
 * The limit: no nested transaction or savepoint (nothing here uses one; asking for one throws).
 */
async function driverTransaction<T>(
  db: Knex,
  work: (trx: Knex.Transaction) => Promise<T>,
  framing: Framing,
  isolation?: "read committed",
): Promise<T> {
  const client = db.client as Knex.Client;
  const connection = (await client.acquireConnection()) as PoolConnection;
  let completed = false;
  // Assigned by the executor, which runs at once.
  let settle!: { resolve(value: unknown): void; reject(err: unknown): void };
  const executionPromise: Knex.Transaction["executionPromise"] = new Promise((resolve, reject) => {
    // knex types executionPromise as any[] whatever the work answers; its own resolves with the
    // work's answer, and so does this one.
    settle = { resolve: resolve as (value: unknown) => void, reject };
  });
  // Rejected on every rollback: only a caller that chained on it should see that.
  executionPromise.catch(() => undefined);
  const exec = (sql: string) => {
    client.emit("query", { sql, bindings: [], method: "raw" });
    return framing.exec(connection, sql);
  };
  try {
    if (isolation) await exec(`SET TRANSACTION ISOLATION LEVEL ${isolation.toUpperCase()};`);
    await exec("BEGIN;");
    const value = await work(boundTransaction(client, connection, () => completed, executionPromise));
    // Before COMMIT is sent (as knex does): a statement the work left running that reaches the
    // driver after it is refused, never queued behind COMMIT to run outside the transaction.
    completed = true;
    await exec("COMMIT;");
    settle.resolve(value);
    return value;
  } catch (err) {
    completed = true;
    if (framing.mayBeOpen(connection)) {
      try {
        await withTimeout(exec("ROLLBACK;"), ROLLBACK_TIMEOUT_MS, "ROLLBACK");
      } catch (rollbackErr) {
        // The connection may still be inside the transaction: closed now (the server then rolls
        // back), and marked so its pool never hands it out again but opens another.
        connection.__knex__disposed = rollbackErr;
        framing.discard(connection);
      }
    }
    // The work's (or COMMIT's) error is the one to report.
    settle.reject(err);
    throw err;
  } finally {
    await client.releaseConnection(connection);
  }
}

/** Refuses what a driver transaction does not do. */
const refuseUnsupported = (): never => {
  throw new Error("inTransaction: no nested transaction, savepoint, stream or explicit commit/rollback (the work's promise decides)");
};

/** A statement on a transaction that has ended (knex's refusal, for builders and `Statement`s alike). */
const completedError = (sql: string | undefined) =>
  new Error(`Transaction query already complete, run with DEBUG=knex:tx for more info${sql ? `: ${sql}` : ""}`);

/**
 * Per pool client, a knex instance made once (knex's own construction, ~100 methods and
 * properties) whose methods every driver transaction's instance inherits: making one per
 * transaction, as knex does, was a quarter of a short transaction's CPU (profiled).
 */
const transactionPrototypes = new WeakMap<Knex.Client, ReturnType<typeof makeKnex>>();

/**
 * The knex instance a driver transaction's work gets: a function like knex's own (a builder on
 * the table) over a context of its own, whose client answers only `connection` and refuses
 * statements once the transaction is over (knex's makeTxClient, minus its listeners: events go
 * straight to the pool's client); every other method is the shared prototype's, which reaches
 * the client through `this.context` as knex's instances do.
 */
function boundTransaction(
  client: Knex.Client,
  connection: PoolConnection,
  isCompleted: () => boolean,
  executionPromise: Knex.Transaction["executionPromise"],
): Knex.Transaction {
  const trxClient = Object.create(Object.getPrototypeOf(client) as object) as Knex.Client;
  // What knex's makeTxClient copies from the pool's client (knex types some of it as any).
  const from: {
    version?: string;
    config: Knex.Config;
    driver: unknown;
    connectionSettings: object;
    valueForUndefined: unknown;
    logger: unknown;
  } = client;
  Object.assign(trxClient, {
    version: from.version,
    config: from.config,
    driver: from.driver,
    connectionSettings: from.connectionSettings,
    valueForUndefined: from.valueForUndefined,
    logger: from.logger,
    transacting: true,
    emit: (event: string, ...args: unknown[]) => client.emit(event, ...args),
    acquireConnection: () => Promise.resolve(connection),
    releaseConnection: () => Promise.resolve(),
  });
  const query = trxClient.query.bind(trxClient) as (conn: unknown, obj: unknown) => Promise<unknown>;
  trxClient.query = (conn: unknown, obj: { sql?: string } | string) => {
    if (conn !== connection) return Promise.reject(new Error("Invalid connection for transaction query."));
    if (isCompleted()) return Promise.reject(completedError(typeof obj === "string" ? obj : obj.sql));
    return query(conn, obj);
  };
  trxClient.stream = refuseUnsupported;

  let prototype = transactionPrototypes.get(client);
  if (!prototype) {
    // Its own client is never used: every instance below brings its context's.
    prototype = makeKnex(Object.create(Object.getPrototypeOf(client) as object) as Knex.Client);
    transactionPrototypes.set(client, prototype);
  }
  const context = Object.create(prototype.context, { client: { value: trxClient } }) as typeof prototype.context;
  // knex's own instance is this function too (its `options` only matter to PostgreSQL's ONLY).
  const trx = inheriting((tableName: Knex.TableDescriptor) => context.queryBuilder().table(tableName), prototype);
  // `transaction` is one of knex's non-writable properties (inherited here): defined, not assigned.
  Object.defineProperty(trx, "transaction", { value: refuseUnsupported });
  return Object.assign(trx, {
    context,
    isTransaction: true,
    isCompleted,
    executionPromise,
    savepoint: refuseUnsupported,
    commit: refuseUnsupported,
    rollback: refuseUnsupported,
    query: refuseUnsupported,
  });
}

/** `fn` with `prototype` as its prototype, typed as what it now answers to. */
function inheriting<P extends object>(fn: object, prototype: P): P {
  return Object.setPrototypeOf(fn, prototype) as P;
}

/** The rows a raw statement answers (a SELECT, or an INSERT … RETURNING): mysql2 answers [rows, fields], better-sqlite3 the rows. */
export async function rawRows<Row>(db: Knex, sql: string, bindings: readonly Knex.RawBinding[]): Promise<Row[]> {
  const result = await db.raw<Row[] | [Row[], unknown]>(sql, bindings);
  return isMysql(db) ? (result as [Row[], unknown])[0] : (result as Row[]);
}

/** MariaDB (mysql2) rather than SQLite: for the few statements the two spell differently. */
export function isMysql(db: Knex): boolean {
  // `client` is `any` in knex's typings; it is the dialect's Client.
  return /mysql/i.test(String((db.client as Knex.Client).config.client));
}

export function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; errno?: number };
  return e.code === "ER_DUP_ENTRY" || e.code === "SQLITE_CONSTRAINT_UNIQUE" || e.code === "SQLITE_CONSTRAINT_PRIMARYKEY";
}

/** The driver knex runs `db` on (`better-sqlite3` embedded, `mysql2` in a cluster): a `Statement`'s text is per driver. */
const engineOf = (db: Knex): string => String((db.client as Knex.Client).config.client);

/** Marks a named value in a `Statement`'s builder (`param("id")`); no stored value starts with NUL. */
const PARAM_PREFIX = "\u0000meridian-param:";

/** A named value of a `Statement`: where its builder has `param("x")`, each run binds `args.x`. */
export const param = (name: string): string => `${PARAM_PREFIX}${name}`;

/** What a `Statement` answers: the rows of a read (or of RETURNING), the rows a write changed. */
export interface StatementResult<Row> {
  rows: Row[];
  changes: number;
}

/** The part of a better-sqlite3 statement a `Statement` runs. */
interface SqliteStatement {
  reader: boolean;
  all(bindings: unknown[]): unknown[];
  run(bindings: unknown[]): { changes: number };
}

/** One engine's text of a `Statement`, and where each binding comes from: a named value or a constant. */
interface Compiled {
  sql: string;
  slots: ({ name: string } | { value: unknown })[];
}

/**
 * A `Statement`'s run on mysql2 without knex's runner (#16): on the transaction's connection (the
 * one its client answers, never another), or outside one on a connection borrowed from knex's
 * pool for the one statement, as knex's runner borrows it. knex's `query` event is emitted; an
 * error keeps mysql2's `code` with the SQL text before its message (the text, not the values;
 * mysql2's own message may quote one, e.g. a duplicate key, as it does through knex).
 */
async function mysqlRun(db: Knex, sql: string, bindings: readonly Knex.Value[]): Promise<unknown> {
  const client = db.client as Knex.Client;
  const connection = (await client.acquireConnection()) as MysqlConnection;
  try {
    if (db.isTransaction && (db as Knex.Transaction).isCompleted()) throw completedError(sql);
    client.emit("query", { sql, bindings, method: "raw" });
    try {
      return await mysqlQuery(connection, sql, [...bindings]);
    } catch (err) {
      if (err instanceof Error) err.message = `${sql} - ${err.message}`;
      throw err;
    }
  } finally {
    // A transaction's client keeps its connection (its release does nothing); the pool's takes it back.
    await client.releaseConnection(connection);
  }
}

/**
 * A statement of a hot path, written once with knex's builder and compiled by it once per
 * engine; each run binds its named values (`param`) into that text (#16). Inside a
 * better-sqlite3 transaction it runs on the transaction's own connection (the one knex gave the
 * transaction; the driver is synchronous, so nothing interleaves within the statement), through
 * the connection's cached prepared statement, without knex's builder and runner: ~20 µs of CPU
 * less per statement (bench:sqlite, bench/RESULTS.md "Hot statements compiled once"). On
 * MariaDB it goes to mysql2 without knex's runner too (`mysqlRun`: the transaction's connection,
 * or one borrowed from the pool for the statement). Outside a transaction on SQLite (where only
 * knex's pool knows when the one connection is free) it runs as the same text through `db.raw`,
 * which saves the builder only.
 * Either way knex's `query` event is emitted, so what counts statements still sees it, and an
 * error keeps its driver's `code` (what the callers test) with the SQL text before its message.
 * The limits: the text is fixed, so a statement whose shape varies (an IN list, optional
 * clauses) stays a builder. On the direct path a run reaches the driver one microtask after the
 * call, sooner than a builder started before it (mysql2 sends a connection's statements in the
 * order they reach it): await each run, and never run one beside a builder statement of the
 * same transaction (`Promise.all`), or their order may change.
 */
export class Statement<Args extends Record<string, Knex.Value>, Row = Record<string, unknown>> {
  readonly #compiled = new Map<string, Compiled>();
  constructor(private readonly build: (db: Knex) => Knex.QueryBuilder | Knex.Raw) {}

  #compile(db: Knex): Compiled {
    const dialect = engineOf(db);
    let compiled = this.#compiled.get(dialect);
    if (!compiled) {
      const { sql, bindings } = this.build(db).toSQL();
      compiled = {
        sql,
        slots: bindings.map((b) =>
          typeof b === "string" && b.startsWith(PARAM_PREFIX) ? { name: b.slice(PARAM_PREFIX.length) } : { value: b },
        ),
      };
      this.#compiled.set(dialect, compiled);
    }
    return compiled;
  }

  /** The statement's text and bindings on `db`'s engine, for these values. */
  toSQL(db: Knex, args: Args): { sql: string; bindings: Knex.Value[] } {
    const { sql, slots } = this.#compile(db);
    const bindings = slots.map((slot) => {
      if ("value" in slot) return slot.value as Knex.Value;
      const value = args[slot.name];
      if (value === undefined) throw new Error(`Statement: no value for '${slot.name}' in ${sql}`);
      return value;
    });
    return { sql, bindings };
  }

  async run(db: Knex, args: Args): Promise<StatementResult<Row>> {
    const { sql, bindings } = this.toSQL(db, args);
    const client = db.client as Knex.Client;
    const engine = engineOf(db);
    if (db.isTransaction && engine === "better-sqlite3") {
      // The transaction's connection: knex's transaction client answers it, never another.
      const connection = (await client.acquireConnection()) as { prepare(sql: string): SqliteStatement };
      if ((db as Knex.Transaction).isCompleted()) throw completedError(sql);
      client.emit("query", { sql, bindings, method: "raw" });
      // As knex's better-sqlite3 dialect binds them: booleans as 0/1, dates as epoch milliseconds.
      const values = bindings.map((b) => (typeof b === "boolean" ? Number(b) : b instanceof Date ? b.valueOf() : b));
      try {
        const statement = connection.prepare(sql);
        if (statement.reader) return { rows: statement.all(values) as Row[], changes: 0 };
        return { rows: [], changes: statement.run(values).changes };
      } catch (err) {
        // As knex reports a statement's error: the SQL first (the text, without the values), the driver's code kept.
        if (err instanceof Error) err.message = `${sql} - ${err.message}`;
        throw err;
      }
    }
    // mysql2 answers the rows, or a ResultSetHeader; better-sqlite3 (through knex) the rows or { changes }.
    let answer: unknown;
    if (engine === "mysql2") answer = await mysqlRun(db, sql, bindings);
    else if (engine === "better-sqlite3") answer = await db.raw(sql, bindings);
    else throw new Error(`Statement: no driver path for ${engine}`);
    if (Array.isArray(answer)) return { rows: answer as Row[], changes: 0 };
    const written = answer as { affectedRows?: number; changes?: number };
    return { rows: [], changes: Number(written.affectedRows ?? written.changes ?? 0) };
  }

  /** The first row the statement answers, or undefined (what knex's `.first()` gives). */
  async first(db: Knex, args: Args): Promise<Row | undefined> {
    return (await this.run(db, args)).rows.at(0);
  }
}
