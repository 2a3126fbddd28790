/**
 * The transporter on a three-node RabbitMQ cluster (test/support/private-rabbitmq.ts), #17:
 * a caller and eight service nodes, each connected to one of the brokers, call each other in
 * rounds while each broker node in turn is killed (-9) and started again.
 *
 * What must hold: after every kill, every service answers again (a node whose reply queue
 * RabbitMQ dropped would time out for ever: the cluster drops a dead broker node's queues by
 * name, which can race with the node declaring them again on a live one, and cancels the new
 * consumer); only the calls in flight at a kill fail; each node's own queues (its requests:
 * Moleculer's balancer picks the node, its replies) are transient, and exist on a live broker
 * node at the end.
 */
import assert from "node:assert/strict";
import { after, before, it } from "mocha";
import { ServiceBroker } from "moleculer";
import { eventually } from "../../test/support/eventually";
import { startPrivateRabbitCluster, type PrivateRabbitCluster } from "../../test/support/private-rabbitmq";
import { SafeAmqpTransporter } from "./safe-amqp-transporter";

const SERVICES = 16;
let rabbit: PrivateRabbitCluster;
before(async () => {
  rabbit = await startPrivateRabbitCluster(3);
});
after(async () => {
  await rabbit?.destroy();
});

/** Each time a node's transporter handed a lost connection to Moleculer's own reconnect loop (5 s between attempts). */
const handedOver: string[] = [];
/**
 * The transporters' and transits' last warnings, whatever the log level (CI logs errors only):
 * what a failed wait reports, so a failure that does not reproduce here still says how the
 * nodes moved (the rolling restart failed once in CI, 30 s without every service answering).
 */
const warnings: string[] = [];

/** `b`'s `logger.warn` calls `seen(text)` first, at any log level. */
function onWarn(logger: { warn: (...args: unknown[]) => void }, seen: (text: string) => void): void {
  const warn = logger.warn.bind(logger);
  logger.warn = (...args: unknown[]) => {
    seen(args.map((a) => (a instanceof Error ? a.message : String(a))).join(" "));
    warn(...args);
  };
}

const broker = (nodeID: string, first: number, namespace = "ha") =>
  new ServiceBroker({
    nodeID,
    namespace,
    requestTimeout: 3000,
    logger: { type: "Console", options: { level: process.env.TEST_LOG_LEVEL ?? "error", formatter: "short" } } as never,
    transporter: new SafeAmqpTransporter({
      url: rabbit.uris(first).split(","),
      prefetch: 100,
      socketOptions: { noDelay: true },
      autoDeleteQueues: 120_000,
    }) as never,
    // Moleculer's transit logs "Connection is failed" when its reconnect loop takes over.
    middlewares: [{ name: "HandOverSpy", started: (b: ServiceBroker) => spyOnHandOver(b, nodeID) } as never],
  });

function spyOnHandOver(b: ServiceBroker, nodeID: string): void {
  const keep = (text: string) => {
    warnings.push(`${new Date().toISOString().slice(11, 23)} ${nodeID}: ${text.slice(0, 200)}`);
    if (warnings.length > 400) warnings.shift();
  };
  if (!b.transit) return;
  onWarn(b.transit.logger, (text) => {
    if (/Connection is failed/.test(text)) handedOver.push(nodeID);
    keep(text);
  });
  onWarn(b.transit.tx.logger, keep);
}

/** Each service's failure in one round of calls (none when all answered). */
async function failures(caller: ServiceBroker, prefix: string, count: number): Promise<string[]> {
  const settled = await Promise.allSettled(Array.from({ length: count }, (_, i) => caller.call(`${prefix}${i}.echo`, { i })));
  return settled.flatMap((r, i) =>
    r.status === "rejected" ? [`${prefix}${i}: ${(r.reason as Error)?.name} ${(r.reason as Error)?.message}`] : [],
  );
}

/** `eventually` that every service answers, reporting on failure the last round's failures and the nodes' last warnings. */
async function allAnswering(what: string, caller: ServiceBroker, prefix: string, count: number): Promise<void> {
  let last: string[] = [];
  try {
    await eventually(what, async () => (last = await failures(caller, prefix, count)).length === 0, 30_000);
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\nlast round's failures:\n  ${last.join("\n  ")}\nthe nodes' last warnings:\n  ${warnings.slice(-80).join("\n  ")}`,
      { cause: err },
    );
  }
}

it("each RabbitMQ node killed in turn: every service answers again through the other two, only the calls in flight fail", async () => {
  const services = Array.from({ length: SERVICES }, (_, i) => broker(`svc-${i}`, i % 3));
  services.forEach((b, i) => b.createService({ name: `svc${i}`, actions: { echo: (ctx) => ctx.params } }));
  const caller = broker("caller", 0);
  const all = [caller, ...services];
  try {
    await Promise.all(all.map((b) => b.start()));
    await caller.waitForServices(
      services.map((_, i) => `svc${i}`),
      30_000,
    );

    const round = async () =>
      (await Promise.allSettled(services.map((_, i) => caller.call(`svc${i}.echo`, { i })))).filter((r) => r.status === "rejected").length;
    let failed = 0;
    let rounds = 0;
    let running = true;
    const load = (async () => {
      while (running) {
        failed += await round();
        rounds++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    for (const node of rabbit.nodes) {
      const before = rounds;
      await eventually("a few rounds before the kill", async () => rounds >= before + 5, 30_000);
      await node.kill();
      // Every service answers again while the killed node is still down...
      await allAnswering(`every service answering after ${node.node} was killed`, caller, "svc", SERVICES);
      await node.start();
      // ...and after it is back.
      await allAnswering(`every service answering after ${node.node} came back`, caller, "svc", SERVICES);
    }
    running = false;
    await load;
    // Only the calls in flight at a kill fail: at most two rounds' worth per kill.
    assert.ok(failed <= 2 * SERVICES * rabbit.nodes.length, `${failed} calls failed in ${rounds} rounds of ${SERVICES}`);
    assert.ok(rounds > 30, `${rounds} rounds`);

    const queues = (await rabbit.nodes[0].ctl("list_queues", "name", "type", "durable", "--formatter", "json")).trim();
    const list = JSON.parse(queues.slice(queues.indexOf("["))) as { name: string; type: string; durable: boolean }[];
    const own = list.filter((q) => /^MOLQ-ha\.(RES|REQ|EVENT|INFO)\./.test(q.name));
    for (const b of all)
      for (const kind of ["RES", "REQ"])
        assert.ok(
          own.some((q) => q.name === `MOLQ-ha.${kind}.${b.nodeID}`),
          `${b.nodeID} has its ${kind} queue`,
        );
    for (const q of own) assert.deepEqual([q.type, q.durable], ["classic", false], q.name);
  } finally {
    await Promise.all(all.map((b) => b.stop().catch(() => undefined)));
  }
});

it("a rolling restart of the three RabbitMQ nodes (each stopped, then started, as Kubernetes does): every node moves by itself, none waits in Moleculer's reconnect loop", async () => {
  const services = Array.from({ length: 8 }, (_, i) => broker(`roll-${i}`, i % 3, "roll"));
  services.forEach((b, i) => b.createService({ name: `roll${i}`, actions: { echo: (ctx) => ctx.params } }));
  const caller = broker("roll-caller", 0, "roll");
  const all = [caller, ...services];
  handedOver.length = 0;
  warnings.length = 0;
  try {
    await Promise.all(all.map((b) => b.start()));
    await caller.waitForServices(
      services.map((_, i) => `roll${i}`),
      30_000,
    );
    for (const node of rabbit.nodes) {
      // A graceful stop: the broker node closes its connections and its queues' processes
      // stop ("process is stopped by supervisor" to a re-declare) before the cluster drops them.
      await node.stop();
      await allAnswering(`every service answering while ${node.node} is stopped`, caller, "roll", services.length);
      await node.start();
      await allAnswering(`every service answering after ${node.node} came back`, caller, "roll", services.length);
    }
    assert.deepEqual(handedOver, [], "nodes that waited in Moleculer's 5 s reconnect loop instead of moving to a running RabbitMQ node");
  } finally {
    await Promise.all(all.map((b) => b.stop().catch(() => undefined)));
  }
});
