/**
 * The derivations from one contract, on a small contract of its own: a field's rules become
 * the action's params (which Moleculer's validator enforces), the OpenAPI request schema is
 * built from those params, the HTTP rule becomes the gateway's route and the `in` rule the
 * TypeScript union. Then, on the real contracts: the addresses the user service saves and the
 * ones an order ships to keep the same rules.
 */
import { it } from "mocha";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fastestValidatorToJsonSchema } from "../lib/openapi";
import { StrictNullValidator } from "../lib/validator";
import { loadProtoRoot, PROTO_DIR } from "./load";
import { paramsSchema, type ParamsSchema } from "./params";
import { readContracts } from "./registry";
import { Params } from "./gen/params";

const SHOP = `syntax = "proto3";
package meridian.shop.v1;
import "google/api/annotations.proto";
import "meridian/common/v1/common.proto";
import "meridian/options/v1/options.proto";

service ShopService {
  option (meridian.options.v1.service) = "shop";
  // List things
  rpc List(ListRequest) returns (ListRequest) {
    option (google.api.http) = {get: "/api/things"};
    option (meridian.options.v1.auth) = AUTH_NONE;
    option (meridian.options.v1.visibility) = VISIBILITY_PUBLISHED;
  }
  rpc Put(PutRequest) returns (PutRequest) {
    option (google.api.http) = {put: "/api/things/{id}" body: "*"};
    option (meridian.options.v1.auth) = AUTH_ADMIN;
    option (meridian.options.v1.visibility) = VISIBILITY_PUBLISHED;
  }
}
message ListRequest {
  optional int32 page = 1 [(meridian.options.v1.rules) = {int32: {gte: 1, lte: 100}}];
  optional bool open = 2;
}
message Line {
  option (meridian.options.v1.unknown_fields) = UNKNOWN_FIELDS_REFUSE;
  string sku = 1 [(meridian.options.v1.rules) = {string: {pattern: "^[A-Z]+$"}}];
  int64 quantity = 2 [(meridian.options.v1.rules) = {int64: {gte: 1, not_in: [13]}}];
}
message PutRequest {
  option (meridian.options.v1.unknown_fields) = UNKNOWN_FIELDS_DROP;
  string id = 1 [(meridian.options.v1.rules) = {string: {len: 8}}];
  string name = 2 [(meridian.options.v1.rules) = {string: {min_len: 1, max_len: 20, trim: true}}];
  optional string kind = 3 [(meridian.options.v1.rules) = {string: {in: ["a", "b"]}}];
  meridian.common.v1.NullableString note = 4 [(meridian.options.v1.rules) = {string: {max_len: 5}}];
  repeated Line lines = 5 [(meridian.options.v1.rules) = {repeated: {min_items: 1, max_items: 2}}];
  optional meridian.common.v1.StringList tags = 6 [(meridian.options.v1.rules) = {repeated: {max_items: 3, items: {string: {uri: true}}}}];
  string email = 7 [(meridian.options.v1.rules) = {string: {email: true, max_len: 50}}];
}
`;

function withShop<T>(fn: (root: ReturnType<typeof loadProtoRoot>) => T): T {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-params-"));
  try {
    for (const sub of ["google", "meridian/common", "meridian/options"])
      fs.cpSync(path.join(PROTO_DIR, sub), path.join(dir, sub), { recursive: true });
    fs.mkdirSync(path.join(dir, "meridian/shop/v1"), { recursive: true });
    fs.writeFileSync(path.join(dir, "meridian/shop/v1/shop.proto"), SHOP);
    return fn(loadProtoRoot(dir));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const PUT: ParamsSchema = {
  $$strict: "remove",
  id: { type: "string", length: 8 },
  name: { type: "string", trim: true, min: 1, max: 20 },
  kind: { type: "enum", values: ["a", "b"], optional: true },
  note: { type: "string", max: 5, nullable: true },
  lines: {
    type: "array",
    min: 1,
    max: 2,
    items: {
      type: "object",
      strict: true,
      props: { sku: { type: "string", pattern: "^[A-Z]+$" }, quantity: { type: "number", integer: true, min: 1, notEqual: 13 } },
    },
  },
  tags: { type: "array", max: 3, items: { type: "url" }, optional: true },
  email: { type: "email", normalize: true, max: 50 },
};

it("a contract's rules become the action's params; numbers of a GET take their string form", () => {
  withShop((root) => {
    const c = readContracts(root);
    assert.deepEqual(paramsSchema(c.actions.get("shop.put")!.request, false), PUT);
    assert.deepEqual(paramsSchema(c.actions.get("shop.list")!.request, true), {
      page: { type: "number", integer: true, convert: true, min: 1, max: 100, optional: true },
      open: { type: "boolean", convert: true, optional: true },
    });
  });
});

it("Moleculer's validator enforces the derived params: each rule refuses what it should", () => {
  const check = new StrictNullValidator().compile(PUT as Record<string, never>);
  const valid = () => ({
    id: "12345678",
    name: "  Tea  ",
    note: null,
    lines: [{ sku: "TEA", quantity: 2 }],
    email: "A@Example.com",
    extra: 1,
  });
  const ok = valid();
  assert.equal(check(ok), true);
  assert.equal(ok.name, "Tea", "trimmed");
  assert.equal(ok.email, "a@example.com", "normalized");
  assert.ok(!("extra" in ok), "unknown fields dropped");
  const refused: [string, (p: Record<string, unknown>) => void][] = [
    ["len", (p) => (p.id = "1234567")],
    ["min_len after trim", (p) => (p.name = "   ")],
    ["max_len", (p) => (p.name = "x".repeat(21))],
    ["in", (p) => (p.kind = "c")],
    ["nullable string max_len", (p) => (p.note = "123456")],
    ["min_items", (p) => (p.lines = [])],
    [
      "max_items",
      (p) =>
        (p.lines = [
          { sku: "A", quantity: 1 },
          { sku: "B", quantity: 1 },
          { sku: "C", quantity: 1 },
        ]),
    ],
    ["nested pattern", (p) => (p.lines = [{ sku: "tea", quantity: 1 }])],
    ["nested gte", (p) => (p.lines = [{ sku: "TEA", quantity: 0 }])],
    ["nested not_in", (p) => (p.lines = [{ sku: "TEA", quantity: 13 }])],
    ["nested unknown field refused", (p) => (p.lines = [{ sku: "TEA", quantity: 1, price: 1 }])],
    ["item uri", (p) => (p.tags = ["not a url"])],
    ["email", (p) => (p.email = "nope")],
    ["required", (p) => delete p.id],
    ["null where not nullable", (p) => (p.name = null)],
  ];
  for (const [name, spoil] of refused) {
    const p: Record<string, unknown> = valid();
    spoil(p);
    assert.notEqual(check(p), true, name);
  }
});

it("the OpenAPI request schema is built from the derived params", () => {
  const schema = fastestValidatorToJsonSchema(PUT) as Record<string, any>;
  assert.deepEqual(schema.properties.id, { type: "string", minLength: 8, maxLength: 8 });
  assert.equal(schema.properties.name.maxLength, 20);
  assert.deepEqual(schema.properties.kind.enum, ["a", "b"]);
  assert.equal(schema.properties.note.nullable, true);
  assert.equal(schema.properties.lines.minItems, 1);
  assert.equal(schema.properties.lines.items.properties.sku.pattern, "^[A-Z]+$");
  assert.deepEqual([...schema.required].sort(), ["email", "id", "lines", "name", "note"]);
});

it("the HTTP rule is the route and the `in` rule is the handler's union type", () => {
  withShop((root) => {
    const put = readContracts(root).actions.get("shop.put")!;
    assert.deepEqual(put.http, { method: "PUT", path: "/api/things/{id}", body: "*" });
  });
  // On the real contracts (proto/gen, checked current by proto.unit.spec.ts).
  const generated = fs.readFileSync(path.join(PROTO_DIR, "gen/meridian/order/v1/order.ts"), "utf8");
  assert.match(generated, /provider: "sandbox" \| "alipay" \| "wechatpay";/);
});

it("a saved address and an order's shipping address take the same rules", () => {
  const props = (p: Record<string, unknown>) => p as Record<string, Record<string, unknown>>;
  const saved = { ...props(Params["user.createAddress"]) };
  delete saved.$$strict;
  const shipping = props(props(Params["order.create"]).shippingAddress.props as Record<string, unknown>);
  assert.deepEqual(shipping, saved);
});
