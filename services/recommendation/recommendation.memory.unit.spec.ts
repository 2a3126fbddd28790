/**
 * The memory's rules with a source whose reads the test completes by hand: what it keeps, what
 * a change makes it forget, and that a read racing a change is used once but not kept.
 */
import assert from "node:assert/strict";
import { it } from "mocha";
import { ModelMemory, type ModelSource, type UserPurchases } from "./recommendation.memory";
import type { NeighbourList, RankedItem } from "./recommendation.repo";

const NO_PREFS = { categories: [], brands: [] };
const item = (productId: string, buyers: number, over: Partial<RankedItem> = {}): RankedItem => ({
  productId,
  name: productId,
  category: "tools",
  brand: null,
  available: 3,
  deleted: false,
  version: 1,
  buyers,
  ...over,
});

/** A database in plain maps, counting reads; `gate` (when set) holds every read until opened. */
function fakeSource() {
  const db = {
    items: new Map<string, RankedItem>([
      ["a", item("a", 3)],
      ["b", item("b", 2)],
      ["c", item("c", 1)],
    ]),
    lists: new Map<string, NeighbourList>([
      [
        "a",
        [
          { productId: "b", co: 2 },
          { productId: "c", co: 1 },
        ],
      ],
    ]),
    users: new Map<string, UserPurchases>([["u", { recent: ["a"], bought: new Set(["a"]), stamp: 1 }]]),
  };
  const reads = { items: 0, lists: 0, users: 0 };
  let gate: Promise<void> | undefined;
  const fail = { items: false };
  // Reads at the call (the snapshot a statement sees), answers when the gate opens.
  const held = async <T>(f: () => T): Promise<T> => {
    const value = f();
    await gate;
    return value;
  };
  const source: ModelSource = {
    allItems: () => held(() => (reads.items++, new Map(db.items))),
    items: (ids) =>
      held(() => {
        reads.items++;
        if (fail.items) throw new Error("connection lost");
        return new Map(ids.flatMap((id) => (db.items.has(id) ? [[id, db.items.get(id)!] as const] : [])));
      }),
    neighbourLists: (ids, perItem) =>
      held(() => (reads.lists++, new Map(ids.map((id) => [id, (db.lists.get(id) ?? []).slice(0, perItem)])))),
    user: (userId) => held(() => (reads.users++, db.users.get(userId) ?? { recent: [], bought: new Set(), stamp: 0 })),
  };
  let open: () => void = () => undefined;
  return {
    db,
    reads,
    source,
    fail,
    hold: () => void (gate = new Promise<void>((r) => (open = r))),
    release: () => {
      gate = undefined;
      open();
    },
  };
}

it("the memory reads each row once, and again only after a change names it", async () => {
  const f = fakeSource();
  const m = new ModelMemory(f.source);
  const first = await m.forUser("u", NO_PREFS, 5, 50);
  assert.deepEqual(
    first.neighbours.get("a")!.map((n) => n.productId),
    ["b", "c"],
  );
  assert.deepEqual(first.history, ["a"]);
  await m.forUser("u", NO_PREFS, 5, 50);
  await m.ofProduct("a", 50);
  assert.deepEqual(f.reads, { items: 1, lists: 1, users: 1 }, "everything from memory the second time");

  // The user buys b: the model's rows change, and the change names the user and products.
  f.db.users.set("u", { recent: ["b", "a"], bought: new Set(["a", "b"]), stamp: 2 });
  f.db.items.set("b", item("b", 3));
  f.db.lists.set("a", [
    { productId: "b", co: 3 },
    { productId: "c", co: 1 },
  ]);
  f.db.lists.set("b", [{ productId: "a", co: 3 }]);
  m.forget({ userIds: ["u"], productIds: ["a", "b"] });
  const after = await m.forUser("u", NO_PREFS, 5, 50);
  assert.deepEqual(after.history, ["b", "a"]);
  assert.ok(after.bought.has("b"));
  assert.equal(after.catalog.get("b")!.buyers, 3, "the catalog row was read again");
  assert.deepEqual(f.reads, { items: 2, lists: 2, users: 2 });

  // A longer list than was read is read again; a shorter one is not.
  await m.ofProduct("c", 10);
  const lists = f.reads.lists;
  await m.ofProduct("c", 5);
  assert.equal(f.reads.lists, lists);

  m.forget({ everything: true });
  await m.forUser("u", NO_PREFS, 5, 50);
  assert.deepEqual(f.reads, { items: 3, lists: lists + 1, users: 3 }, "everything forgotten");
});

it("a read that races a change is used for its answer but not kept", async () => {
  const f = fakeSource();
  const m = new ModelMemory(f.source);
  await m.forUser("u", NO_PREFS, 5, 50); // the catalog is loaded
  m.forget({ userIds: ["u"], productIds: ["a"] });
  f.hold();
  const racing = m.forUser("u", NO_PREFS, 5, 50); // reads the user, a's list and row: held
  await new Promise((r) => setImmediate(r));
  // The change commits while those reads are in flight; they read the row before it.
  m.forget({ userIds: ["u"], productIds: ["a"] });
  f.db.users.set("u", { recent: ["a"], bought: new Set(["a", "c"]), stamp: 3 });
  f.db.items.set("a", item("a", 9));
  f.release();
  const raced = await racing;
  assert.ok(!raced.bought.has("c"), "the racing answer used what it read");
  const reads = { ...f.reads };
  const next = await m.forUser("u", NO_PREFS, 5, 50);
  assert.ok(next.bought.has("c"), "the next answer reads the user again");
  assert.equal(next.catalog.get("a")!.buyers, 9, "and has the row as it is now");
  assert.equal(f.reads.users, reads.users + 1, "the raced user read was not kept");
});

it("a clear while the catalog loads: the racing answer uses that load whole (catalog and popular order), which is not kept", async () => {
  const f = fakeSource();
  const m = new ModelMemory(f.source);
  f.hold();
  const racing = m.forUser("nobody", NO_PREFS, 5, 50);
  await new Promise((r) => setImmediate(r));
  m.clear();
  f.db.items.set("c", item("c", 7));
  f.release();
  const raced = await racing;
  assert.deepEqual(
    raced.popular().map((p) => p.productId),
    ["a", "b", "c"],
    "a popular order of the same moment as its catalog",
  );
  assert.equal(m.stats().items, 0, "the load's rows are not kept");
  const { catalog } = await m.ofProduct("a", 50);
  assert.equal(catalog.get("c")!.buyers, 7);
});

it("a catalog refresh that fails leaves its rows stale: the next answer reads them", async () => {
  const f = fakeSource();
  const m = new ModelMemory(f.source);
  await m.ofProduct("a", 50);
  f.db.items.set("b", item("b", 9));
  m.forget({ productIds: ["b"] });
  f.fail.items = true;
  await assert.rejects(m.ofProduct("a", 50), /connection lost/);
  f.fail.items = false;
  assert.equal((await m.ofProduct("a", 50)).catalog.get("b")!.buyers, 9);
});

it("a user kept from before the stamp the caller read is read again (another replica applied the purchase)", async () => {
  const f = fakeSource();
  const m = new ModelMemory(f.source);
  await m.forUser("u", NO_PREFS, 5, 50, 1);
  f.db.users.set("u", { recent: ["b", "a"], bought: new Set(["a", "b"]), stamp: 2 });
  assert.ok(!(await m.forUser("u", NO_PREFS, 5, 50)).bought.has("b"), "without a stamp: the kept user (until the event arrives)");
  assert.ok(!(await m.forUser("u", NO_PREFS, 5, 50, 1)).bought.has("b"), "the same stamp: the kept user");
  assert.ok((await m.forUser("u", NO_PREFS, 5, 50, 2)).bought.has("b"), "a newer stamp: read again");
  assert.equal(f.reads.users, 2);
});
