/**
 * The edges' one more try (lib/edge-retry.ts) with real brokers in this process: a gateway and two
 * product nodes over a RabbitMQ vhost (cluster mode: MariaDB, Redis, protobuf). Node B holds
 * every `product.get` and `product.adjustStock` it receives and never answers, as a node that
 * died holding the request would (a test middleware, no timing): the gateway's call times out
 * (REQUEST_TIMEOUT_MS) and, when the request is safe to repeat, goes to node A.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "mocha";
import type { Middleware, ServiceBroker } from "moleculer";
import { createBroker } from "../app";
import { accessTokens } from "./auth/tokens";
import { loadConfig } from "./config";
import { dropDatabase } from "./db";
import { deleteRedisKeys, http } from "../test/support/app";
import { MeridianGrpc } from "../test/support/grpc-client";
import { freePort } from "../test/support/ports";
import { createVhost, type RabbitVhost } from "../test/support/rabbitmq";
import { MYSQL_URL, REDIS_URL, uniqueNamespace } from "../test/support/servers";

const HELD = new Set(["product.get", "product.adjustStock"]);

describe("a request lost with the node that held it: sent once more when safe (REST and gRPC edges + two product nodes over RabbitMQ)", () => {
  const namespace = uniqueNamespace("retry");
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-retry-"));
  const jwtSecret = randomBytes(32).toString("hex");
  const held: Record<string, number> = { "product.get": 0, "product.adjustStock": 0 };
  const release: (() => void)[] = [];
  let vhost: RabbitVhost;
  let gw: ServiceBroker, a: ServiceBroker, b: ServiceBroker;
  let baseUrl = "";
  let grpc: MeridianGrpc;
  let admin = "";
  const env = () => ({
    NAMESPACE: namespace,
    DATA_DIR: dataDir,
    MYSQL_URL,
    REDIS_URL,
    MIGRATE_ON_START: "true",
    RABBITMQ_URI: vhost.uri,
    JWT_SECRET: jwtSecret,
    REQUEST_TIMEOUT_MS: "1500",
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "error",
    RATE_LIMITS: "off",
    DEMO_CATALOG: "false",
  });
  /** Node B's calls of the held actions never answer (until the end of the test). */
  const holdOnB: Middleware = {
    name: "HoldOnB",
    localAction(next: (ctx: unknown) => Promise<unknown>, action: { name: string }) {
      if (!HELD.has(action.name)) return next;
      return () => {
        held[action.name]++;
        return new Promise((_, reject) => release.push(() => reject(new Error("released at the end of the test"))));
      };
    },
  } as Middleware;

  before(async () => {
    vhost = await createVhost();
    const [port, grpcPort] = [await freePort(), await freePort()];
    gw = createBroker(loadConfig({ ...env(), NODE_ID: `${namespace}-gw`, PORT: String(port), GRPC_PORT: String(grpcPort) }), [
      "gateway",
      "grpc",
    ]);
    grpc = new MeridianGrpc(`127.0.0.1:${grpcPort}`);
    a = createBroker(loadConfig({ ...env(), NODE_ID: `${namespace}-a` }), ["product"]);
    b = createBroker(loadConfig({ ...env(), NODE_ID: `${namespace}-b` }), ["product"], { middlewares: [holdOnB] });
    await a.start();
    await b.start();
    await gw.start();
    const deadline = Date.now() + 20_000;
    while (
      (gw.registry.getActionEndpoints("product.get")?.endpoints ?? []).filter((e: { isAvailable: boolean }) => e.isAvailable).length < 2
    ) {
      if (Date.now() > deadline) throw new Error("the gateway does not see both product nodes");
      await new Promise((r) => setTimeout(r, 100));
    }
    baseUrl = `http://127.0.0.1:${port}`;
    admin = await accessTokens(jwtSecret, 900).sign({ id: randomUUID(), role: "admin", sessionId: randomUUID() });
    await a.call("product.seedDemo", { from: 0, count: 24 });
  });

  after(async () => {
    for (const r of release) r();
    grpc?.close();
    for (const broker of [gw, b, a]) await broker?.stop().catch(() => undefined);
    await dropDatabase(loadConfig(env()), "product").catch(() => undefined);
    await deleteRedisKeys(REDIS_URL, namespace).catch(() => undefined);
    await vhost?.destroy().catch(() => undefined);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  // The first 12 products for the REST reads, the next 12 for gRPC's: each read once, since a
  // cached read would not reach a node.
  const products = async (from = 0) =>
    (await a.call<{ items: { id: string }[] }, unknown>("product.export", { limit: 24 })).items.map((p) => p.id).slice(from, from + 12);

  it("reads: every GET answers 200, those node B held included (sent to node A)", async () => {
    // The balancer sends about half to B.
    for (const id of await products()) {
      const r = await http(baseUrl, "GET", `/api/products/${id}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.id, id);
    }
    assert.ok(held["product.get"] >= 1, `node B held ${held["product.get"]} reads: the retry path was not exercised`);
  });

  it("gRPC reads: every GetProduct answers, those node B held included", async () => {
    const before = held["product.get"];
    for (const id of await products(12)) {
      const { value } = await grpc.call("meridian.product.v1.ProductService", "Get", { id }, { deadlineMs: 10_000 });
      assert.equal(value.id, id);
    }
    assert.ok(held["product.get"] > before, "node B held none of the gRPC reads: the retry path was not exercised");
  });

  it("writes that are not safe to repeat answer 503 when lost, an Idempotency-Key notwithstanding (the action does not replay keys)", async () => {
    const [id] = await products();
    const stockBefore = (await a.call<{ stock: { onHand: number } }, unknown>("product.get", { id })).stock.onHand;
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await http(baseUrl, "POST", `/api/products/${id}/stock`, {
        token: admin,
        body: { delta: 1 },
        headers: { "idempotency-key": `k-${i}` },
      });
      statuses.push(r.status);
      if (r.status !== 200) assert.equal(r.body.error.code, "SERVICE_UNAVAILABLE", r.text);
    }
    const ok = statuses.filter((s) => s === 200).length;
    assert.ok(statuses.includes(503), `statuses ${statuses.join(",")}: none was held by node B`);
    assert.equal(held["product.adjustStock"], statuses.filter((s) => s === 503).length, "each 503 is one held call, never sent again");
    const stockAfter = (await a.call<{ stock: { onHand: number } }, unknown>("product.get", { id })).stock.onHand;
    assert.equal(stockAfter - stockBefore, ok, "only the answered adjustments applied");
  });
});
