/**
 * Moleculer's AMQP transporter, made to live on a RabbitMQ cluster, with fixes.
 *
 * A cluster (#17). Moleculer's declares every queue durable and classic, so each lives on the
 * broker node that declared it, and a durable classic queue whose node is down cannot be
 * used, nor declared again, until that node is back: one dead broker node would stop every
 * action whose request queue it held. Here:
 * - the shared queues (an action's balanced request queue, `…REQB.<action>`, and a group's
 *   balanced event queue) are quorum queues: replicated on the cluster's nodes, they survive
 *   one node's loss with what they hold, and any node serves them. Meridian does not use
 *   them today: Moleculer's own balancer picks the node of each call (`disableBalancer` is
 *   off), so a request goes to that node's queue, and a request lost with a node is lost,
 *   not run a second time by another replica (RabbitMQ would redeliver a shared queue's
 *   unacknowledged request: a write run twice);
 * - the queues of one Moleculer node (its replies, its direct requests, its copy of each
 *   broadcast) are transient (non-durable) classic queues on the broker node it is connected
 *   to: they die with that broker node, and the node declares them again on the next one.
 *   Nothing is lost that was kept before: Moleculer sends these messages non-persistent.
 *   Not exclusive: tried, a node then often found its own queue still held by its previous
 *   connection (405 RESOURCE_LOCKED) and failed ten times more calls per broker kill. The
 *   limit: RabbitMQ 4.3 refuses transient non-exclusive queues (3.10 to 4.2 take them).
 * - the names start with `MOLQ` instead of `MOL`: a queue's type cannot change in place, so
 *   this topology is a new set of queues beside an older deployment's (which never clash
 *   with it; docs/running.md "Upgrading to quorum queues" says what to delete).
 * - a node whose broker node died connects to the next URL of RABBITMQ_URI at once, instead
 *   of after Moleculer's fixed 5 s; only when none answers does Moleculer's loop take over.
 *   A request sent in the gap is refused (`BrokerDisconnectedError`: not sent, so the edges
 *   and lib/internal-retry.ts send it again once the node is back); one held by the dead
 *   broker node is lost: its caller gets a RequestTimeoutError, which the edges retry once
 *   when it is safe (lib/edge-retry.ts).
 *
 * With one broker (a single URL) the same topology holds: quorum queues with one member.
 *
 * The consumer callback, rewritten (moleculer 0.15.2, src/transporters/amqp.js `_consumeCB`).
 * Moleculer's acks (or, after a failure, nacks) a request when its handling settles, on the
 * transporter's channel of THAT moment:
 * - after a reconnect that is a new channel, where the old delivery tag means nothing:
 *   RabbitMQ closes the channel ("406 unknown delivery tag"), and Moleculer then drops every
 *   packet it sends until the connection itself goes (seen in the first rolling-restart
 *   runs: a node unreachable for seconds). Here a delivery is settled on the channel it came
 *   from, or not at all when that channel is gone (RabbitMQ has put it back already);
 * - during a broker stop that channel may be closing: amqplib throws "Channel closing" from
 *   inside a promise chain nobody awaits, an unhandled rejection that kills the process under
 *   Node's default. Swallowed here: a message not acked on a channel that is going away is
 *   redelivered by RabbitMQ, as if the node had stopped a moment earlier.
 *
 * Its `send` publishes on the channel synchronously, so a packet sent while the channel is
 * closing throws "Channel closing". The discoverer's heartbeat timer (`beat()`, run by a
 * bare setInterval, moleculer 0.15.2 registry/discoverers/base.js) never handles that
 * rejection: a heartbeat lost while the node stops is dropped here (the node is going away;
 * its DISCONNECT or the heartbeat timeout tells the others). Any other packet still fails.
 *
 * The same transporter sets its channel's prefetch without awaiting it (`connect`, also on
 * a reconnect racing a stop); amqplib's `prefetch` is therefore marked handled here. Callers
 * that await it (ours do) still get its rejection.
 */
import { createRequire } from "node:module";
import { Errors, Transporters } from "moleculer";
import { withHeartbeat } from "../events/amqp";

const amqpChannels = createRequire(__filename)("amqplib/lib/channel_model") as {
  Channel: { prototype: { prefetch: (this: unknown, ...args: unknown[]) => Promise<unknown> } };
};
const prefetch = amqpChannels.Channel.prototype.prefetch;
amqpChannels.Channel.prototype.prefetch = function (this: unknown, ...args: unknown[]) {
  const result = prefetch.apply(this, args);
  result.catch(() => undefined);
  return result;
};

type ConsumeCallback = (msg: unknown) => unknown;
/** What is used here of amqplib's connection and channel (both event emitters). */
type Closeable = { removeAllListeners(event: string): void; on(event: string, fn: () => void): void; close(): Promise<void> };
type QueueOptions = { durable?: boolean; arguments?: Record<string, unknown> } & Record<string, unknown>;

const Base = Transporters.AMQP as unknown as new (opts: unknown) => {
  logger: { debug(...a: unknown[]): void; info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
  prefix: string;
  opts: { url: string[]; socketOptions?: Record<string, unknown> };
  connectionDisconnecting: boolean;
  connection: Closeable | null;
  transit?: { disconnecting?: boolean };
  broker: { namespace?: string };
  init(transit: unknown, messageHandler: unknown, afterConnect: unknown): void;
  connect(errorCallback: (err: unknown) => void): Promise<void>;
  _getQueueOptions(packetType: string, balancedQueue?: boolean): QueueOptions;
  _consumeCB(cmd: string, needAck?: boolean): ConsumeCallback;
  channel: (Closeable & { ack(msg: unknown): void; nack(msg: unknown): void; checkQueue(queue: string): Promise<unknown> }) | null;
  nodeID: string;
  getTopicName(cmd: string, nodeID?: string): string;
  subscribe(cmd: string, nodeID?: string): Promise<unknown> | undefined;
  disconnect(): Promise<void>;
  receive(cmd: string, data: Buffer): unknown;
  send(topic: string, data: Buffer, meta: { packet: { type: string } }): Promise<void>;
  makeSubscriptions(topics: unknown[]): Promise<unknown>;
};

/**
 * A packet that did not leave because the connection or its channel is going: Moleculer's
 * BrokerDisconnectedError, which every caller already reads as "the broker is away" (503 with
 * Retry-After at the edges, lib/errors.ts), with the cause in its message for the logs.
 */
function refusedPacket(err: unknown): Error {
  // The typings inherit MoleculerError's (message, code, type, data); the class takes none and
  // sets its own message and 502, extended here with the cause.
  const e = new Errors.BrokerDisconnectedError("");
  e.message = `${e.message} (${(err as Error)?.message ?? err})`;
  return e;
}

/** Closes it if it is open; an already closed one (amqplib may throw at once) is no error. */
function closeQuietly(c: Closeable | null | undefined): void {
  try {
    c?.close().catch(() => undefined);
  } catch {
    // already closed
  }
}

/**
 * After a move, when this node checks that its own queues still exist (ms after the move).
 * RabbitMQ may delete a queue the node has just declared again, silently (rabbitmq-server#9798,
 * open: every surviving broker node runs its cleanup of the lost one, and one that runs late
 * deletes the queue declared meanwhile); the consumer stays and nothing arrives, so each call
 * to the node times out. A missing queue is found by a passive declare, whose 404 closes the
 * channel: that counts as a lost connection, and the node moves again, declaring them anew.
 * Its limit: a deletion after the last check is not seen (the cleanup runs within seconds of
 * a broker node's loss).
 */
const QUEUE_CHECKS_AFTER_MOVE_MS = [1_000, 3_000, 10_000];

/** How long a node keeps moving over the RabbitMQ URLs itself before Moleculer's 5 s reconnect loop takes over. */
const FAILOVER_WINDOW_MS = 15_000;

/** The name prefix of this topology's exchanges and queues (Moleculer's is `MOL`). */
export const QUEUE_PREFIX = "MOLQ";

export class SafeAmqpTransporter extends Base {
  /** Set by a stop: no connect (failover's included) may bring the node back after it. */
  private stopping = false;
  /** This node's own queues (its requests, replies, and copy of each broadcast), by name. */
  private readonly ownQueues = new Set<string>();

  constructor(opts: Record<string, unknown>) {
    super(opts);
    // A broker node that vanishes without closing its sockets (a lost host) is noticed by
    // the AMQP heartbeat (5 s unless a URL sets one) instead of the server's 60 s, and a
    // connect to it gives up after 10 s instead of the system's SYN timeout.
    this.opts.url = this.opts.url.map(withHeartbeat);
    this.opts.socketOptions = { ...this.opts.socketOptions, timeout: 10_000 };
  }

  override init(transit: unknown, messageHandler: unknown, afterConnect: unknown): void {
    super.init(transit, messageHandler, afterConnect);
    if (transit) this.prefix = QUEUE_PREFIX + (this.broker.namespace ? `-${this.broker.namespace}` : "");
  }

  override _getQueueOptions(packetType: string, balancedQueue?: boolean): QueueOptions {
    const options = super._getQueueOptions(packetType, balancedQueue);
    return balancedQueue
      ? { ...options, durable: true, arguments: { ...options.arguments, "x-queue-type": "quorum" } }
      : { ...options, durable: false };
  }

  /** Moleculer's, with the node's own queue names noted (Moleculer's amqp.js `subscribe` names them so). */
  override subscribe(cmd: string, nodeID?: string): Promise<unknown> | undefined {
    this.ownQueues.add(nodeID != null ? this.getTopicName(cmd, nodeID) : `${this.prefix}.${cmd}.${this.nodeID}`);
    return super.subscribe(cmd, nodeID);
  }

  /** See QUEUE_CHECKS_AFTER_MOVE_MS. */
  private async checkQueuesAfterMove(): Promise<void> {
    const { connection, channel } = this;
    let waited = 0;
    for (const at of QUEUE_CHECKS_AFTER_MOVE_MS) {
      // Unreferenced: a pending check keeps no stopped process alive.
      await new Promise((r) => setTimeout(r, at - waited).unref());
      waited = at;
      if (this.stopping || !channel || this.channel !== channel || this.connection !== connection) return;
      try {
        for (const queue of this.ownQueues) await channel.checkQueue(queue);
      } catch (err) {
        if (this.stopping || this.channel !== channel) return;
        this.logger.warn(`AMQP: a queue of this node is gone since the move (${(err as Error)?.message ?? err}); moving again`);
        closeQuietly(connection);
        return;
      }
    }
  }

  override disconnect(): Promise<void> {
    this.stopping = true;
    return super.disconnect();
  }

  override connect(errorCallback: (err: unknown) => void): Promise<void> {
    if (this.stopping) return Promise.reject(new Error("AMQP transporter stopped"));
    // Moleculer calls `errorCallback` when an established connection is lost: try the other
    // URLs now (each connect takes the next one), and hand over only when none answers.
    return super
      .connect((err) => void this.failover(err, errorCallback))
      .then(
        () => {
          const conn = this.connection;
          if (this.stopping) {
            this.discardConnection();
            return;
          }
          // Moleculer forgets a channel the server closed (a refused operation) and then drops
          // every packet while its connection stays up: a closed channel counts as a lost
          // connection here, so the node moves on (failover) instead of going silent.
          this.channel?.on("close", () => {
            if (!this.stopping && this.connection === conn) closeQuietly(conn);
          });
        },
        (err: unknown) => {
          this.discardConnection();
          throw err;
        },
      );
  }

  /**
   * A connect that failed after the TCP/AMQP connection opened (its channel or a queue
   * refused) leaves that connection open, and Moleculer's 'close' handlers on it and on its
   * channel would later mark the transporter disconnected and forget the channel, whatever
   * connection and channel are current by then: a node that had moved on to a healthy broker
   * node would drop every packet. Both closed here, without their handlers.
   */
  private discardConnection(): void {
    const conn = this.connection;
    const channel = this.channel;
    this.connection = null;
    this.channel = null;
    for (const emitter of [channel, conn]) {
      if (!emitter) continue;
      emitter.removeAllListeners("close");
      emitter.removeAllListeners("error");
      emitter.on("error", () => undefined);
    }
    closeQuietly(conn);
  }

  /**
   * Rounds over the URLs for up to FAILOVER_WINDOW_MS: the other URLs at once, then a pause
   * growing to 1 s before each new round (the lost URL first; with one URL, before each try): a queue of this node that lived on the lost broker node is
   * refused for a while ("not found", or "process is stopped by supervisor" while that node
   * shuts down, ~1–3 s here) until the cluster has dropped it, and a node of a rolling
   * restart may refuse connections meanwhile. Only then is the loss handed to Moleculer, whose
   * own reconnect waits 5 s between attempts: during that wait every call fails.
   */
  private async failover(lost: unknown, errorCallback: (err: unknown) => void): Promise<void> {
    const deadline = Date.now() + FAILOVER_WINDOW_MS;
    for (let i = 1; ; i++) {
      const round = Math.floor(i / this.opts.url.length);
      if (round > 0 && i % this.opts.url.length === 0) await new Promise((r) => setTimeout(r, Math.min(1000, 250 * round)));
      if (this.stopping || this.connectionDisconnecting || this.transit?.disconnecting) return;
      // Checked before each attempt; one attempt may still take the 10 s connect timeout.
      if (Date.now() >= deadline) break;
      try {
        await this.connect(errorCallback);
        if (this.stopping) return;
        this.logger.warn(`AMQP: connection lost (${(lost as Error)?.message ?? lost}); moved to another RabbitMQ node`);
        void this.checkQueuesAfterMove();
        return;
      } catch (err) {
        this.logger.warn(`AMQP: a RabbitMQ node refused while moving: ${(err as Error)?.message ?? err}`);
      }
    }
    if (!this.stopping) errorCallback(lost);
  }

  override send(topic: string, data: Buffer, meta: { packet: { type: string } }): Promise<void> {
    try {
      return super.send(topic, data, meta);
    } catch (err) {
      if (meta.packet.type === "HEARTBEAT" && (err as Error)?.name === "IllegalOperationError") {
        this.logger.debug(`AMQP heartbeat not sent (channel closing): ${(err as Error).message}`);
        return Promise.resolve();
      }
      return Promise.reject(refusedPacket(err));
    }
  }

  /**
   * Moleculer holds every packet sent while it (re)subscribes until the subscriptions are
   * made, and passes their failure to each: amqplib's "Channel ended" or a channel's "404
   * (NOT-FOUND)" (whose `code: 404` the gateway would answer as a missing resource) reached
   * clients as 500s and 404s in the first chaos runs. They mean the packet was not sent.
   */
  override makeSubscriptions(topics: unknown[]): Promise<unknown> {
    return super.makeSubscriptions(topics).catch((err: unknown) => {
      throw refusedPacket(err);
    });
  }

  override _consumeCB(cmd: string, needAck = false): ConsumeCallback {
    // Moleculer calls this as it calls `this.channel.consume(…)`: this is the delivering channel.
    const channel = this.channel;
    const settle = (ack: boolean, msg: unknown) => {
      if (!channel || channel !== this.channel) return; // gone: RabbitMQ redelivers it
      try {
        if (ack) channel.ack(msg);
        else channel.nack(msg);
      } catch (err) {
        this.logger.debug(`AMQP ${cmd} message not settled (channel closing): ${(err as Error)?.message ?? err}`);
      }
    };
    return (msg) => {
      if (msg === null) {
        // RabbitMQ cancelled the consumer: its queue was deleted (on a cluster, a node's
        // queue is dropped when the broker node that held it is declared down, which can
        // race with this node declaring it again elsewhere). Moleculer would go on without
        // it (a node without its reply queue times out every call); a new connection
        // declares every queue again.
        if (channel !== this.channel) return; // an earlier channel's: that connection is gone
        this.logger.warn(`AMQP: RabbitMQ cancelled the ${cmd} consumer (queue deleted); reconnecting`);
        closeQuietly(this.connection);
        return;
      }
      const result = this.receive(cmd, (msg as { content: Buffer }).content);
      const pending = result && typeof (result as Promise<unknown>).then === "function" ? (result as Promise<unknown>) : undefined;
      if (!needAck) pending?.catch((err: unknown) => this.logger.error("Message handling error.", err));
      else if (pending)
        pending.then(
          () => settle(true, msg),
          (err: unknown) => {
            this.logger.error("Message handling error.", err);
            settle(false, msg);
          },
        );
      else settle(true, msg);
    };
  }
}
