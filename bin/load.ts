/**
 * `npm run load [-- options]`: simulated shoppers against running gateways
 * (test/support/load.ts has the mix and what counts as an error), a progress line on stderr
 * (kept current on a terminal, a line every 10 s in a log: lib/progress.ts), and a summary at
 * the end. Exits 1 when the run made fewer requests than
 * `--min-requests` or more errors than `--max-errors` (default 0: any error fails), so CI
 * can run a short smoke with it; 2 on bad options or a failed setup; 130 on Ctrl-C (after
 * printing what was measured).
 *
 *   --url a,b          gateway base URLs, round-robin (default PUBLIC_URL, else http://localhost:3000)
 *   --shoppers N       concurrent shoppers (10)
 *   --duration S       seconds (60)
 *   --think-ms MS      mean pause between a shopper's tasks, ±50 % (200)
 *   --seed N           seeds the shoppers' choices (random; printed)
 *   --min-requests N   fail below N requests (0)
 *   --max-errors N     fail above N errors (0)
 *   --json             print the summary as JSON on stdout instead of the tables
 *
 * With ADMIN_EMAIL and ADMIN_PASSWORD set, the products used are restocked first, so
 * checkouts do not run out.
 */
import { parseArgs } from "node:util";
import { markdownTable } from "../bench/support";
import { runLoad, type LoadProgress, type LoadSummary } from "../test/support/load";
import { statusLine } from "../lib/progress";

function usage(message: string): never {
  process.stderr.write(
    `${message}\nusage: npm run load -- [--url URL[,URL]] [--shoppers N] [--duration S] [--think-ms MS] [--seed N] [--min-requests N] [--max-errors N] [--json]\n`,
  );
  process.exit(2);
}

const OPTIONS = {
  url: { type: "string" },
  shoppers: { type: "string", default: "10" },
  duration: { type: "string", default: "60" },
  "think-ms": { type: "string", default: "200" },
  seed: { type: "string" },
  "min-requests": { type: "string", default: "0" },
  "max-errors": { type: "string", default: "0" },
  json: { type: "boolean", default: false },
} as const;

function parse() {
  const values = (() => {
    try {
      return parseArgs({ options: OPTIONS, strict: true, allowPositionals: false }).values;
    } catch (err) {
      return usage(err instanceof Error ? err.message : String(err));
    }
  })();
  const num = (name: "shoppers" | "duration" | "think-ms" | "seed" | "min-requests" | "max-errors", min: number): number => {
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v < min) usage(`--${name} must be a number ≥ ${min}`);
    return v;
  };
  const urls = (values.url ?? process.env.PUBLIC_URL ?? `http://localhost:${process.env.PORT ?? 3000}`)
    .split(",")
    .map((u) => u.trim())
    .filter(Boolean);
  if (!urls.length) usage("--url: no URL");
  for (const u of urls) if (!/^https?:\/\/[^/]/.test(u)) usage(`--url: not an http(s) URL: ${u}`);
  const { ADMIN_EMAIL: email, ADMIN_PASSWORD: password } = process.env;
  return {
    urls,
    shoppers: Math.floor(num("shoppers", 1)),
    durationS: num("duration", 0.1),
    thinkMs: num("think-ms", 0),
    seed: values.seed === undefined ? undefined : Math.floor(num("seed", 0)),
    minRequests: num("min-requests", 0),
    maxErrors: num("max-errors", 0),
    json: values.json === true,
    admin: email && password ? { email, password } : undefined,
  };
}

const fmt = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : "-");

function progressLine(p: LoadProgress): string {
  const clock =
    p.phase === "setup" ? "setup" : `${Math.min(p.elapsedS, p.durationS).toFixed(0).padStart(String(p.durationS).length)}/${p.durationS} s`;
  const tail = p.phase === "draining" ? " (finishing tasks under way)" : "";
  return (
    `[${clock}] ${p.requests} requests, ${fmt(p.requestsPerS)} req/s, ${p.errors} errors, ${p.ordersPaid}/${p.ordersCreated} orders paid` +
    `${p.outOfStock ? `, ${p.outOfStock} out of stock` : ""}${tail}`
  );
}

export function summaryText(s: LoadSummary): string {
  const lines: string[] = [];
  lines.push(`Load against ${s.urls.join(", ")}: ${s.shoppers} shoppers, ${s.durationS} s, seed ${s.seed}${s.aborted ? " (aborted)" : ""}`);
  lines.push(`${s.requests} requests, ${fmt(s.requestsPerS)} req/s, ${s.errors.total} errors`);
  lines.push(
    `orders: ${s.orders.created} created, ${s.orders.paid} paid, ${s.orders.notPaid} not paid, ${s.orders.outOfStock} out of stock` +
      (s.orders.abandoned ? `, ${s.orders.abandoned} abandoned` : ""),
  );
  lines.push("");
  const rows = Object.entries(s.routes).map(([route, r]) => [
    route,
    String(r.count),
    String(r.errors),
    fmt(r.p50),
    fmt(r.p95),
    fmt(r.p99),
    fmt(r.max),
  ]);
  lines.push(
    markdownTable(["route", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows, [
      false,
      true,
      true,
      true,
      true,
      true,
      true,
    ]),
  );
  if (s.errors.byKind.length) {
    lines.push("", "errors:");
    for (const e of s.errors.byKind) {
      lines.push(`  ${e.count} × ${e.kind} ${e.route}`);
      for (const m of e.samples) lines.push(`      ${m}`);
    }
  }
  return lines.join("\n");
}

async function main(): Promise<number> {
  const opts = parse();
  const stop = new AbortController();
  let interrupted = false;
  process.on("SIGINT", () => {
    // First Ctrl-C: stop and report what was measured; a second one leaves at once.
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write("\nSIGINT: stopping (Ctrl-C again to quit at once)\n");
    stop.abort();
  });
  const status = statusLine("starting");
  let summary: LoadSummary;
  try {
    summary = await runLoad({
      urls: opts.urls,
      shoppers: opts.shoppers,
      durationS: opts.durationS,
      thinkMs: opts.thinkMs,
      seed: opts.seed,
      admin: opts.admin,
      signal: stop.signal,
      onProgress: (p) => status.set(progressLine(p)),
    });
  } catch (err) {
    status.stop();
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  status.stop();
  process.stdout.write(opts.json ? `${JSON.stringify(summary, null, 2)}\n` : `\n${summaryText(summary)}\n`);
  if (interrupted) return 130;
  const failures: string[] = [];
  if (summary.requests < opts.minRequests) failures.push(`${summary.requests} requests, fewer than --min-requests ${opts.minRequests}`);
  if (summary.errors.total > opts.maxErrors) failures.push(`${summary.errors.total} errors, more than --max-errors ${opts.maxErrors}`);
  for (const f of failures) process.stderr.write(`FAIL: ${f}\n`);
  return failures.length ? 1 : 0;
}

if (require.main === module)
  void main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(2);
    },
  );
