/**
 * proto/gen must be what proto/**\/*.proto generate (`npm run proto:check` does the same), and
 * the generated types must describe what the user service really sends and answers.
 */
import { it } from "mocha";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Address, PublicUser } from "../services/user/user.domain";
import type { ActionResponse, EventPayload } from "./gen/contracts";
import type * as user from "./gen/meridian/user/v1/user";
import { consumersOf } from "../lib/serializer/contracts-runtime";
import { generate, staleGenerated, writeGenerated } from "./generate";

it("proto/gen is up to date with proto/**/*.proto (run `npm run proto:gen`)", () => {
  assert.deepEqual(staleGenerated(), []);
});

it("the check notices a stale, a missing and an extra generated file", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-proto-"));
  try {
    writeGenerated(dir);
    assert.deepEqual(staleGenerated(dir), []);
    fs.appendFileSync(path.join(dir, "meridian/user/v1/user.ts"), "// edited\n");
    fs.rmSync(path.join(dir, "contracts.ts"));
    fs.writeFileSync(path.join(dir, "old.ts"), "");
    assert.deepEqual(staleGenerated(dir).sort(), [
      "missing: proto/gen/contracts.ts",
      "no longer generated: proto/gen/old.ts",
      "stale: proto/gen/meridian/user/v1/user.ts",
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it("generation is deterministic", () => {
  assert.deepEqual([...generate()], [...generate()]);
});

// Compile-time: the service's own types and the contracts agree both ways (a field added to
// one and not the other fails `npm run typecheck`). The check is the signature; at run time it is just true.
function sameShape<A, B>(aToB: (x: A) => B, bToA: (x: B) => A): true;
function sameShape(): true {
  return true;
}
it("the contracts describe the user service's types", () => {
  assert.ok(
    sameShape<PublicUser, user.User>(
      (x) => x,
      (x) => x as PublicUser,
    ),
  );
  assert.ok(
    sameShape<Address, ActionResponse<"user.getAddress">>(
      (x) => x,
      (x) => x,
    ),
  );
  const event: EventPayload<"user.registered"> = { userId: "u", email: "e", name: "n", occurredAt: "t" };
  assert.ok(event);
});

it("consumersOf: the services that consume an event through a work queue (whose queues publishers declare), not those whose replicas follow it", () => {
  assert.deepEqual([...(consumersOf("payment.succeeded") ?? [])], ["order"]);
  // search follows product events per replica; recommendation consumes them through its work queue.
  assert.deepEqual([...(consumersOf("stock.changed") ?? [])], ["recommendation"]);
  // Only followed (the recommendation replicas' models), or not consumed at all.
  assert.deepEqual(consumersOf("recommendation.model_changed"), []);
  assert.deepEqual(consumersOf("user.registered"), []);
  assert.equal(consumersOf("order.placed"), undefined, "an event with no contract");
});
