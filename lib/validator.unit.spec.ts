import assert from "node:assert/strict";
import { it } from "mocha";
import { StrictNullValidator } from "./validator";

it("null is refused where a rule is not nullable, at any depth; undefined stays 'not given'; nullable rules take null", () => {
  const check = new StrictNullValidator().compile({
    $$strict: true,
    name: { type: "string", optional: true },
    brand: { type: "string", optional: true, nullable: true },
    price: { type: "object", optional: true, props: { amount: { type: "number" }, note: "string|optional" } },
    tags: { type: "array", optional: true, items: { type: "object", props: { label: { type: "string", optional: true } } } },
  });
  assert.equal(check({}), true);
  assert.equal(check({ brand: null }), true);
  assert.equal(check({ name: undefined }), true);
  const fields = (params: unknown) => (check(params) as { field: string; type: string }[]).map((p) => `${p.field}:${p.type}`);
  assert.deepEqual(fields({ name: null }), ["name:nullable"]);
  assert.deepEqual(fields({ price: { amount: 1, note: null } }), ["price.note:nullable"]);
  assert.deepEqual(fields({ tags: [{ label: "x" }, { label: null }] }), ["tags[1].label:nullable"]);
  // Without the strict rule fastest-validator would have passed every one of these.
  assert.notEqual(check({ name: 5 }), true, "other problems are still the validator's");
});
