/**
 * `inTransaction` (lib/db.ts) on both engines: a transaction of our own (the pool's connection,
 * BEGIN/COMMIT on the driver, a knex instance bound to it; #16), not knex's. The same promises on
 * both: all or nothing, the work's error is the caller's, a statement after the end is refused,
 * `executionPromise` settles after COMMIT/ROLLBACK, knex's `query` event sees the framing, a
 * connection whose ROLLBACK failed is never handed out again. On SQLite also: one at a time, and
 * a statement outside a transaction never sees an open one's writes. On MariaDB also: side by
 * side on their own connections, READ COMMITTED when asked, a deadlock victim run again, a
 * ROLLBACK left unanswered given up.
 */
import assert from "node:assert/strict";
import { setImmediate as tick } from "node:timers/promises";
import { after, before, beforeEach, describe, it } from "mocha";
import type { Knex } from "knex";
import { createKnex, dropDatabase, ensureDatabase, inTransaction, isUniqueViolation, param, Statement } from "./db";
import { MYSQL_URL, uniqueNamespace } from "../test/support/servers";
import { eventsConfig, newDataDir } from "./events/support";
import { eventually } from "../test/support/eventually";

const insertItem = new Statement<{ id: string; qty: number }>((db) => db("items").insert({ id: param("id"), qty: param("qty") }));

for (const engine of ["sqlite", "mariadb"] as const) {
  describe(`inTransaction on ${engine}`, () => {
    const config = eventsConfig({ namespace: uniqueNamespace(), dataDir: newDataDir(), db: engine, mysqlUrl: MYSQL_URL });
    let db: Knex;
    const ids = async () => (await db("items").orderBy("id").select("id")).map((r: { id: string }) => r.id);
    before(async () => {
      await ensureDatabase(config, "trx");
      db = createKnex(config, "trx");
      await db.schema.createTable("items", (t) => {
        t.string("id", 36).primary();
        t.integer("qty").notNullable();
      });
    });
    beforeEach(async () => {
      await db("items").del();
    });
    after(async () => {
      await db.destroy();
      await dropDatabase(config, "trx");
    });

    it("commits every write (builder, raw, Statement) and answers the work's answer; executionPromise resolves with it after COMMIT", async () => {
      let seenAfterCommit: string[] | undefined;
      let settled: unknown;
      const answer = await inTransaction(db, async (trx) => {
        assert.equal(trx.isTransaction, true);
        await trx("items").insert({ id: "a", qty: 1 });
        await trx.raw("insert into items (id, qty) values (?, ?)", ["b", 2]);
        await insertItem.run(trx, { id: "c", qty: 3 });
        assert.deepEqual((await trx("items").orderBy("id").select("id")).length, 3, "the work reads its own writes");
        trx.executionPromise.then(
          async (value) => {
            settled = value;
            seenAfterCommit = await ids();
          },
          () => assert.fail("rolled back"),
        );
        return "done";
      });
      assert.equal(answer, "done");
      await eventually("the commit hook ran", async () => seenAfterCommit !== undefined);
      assert.equal(settled, "done");
      assert.deepEqual(seenAfterCommit, ["a", "b", "c"], "the hook runs once the writes are committed");
    });

    it("an error from the work rolls back every write and is the caller's; executionPromise rejects with it", async () => {
      let rejectedWith: unknown;
      const boom = new Error("the work failed");
      await assert.rejects(
        inTransaction(db, async (trx) => {
          trx.executionPromise.then(
            () => assert.fail("committed"),
            (err: unknown) => (rejectedWith = err),
          );
          await trx("items").insert({ id: "a", qty: 1 });
          await trx.raw("insert into items (id, qty) values (?, ?)", ["b", 2]);
          await insertItem.run(trx, { id: "c", qty: 3 });
          throw boom;
        }),
        (err) => err === boom,
      );
      assert.deepEqual(await ids(), [], "nothing of the work remains");
      await eventually("the rollback hook ran", async () => rejectedWith !== undefined);
      assert.equal(rejectedWith, boom);
      // The connection is usable afterwards: the next transaction commits.
      await inTransaction(db, (trx) => insertItem.run(trx, { id: "d", qty: 4 }));
      assert.deepEqual(await ids(), ["d"]);
    });

    it("a statement's own error (a duplicate key) rolls back the writes before it, with the driver's code", async () => {
      await db("items").insert({ id: "taken", qty: 0 });
      await assert.rejects(
        inTransaction(db, async (trx) => {
          await trx("items").insert({ id: "a", qty: 1 });
          await trx("items").insert({ id: "taken", qty: 1 });
        }),
        (err) => isUniqueViolation(err),
      );
      assert.deepEqual(await ids(), ["taken"]);
      // An autocommit write after it is committed (the connection is not left inside a transaction).
      await db("items").insert({ id: "b", qty: 2 });
      assert.deepEqual(await ids(), ["b", "taken"]);
    });

    it("refuses a statement on the transaction once it has ended, committed or rolled back: it never runs outside it", async () => {
      let committed: Knex.Transaction | undefined;
      await inTransaction(db, async (trx) => {
        committed = trx;
        await trx("items").insert({ id: "a", qty: 1 });
      });
      assert.ok(committed);
      assert.equal(committed.isCompleted(), true);
      await assert.rejects(Promise.resolve(committed("items").insert({ id: "late-builder", qty: 1 })), /already complete/);
      await assert.rejects(insertItem.run(committed, { id: "late-statement", qty: 1 }), /already complete/);
      let rolledBack: Knex.Transaction | undefined;
      await assert.rejects(
        inTransaction(db, async (trx) => {
          rolledBack = trx;
          throw new Error("roll back");
        }),
        /roll back/,
      );
      assert.ok(rolledBack);
      await assert.rejects(Promise.resolve(rolledBack.raw("insert into items (id, qty) values ('late-raw', 1)")), /already complete/);
      assert.deepEqual(await ids(), ["a"]);
    });

    it("a statement the work left running, reaching the driver once the work has ended, is refused and leaves nothing", async () => {
      let late: Promise<unknown> | undefined;
      await inTransaction(db, async (trx) => {
        await trx("items").insert({ id: "a", qty: 1 });
        // Started after the work has returned, while COMMIT is on its way (a round trip on MariaDB).
        setImmediate(() => {
          late = Promise.resolve(trx("items").insert({ id: "late", qty: 1 }));
          late.catch(() => undefined);
        });
      });
      await eventually("the late statement was started", async () => late !== undefined);
      await assert.rejects(late!, /already complete/);
      assert.deepEqual(await ids(), ["a"], "not run on its own after the COMMIT");
    });

    it("knex's query event sees BEGIN, the statements and COMMIT, or ROLLBACK", async () => {
      const seen: string[] = [];
      const record = (q: { sql: string }) => seen.push(q.sql.replace(/;$/, "").toLowerCase());
      db.on("query", record);
      try {
        await inTransaction(db, (trx) => insertItem.run(trx, { id: "a", qty: 1 }));
        await assert.rejects(
          inTransaction(db, async (trx) => {
            await trx("items").insert({ id: "b", qty: 1 });
            throw new Error("roll back");
          }),
        );
      } finally {
        db.removeListener("query", record);
      }
      const framing = seen.map((sql) => (sql.startsWith("insert") ? "insert" : sql));
      assert.deepEqual(framing, ["begin", "insert", "commit", "begin", "insert", "rollback"]);
    });
  });
}

describe("inTransaction on SQLite: one at a time", () => {
  const config = eventsConfig({ namespace: uniqueNamespace(), dataDir: newDataDir(), db: "sqlite", mysqlUrl: MYSQL_URL });
  let db: Knex;
  before(async () => {
    db = createKnex(config, "trx-serial");
    await db.schema.createTable("counters", (t) => {
      t.string("id", 36).primary();
      t.integer("n").notNullable();
    });
    await db("counters").insert({ id: "c", n: 0 });
  });
  after(async () => {
    await db.destroy();
  });

  it("twenty read-then-write transactions at once lose no update (each waits for the one before)", async () => {
    await Promise.all(
      Array.from({ length: 20 }, () =>
        inTransaction(db, async (trx) => {
          const { n } = await trx("counters").where({ id: "c" }).first<{ n: number }>("n");
          await tick(); // another transaction would run here if they were not one at a time
          await trx("counters")
            .where({ id: "c" })
            .update({ n: n + 1 });
        }),
      ),
    );
    assert.equal((await db("counters").where({ id: "c" }).first<{ n: number }>("n")).n, 20);
  });

  it("a statement outside the transaction waits until it has ended, and never sees its writes before", async () => {
    let outside: Promise<{ n: number } | undefined> | undefined;
    let outsideSettled = false;
    await inTransaction(db, async (trx) => {
      await trx("counters").insert({ id: "d", n: 7 });
      outside = Promise.resolve(db("counters").where({ id: "d" }).first("n")).finally(() => (outsideSettled = true));
      for (let i = 0; i < 5; i++) await tick();
      assert.equal(outsideSettled, false, "the outside statement waits for the connection");
    });
    assert.deepEqual(await outside, { n: 7 }, "it ran after the commit");
  });

  it("a ROLLBACK that fails leaves no connection inside the transaction: the pool replaces it, and the writes are gone", async () => {
    // A planted fault: the pool's connection fails its next ROLLBACK.
    const client = db.client as Knex.Client;
    const connection = (await client.acquireConnection()) as { exec(sql: string): unknown; inTransaction: boolean };
    const exec = connection.exec.bind(connection);
    connection.exec = (sql: string) => {
      if (sql.startsWith("ROLLBACK")) {
        connection.exec = exec;
        throw new Error("planted: ROLLBACK failed");
      }
      return exec(sql);
    };
    await client.releaseConnection(connection);
    await assert.rejects(
      inTransaction(db, async (trx) => {
        await trx("counters").insert({ id: "lost", n: 1 });
        throw new Error("the work failed");
      }),
      /the work failed/,
    );
    // The next transaction runs (it would fail to BEGIN inside the open one) and never sees the write.
    await inTransaction(db, async (trx) => {
      assert.equal(await trx("counters").where({ id: "lost" }).first(), undefined);
      await trx("counters").insert({ id: "after", n: 1 });
    });
    assert.equal((await db("counters").where({ id: "after" }).first<{ n: number }>("n")).n, 1);
    const next = (await client.acquireConnection()) as object;
    await client.releaseConnection(next);
    assert.notEqual(next, connection, "a new connection");
  });

  it("refuses a nested transaction clearly (none is used; knex's would fail inside SQLite)", async () => {
    await assert.rejects(
      inTransaction(db, async (trx) => {
        await trx.transaction(async () => undefined);
      }),
      /no nested transaction/,
    );
  });
});

describe("inTransaction on MariaDB: its own connections, isolation, deadlocks and a broken ROLLBACK", () => {
  const config = eventsConfig({ namespace: uniqueNamespace(), dataDir: newDataDir(), db: "mariadb", mysqlUrl: MYSQL_URL });
  let db: Knex;
  const counter = async (id: string) => (await db("counters").where({ id }).first<{ n: number }>("n")).n;
  before(async () => {
    await ensureDatabase(config, "trx-mysql");
    db = createKnex(config, "trx-mysql");
    await db.schema.createTable("counters", (t) => {
      t.string("id", 36).primary();
      t.integer("n").notNullable();
    });
    await db("counters").insert([
      { id: "c", n: 0 },
      { id: "a", n: 0 },
      { id: "b", n: 0 },
    ]);
  });
  after(async () => {
    await db.destroy();
    await dropDatabase(config, "trx-mysql");
  });

  it("twenty read-then-write transactions at once, each on its own connection, lose no update under FOR UPDATE", async () => {
    const threads = new Set<number>();
    await Promise.all(
      Array.from({ length: 20 }, () =>
        inTransaction(db, async (trx) => {
          threads.add((await trx.raw<[{ id: number }[]]>("select connection_id() as id"))[0][0].id);
          const { n } = await trx("counters").where({ id: "c" }).forUpdate().first<{ n: number }>("n");
          await tick();
          await trx("counters")
            .where({ id: "c" })
            .update({ n: n + 1 });
        }),
      ),
    );
    assert.equal(await counter("c"), 20);
    assert.ok(threads.size > 1, `side by side on several connections (${threads.size})`);
  });

  it("READ COMMITTED when asked (SET TRANSACTION before BEGIN): a second read sees another connection's commit; REPEATABLE READ otherwise", async () => {
    const readTwice = async (isolation?: "read committed") => {
      const seen: string[] = [];
      const record = (q: { sql: string }) => seen.push(q.sql);
      db.on("query", record);
      try {
        return await inTransaction(
          db,
          async (trx) => {
            const first = (await trx("counters").where({ id: "a" }).first<{ n: number }>("n")).n;
            await db("counters").where({ id: "a" }).increment("n", 1); // autocommit, another connection
            const second = (await trx("counters").where({ id: "a" }).first<{ n: number }>("n")).n;
            return { moved: second !== first, framing: seen.filter((s) => /^(set transaction|begin)/i.test(s)) };
          },
          3,
          isolation,
        );
      } finally {
        db.off("query", record);
      }
    };
    assert.deepEqual(await readTwice("read committed"), {
      moved: true,
      framing: ["SET TRANSACTION ISOLATION LEVEL READ COMMITTED;", "BEGIN;"],
    });
    assert.deepEqual(await readTwice(), { moved: false, framing: ["BEGIN;"] }, "the snapshot of the first read");
  });

  it("a deadlock victim is rolled back by MariaDB and run again from the start: both transactions' updates count once", async () => {
    // Two transactions lock a and b in opposite orders; each waits until the other holds its first row.
    let firstRound = true;
    let held = 0;
    const bothHold = async () => {
      held++;
      await eventually("both hold their first row", async () => held >= 2);
    };
    const attempts = { ab: 0, ba: 0 };
    const cross = (first: "a" | "b", second: "a" | "b", name: "ab" | "ba") =>
      inTransaction(db, async (trx) => {
        attempts[name]++;
        await trx("counters").where({ id: first }).increment("n", 1);
        if (firstRound) await bothHold();
        await trx("counters").where({ id: second }).increment("n", 1);
        firstRound = false;
      });
    const before = { a: await counter("a"), b: await counter("b") };
    await Promise.all([cross("a", "b", "ab"), cross("b", "a", "ba")]);
    assert.equal(attempts.ab + attempts.ba, 3, `one of them ran twice (${JSON.stringify(attempts)})`);
    assert.deepEqual({ a: await counter("a"), b: await counter("b") }, { a: before.a + 2, b: before.b + 2 });
  });

  /**
   * Plants a fault in the pool's next connection: its next ROLLBACK fails, or is never answered
   * (an 8 s SLEEP is sent in its place, so the connection has a command outstanding: an `end()`
   * would queue behind it).
   */
  const plantRollback = async (fault: "fails" | "hangs") => {
    const client = db.client as Knex.Client;
    type Query = (sql: string, values: unknown[], done: (err: Error | null) => void) => unknown;
    const connection = (await client.acquireConnection()) as { query: Query; threadId: number; stream: { writableEnded: boolean } };
    const query: Query = connection.query.bind(connection);
    connection.query = (sql, values, done) => {
      if (typeof sql === "string" && sql.startsWith("ROLLBACK")) {
        connection.query = query;
        if (fault === "fails") return done(new Error("planted: ROLLBACK failed"));
        return query("SELECT SLEEP(8)", [], () => undefined); // its answer is no answer to the ROLLBACK
      }
      return query(sql, values, done);
    };
    await client.releaseConnection(connection);
    return connection;
  };

  for (const fault of ["fails", "hangs"] as const) {
    it(`a ROLLBACK that ${fault === "fails" ? "fails" : "is never answered (given up after 5 s)"} leaves no connection inside the transaction: it is closed at once, and the writes are gone`, async function () {
      this.timeout(20_000);
      const planted = await plantRollback(fault);
      await assert.rejects(
        inTransaction(db, async (trx) => {
          await trx("counters").insert({ id: `lost-${fault}`, n: 1 });
          throw new Error("the work failed");
        }),
        /the work failed/,
      );
      // Its socket was ended by then, not after the command it still waits for (the SLEEP); when
      // MariaDB sees it close depends on the server (at the latest when the SLEEP ends).
      assert.equal(planted.stream.writableEnded, true, "its socket was ended when the ROLLBACK was given up");
      // The planted connection was closed, so MariaDB rolled its transaction back (its row lock is gone too).
      await eventually("MariaDB closed the planted connection", async () => {
        const [rows] = await db.raw<[{ id: number }[]]>("select id from information_schema.processlist where id = ?", [planted.threadId]);
        return rows.length === 0;
      });
      assert.equal(
        await db("counters")
          .where({ id: `lost-${fault}` })
          .first(),
        undefined,
      );
      await inTransaction(db, (trx) => trx("counters").insert({ id: `after-${fault}`, n: 1 }));
      assert.equal(await counter(`after-${fault}`), 1);
    });
  }
});
