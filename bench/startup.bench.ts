/**
 * `npm run bench:startup` (#18): the embedded system's start under tsx (`npm start`) and
 * compiled (`npm run build`, what the image runs): time from spawn to the first 200 of
 * `GET /api/products?limit=1` (every service started, the database migrated), and the
 * process's resident memory then and after 3 s idle. Ceiling, measured in the same run: a
 * bare `node:http` server's time to its first 200. Rounds alternate the three, each on a
 * fresh data directory (no demo catalog: DEMO_CATALOG=false, so the time is the start, not
 * the seeding). Runs `npm run build` first.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { progress } from "../lib/progress";
import { appendResults, markdownTable, summaryFigure } from "./support";

const ROOT = path.join(__dirname, "..");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BARE = "require('node:http').createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT), '127.0.0.1')";

interface Variant {
  name: string;
  argv: string[];
}
const VARIANTS: Variant[] = [
  { name: "bare node:http (ceiling)", argv: ["-e", BARE] },
  { name: "tsx (npm start)", argv: ["--import", "tsx", "bin/start.ts"] },
  { name: "compiled (node dist/bin/start.js)", argv: ["dist/bin/start.js"] },
];

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

async function firstOk(url: string, child: ChildProcess, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode} before answering`);
    try {
      if ((await fetch(url)).status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`no 200 from ${url} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function once(v: Variant, port: number): Promise<{ ms: number; rss: number; rssIdle: number }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-startup-"));
  const t0 = performance.now();
  const child = spawn(process.execPath, v.argv, {
    cwd: ROOT,
    env: {
      ...process.env,
      NODE_ENV: "production",
      DATA_DIR: dataDir,
      PORT: String(port),
      GRPC_PORT: String(port + 1),
      DEMO_CATALOG: "false",
      LOG_LEVEL: "warn",
    },
    stdio: "ignore",
  });
  try {
    await firstOk(`http://127.0.0.1:${port}${v.argv[0] === "-e" ? "/" : "/api/products?limit=1"}`, child);
    const ms = performance.now() - t0;
    const rss = rssMb(child.pid!);
    await new Promise((r) => setTimeout(r, 3000));
    return { ms, rss, rssIdle: rssMb(child.pid!) };
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  // Built afresh: an old dist/ would measure old code.
  execFileSync("npm", ["run", "build"], { cwd: ROOT, stdio: "inherit" });
  const results = new Map<string, { ms: number; rss: number; rssIdle: number }[]>(VARIANTS.map((v) => [v.name, []]));
  const bar = progress("startup runs", ROUNDS * VARIANTS.length);
  let done = 0;
  for (let r = 0; r < ROUNDS; r++)
    for (const v of VARIANTS) {
      results.get(v.name)!.push(await once(v, 39_000 + 10 * done));
      bar.update(++done);
    }
  bar.stop();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const bare = median(results.get(VARIANTS[0].name)!.map((x) => x.ms));
  const rows = VARIANTS.map((v) => {
    const xs = results.get(v.name)!;
    const ms = median(xs.map((x) => x.ms));
    return [
      v.name,
      ms.toFixed(0),
      (ms / bare).toFixed(1),
      xs.map((x) => x.ms.toFixed(0)).join(" / "),
      median(xs.map((x) => x.rss)).toFixed(0),
      median(xs.map((x) => x.rssIdle)).toFixed(0),
    ];
  });
  const table = markdownTable(["start", "ms to first 200 (median)", "× bare", "rounds, ms", "RSS MB then", "RSS MB after 3 s"], rows, [
    false,
    true,
    true,
    true,
    true,
    true,
  ]);
  const header = `Node ${process.version}, ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC; ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(2)}; ${ROUNDS} rounds, alternating`;
  process.stdout.write(`${header}\n\n${table}\n`);
  const [tsx, compiled] = [rows[1], rows[2]];
  summaryFigure(
    "startup",
    "embedded start, compiled vs tsx (ms, RSS MB)",
    `${compiled[1]} vs ${tsx[1]} ms; ${compiled[4]} vs ${tsx[4]} MB`,
  );
  if (process.env.BENCH_RECORD !== "0")
    appendResults(
      `\n## Startup, tsx and compiled (\`npm run bench:startup\`, #18), ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC\n\n${header}\n\n${table}\n`,
    );
}

main().catch((err) => {
  process.stderr.write(`bench:startup failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
