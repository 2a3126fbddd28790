/**
 * Moleculer's AMQP transporter with one fix: its consumer callback acks (or, after a
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

const Base = Transporters.AMQP as unknown as new (opts: unknown) => {
  logger: { debug(...a: unknown[]): void };
  _consumeCB(cmd: string, needAck?: boolean): ConsumeCallback;
  send(topic: string, data: Buffer, meta: { packet: { type: string } }): Promise<void>;
};

export class SafeAmqpTransporter extends Base {
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
