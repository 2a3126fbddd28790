/**
 * What operators do to a running system, written once for the command-line tools
 * (bin/dead-letters.ts, bin/seed.ts) and the REPL's own commands (lib/repl-commands.ts,
 * `npm run dev`, `npm run repl`): the dead letters listed or replayed, the demo catalog
 * loaded, the recommendation model rebuilt, the checkout invariants checked. Each reports
 * through `out` (a line at a time) and shows its progress with lib/progress.ts.
 */
import type { ServiceBroker } from "moleculer";
import { ALL_SERVICES, type AppConfig } from "./config";
import { createKnex } from "./db";
import { errorCode } from "./errors";
import { checkCheckoutInvariants } from "./invariants";
import { listDeadLetters, replayDeadLetters } from "./events/dead-letters";
import { inboxReceived, recentOutbox, type OutboxRow } from "./events/outbox";
import { progress } from "./progress";

export type Out = (line: string) => void;

/** A service name no service has (a tool answers it with its usage exit code). */
export class UnknownServiceError extends Error {}

/**
 * Lists or replays the business events consumers gave up on, per service (all that have a
 * database without `services`). Resolves with how many; throws on an unknown service.
 */
export async function deadLetters(
  config: AppConfig,
  command: "list" | "replay",
  out: Out,
  services?: string[],
  ids?: string[],
): Promise<number> {
  const targets = services?.length ? services : withDatabase(config);
  const unknown = targets.filter((s) => !(ALL_SERVICES as readonly string[]).includes(s));
  if (unknown.length) throw new UnknownServiceError(`unknown service(s): ${unknown.join(", ")}`);
  let total = 0;
  for (const service of targets) {
    const letters =
      command === "list" ? await listDeadLetters(config, service) : await replayDeadLetters(config, service, ids?.length ? ids : undefined);
    total += letters.length;
    out(`${service}: ${letters.length} dead letter(s)${command === "replay" ? " replayed" : ""}`);
    for (const l of letters) out(`  ${l.messageId}  ${l.event}  attempts=${l.attempts}  failed=${l.failedAt}  ${l.lastError}`);
  }
  if (command === "replay" && !config.rabbitmqUris && total) out("Embedded mode: the running service applies them at its next poll.");
  return total;
}

/** The services this node runs that have a database (the edges and search have none: search rebuilds instead). */
const withDatabase = (config: AppConfig): string[] => config.services.filter((s) => s !== "gateway" && s !== "search" && s !== "grpc");

const clock = (ms: number) => new Date(ms).toISOString().slice(11, 23);

/**
 * The business events' trail (docs/tutorial.md): the latest outbox rows of every service with
 * a database, oldest first (with `orderId`, those whose payload names that order), each with
 * when the relay sent it and which services' inboxes applied it. Reads the databases, so it
 * shows what committed, on any node of the system. Resolves with the number of rows shown.
 */
export async function eventTrail(config: AppConfig, out: Out, opts: { last: number; orderId?: string }): Promise<number> {
  const services = withDatabase(config);
  const dbs = new Map(services.map((s) => [s, createKnex(config, s)]));
  try {
    const rows: { service: string; row: OutboxRow }[] = [];
    for (const [service, db] of dbs) for (const row of await recentOutbox(db, opts.last, opts.orderId)) rows.push({ service, row });
    rows.sort((a, b) => a.row.occurred_at - b.row.occurred_at || a.row.seq - b.row.seq);
    const shown = rows.slice(-opts.last);
    const ids = shown.map((r) => r.row.id);
    const applied = new Map<string, number>();
    for (const [service, db] of dbs) for (const [id, at] of await inboxReceived(db, ids)) applied.set(`${service} ${id}`, at);
    out(
      `${shown.length} business event(s)${opts.orderId ? ` naming order ${opts.orderId}` : ""}, oldest first: committed (outbox) → sent (relay) → applied (inbox)`,
    );
    for (const { service, row } of shown) {
      const t0 = row.occurred_at;
      const sent =
        row.sent_at === null
          ? `NOT SENT yet (attempts ${row.attempts}${row.last_error ? `, ${row.last_error}` : ""})`
          : `sent +${row.sent_at - t0} ms`;
      const by = services.filter((s) => applied.has(`${s} ${row.id}`)).map((s) => `${s} +${applied.get(`${s} ${row.id}`)! - t0} ms`);
      out(
        `  ${clock(t0)}  ${service.padEnd(14)} ${row.event.padEnd(22)} ${row.id}  ${sent}; applied by ${by.length ? by.join(", ") : "no inbox yet"}`,
      );
    }
    return shown.length;
  } finally {
    await Promise.all([...dbs.values()].map((db) => db.destroy()));
  }
}

/** Products per `product.seedDemo` call. */
const SEED_BATCH = 100;

/** Loads `total` products of the demo catalog through the product service (idempotent: skus that exist are skipped). */
export async function seedDemoCatalog(broker: ServiceBroker, total: number, out: Out): Promise<{ inserted: number }> {
  let inserted = 0;
  const bar = progress("Seeding", total);
  try {
    for (let from = 0; from < total; from += SEED_BATCH) {
      const count = Math.min(SEED_BATCH, total - from);
      inserted += (await broker.call<{ inserted: number }, unknown>("product.seedDemo", { from, count })).inserted;
      bar.update(from + count);
    }
  } finally {
    bar.stop();
  }
  out(`Done: ${inserted} new, ${total - inserted} already there.`);
  return { inserted };
}

/**
 * A rebuild that shows no progress for this long is given up on: its owner may have died (the
 * service reclaims a dead owner's claim after its 120 s lease; start again then).
 */
const STALLED_MS = 150_000;

/** The recommendation service's rebuild status (`recommendation.rebuildStatus`, `GET /api/admin/recommendations/rebuild`). */
export interface RebuildStatus {
  status: string;
  phase: string | null;
  done: number;
  total: number | null;
  error: string | null;
  summary?: unknown;
}

/**
 * Follows a rebuild with a progress bar until it is done (resolves with its last status);
 * throws when it failed, or shows no progress for STALLED_MS. `read` gets the status: from the
 * service (the REPL, the benchmark) or through the gateway (`npm run recs:rebuild`).
 */
export async function followRebuild(read: () => Promise<RebuildStatus>, label: string, pollMs: number): Promise<RebuildStatus> {
  const bar = progress(`${label}starting`, 1);
  let last = "";
  let movedAt = Date.now();
  try {
    for (;;) {
      const s = await read();
      if (s.status === "failed") throw new Error(`Rebuild failed: ${s.error}`);
      if (s.status === "done") return s;
      const now = `${s.phase}:${s.done}`;
      if (now !== last) [last, movedAt] = [now, Date.now()];
      else if (Date.now() - movedAt > STALLED_MS)
        throw new Error(
          `the rebuild shows no progress for ${STALLED_MS / 1000} s (its owner may have died; start it again after its lease)`,
        );
      // A phase whose size is not known yet shows its count over itself.
      bar.update(s.done, { label: `${label}${s.phase ?? "starting"}`, total: s.total ?? s.done });
      await new Promise((r) => setTimeout(r, pollMs));
    }
  } finally {
    bar.stop();
  }
}

/** Starts the recommendation model's rebuild (or follows the one running) until it is done; resolves with its duration (ms). */
export async function rebuildRecommendations(broker: ServiceBroker, label: string, out: Out, pollMs = 250): Promise<number> {
  const started = Date.now();
  try {
    await broker.call("recommendation.startRebuild");
  } catch (err) {
    if (errorCode(err) !== "CONFLICT") throw err;
    out(`${label}: a rebuild is already running: following it.`);
  }
  await followRebuild(() => broker.call("recommendation.rebuildStatus"), `${label}: rebuilding, `, pollMs);
  out(`${label}: model rebuilt in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return Date.now() - started;
}

/** The services whose databases the checkout invariants read. */
const INVARIANT_DATABASES = ["order", "payment", "product", "notification"] as const;

/**
 * The checkout invariants (lib/invariants.ts), as the kill test and the chaos runs check them,
 * on this system's databases: for a system at rest (no checkout in flight; one in flight shows
 * as a problem). Resolves with the number of problems.
 */
export async function checkInvariants(config: AppConfig, out: Out): Promise<number> {
  const dbs = new Map(INVARIANT_DATABASES.map((s) => [s, createKnex(config, s)]));
  try {
    const r = await checkCheckoutInvariants((s) => {
      const db = dbs.get(s as (typeof INVARIANT_DATABASES)[number]);
      if (!db) throw new Error(`no database opened for ${s}`);
      return db;
    }, {});
    const f = r.figures;
    const statuses = Object.entries(f.byStatus)
      .map(([k, n]) => `${k} ${n}`)
      .join(", ");
    out(
      `invariants: ${r.problems.length} problem(s). ${f.orders} order(s)${statuses ? ` (${statuses})` : ""}, ${f.payments} payment(s), ` +
        `${f.charges} charge(s) (${f.refundedCharges} refunded in full, ${f.partlyRefundedCharges} in part), ` +
        `${f.platformRefunds} platform refund(s), ${f.notified} order(s) notified, ${f.orphanClaims} Idempotency-Key claim(s) without an order` +
        (f.offPlatformPayments ? `; ${f.offPlatformPayments} Alipay/WeChat Pay payment(s) checked on our records only` : ""),
    );
    for (const problem of r.problems) out(`  - ${problem}`);
    return r.problems.length;
  } finally {
    await Promise.all([...dbs.values()].map((db) => db.destroy()));
  }
}
