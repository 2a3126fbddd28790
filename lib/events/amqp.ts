/**
 * One dedicated AMQP connection per event-using service, separate from Moleculer's
 * transporter connection (a business-event backlog never delays broker calls). It is
 * opened lazily and forgotten when it closes; the next caller opens a new one, so the relay
 * and the consumer reconnect by simply trying again (with their own backoff).
 */
import amqp, { type ChannelModel } from "amqplib";

export class AmqpLink {
  private conn: ChannelModel | undefined;
  private connecting: Promise<ChannelModel> | undefined;
  private closed = false;

  constructor(
    private readonly uri: string,
    private readonly name: string,
  ) {}

  async connection(): Promise<ChannelModel> {
    if (this.closed) throw new Error("AMQP link closed");
    if (this.conn) return this.conn;
    this.connecting ??= (async () => {
      try {
        // Heartbeats (5 s unless the URI sets them) detect a dead peer in ~10 s; `timeout`
        // bounds the TCP connect, and `withTimeout` the AMQP handshake, which a broker that is
        // shutting down may accept and never answer.
        const conn = await withTimeout(
          amqp.connect(withHeartbeat(this.uri), { timeout: 10_000, clientProperties: { connection_name: this.name } }),
          15_000,
          "AMQP connect",
        );
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

function withHeartbeat(uri: string): string {
  const u = new URL(uri);
  if (!u.searchParams.has("heartbeat")) u.searchParams.set("heartbeat", "5");
  return u.toString();
}

/** Rejects after `ms` (the underlying work is not cancelled). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}
