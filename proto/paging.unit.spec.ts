/**
 * Paging, one convention in every contract. API.md's lists answer a flat
 * `{items, total, page, pageSize}` and take `?page=&pageSize=` (pageSize at most 100), so the
 * paging fields are declared in each list message, as Google's API guide does for its
 * page_size / page_token fields (AIP-158), rather than nested in a shared message that would
 * change the REST shape. Declared in many places, they are held to one definition here:
 *  - an answer with `page_size` starts with `items` (1, repeated), `total` (2), `page` (3),
 *    `page_size` (4), the last three int32 and required (a search page adds its facets after);
 *  - a request with `page_size` takes `page` and `page_size` as optional int32, page ≥ 1,
 *    1 ≤ page_size ≤ 100.
 */
import { it } from "mocha";
import assert from "node:assert/strict";
import protobuf from "protobufjs";
import { loadProtoRoot } from "./load";
import { readContracts } from "./registry";

const root = loadProtoRoot();
const contracts = readContracts(root);
const optional = (f: protobuf.Field) => f.options?.proto3_optional === true;

function pagingMessages(): { answers: protobuf.Type[]; requests: protobuf.Type[] } {
  const answers = new Set<protobuf.Type>();
  const requests = new Set<protobuf.Type>();
  for (const [, c] of contracts.actions) {
    if (c.request.fields.pageSize) requests.add(c.request);
    if (c.response?.fields.pageSize) answers.add(c.response);
  }
  return { answers: [...answers], requests: [...requests] };
}

/** A field's int32 rules, however protobufjs spelled the option (nested object or flattened keys). */
function int32Rules(f: protobuf.Field): { gte?: number; lte?: number } {
  const o = (f.options ?? {}) as Record<string, unknown>;
  const nested = o["(meridian.options.v1.rules)"] as { int32?: { gte?: number; lte?: number } } | undefined;
  if (nested?.int32) return nested.int32;
  return {
    gte: o["(meridian.options.v1.rules).int32.gte"] as number | undefined,
    lte: o["(meridian.options.v1.rules).int32.lte"] as number | undefined,
  };
}

it("every list answer starts with the same four paging fields", () => {
  const { answers } = pagingMessages();
  assert.ok(answers.length >= 6, `only ${answers.length} list answers`);
  for (const t of answers) {
    const shape = t.fieldsArray.map(
      (f) => `${f.id}:${f.name}:${f.repeated ? "repeated " : ""}${f.repeated ? "" : f.type}${optional(f) ? "?" : ""}`,
    );
    assert.deepEqual(shape.slice(1, 4), ["2:total:int32", "3:page:int32", "4:pageSize:int32"], t.fullName);
    assert.match(shape[0], /^1:items:repeated $/, t.fullName);
  }
});

it("every paged request takes page ≥ 1 and 1 ≤ pageSize ≤ 100, both optional", () => {
  const { requests } = pagingMessages();
  assert.ok(requests.length >= 6, `only ${requests.length} paged requests`);
  for (const t of requests) {
    const page = t.fields.page;
    const size = t.fields.pageSize;
    assert.ok(page, `${t.fullName} has pageSize but no page`);
    for (const f of [page, size]) {
      assert.equal(f.type, "int32", `${f.fullName}`);
      assert.ok(optional(f), `${f.fullName} is optional (a default applies)`);
    }
    assert.equal(int32Rules(page).gte, 1, `${page.fullName} ≥ 1`);
    assert.deepEqual([int32Rules(size).gte, int32Rules(size).lte], [1, 100], `${size.fullName} in 1..100`);
  }
});
