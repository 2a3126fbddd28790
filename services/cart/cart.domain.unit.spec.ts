import assert from "node:assert/strict";
import { it } from "mocha";
import {
  MAX_LINES,
  MAX_LINE_QUANTITY,
  addProblems,
  buildCart,
  lineTotal,
  paidLines,
  setQuantityProblems,
  type ProductInfo,
} from "./cart.domain";

const add = (over: Partial<Parameters<typeof addProblems>[0]> = {}) =>
  addProblems({ quantity: 1, existing: undefined, lineCount: 0, cartCurrency: null, productCurrency: "EUR", ...over });

it("add: quantity 1..99 per line, the existing line counts, 100 lines at most", () => {
  assert.deepEqual(add(), []);
  assert.deepEqual(add({ quantity: MAX_LINE_QUANTITY }), []);
  for (const q of [0, -1, 1.5, 100, Number.NaN]) assert.equal(add({ quantity: q })[0]?.field, "quantity", String(q));
  assert.deepEqual(add({ quantity: 9, existing: 90, lineCount: 1, cartCurrency: "EUR" }), []);
  assert.equal(add({ quantity: 10, existing: 90, lineCount: 1, cartCurrency: "EUR" })[0]?.field, "quantity");
  // A new line in a full cart is refused; more of a line already there is not.
  assert.equal(add({ lineCount: MAX_LINES, cartCurrency: "EUR" })[0]?.field, "productId");
  assert.deepEqual(add({ lineCount: MAX_LINES, existing: 1, cartCurrency: "EUR" }), []);
  assert.deepEqual(add({ lineCount: MAX_LINES - 1, cartCurrency: "EUR" }), []);
});

it("add: one currency per cart; an empty cart takes any", () => {
  assert.deepEqual(add({ lineCount: 0, cartCurrency: "CNY", productCurrency: "EUR" }), []);
  const p = add({ lineCount: 2, cartCurrency: "CNY", productCurrency: "EUR" });
  assert.equal(p.length, 1);
  assert.deepEqual(
    { field: p[0].field, cartCurrency: p[0].cartCurrency, productCurrency: p[0].productCurrency },
    { field: "productId", cartCurrency: "CNY", productCurrency: "EUR" },
  );
});

it("set quantity: 0 (remove) to 99, integers only", () => {
  for (const q of [0, 1, 99]) assert.deepEqual(setQuantityProblems(q), [], String(q));
  for (const q of [-1, 100, 2.5, "3", null]) assert.equal(setQuantityProblems(q).length, 1, String(q));
});

it("line totals and subtotal are integer minor units", () => {
  assert.deepEqual(lineTotal({ amount: 1999, currency: "EUR" }, 3), { amount: 5997, currency: "EUR" });
  assert.throws(() => lineTotal({ amount: Number.MAX_SAFE_INTEGER, currency: "EUR" }, 2), RangeError);
  const products = new Map<string, ProductInfo | null>([
    ["a", { id: "a", name: "A", price: { amount: 1999, currency: "EUR" } }],
    ["b", { id: "b", name: "B", price: { amount: 5, currency: "EUR" } }],
  ]);
  const { cart, drop } = buildCart(
    [
      { productId: "a", quantity: 3, addedAt: 1 },
      { productId: "b", quantity: 7, addedAt: 2 },
    ],
    products,
    "EUR",
  );
  assert.deepEqual(drop, []);
  assert.deepEqual(cart, {
    items: [
      {
        productId: "a",
        name: "A",
        unitPrice: { amount: 1999, currency: "EUR" },
        quantity: 3,
        lineTotal: { amount: 5997, currency: "EUR" },
      },
      { productId: "b", name: "B", unitPrice: { amount: 5, currency: "EUR" }, quantity: 7, lineTotal: { amount: 35, currency: "EUR" } },
    ],
    subtotal: { amount: 6032, currency: "EUR" },
  });
});

it("build: deleted products and products repriced in another currency are dropped (and reported)", () => {
  const products = new Map<string, ProductInfo | null>([
    ["a", { id: "a", name: "A", price: { amount: 100, currency: "EUR" } }],
    ["gone", null],
    ["cny", { id: "cny", name: "C", price: { amount: 100, currency: "CNY" } }],
  ]);
  const lines = ["a", "gone", "cny", "unknown"].map((productId, i) => ({ productId, quantity: 2, addedAt: i }));
  const { cart, drop } = buildCart(lines, products, "EUR");
  assert.deepEqual(
    cart.items.map((i) => i.productId),
    ["a"],
  );
  assert.deepEqual(cart.subtotal, { amount: 200, currency: "EUR" });
  assert.deepEqual(drop, ["gone", "cny", "unknown"]);
  // Everything gone: an empty cart has no currency.
  assert.deepEqual(buildCart(lines.slice(1, 2), products, "EUR").cart, { items: [], subtotal: { amount: 0, currency: null } });
});

it("order.paid lines: checked, merged per product, sorted", () => {
  assert.deepEqual(
    paidLines({
      orderId: "o",
      userId: "u",
      lines: [
        { productId: "b", quantity: 1 },
        { productId: "a", quantity: 2 },
        { productId: "b", quantity: 3 },
      ],
      total: 1,
    }),
    {
      userId: "u",
      lines: [
        { productId: "a", quantity: 2 },
        { productId: "b", quantity: 4 },
      ],
    },
  );
  assert.deepEqual(paidLines({ userId: "u", lines: [] }), { userId: "u", lines: [] });
  for (const bad of [
    null,
    {},
    { userId: "u" },
    { userId: "", lines: [] },
    { userId: "u", lines: [{ productId: "a", quantity: 0 }] },
    { userId: "u", lines: [{ productId: "a", quantity: 1.5 }] },
    { userId: "u", lines: [{ quantity: 1 }] },
  ])
    assert.throws(() => paidLines(bad), JSON.stringify(bad));
});
