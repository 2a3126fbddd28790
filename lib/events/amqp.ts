/**
 * One dedicated AMQP connection per event-using service, separate from Moleculer's
 * transporter connection (a business-event backlog never delays broker calls). It is
 * opened lazily and forgotten when it closes; the next caller opens a new one, so the relay
 * and the consumer reconnect by simply trying again (with their own backoff).
 *
 * Several URLs (the nodes of a RabbitMQ cluster): a connect tries them in turn, starting
 * after the one used last, so a link whose broker node died moves to the next node at once;
 * it fails only when none answers. Which node a link uses does not matter to its users: the
 * queues are quorum queues, replicated on every node (topology.ts).
 */
import { createRequire } from "node:module";
import amqp, { type ChannelModel } from "amqplib";
import { withTimeout } from "../timeout";

/** What is used here of amqplib's multiplexer (lib/mux.js, 0.10): it writes the channels' frames to the socket. */
interface AmqpMux {
  out: { cork(): void; uncork(): void };
  _readIncoming: (this: AmqpMux) => void;
}

/**
 * amqplib's multiplexer writes each message waiting in the channels' buffers (a publish, an
 * ack, a confirm-channel's frames) to the socket on its own, one system call each; in the
 * cluster checkout it found ~2 messages per turn, and up to dozens on the front node (#16).
 * Corked for its loop, a turn's messages leave in one `writev` (bench/RESULTS.md). The same
 * bytes in the same order, and the same flow control: `write` still answers false past the
 * socket's high-water mark, and the multiplexer then waits for 'drain' as before. Patched on
 * the prototype (amqplib has no option for it) once per process, for every AMQP connection
 * here: the events' (this file) and Moleculer's transporter's (it imports this file).
 */
const amqpMux = createRequire(__filename)("amqplib/lib/mux") as { Mux: { prototype: AmqpMux } };
const readIncoming = amqpMux.Mux.prototype._readIncoming;
amqpMux.Mux.prototype._readIncoming = function (this: AmqpMux) {
  this.out.cork();
  try {
    readIncoming.call(this);
  } finally {
    this.out.uncork();
  }
};

export class AmqpLink {
  private conn: ChannelModel | undefined;
  private connecting: Promise<ChannelModel> | undefined;
  private closed = false;
  /** Index in `uris` of the next URL to try first. */
  private next = 0;
  private readonly uris: readonly string[];

  constructor(
    uris: string | readonly string[],
    private readonly name: string,
  ) {
    this.uris = typeof uris === "string" ? [uris] : uris;
    if (!this.uris.length) throw new Error("AmqpLink: no RabbitMQ URL");
  }

  async connection(): Promise<ChannelModel> {
    if (this.closed) throw new Error("AMQP link closed");
    if (this.conn) return this.conn;
    this.connecting ??= (async () => {
      try {
        const conn = await this.connectAny();
        // Errors are reported through 'close' (and the users' failed calls); an unhandled
        // 'error' event would crash the process.
        conn.on("error", () => undefined);
        conn.on("close", () => {
          if (this.conn === conn) this.conn = undefined;
        });
        if (this.closed) {
          await conn.close().catch(() => undefined);
          throw new Error("AMQP link closed");
        }
        this.conn = conn;
        return conn;
      } finally {
        this.connecting = undefined;
      }
    })();
    return this.connecting;
  }

  /** The first of the URLs (from `next` on, round) that connects; the error names them all. */
  private async connectAny(): Promise<ChannelModel> {
    const failures: string[] = [];
    for (let i = 0; i < this.uris.length; i++) {
      const index = (this.next + i) % this.uris.length;
      const uri = this.uris[index];
      try {
        // Heartbeats (5 s unless the URI sets them) detect a dead peer in ~10 s; `timeout`
        // bounds the TCP connect, and `withTimeout` the AMQP handshake, which a broker that is
        // shutting down may accept and never answer.
        const conn = await withTimeout(
          amqp.connect(withHeartbeat(uri), { timeout: 10_000, clientProperties: { connection_name: this.name } }),
          15_000,
          "AMQP connect",
        );
        // The next connect (after this one closes) starts with the following node.
        this.next = (index + 1) % this.uris.length;
        return conn;
      } catch (err) {
        failures.push(`${redactedHost(uri)}: ${(err as Error).message}`);
      }
    }
    this.next = (this.next + 1) % this.uris.length;
    throw new Error(failures.length > 1 ? `no RabbitMQ node answered (${failures.join("; ")})` : failures[0]);
  }

  async close(): Promise<void> {
    this.closed = true;
    const conn = this.conn ?? (await this.connecting?.catch(() => undefined));
    this.conn = undefined;
    await conn?.close().catch(() => undefined);
  }
}

/** Exponential backoff with jitter: 100 ms, 200 ms, … up to `maxMs`. */
export function backoffMs(failures: number, maxMs = 5000): number {
  const base = Math.min(maxMs, 100 * 2 ** Math.min(failures, 16));
  return Math.round(base / 2 + (Math.random() * base) / 2);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** host:port of an AMQP URL, for messages (never its credentials). */
export function redactedHost(uri: string): string {
  try {
    return new URL(uri).host;
  } catch {
    return "(malformed URL)";
  }
}

/** The URL with `heartbeat=5` unless it sets one (seconds; a dead peer is noticed in ~10 s). */
export function withHeartbeat(uri: string): string {
  const u = new URL(uri);
  if (!u.searchParams.has("heartbeat")) u.searchParams.set("heartbeat", "5");
  return u.toString();
}

/**
 * The reconnect loop shared by the AMQP consumers: `setup()` opens channels and consumes,
 * resolving with a promise that settles when they close; after a close or a failure it runs
 * again after a backoff, until `stop()`. The first setup's outcome settles `start()`: at
 * start, a broken topology or an unreachable broker fails the service start instead.
 */
export class ReconnectLoop {
  private running = false;
  private done: Promise<void> | undefined;
  private stopSignal: (() => void) | undefined;

  constructor(
    private readonly what: string,
    private readonly logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void },
    private readonly setup: () => Promise<{ closed: Promise<void> }>,
    /** After every successful setup (the first one included). */
    private readonly onUp: () => void = () => undefined,
  ) {}

  async start(): Promise<void> {
    this.running = true;
    let first!: (err?: Error) => void;
    const ready = new Promise<void>((resolve, reject) => (first = (err) => (err ? reject(err) : resolve())));
    this.done = this.loop(first);
    await ready;
  }

  get isRunning(): boolean {
    return this.running;
  }

  private async loop(first: (err?: Error) => void): Promise<void> {
    let failures = 0;
    let started = false;
    while (this.running) {
      try {
        const { closed } = await this.setup();
        if (!started) {
          started = true;
          first();
        }
        if (failures) this.logger.info(`${this.what} reconnected`);
        failures = 0;
        this.onUp();
        await closed;
      } catch (err) {
        if (!started) {
          this.running = false;
          first(err as Error);
          return;
        }
        if (failures++ === 0) this.logger.warn(`${this.what} lost RabbitMQ, retrying: ${(err as Error).message}`);
      }
      if (!this.running) break;
      await new Promise<void>((r) => {
        const t = setTimeout(r, backoffMs(failures));
        this.stopSignal = () => (clearTimeout(t), r());
      });
    }
  }

  /** Stops reconnecting; resolves when the loop has ended (bounded by the caller). */
  stop(): Promise<void> {
    this.running = false;
    this.stopSignal?.();
    return this.done ?? Promise.resolve();
  }
}
