/**
 * The REPL's own commands (lib/repl-commands.ts) on an embedded system: what a REPL of the
 * system gets from its broker options, run as moleculer-repl runs them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../test/support/app";
import { eventually } from "../test/support/eventually";
import { createKnex } from "./db";
import { replCommands } from "./repl-commands";
import { SHIPPING_ADDRESS } from "../test/support/fixtures";

let app: TestApp;
before(async () => {
  app = await startTestApp({ services: ["user", "product", "order", "recommendation"] });
});
after(async () => {
  await app.stop();
});

/** Runs a command by name with moleculer-repl's arguments (on `on`, this file's app by default); resolves with what it printed. */
async function run(command: string, args: Record<string, unknown> = {}, options: Record<string, unknown> = {}, on = app): Promise<string> {
  const printed: string[] = [];
  const def = replCommands(on.config, (line) => printed.push(line)).find((c) => c.command.split(" ")[0] === command)!;
  await def.action(on.broker, { options, rawCommand: command, ...args } as never, {});
  return printed.join("\n");
}

it("every REPL of the system has the commands (broker option replOptions)", () => {
  assert.deepEqual(
    (app.broker.options.replOptions?.customCommands ?? []).map((c) => c.command),
    ["dead-letters <action>", "seed", "business-events", "invariants", "recs-rebuild"],
  );
});

it("seed loads the demo catalog through the product service, and a second run skips what exists", async () => {
  assert.match(await run("seed", {}, { count: "30" }), /Done: 30 new, 0 already there\./);
  assert.match(await run("seed", {}, { count: "40" }), /Done: 10 new, 30 already there\./);
  assert.equal((await app.broker.call<{ items: unknown[] }, unknown>("product.list", { pageSize: 100 })).items.length, 40);
  assert.match(await run("seed", {}, { count: "zero" }), /--count must be a positive integer/);
});

it("dead-letters lists per service (none here), refuses an unknown service and a wrong action", async () => {
  const out = await run("dead-letters", { action: "list" });
  for (const s of ["user", "product", "order", "recommendation"]) assert.match(out, new RegExp(`^${s}: 0 dead letter\\(s\\)$`, "m"));
  assert.match(await run("dead-letters", { action: "list" }, { service: "nope" }), /failed: unknown service\(s\): nope/);
  assert.match(await run("dead-letters", { action: "drop" }), /usage: dead-letters list\|replay/);
});

it("recs-rebuild rebuilds the recommendation model and says when it is done", async () => {
  assert.match(await run("recs-rebuild"), /recommendations: model rebuilt in [\d.]+ s/);
  assert.equal((await app.broker.call<{ status: string }>("recommendation.rebuildStatus")).status, "done");
});

describe("invariants on a system at rest: a delivered order partly refunded, one refunded before shipping, one cancelled", () => {
  const ADMIN = { email: "repl-admin@example.com", password: "repl-admin-password" };
  let sys: TestApp;
  let productId = "";
  let refundedId = "";
  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(sys.baseUrl, method, path, opts);

  before(async () => {
    sys = await startTestApp({ db: "sqlite", env: { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } });
    const admin = (await call("POST", "/api/auth/login", { body: ADMIN })).body.accessToken as string;
    const ada = (await call("POST", "/api/auth/register", { body: { email: "ada@example.com", password: "ada password 1", name: "Ada" } }))
      .body.accessToken as string;
    const created = await call("POST", "/api/products", {
      token: admin,
      body: {
        sku: "INV-1",
        name: "Invariant Lamp",
        description: "",
        category: "lamps",
        price: { amount: 1000, currency: "EUR" },
        stock: 10,
      },
    });
    assert.equal(created.status, 201, created.text);
    productId = created.body.id;
    const order = async (quantity: number) => {
      const r = await call("POST", "/api/orders", {
        token: ada,
        body: { shippingAddress: SHIPPING_ADDRESS, items: [{ productId, quantity }] },
      });
      assert.equal(r.status, 201, r.text);
      return r.body.id as string;
    };
    const statusOf = async (id: string) => (await call("GET", `/api/orders/${id}`, { token: ada })).body;
    const pay = async (id: string) => {
      const p = await call("POST", `/api/orders/${id}/pay`, { token: ada, body: { provider: "sandbox" } });
      assert.equal(p.status, 200, p.text);
      const token = new URL(p.body.payUrl).searchParams.get("token");
      assert.equal(
        (await call("POST", `/api/payments/sandbox/${p.body.id}/complete`, { body: { outcome: "success", token } })).status,
        202,
      );
      await eventually(`${id} PAID`, async () => (await statusOf(id)).status === "PAID");
    };
    const delivered = await order(2);
    await pay(delivered);
    assert.equal(
      (await call("POST", `/api/orders/${delivered}/ship`, { token: admin, body: { carrier: "SF", trackingNumber: "SF1" } })).status,
      200,
    );
    assert.equal((await call("POST", `/api/orders/${delivered}/deliver`, { token: admin })).status, 200);
    assert.equal(
      (await call("POST", `/api/orders/${delivered}/refunds`, { token: admin, body: { amount: 500, reason: "scratched" } })).status,
      202,
    );
    await eventually("partly refunded", async () => (await statusOf(delivered)).paymentStatus === "partially_refunded");
    const refunded = await order(1);
    refundedId = refunded;
    await pay(refunded);
    // With a key: its claim names the refund, not an order (no orphan for the invariants).
    assert.equal(
      (
        await call("POST", `/api/orders/${refunded}/refunds`, {
          token: ada,
          body: { reason: "changed my mind" },
          headers: { "idempotency-key": "repl-refund-1" },
        })
      ).status,
      202,
    );
    await eventually("REFUNDED", async () => (await statusOf(refunded)).status === "REFUNDED");
    const cancelled = await order(1);
    assert.equal((await call("POST", `/api/orders/${cancelled}/cancel`, { token: ada })).status, 200);
  });
  after(async () => {
    await sys?.stop();
  });

  it("finds no problem once the events have settled, and names a planted one", async () => {
    // The events (notifications, the refunds' bookkeeping) settle after the answers: polled.
    const settled = await eventually("no problem", async () => {
      const out = await run("invariants", {}, {}, sys);
      return out.startsWith("invariants: 0 problem(s).") && out;
    });
    assert.match(settled, /3 order\(s\) \((?=.*DELIVERED 1)(?=.*REFUNDED 1)(?=.*CANCELLED 1)/);
    assert.match(
      settled,
      /2 charge\(s\) \(1 refunded in full, 1 in part\), 2 platform refund\(s\), 2 order\(s\) notified, 0 Idempotency-Key claim\(s\) without an order/,
    );

    // Planted: two units reserved that no hold accounts for.
    const db = createKnex(sys.config, "product");
    try {
      await db("products").where({ id: productId }).increment("reserved", 2);
      const out = await run("invariants", {}, {}, sys);
      assert.match(out, /^invariants: 2 problem\(s\)\./);
      assert.match(out, new RegExp(`^  - product ${productId}: reserved 2 but holds sum to 0$`, "m"));
      assert.match(out, new RegExp(`^  - product ${productId}: reserved 2 at the end$`, "m"));
    } finally {
      await db("products").where({ id: productId }).decrement("reserved", 2);
      await db.destroy();
    }
    assert.match(await run("invariants", {}, {}, sys), /^invariants: 0 problem\(s\)\./);

    // Planted: a key claimed for something that never came to be (the refund's claim, which
    // names its refund, is not one).
    const orders = createKnex(sys.config, "order");
    try {
      const [claim] = await orders("idempotency_keys").where({ idem_key: "repl-refund-1" });
      await orders("idempotency_keys").insert({ ...claim, idem_key: "planted-key", resource_id: "nothing-made" });
      assert.match(await run("invariants", {}, {}, sys), /, 1 Idempotency-Key claim\(s\) without an order/);
    } finally {
      await orders("idempotency_keys").where({ idem_key: "planted-key" }).del();
      await orders.destroy();
    }
  });

  it("business-events: an order's trail from outbox to inboxes; an unsent row and an unapplied one say so", async () => {
    // Its order.created marked too: a relay marks what it delivered up to 200 ms later (relay.ts).
    const trail = await eventually("the refund applied by the order service, the order's creation marked sent", async () => {
      const out = await run("business-events", {}, { order: refundedId, last: "50" }, sys);
      return /refund\.succeeded .* applied by .*order \+\d+ ms/.test(out) && /order\.created +\S+ {2}sent /.test(out) && out;
    });
    assert.match(trail, new RegExp(`^\\d+ business event\\(s\\) naming order ${refundedId}, oldest first`));
    const lines = trail.split("\n").slice(1);
    // Oldest first: the order's creation, its payment, its refund.
    const first = (name: string) => lines.findIndex((l) => l.includes(` ${name} `));
    assert.ok(first("order.created") >= 0 && first("order.created") < first("payment.succeeded"), trail);
    assert.ok(first("payment.succeeded") < first("refund.succeeded"), trail);
    assert.match(
      lines[first("order.created")],
      /^ {2}\S+ {2}order +order\.created +\S+ {2}sent \+\d+ ms; applied by notification \+\d+ ms$/,
    );
    // This order's events only: the system holds three orders, each with its order.created.
    assert.equal(lines.filter((l) => l.includes(" order.created ")).length, 1, trail);
    assert.equal(lines.filter((l) => l.includes(" order.refunded ")).length, 1, trail);

    // Planted: a row the relay has not sent (far in the future, so the running relay leaves it),
    // naming the order, applied by no inbox.
    const db = createKnex(sys.config, "order");
    try {
      const far = Date.now() + 3_600_000;
      await db("outbox").insert({
        id: "planted-row",
        event: "order.cancelled",
        payload: JSON.stringify({ orderId: refundedId }),
        occurred_at: far,
        available_at: far,
        attempts: 2,
        last_error: "broker unreachable",
      });
      const out = await run("business-events", {}, { order: refundedId, last: "50" }, sys);
      assert.match(
        out,
        /order +order\.cancelled +planted-row {2}NOT SENT yet \(attempts 2, broker unreachable\); applied by no inbox yet$/m,
      );
    } finally {
      await db("outbox").where({ id: "planted-row" }).del();
      await db.destroy();
    }
    assert.match(await run("business-events", {}, { last: "0" }, sys), /--last must be an integer from 1 to 1000/);
    assert.match(await run("business-events", {}, { order: "a1" }, sys), /failed: an id to look for: 8 to 64 letters, digits and dashes/);
  });
});
