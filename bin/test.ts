/**
 * `npm test`: every spec file under mocha, in tiers — unit (pure), int (brokers in one process,
 * SQLite and the real MariaDB/Redis/RabbitMQ), system (several node processes against the real
 * servers). `npm test -- unit` (or int, system) runs one tier; a path runs one file in its tier.
 *
 * One mocha process per spec file (.mocharc.json: TypeScript through tsx, no default timeout):
 * the files rely on it. Each file isolates itself from the others running beside it (a unique
 * namespace, so its own databases, Redis keys, etcd prefix and RabbitMQ vhost; its private
 * servers on free ports), but within its process it owns module state, `process.env`, mocha's
 * root hooks and the process's exit: files in one mocha process would share all four.
 *
 * The unit and int tiers run TIER_CONCURRENCY files at once, each file's report printed whole
 * when it ends. The system tier runs its files one at a time, their reports streamed as they
 * run (they start clusters of node processes and servers, and most keep both cores busy),
 * except the files whose header says `@shares-machine: <why>` (measured: they mostly wait, on
 * an outage or a server, or are short and light): those run one at a time beside the others,
 * each report printed whole after the streamed file it finished during.
 * Every tier runs even when an earlier one failed, so one CI run reports every failure. The
 * last line is the suite's count, `N passed, N failed` (and `, N skipped` when any), and the
 * exit code is non-zero when anything failed: a test, a hook, or a file that could not run.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { signalGroup } from "../test/support/proc";
import type { FileCounts } from "../test/support/test-counts";

const ROOT = path.resolve(__dirname, "..");
const MOCHA = path.join(ROOT, "node_modules", "mocha", "bin", "mocha.js");
const TIERS = ["unit", "int", "system"] as const;
type Tier = (typeof TIERS)[number];
const SKIP_DIRS = new Set(["node_modules", "dist", "data", ".git"]);
/** Files at once per tier (TEST_CONCURRENCY overrides the unit and int tiers'). */
const override = Math.floor(Number(process.env.TEST_CONCURRENCY));
const atOnce = override >= 1 ? override : Math.min(2, os.availableParallelism());
const TIER_CONCURRENCY = { unit: atOnce, int: atOnce };
/**
 * A file still running after this long is stopped and counted failed (TEST_FILE_TIMEOUT_S; the
 * longest file, the system tier's chaos run, takes a few minutes): with no default test timeout,
 * a hang would otherwise stall the run, its buffered report never printed.
 */
const FILE_TIMEOUT_MS = (Number(process.env.TEST_FILE_TIMEOUT_S) || 1200) * 1000;
/** The process groups of the files running, stopped with the runner (Ctrl-C, a CI's kill). */
const running = new Set<number>();
for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.once(signal, () => {
    for (const pid of running) signalGroup(pid, "SIGKILL");
    process.exit(130);
  });

function findSpecs(dir: string, out: string[] = []): string[] {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name) && !entry.name.startsWith(".")) findSpecs(path.join(dir, entry.name), out);
    } else if (/\.(unit|int|system)\.spec\.ts$/.test(entry.name)) out.push(path.relative(ROOT, path.join(dir, entry.name)));
  }
  return out;
}

const tierOf = (file: string): Tier => TIERS.find((t) => file.includes(`.${t}.spec.ts`)) ?? "system";

/**
 * A system file whose header (its first doc comment) has a line `@shares-machine: <why>` may run
 * beside the others. A path that cannot be read is not: it runs alone and fails as any file
 * that cannot load.
 */
function sharesMachine(file: string): boolean {
  let header: string;
  try {
    header = /\/\*\*[\s\S]*?\*\//.exec(fs.readFileSync(path.resolve(ROOT, file), "utf8"))?.[0] ?? "";
  } catch {
    return false;
  }
  return /^\s*\*\s*@shares-machine:\s*\S/m.test(header);
}

interface FileResult {
  file: string;
  /** The file's counts; undefined when its process ended without reporting (it could not load, crashed, or was stopped). */
  counts?: FileCounts;
  /** Stopped after FILE_TIMEOUT_MS. */
  timedOut: boolean;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  seconds: number;
  /** Seconds between the file's report (its last test and hooks done) and its process's exit. */
  lingeredS?: number;
}

/** A process that outlives its last test by more than this is named: a timer or a handle left open. */
const LINGER_NOTE_S = 5;

const failedFile = (r: FileResult) => r.exitCode !== 0 || !r.counts || r.counts.failed > 0;

/** Runs one spec file in its own mocha process; `stream` passes its output through as it comes. */
function runFile(file: string, stream: boolean): Promise<FileResult & { output: string }> {
  const statsFile = path.join(os.tmpdir(), `meridian-test-${process.pid}-${file.replace(/[^\w.-]+/g, "_")}.json`);
  fs.rmSync(statsFile, { force: true });
  const started = Date.now();
  // Its own process group (detached), so a stop reaches the servers and nodes it started too.
  const child = spawn(process.execPath, [MOCHA, file], {
    cwd: ROOT,
    detached: true,
    stdio: stream ? ["ignore", "inherit", "inherit"] : ["ignore", "pipe", "pipe"],
    env: { ...process.env, NODE_ENV: "test", MERIDIAN_TEST_STATS: statsFile },
  });
  const pid = child.pid!;
  running.add(pid);
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    signalGroup(pid, "SIGTERM");
    setTimeout(() => signalGroup(pid, "SIGKILL"), 10_000).unref();
  }, FILE_TIMEOUT_MS);
  const chunks: Buffer[] = [];
  child.stdout?.on("data", (c: Buffer) => chunks.push(c));
  child.stderr?.on("data", (c: Buffer) => chunks.push(c));
  // The process's exit, not `close` (which also waits for its output pipes, held by any child it left).
  let exitedAt = 0;
  child.once("exit", () => (exitedAt = Date.now()));
  return new Promise((resolve) => {
    child.on("close", (exitCode, signal) => {
      clearTimeout(watchdog);
      running.delete(pid);
      let counts: FileCounts | undefined;
      let lingeredS: number | undefined;
      try {
        counts = JSON.parse(fs.readFileSync(statsFile, "utf8")) as FileCounts;
        // The reporter writes the counts when the run ends: what follows is the process not exiting.
        lingeredS = ((exitedAt || Date.now()) - fs.statSync(statsFile).mtimeMs) / 1000;
      } catch {
        counts = undefined;
      }
      fs.rmSync(statsFile, { force: true });
      // A stopped file's report, if any, is partial: it counts as not reported.
      resolve({
        file,
        counts: timedOut ? undefined : counts,
        timedOut,
        exitCode,
        signal,
        seconds: (Date.now() - started) / 1000,
        lingeredS,
        output: Buffer.concat(chunks).toString(),
      });
    });
  });
}

function describeResult(r: FileResult, index: number, total: number): string {
  const c = r.counts;
  const what = c
    ? `${c.passed} passed, ${c.failed} failed${c.skipped ? `, ${c.skipped} skipped` : ""}`
    : r.timedOut
      ? `stopped after ${FILE_TIMEOUT_MS / 1000} s (TEST_FILE_TIMEOUT_S): it hung`
      : `no report: the file could not load or its process died (exit ${r.exitCode ?? r.signal})`;
  const lingered =
    r.lingeredS !== undefined && r.lingeredS > LINGER_NOTE_S
      ? `; ${r.lingeredS.toFixed(0)} s of it after the last test: a timer or a handle left open`
      : "";
  return `-- [${index}/${total}] ${failedFile(r) ? "FAILED" : "ok"} ${r.file}: ${what} (${r.seconds.toFixed(1)} s${lingered})\n`;
}

/**
 * Runs a tier's files: the unit and int tiers `concurrency` at a time from one queue, each
 * report printed whole when its file ends; the system tier in two lanes of one file at a time —
 * the files that need the machine to themselves, streamed, and beside them the
 * `@shares-machine` files, whose reports wait for the streamed file's end (so no report is
 * printed inside another) and stream themselves once no other file is running.
 */
async function runTier(tier: Tier, files: string[]): Promise<FileResult[]> {
  const results: FileResult[] = [];
  let done = 0;
  let streaming = false;
  const held: { result: FileResult; output: string }[] = [];
  const print = ({ result, output }: { result: FileResult; output: string }) =>
    process.stdout.write(`\n-- ${result.file}\n${output}${describeResult(result, ++done, files.length)}`);
  /** Takes files from `take` until it is empty, one at a time. */
  const lane = async (take: () => string | undefined, stream: boolean) => {
    for (let file = take(); file !== undefined; file = take()) {
      if (stream) {
        streaming = true;
        process.stdout.write(`\n-- ${file}\n`);
      }
      const { output, ...result } = await runFile(file, stream);
      results.push(result);
      if (!stream) {
        if (streaming) held.push({ result, output });
        else print({ result, output });
      } else {
        streaming = false;
        process.stdout.write(describeResult(result, ++done, files.length));
        held.splice(0).forEach(print);
      }
    }
  };
  const from = (queue: string[]) => () => queue.shift();
  if (tier === "system") {
    const beside = files.filter(sharesMachine);
    const alone = files.filter((f) => !beside.includes(f));
    process.stdout.write(`\n== ${tier}: ${files.length} file(s), one at a time; beside them, ${beside.length} that share the machine\n`);
    await Promise.all([lane(from(alone), true), lane(from(beside), alone.length === 0)]);
    return results;
  }
  const concurrency = Math.min(files.length, TIER_CONCURRENCY[tier]);
  process.stdout.write(`\n== ${tier}: ${files.length} file(s), ${concurrency} at a time\n`);
  const take = from([...files]);
  await Promise.all(Array.from({ length: concurrency }, () => lane(take, concurrency === 1)));
  return results;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const tiers = args.filter((a): a is Tier => (TIERS as readonly string[]).includes(a));
  const files = args.filter((a) => a.endsWith(".ts"));
  // Paths given: those, each in its tier; else every spec of the tiers asked (all by default).
  const pool = files.length ? files : findSpecs(ROOT).sort();
  const selected = TIERS.filter((t) => files.length || !tiers.length || tiers.includes(t))
    .map((t): [Tier, string[]] => [t, pool.filter((f) => tierOf(f) === t)])
    .filter(([, f]) => f.length);
  if (!selected.length) {
    process.stderr.write("No spec files selected\n");
    return 1;
  }
  const results: FileResult[] = [];
  for (const [tier, tierFiles] of selected) results.push(...(await runTier(tier, tierFiles)));

  const sum = (k: keyof FileCounts) => results.reduce((n, r) => n + (r.counts?.[k] ?? 0), 0);
  // A file that failed without a failed test to show for it (it never reported: it could not
  // load, or its process died; or it exited non-zero after reporting) counts as one failure.
  const failed = results.reduce((n, r) => n + (r.counts?.failed || (failedFile(r) ? 1 : 0)), 0);
  const bad = results.filter(failedFile);
  process.stdout.write(`\n== ${results.length} file(s) in ${selected.map(([t, f]) => `${t} ${f.length}`).join(", ")}\n`);
  if (bad.length)
    process.stdout.write(
      `== failed:\n${bad
        .map((r) => `   ${r.file}\n`)
        .sort()
        .join("")}`,
    );
  const skipped = sum("skipped");
  process.stdout.write(`${sum("passed")} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}\n`);
  return bad.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
