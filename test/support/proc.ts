/**
 * Child Node processes running a TypeScript file through tsx, for system tests.
 *
 * stdout and stderr are captured line by line into `lines` (in arrival order) and counted in
 * `bytes`; set TEST_CHILD_OUTPUT=1 to also echo them, prefixed with the child's name, to stderr.
 */
import { spawn } from "node:child_process";
import readline from "node:readline";
import { pathToFileURL } from "node:url";

/** Sends `signal` to the process group `pid` leads (a child spawned `detached`); a group already gone is no error. */
export function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/**
 * Whether `exit` settles within `ms`. The timer is cleared either way: a bare
 * `Promise.race([exit, sleep(ms)])` leaves it pending, and a test process then waits it out
 * after its last test (seen: a minute after every local cluster's teardown, from MariaDB's stop).
 */
export async function settlesWithin(exit: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([exit.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(resolve, ms, false)))]);
  } finally {
    clearTimeout(timer);
  }
}

export interface ChildHandle {
  readonly name: string;
  readonly pid: number;
  /** Every stdout/stderr line received so far. */
  readonly lines: string[];
  /** Bytes received so far on stdout + stderr. */
  readonly bytes: number;
  /** Resolves with the match of the first line (past or future) matching `re`; rejects on timeout or exit. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  kill(signal?: NodeJS.Signals): void;
  /** Resolves when the process has exited and its output is read (immediately if it already has). */
  waitExit(): Promise<void>;
  /** Its exit code once it has exited (null while it runs, or when a signal ended it). */
  readonly exitCode: number | null;
}

const TSX_LOADER = pathToFileURL(require.resolve("tsx")).href; // what `--import tsx` loads, independent of the cwd

export interface SpawnTsOptions {
  /** Label for errors and echoed output. */
  name: string;
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** Arguments for the script. */
  args?: string[];
  /** Extra node options placed before the script, e.g. ["--cpu-prof"]. */
  nodeArgs?: string[];
}

/** Starts `node [...nodeArgs] --import tsx <file> [...args]`. */
export function spawnTs(file: string, opts: SpawnTsOptions): ChildHandle {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), "--import", TSX_LOADER, file, ...(opts.args ?? [])], {
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const listeners = new Set<(line: string) => void>();
  let bytes = 0;
  // "close": the process has exited and its stdout/stderr are read to the end (every line is in `lines`).
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  for (const stream of [child.stdout, child.stderr]) {
    stream.on("data", (chunk: Buffer) => (bytes += chunk.length));
    readline.createInterface({ input: stream }).on("line", (line) => {
      lines.push(line);
      if (process.env.TEST_CHILD_OUTPUT) process.stderr.write(`[${opts.name}] ${line}\n`);
      for (const listener of listeners) listener(line);
    });
  }

  return {
    name: opts.name,
    pid: child.pid!,
    lines,
    get bytes() {
      return bytes;
    },
    waitForLine(re, timeoutMs = 30_000) {
      const found = lines.map((l) => l.match(re)).find((m) => m);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const done = (err: Error | null, match?: RegExpMatchArray) => {
          listeners.delete(onLine);
          clearTimeout(timer);
          if (err) reject(err);
          else resolve(match!);
        };
        const onLine = (line: string) => {
          const m = line.match(re);
          if (m) done(null, m);
        };
        const fail = (why: string) =>
          done(new Error(`${opts.name}: ${why} before a line matched ${re}. Last lines:\n${lines.slice(-20).join("\n")}`));
        const timer = setTimeout(() => fail(`${timeoutMs} ms passed`), timeoutMs);
        listeners.add(onLine);
        // Not awaited: a watch that fails the wait if the process exits first (`exited` never rejects).
        void exited.then(() => listeners.has(onLine) && fail("process exited"));
      });
    },
    kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    waitExit: () => exited,
    get exitCode() {
      return child.exitCode;
    },
  };
}
