import assert from "node:assert/strict";
import { it } from "mocha";
import {
  MAX_STOCK,
  PATCH_FIELDS,
  adjustVerdict,
  applyPatch,
  isIsoCurrency,
  lineProblems,
  moneyProblems,
  normalizeLines,
  normalizeTags,
  orderBy,
  parseListQuery,
  parseStringList,
  pickFields,
  reservationView,
  sameLines,
  stockInvariantHolds,
  stockOf,
  toPublicProduct,
  type ProductRecord,
  pricedLines,
} from "./product.domain";

const product: ProductRecord = {
  id: "p1",
  sku: "SKU-1",
  name: "Phone",
  description: "d",
  category: "phones",
  brand: "Acme",
  tags: ["a"],
  price: { amount: 19999, currency: "EUR" },
  images: [],
  onHand: 10,
  reserved: 3,
  createdAt: 0,
  updatedAt: 0,
  version: 7,
};

it("money: integer minor units and an ISO 4217 code, never floats", () => {
  assert.deepEqual(moneyProblems({ amount: 1999, currency: "EUR" }), []);
  assert.deepEqual(moneyProblems({ amount: 0, currency: "CNY" }), []);
  assert.equal(moneyProblems({ amount: 19.99, currency: "EUR" })[0].field, "price.amount");
  assert.equal(moneyProblems({ amount: -1, currency: "EUR" })[0].field, "price.amount");
  assert.equal(moneyProblems({ amount: Number.MAX_SAFE_INTEGER + 1, currency: "EUR" })[0].field, "price.amount");
  assert.equal(moneyProblems({ amount: "100", currency: "EUR" })[0].field, "price.amount");
  assert.equal(moneyProblems({ amount: 1, currency: "eur" })[0].field, "price.currency");
  assert.equal(moneyProblems({ amount: 1, currency: "XYZ" })[0].field, "price.currency");
  assert.ok(isIsoCurrency("USD") && isIsoCurrency("JPY") && !isIsoCurrency("EURO") && !isIsoCurrency("ABC"));
});

it("stock: available = onHand - reserved; the invariant 0 <= reserved <= onHand", () => {
  assert.deepEqual(stockOf(10, 3), { onHand: 10, reserved: 3, available: 7 });
  assert.ok(stockInvariantHolds(5, 5));
  assert.ok(stockInvariantHolds(0, 0));
  assert.ok(!stockInvariantHolds(4, 5));
  assert.ok(!stockInvariantHolds(5, -1));
  assert.ok(!stockInvariantHolds(MAX_STOCK + 1, 0));
});

it("adjustments never take on-hand below reserved, nor above the maximum; delta 0 is invalid", () => {
  assert.equal(adjustVerdict({ onHand: 10, reserved: 3 }, -7), "ok");
  assert.equal(adjustVerdict({ onHand: 10, reserved: 3 }, -8), "below-reserved");
  assert.equal(adjustVerdict({ onHand: 10, reserved: 3 }, 5), "ok");
  assert.equal(adjustVerdict({ onHand: 10, reserved: 0 }, MAX_STOCK), "too-large");
  assert.equal(adjustVerdict({ onHand: 10, reserved: 0 }, 0), "invalid");
  assert.equal(adjustVerdict({ onHand: 10, reserved: 0 }, 1.5), "invalid");
});

it("reservation lines: duplicates merged, sorted by productId (the lock order), bounds checked", () => {
  const lines = normalizeLines([
    { productId: "b", quantity: 1 },
    { productId: "a", quantity: 2 },
    { productId: "b", quantity: 3 },
  ]);
  assert.deepEqual(lines, [
    { productId: "a", quantity: 2 },
    { productId: "b", quantity: 4 },
  ]);
  assert.deepEqual(lineProblems(lines), []);
  assert.equal(lineProblems([]).length, 1);
  assert.equal(
    lineProblems(
      normalizeLines([
        { productId: "a", quantity: MAX_STOCK },
        { productId: "a", quantity: 1 },
      ]),
    ).length,
    1,
  );
  assert.ok(
    sameLines(
      [
        { productId: "b", quantity: 1 },
        { productId: "b", quantity: 1 },
        { productId: "a", quantity: 1 },
      ],
      lines.map((l) => ({ ...l, quantity: l.productId === "a" ? 1 : 2 })),
    ),
  );
  assert.ok(!sameLines([{ productId: "a", quantity: 1 }], [{ productId: "a", quantity: 2 }]));
});

it("reservation view: common status, or mixed; earliest expiry", () => {
  const rows = [
    { orderId: "o", productId: "b", quantity: 1, status: "held" as const, expiresAt: 2000 },
    { orderId: "o", productId: "a", quantity: 2, status: "held" as const, expiresAt: 1000 },
  ];
  const v = reservationView("o", rows);
  assert.equal(v.status, "held");
  assert.deepEqual(
    v.lines.map((l) => l.productId),
    ["a", "b"],
  );
  assert.equal(v.expiresAt, new Date(1000).toISOString());
  assert.equal(reservationView("o", [rows[0], { ...rows[1], status: "expired" }]).status, "mixed");
});

it("allow-lists: a patch never carries sku, stock, id or times", () => {
  assert.ok(!(PATCH_FIELDS as readonly string[]).includes("sku"));
  const picked = pickFields({ name: "N", sku: "X", stock: 5, id: "z", reserved: 9, createdAt: 1, price: undefined }, PATCH_FIELDS);
  assert.deepEqual(picked, { name: "N" });
  const next = applyPatch(product, { name: "New", tags: [" x ", "X", ""], brand: null }, 42);
  assert.equal(next.name, "New");
  assert.equal(next.sku, "SKU-1");
  assert.deepEqual(next.tags, ["x"]);
  assert.equal(next.brand, null);
  assert.equal(next.onHand, 10);
  assert.equal(next.updatedAt, 42);
  assert.equal(next.version, 8, "a patch is the next version");
  assert.deepEqual(normalizeTags(undefined), []);
});

it("list query: defaults, page size capped at 100, unknown sort is newest, stable order", () => {
  assert.deepEqual(parseListQuery({}), { category: undefined, brand: undefined, page: 1, pageSize: 20, sort: "newest", offset: 0 });
  const q = parseListQuery({ page: 3, pageSize: 500, sort: "price_desc", category: " phones ", brand: "" });
  assert.deepEqual(q, { category: "phones", brand: undefined, page: 3, pageSize: 100, sort: "price_desc", offset: 200 });
  assert.equal(parseListQuery({ sort: "bogus" }).sort, "newest");
  assert.equal(parseListQuery({ page: 0, pageSize: 0 }).page, 1);
  for (const s of ["newest", "price_asc", "price_desc"] as const) assert.equal(orderBy(s).at(-1)!.column, "id");
  assert.deepEqual(orderBy("price_asc")[0], { column: "price_amount", order: "asc" });
});

it("public product: stock block and ISO times; stored lists parsed defensively", () => {
  const p = toPublicProduct(product);
  assert.deepEqual(p.stock, { onHand: 10, reserved: 3, available: 7 });
  assert.equal(p.createdAt, "1970-01-01T00:00:00.000Z");
  assert.equal(p.version, 7);
  assert.deepEqual(parseStringList('["a",1,"b"]'), ["a", "b"]);
  assert.deepEqual(parseStringList("nope"), []);
  assert.deepEqual(parseStringList(null), []);
});

it("a reserve prices its lines from the products it read, or names the first one missing", () => {
  const products = new Map([
    ["a", { sku: "A-1", name: "Apple", price: { amount: 120, currency: "EUR" } }],
    ["b", { sku: "B-1", name: "Bread", price: { amount: 300, currency: "EUR" } }],
  ]);
  assert.deepEqual(
    pricedLines(
      [
        { productId: "a", quantity: 2 },
        { productId: "b", quantity: 1 },
      ],
      products,
    ),
    {
      priced: [
        { productId: "a", sku: "A-1", name: "Apple", unitPrice: { amount: 120, currency: "EUR" }, quantity: 2 },
        { productId: "b", sku: "B-1", name: "Bread", unitPrice: { amount: 300, currency: "EUR" }, quantity: 1 },
      ],
    },
  );
  assert.deepEqual(
    pricedLines(
      [
        { productId: "a", quantity: 1 },
        { productId: "x", quantity: 1 },
        { productId: "y", quantity: 1 },
      ],
      products,
    ),
    { missing: "x" },
  );
});
