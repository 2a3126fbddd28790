/**
 * The load generator (test/support/load.ts) against the embedded system with a small demo
 * catalog: a short run of the whole mix, checkouts paid through the sandbox, must make no
 * error at all, and report every request to `onRequest` and the id of every order it was
 * answered 201 for (each in the order database, PAID); an abort must end a run early with
 * what it measured.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import { createKnex } from "../../lib/db";
import { startShopForLoad, type TestApp } from "./app";
import { MIX_ROUTES, percentile, runLoad, type LoadProgress } from "./load";

const ADMIN = { email: "load-admin@example.com", password: "load-admin-password" };

describe("load generator, embedded (SQLite, demo catalog of 60)", () => {
  let app: TestApp;

  before(async () => {
    app = await startShopForLoad(ADMIN);
  });
  after(async () => app?.stop());

  it("percentiles are nearest-rank over the sorted samples", () => {
    const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
    assert.deepEqual(
      [0.5, 0.95, 0.99, 1].map((q) => percentile(sorted, q)),
      [50, 95, 99, 100],
    );
    assert.equal(percentile([7], 0.99), 7);
    assert.ok(Number.isNaN(percentile([], 0.5)));
  });

  it("4 shoppers for 8 s: no error, at least 50 requests, every route of the mix, orders paid, each request reported as sent, each created order's id kept", async () => {
    const progress: LoadProgress[] = [];
    const sent = new Map<string, number>();
    const summary = await runLoad({
      urls: [app.baseUrl],
      shoppers: 4,
      durationS: 8,
      thinkMs: 20,
      seed: 7,
      admin: ADMIN,
      progressIntervalMs: 500,
      onProgress: (p) => progress.push(p),
      onRequest: (route) => sent.set(route, (sent.get(route) ?? 0) + 1),
    });
    const { requests, requestsPerS, orders, tasks } = summary;
    process.stderr.write(`    ${JSON.stringify({ requests, requestsPerS, orders, tasks })}\n`);
    assert.deepEqual(summary.errors.byKind, [], "no error of any kind");
    assert.equal(summary.errors.total, 0);
    assert.ok(summary.requests >= 50, `${summary.requests} requests`);
    for (const route of MIX_ROUTES) assert.ok((summary.routes[route]?.count ?? 0) > 0, `${route} was requested`);
    assert.ok(summary.orders.paid >= 1, "at least one order paid");
    assert.equal(summary.orders.created, summary.orders.paid, "every order created was paid");
    assert.equal(summary.orders.outOfStock, 0, "the admin restocked what the shoppers buy");
    assert.equal(summary.aborted, false);

    // The summary adds up: route counts make the total, percentiles are ordered.
    assert.equal(
      Object.values(summary.routes).reduce((n, r) => n + r.count, 0),
      summary.requests,
    );
    for (const [route, r] of Object.entries(summary.routes)) assert.ok(r.p50 <= r.p95 && r.p95 <= r.p99 && r.p99 <= r.max, route);
    assert.ok(
      Object.values(summary.tasks).every((n) => n > 0),
      `every task ran: ${JSON.stringify(summary.tasks)}`,
    );
    // The setup's requests (admin login, catalog, restock) are not part of the traffic.
    assert.equal(summary.routes["POST /api/auth/login"], undefined);
    assert.equal(summary.routes["POST /api/products/:id/stock"], undefined);

    assert.ok(
      progress.some((p) => p.phase === "running"),
      "progress reported while running",
    );
    assert.equal(progress.at(-1)?.phase, "done");
    assert.equal(progress.at(-1)?.requests, summary.requests);
    assert.equal(progress.at(-1)?.ordersPaid, summary.orders.paid);

    // onRequest saw every measured request (the setup's are not measured), by route.
    assert.deepEqual(
      Object.fromEntries([...sent].sort(([a], [b]) => a.localeCompare(b))),
      Object.fromEntries(Object.entries(summary.routes).map(([route, r]) => [route, r.count])),
    );
    // The ids of the orders answered 201: as many as created, distinct, each a PAID order in the database.
    assert.equal(summary.orderIds.length, summary.orders.created);
    assert.equal(new Set(summary.orderIds).size, summary.orderIds.length);
    const db = createKnex(app.config, "order");
    try {
      const rows = await db("orders").whereIn("id", summary.orderIds).select<{ id: string; status: string }[]>("id", "status");
      assert.deepEqual(rows.map((r) => r.id).sort(), [...summary.orderIds].sort());
      assert.ok(
        rows.every((r) => r.status === "PAID"),
        JSON.stringify(rows.filter((r) => r.status !== "PAID")),
      );
    } finally {
      await db.destroy();
    }
  });

  it("an abort ends the run early and resolves with what was measured", async () => {
    const stop = new AbortController();
    const summary = await runLoad({
      urls: [app.baseUrl],
      shoppers: 2,
      durationS: 600,
      thinkMs: 20,
      seed: 8,
      signal: stop.signal,
      // Stop once some traffic was measured (not after a fixed time).
      progressIntervalMs: 100,
      onProgress: (p) => {
        if (p.requests >= 20) stop.abort();
      },
    });
    assert.equal(summary.aborted, true);
    assert.ok(summary.requests >= 20, `${summary.requests} requests`);
    assert.equal(summary.errors.total, 0, JSON.stringify(summary.errors.byKind));
  });

  it("npm run load: a table and exit 0; --json, and exit 1 when a threshold is missed", async () => {
    // Asynchronously: the gateway answering the child runs in this very process.
    const cli = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        const env = { ...process.env };
        delete env.ADMIN_EMAIL;
        delete env.ADMIN_PASSWORD;
        execFile(
          process.execPath,
          ["--import", "tsx", path.join(__dirname, "../../bin/load.ts"), "--url", app.baseUrl, ...args],
          { env, timeout: 30_000 },
          (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
        );
      });
    const ok = await cli(["--shoppers", "2", "--duration", "2", "--think-ms", "20", "--seed", "3"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /\| route +\| requests \| errors \| p50 ms \| p95 ms \| p99 ms \| max ms \|/);
    assert.match(ok.stdout, /\| GET \/api\/products\/:id +\| +\d+ \| +0 \|/);
    assert.match(ok.stderr, /\[ ?\d\/2 s\] \d+ requests, [\d.]+ req\/s, 0 errors/, "a progress line a second");
    process.stderr.write(`    npm run load output:\n${ok.stdout}\n`);

    const short = await cli(["--shoppers", "1", "--duration", "1", "--think-ms", "20", "--json", "--min-requests", "1000000"]);
    assert.equal(short.code, 1, short.stderr);
    const summary = JSON.parse(short.stdout) as { requests: number; errors: { total: number } };
    assert.ok(summary.requests > 0 && summary.errors.total === 0, short.stdout);
    assert.match(short.stderr, /FAIL: \d+ requests, fewer than --min-requests 1000000/);

    assert.equal((await cli(["--shoppers", "zero"])).code, 2, "a bad option");
  });
});
