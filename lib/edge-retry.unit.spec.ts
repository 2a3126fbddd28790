import assert from "node:assert/strict";
import { describe, it } from "mocha";
import { Errors } from "moleculer";
import { SERVICE_FACTORIES } from "../app";
import { loadConfig } from "./config";
import { contracts } from "./serializer/contracts-runtime";
import { lostInTransport, notSent, retryEndpoint, safeToRepeat, secondTry } from "./edge-retry";

describe("one more try for a request lost in transport (lib/edge-retry.ts)", () => {
  it("lost in transport: a remote timeout or a rejection because the node left; not an answer, a nested or local timeout, or 'no node'", () => {
    assert.ok(lostInTransport(new Errors.RequestTimeoutError({ action: "product.get", nodeID: "b" }), "product.get"));
    assert.ok(lostInTransport(new Errors.RequestRejectedError({ action: "product.get", nodeID: "b" }), "product.get"));
    assert.ok(
      !lostInTransport(new Errors.RequestTimeoutError({ action: "product.get", nodeID: "b" }), "product.get", true),
      "a slow handler of this node",
    );
    assert.ok(
      !lostInTransport(new Errors.RequestTimeoutError({ action: "payment.create", nodeID: "p" }), "order.pay"),
      "a nested call's timeout, passed back",
    );
    assert.ok(!lostInTransport(new Errors.ServiceNotAvailableError({ action: "product.get" }), "product.get"));
    assert.ok(!lostInTransport(new Errors.MoleculerClientError("Not found", 404, "NOT_FOUND"), "product.get"));
    assert.ok(!lostInTransport(undefined, "product.get"));
  });

  it("safe to repeat: reads, idempotent actions, keyed writes of actions that replay keys; nothing else", () => {
    assert.ok(safeToRepeat("GET", undefined, undefined));
    assert.ok(safeToRepeat("head", { idempotency: undefined }, undefined));
    assert.ok(safeToRepeat("DELETE", { idempotency: "idempotent" }, undefined));
    assert.ok(safeToRepeat("POST", { idempotency: "key" }, "k-1"));
    assert.ok(!safeToRepeat("POST", { idempotency: "key" }, undefined), "a keyed action without the key acts again");
    assert.ok(!safeToRepeat("POST", { idempotency: undefined }, "k-1"), "a key an action does not replay protects nothing");
    assert.ok(!safeToRepeat("POST", undefined, undefined));
    assert.ok(!safeToRepeat(undefined, undefined, undefined));
  });

  it("not sent (the transporter was away): any request goes again, a write without a key too; never for a client that left", () => {
    const disconnected = new Errors.BrokerDisconnectedError("");
    assert.ok(notSent(disconnected));
    assert.ok(!notSent(new Errors.RequestTimeoutError({ action: "cart.addItem", nodeID: "c" })), "sent, then lost: may have acted");
    const a = { id: "a" };
    const b = { id: "b" };
    const q = {
      err: disconnected,
      contract: undefined,
      action: "cart.addItem",
      method: "POST",
      idempotencyKey: undefined,
      failedNode: "a",
      endpoints: [a, b],
      clientGone: false,
    };
    assert.equal(secondTry(q), b, "an unkeyed POST that never left");
    assert.equal(secondTry({ ...q, failedNode: undefined, endpoints: [a] }), a);
    assert.equal(secondTry({ ...q, clientGone: true }), undefined);
    assert.equal(
      secondTry({ ...q, err: new Errors.RequestTimeoutError({ action: "cart.addItem", nodeID: "a" }) }),
      undefined,
      "the same POST lost after it left: not repeated",
    );
  });

  it("the second try goes to another available node when there is one, else the same", () => {
    const a = { id: "a" };
    const b = { id: "b" };
    const c = { id: "c", isAvailable: false };
    assert.equal(retryEndpoint("a", [a, b, c]), b);
    assert.equal(retryEndpoint("a", [a, c]), a, "only the failed one is available: the same (a lost broker node, the service alive)");
    assert.equal(retryEndpoint(undefined, [a]), a);
    assert.equal(retryEndpoint("a", []), undefined, "not listed any more: the balancer chooses");
  });

  it("the contract's idempotency_key marks exactly the actions that replay an Idempotency-Key (order's withKey, the cart's keyed add)", () => {
    const config = loadConfig({ DATA_DIR: "/tmp/unused" });
    const replaying = Object.entries(SERVICE_FACTORIES)
      .flatMap(([service, factory]) =>
        Object.entries(factory(config).actions ?? {})
          .filter(
            ([, a]) =>
              typeof a === "object" && a !== null && "handler" in a && /this\.withKey\(|ctx\.meta\.idempotencyKey/.test(String(a.handler)),
          )
          .map(([name]) => `${service}.${name}`),
      )
      .sort();
    const marked = [...contracts.actions.values()]
      .filter((c) => c.idempotency === "key")
      .map((c) => c.action)
      .sort();
    assert.deepEqual(marked, replaying);
    assert.ok(marked.length >= 5 && marked.includes("cart.addItem"), `${marked.join(", ")}`);
  });
});
