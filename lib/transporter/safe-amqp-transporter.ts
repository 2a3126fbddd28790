/**
 * Moleculer's AMQP transporter, made to live on a RabbitMQ cluster, with fixes.
 *
 * A cluster (#17). Moleculer's declares every queue durable and classic, so each lives on the
 * broker node that declared it, and a durable classic queue whose node is down cannot be
 * used, nor declared again, until that node is back: one dead broker node would stop every
 * action whose request queue it held. Here:
 * - the shared queues (an action's balanced request queue, `…REQB.<action>`, and a group's
 *   balanced event queue) are quorum queues: replicated on the cluster's nodes, they survive
 *   one node's loss with what they hold, and any node serves them;
 * - the queues of one Moleculer node (its replies, its direct requests, its copy of each
 *   broadcast) are transient (non-durable) classic queues on the broker node it is connected
 *   to: they die with that broker node, and the node declares them again on the next one.
 *   Nothing is lost that was kept before: Moleculer sends these messages non-persistent;
 * - the names start with `MOLQ` instead of `MOL`: a queue's type cannot change in place, so
 *   this topology is a new set of queues beside an older deployment's (which never clash
 *   with it; README "Upgrading to quorum queues" says what to delete).
 * - a node whose broker node died connects to the next URL of RABBITMQ_URI at once, instead
 *   of after Moleculer's fixed 5 s; only when none answers does Moleculer's loop take over.
 *   A request sent in the gap, or held by the dead node, is lost: its caller gets a
 *   RequestTimeoutError, which the edges retry once when it is safe (lib/edge-retry.ts).
 *
 * With one broker (a single URL) the same topology holds: quorum queues with one member.
 *
 * Moleculer's consumer callback fix: its consumer callback acks (or, after a
 * failure, nacks) a message on the channel when the handling promise settles, and during a
 * broker stop that channel may already be closing. amqplib then throws "Channel closing"
 * from inside the callback's promise chain, which amqplib never awaits: an unhandled
 * rejection, which fails a test file and, under Node's default, kills the process.
 * (moleculer 0.15.2, src/transporters/amqp.js `_consumeCB`.)
 *
 * Swallowing it is safe: a message not acked on a channel that is going away is redelivered
 * by RabbitMQ to another consumer (or dropped with an auto-deleted queue), exactly as if the
 * node had stopped a moment earlier.
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
import { Transporters } from "moleculer";

const amqpChannels = createRequire(__filename)("amqplib/lib/channel_model") as {
  Channel: { prototype: { prefetch(...args: unknown[]): Promise<unknown> } };
};
const prefetch = amqpChannels.Channel.prototype.prefetch;
amqpChannels.Channel.prototype.prefetch = function (this: unknown, ...args: unknown[]) {
  const result = prefetch.apply(this, args);
  result.catch(() => undefined);
  return result;
};

type ConsumeCallback = (msg: unknown) => unknown;
type QueueOptions = { durable?: boolean; arguments?: Record<string, unknown> } & Record<string, unknown>;

const Base = Transporters.AMQP as unknown as new (opts: unknown) => {
  logger: { debug(...a: unknown[]): void; info(...a: unknown[]): void; warn(...a: unknown[]): void };
  prefix: string;
  opts: { url: string[] };
  connectionDisconnecting: boolean;
  transit?: { disconnecting?: boolean };
  broker: { namespace?: string };
  init(transit: unknown, messageHandler: unknown, afterConnect: unknown): void;
  connect(errorCallback: (err: unknown) => void): Promise<void>;
  _getQueueOptions(packetType: string, balancedQueue?: boolean): QueueOptions;
  _consumeCB(cmd: string, needAck?: boolean): ConsumeCallback;
  send(topic: string, data: Buffer, meta: { packet: { type: string } }): Promise<void>;
};

/** The name prefix of this topology's exchanges and queues (Moleculer's is `MOL`). */
export const QUEUE_PREFIX = "MOLQ";

export class SafeAmqpTransporter extends Base {
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

  override connect(errorCallback: (err: unknown) => void): Promise<void> {
    // Moleculer calls `errorCallback` when an established connection is lost: try the other
    // URLs now (each connect takes the next one), and hand over only when none answers.
    return super.connect((err) => void this.failover(err, errorCallback));
  }

  private async failover(lost: unknown, errorCallback: (err: unknown) => void): Promise<void> {
    for (let i = 1; i < this.opts.url.length; i++) {
      if (this.connectionDisconnecting || this.transit?.disconnecting) break;
      try {
        await this.connect(errorCallback);
        this.logger.info("AMQP: moved to another RabbitMQ node");
        return;
      } catch (err) {
        this.logger.warn(`AMQP: another RabbitMQ node refused too: ${(err as Error)?.message ?? err}`);
      }
    }
    errorCallback(lost);
  }

  override send(topic: string, data: Buffer, meta: { packet: { type: string } }): Promise<void> {
    try {
      return super.send(topic, data, meta);
    } catch (err) {
      if (meta.packet.type === "HEARTBEAT" && (err as Error)?.name === "IllegalOperationError") {
        this.logger.debug(`AMQP heartbeat not sent (channel closing): ${(err as Error).message}`);
        return Promise.resolve();
      }
      return Promise.reject(err);
    }
  }

  override _consumeCB(cmd: string, needAck = false): ConsumeCallback {
    const handle = super._consumeCB(cmd, needAck);
    return (msg) => {
      try {
        const result = handle(msg);
        if (result && typeof (result as Promise<unknown>).then === "function")
          (result as Promise<unknown>).then(undefined, (err: unknown) =>
            this.logger.debug(`AMQP ${cmd} message not settled (channel closing): ${(err as Error)?.message ?? err}`),
          );
      } catch (err) {
        this.logger.debug(`AMQP ${cmd} message not settled (channel closing): ${(err as Error)?.message ?? err}`);
      }
    };
  }
}
