/**
 * The node's logger: Moleculer's logger API (`this.logger.info(...)` in every service) written
 * through pino (#16). JSON lines (LOG_FORMAT=json) are pino's; text lines (LOG_FORMAT=text) keep
 * Moleculer's "short" format. Both go to one destination, which the entry point chooses:
 *
 * - `npm start` (bin/start.ts): `asyncStdout()`, pino's asynchronous destination on fd 1. A line
 *   costs the request a string append; the write happens on libuv's thread pool, and lines logged
 *   while a write is in flight leave together in the next one. Measured on the gateway: the access
 *   line 43-84 µs of CPU per request through `console`, 14-20 µs here (bench/RESULTS.md, "second cuts").
 * - anything else (tests, the REPL, tools): `process.stdout`, synchronous as `console` was. A test
 *   file's lines share fd 1 with mocha's report, written synchronously: a write from another
 *   thread would land out of order with it (under node:test it once landed inside a report frame),
 *   so only the server process writes asynchronously. A test that reads the lines passes its own
 *   destination (`{ write(line) }`).
 *
 * Every line goes to the one destination, errors included (Moleculer's console logger sent
 * warnings and errors to stderr): one stream keeps the lines in the order they were logged.
 *
 * The guarantee and its limit, for the asynchronous destination:
 * - a stopping node (SIGTERM, SIGINT, `broker.stop()`) loses no line: the broker's stop waits until
 *   every queued line is written (`stop()` below, bounded by STOP_DRAIN_MS for a stdout that no
 *   longer drains), and pino writes whatever is logged after that synchronously at process exit;
 * - an uncaught exception also ends through process exit, so the queued lines are written then,
 *   but a write already handed to the thread pool may be cut short by the exit;
 * - a crash that skips exit handlers (SIGKILL, the OOM killer, a native abort) loses the lines not
 *   yet written: those logged since the last write began, a few milliseconds' worth under load;
 * - lines are never dropped while the process lives: if stdout drains slower than lines are
 *   logged, they queue in memory.
 */
import { inspect } from "node:util";
import { Loggers } from "moleculer";
import { pino, type Logger as Pino } from "pino";
import { currentRequestId, LogFields } from "./tracing";

/** Where lines go: pino's destination interface (a stream, sonic-boom, or a test's collector). */
export interface LogDestination {
  write(line: string): unknown;
}

/** How long a stopping broker waits for its queued lines to reach stdout. */
const STOP_DRAIN_MS = 5000;

/**
 * pino's asynchronous stdout (sonic-boom on fd 1). pino registers it to be flushed synchronously
 * at process exit. One per process: every broker of the process shares it.
 */
let stdoutDestination: ReturnType<typeof pino.destination> | undefined;
export function asyncStdout(): LogDestination {
  return (stdoutDestination ??= pino.destination({ dest: 1, sync: false }));
}

/** Resolves once the destination has written everything queued so far (at once for a synchronous one). */
function drained(destination: LogDestination): Promise<void> {
  if (destination !== stdoutDestination || !stdoutDestination) return Promise.resolve();
  const boom = stdoutDestination;
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, STOP_DRAIN_MS);
    timer.unref();
    boom.once("drain", () => {
      clearTimeout(timer);
      resolve();
    });
    // An empty write: sonic-boom emits `drain` once it and every line before it are written.
    boom.write("");
  });
}

type Level = "fatal" | "error" | "warn" | "info" | "debug" | "trace";
/** What Moleculer names a logger by (its LoggerBindings). */
type Bindings = { nodeID: string; ns: string; mod: string; svc?: string };

export interface AppLoggerOptions {
  level: Level;
  format: "json" | "text";
  colors: boolean;
  destination: LogDestination;
}

/**
 * A Moleculer logger (an appender, as its Console logger is). JSON: pino with Moleculer's json
 * fields (`ts`, `level`, `msg`, `nodeID`, `ns`, `mod`, `svc`), `requestId` inside a request
 * (lib/tracing.ts's scope) and the fields of a leading `logFields(...)`. Text: Moleculer's
 * "short" line, `logFields(...)` printed as `key=value`.
 */
export class AppLogger extends Loggers.Formatted<Loggers.Formatted.FormattedLoggerOptions> {
  private readonly format: "json" | "text";
  private readonly destination: LogDestination;
  private root?: Pino;

  constructor(opts: AppLoggerOptions) {
    super({ level: opts.level, formatter: "short", colors: opts.colors && opts.format === "text", autoPadding: false });
    this.format = opts.format;
    this.destination = opts.destination;
  }

  override getLogHandler(bindings: Bindings): ((type: string, args: unknown[]) => void) | null {
    const level = bindings ? this.getLogLevel(bindings.mod) : null;
    if (!level) return null;
    return this.format === "json" ? this.jsonHandler(bindings, level) : this.textHandler(bindings, level);
  }

  private jsonHandler(bindings: Bindings, level: Level): (type: string, args: unknown[]) => void {
    this.root ??= pino(
      {
        base: null,
        messageKey: "msg",
        // Moleculer's `ts` (ms since epoch) and level names, not pino's `time` and numbers.
        timestamp: () => `,"ts":${Date.now()}`,
        formatters: { level: (label) => ({ level: label }) },
        mixin() {
          const requestId = currentRequestId();
          return requestId ? { requestId } : {};
        },
      },
      this.destination,
    );
    const log = this.root.child(
      { nodeID: bindings.nodeID, ns: bindings.ns, mod: bindings.mod, ...(bindings.svc ? { svc: bindings.svc } : {}) },
      { level },
    );
    return (type, args) => {
      const fields = args[0] instanceof LogFields ? args[0].fields : undefined;
      const msg = printArgs(fields ? args.slice(1) : args);
      log[type as Level](fields ?? {}, msg);
    };
  }

  private textHandler(bindings: Bindings, level: Level): (type: string, args: unknown[]) => void {
    const max = LEVELS.indexOf(level);
    const format = this.getFormatter(bindings);
    return (type, args) => {
      if (LEVELS.indexOf(type as Level) > max) return;
      this.destination.write(`${format(type, args).map(String).join(" ")}\n`);
    };
  }

  /**
   * Called by the broker's stop (Moleculer stops its loggers last). Its LoggerFactory awaits
   * each logger's stop (`Promise.all(appenders.map((a) => a.stop()))` in its source); its .d.ts
   * says `void`, hence the disable.
   */
  // eslint-disable-next-line @typescript-eslint/no-misused-promises -- see above: the promise is awaited
  override stop(): Promise<void> {
    return drained(this.destination);
  }
}

const LEVELS: readonly Level[] = ["fatal", "error", "warn", "info", "debug", "trace"];

/** Moleculer's message text: its arguments joined by spaces, objects and errors through util.inspect. */
function printArgs(args: unknown[]): string {
  let out = "";
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const s = typeof a === "string" ? a : a !== null && typeof a === "object" ? inspect(a, { depth: 2, breakLength: Infinity }) : String(a);
    out = i === 0 ? s : `${out} ${s}`;
  }
  return out;
}
