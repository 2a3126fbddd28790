/**
 * The one progress bar of the command-line tools and the benchmarks (#18), on cli-progress.
 *
 * On a terminal the bar is redrawn in place (at most every 100 ms). Anywhere else (a CI log,
 * a pipe) it is written as plain lines: one at the start, one every `everyMs` (10 s), and the
 * last at `stop()`, never a `\r` or an escape sequence, so a log stays readable and short.
 */
import { SingleBar } from "cli-progress";

export interface Progress {
  /** `done` so far; optionally a new `total`, `label` (a phase) or `info` shown after the figures. */
  update(done: number, change?: { total?: number; label?: string; info?: string }): void;
  /** Draws the last state and ends the line. Idempotent. */
  stop(): void;
}

export interface ProgressOptions {
  /** Default: stderr (stdout stays for a command's result). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Lines when not on a terminal: one per this many ms. */
  everyMs?: number;
}

export function progress(label: string, total: number, opts: ProgressOptions = {}): Progress {
  return drawn("{label} [{bar}] {value}/{total} {info}", label, total, opts);
}

/**
 * A line of text kept current (a load run's counters, a benchmark's elapsed time), under the
 * same rules as the bar: in place on a terminal, a plain line every `everyMs` elsewhere.
 */
export function statusLine(text: string, opts: ProgressOptions = {}): { set(text: string): void; stop(): void } {
  const line = drawn("{label}", text, 1, opts);
  return { set: (next) => line.update(0, { label: next }), stop: () => line.stop() };
}

function drawn(format: string, label: string, total: number, opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const bar = new SingleBar({
    stream,
    format,
    barsize: 30,
    barCompleteChar: "#",
    barIncompleteChar: ".",
    // Never hidden: a tool that exits with a bar running (Ctrl-C, a failure) would leave the
    // terminal without a cursor.
    hideCursor: false,
    noTTYOutput: true,
    notTTYSchedule: opts.everyMs ?? 10_000,
    fps: 10,
    // Off a terminal every line already ended (and "clearing" is a no-op there); on one the
    // last state stays on screen and the line ends.
    clearOnComplete: !stream.isTTY,
    // A tool's own SIGINT handler (bin/*.ts shutdown) decides what Ctrl-C does.
    gracefulExit: false,
  });
  let payload = { label, info: "" };
  let stopped = false;
  bar.start(Math.max(1, total), 0, payload);
  return {
    update(done, change = {}) {
      if (stopped) return;
      if (change.total !== undefined) bar.setTotal(Math.max(1, change.total));
      if (change.label !== undefined || change.info !== undefined)
        payload = { label: change.label ?? payload.label, info: change.info ?? payload.info };
      bar.update(done, payload);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      bar.stop();
    },
  };
}

/**
 * For loops that report `(label, done, total)` as they go: one bar per label, ended when
 * `done` reaches `total` or another label starts.
 */
export function progressSteps(opts: ProgressOptions = {}): (label: string, done: number, total: number) => void {
  let current: { label: string; bar: Progress } | undefined;
  return (label, done, total) => {
    if (current?.label !== label) {
      current?.bar.stop();
      current = { label, bar: progress(label, total, opts) };
    }
    current.bar.update(done, { total });
    if (done >= total) {
      current.bar.stop();
      current = undefined;
    }
  };
}
