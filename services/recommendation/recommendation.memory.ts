/**
 * The recommendation model as this replica reads it: the database's model, kept in memory and
 * read through (#16: a ranking ran five SQL statements, ~1.8 ms at 100,000 orders; from
 * memory it runs none once its rows are here).
 *
 * What is kept, each loaded on first use:
 * - the catalog copy with the buyer counts (every row, once) and, from it, the popularity
 *   order (`PopularIndex`);
 * - per product, its highest co-purchase counts (as many as a ranking asked for);
 * - per user, their recent contributing products and everything they bought.
 *
 * How it stays the database's: every change to the model commits with a
 * `recommendation.model_changed` event (the outbox) naming the users and products it touched;
 * every replica receives it (BroadcastEventsMixin: a queue per replica) and forgets them, so
 * its next answer reads them again. The replica that made the change forgets at its commit
 * already. A replica whose queue was lost (broker gone) is told to resync and forgets
 * everything. A caller that read the user's stamp (the ranking cache's key) passes it, and a
 * user kept from before it is read again. The guarantee's limit: without a stamp, between a
 * commit and the event's arrival (milliseconds) another replica may still answer from what it
 * read before, a product bought that instant included; the products shown are read from the
 * product service at each answer, so a deleted or sold-out one is never shown either way.
 *
 * A load that races a change does not keep what it read: a row forgotten while its load was in
 * flight is used for that one answer (it was read concurrently with the change; a ranking cache
 * may keep that answer for its TTL) but not kept here. A catalog read that fails leaves its rows
 * stale, to be read by the next answer.
 * Memory is bounded: users and neighbour lists are LRU caches (MAX_USERS, MAX_PRODUCTS); the
 * catalog copy is the whole rec_items table (with the popularity order ~420 bytes a product:
 * 42 MB at 100,000 products, measured).
 */
import { LRUCache } from "lru-cache";
import type { EventPayload } from "../../proto/gen/contracts";
import { PopularIndex, type Preferences, type RankInput } from "./recommendation.domain";
import type { NeighbourList, RankedItem } from "./recommendation.repo";

/** Users whose purchases are kept (a few hundred bytes each). */
const MAX_USERS = 50_000;
/** Products whose neighbour lists are kept (up to the longest list asked for, 50–300 entries). */
const MAX_PRODUCTS = 20_000;

export interface UserPurchases {
  /** Recent contributing products, recent first. */
  recent: string[];
  bought: Set<string>;
  /** The user's stamp as read with them (recommendation.repo.ts `userStamp`). */
  stamp: number;
}

/** The database reads the memory is filled from (recommendation.repo.ts over the service's database). */
export interface ModelSource {
  allItems(): Promise<Map<string, RankedItem>>;
  items(ids: string[]): Promise<Map<string, RankedItem>>;
  neighbourLists(ids: string[], perItem: number): Promise<Map<string, NeighbourList>>;
  user(userId: string): Promise<UserPurchases>;
}

/** What a `recommendation.model_changed` event names (its contract, fields optional). */
export type ModelChange = Partial<EventPayload<"recommendation.model_changed">>;

/** The catalog copy and the popularity order built from it: always taken together. */
interface CatalogView {
  catalog: Map<string, RankedItem>;
  popular: PopularIndex;
}

interface Listed {
  list: NeighbourList;
  /** How many were asked for: a list shorter than that is the product's whole list. */
  asked: number;
}

export class ModelMemory {
  private view: CatalogView | undefined;
  private viewLoading: Promise<CatalogView> | undefined;
  /** Catalog rows forgotten since the copy was loaded: read again before the next answer. */
  private staleItems = new Set<string>();
  private refreshing: Promise<void> | undefined;
  private readonly neighbours = new LRUCache<string, Listed>({ max: MAX_PRODUCTS });
  private readonly users = new LRUCache<string, UserPurchases>({ max: MAX_USERS });
  /** Bumped by every forget; `forgotten` keeps when each key was, while loads are in flight. */
  private tick = 0;
  private loads = 0;
  private readonly forgotten = new Map<string, number>();
  /** Bumped by `clear`: a load that started before it keeps nothing. */
  private generation = 0;

  constructor(private readonly source: ModelSource) {}

  /** Forgets what the change names (an event, or this replica's own commit). */
  forget(change: ModelChange): void {
    if (change.everything) return this.clear();
    for (const u of change.userIds ?? []) {
      this.users.delete(u);
      this.mark(`u:${u}`);
    }
    for (const p of change.productIds ?? []) {
      this.neighbours.delete(p);
      this.mark(`n:${p}`);
      if (this.view || this.viewLoading) this.staleItems.add(p);
    }
  }

  /** Forgets everything (a rebuild, a resync). */
  clear(): void {
    this.generation++;
    this.view = undefined;
    this.viewLoading = undefined;
    this.staleItems.clear();
    this.neighbours.clear();
    this.users.clear();
  }

  /**
   * What `rankForUser` needs for one user, from memory (loading what is missing). `stamp`: the
   * user's stamp the caller read (the ranking cache's key); a user kept from before it is read
   * again, so a ranking cached under a stamp never holds less of the user than the stamp says.
   */
  async forUser(userId: string, prefs: Preferences, limit: number, perItem: number, stamp?: number): Promise<RankInput> {
    const [user, { catalog, popular: index }] = await Promise.all([this.user(userId, stamp), this.items()]);
    const recent = user.recent.filter((p) => catalog.has(p));
    const neighbours = await this.lists(recent, perItem);
    // Enough fallback candidates to fill the list after dropping what the user bought; read
    // from this answer's index (of the same moment as its catalog) only when the list needs them.
    const fallbackSize = limit + Math.min(user.bought.size, 1000);
    const popular = () => [
      ...(prefs.categories.length || prefs.brands.length ? index.top(prefs, fallbackSize) : []),
      ...index.top({ categories: [], brands: [] }, fallbackSize),
    ];
    return { history: recent, bought: user.bought, neighbours, perItem, catalog, preferences: prefs, popular, limit };
  }

  /** A product's neighbours (at most `perItem`) and the catalog they are ranked with. */
  async ofProduct(productId: string, perItem: number): Promise<{ neighbours: NeighbourList; catalog: Map<string, RankedItem> }> {
    const [{ catalog }, lists] = await Promise.all([this.items(), this.lists([productId], perItem)]);
    return {
      neighbours: lists
        .get(productId)!
        .slice(0, perItem)
        .filter((n) => catalog.has(n.productId)),
      catalog,
    };
  }

  /** Sizes (the tests). */
  stats(): { items: number; popular: number; users: number; products: number } {
    return {
      items: this.view?.catalog.size ?? 0,
      popular: this.view?.popular.size ?? 0,
      users: this.users.size,
      products: this.neighbours.size,
    };
  }

  // ---- loading --------------------------------------------------------------------------

  private mark(key: string): void {
    this.tick++;
    if (this.loads) this.forgotten.set(key, this.tick);
  }

  /**
   * Runs a database read and says which of `keys` may be kept: those not forgotten since the
   * read started (nor everything cleared).
   */
  private async load<T>(keys: string[], read: () => Promise<T>): Promise<{ value: T; keep: (key: string) => boolean }> {
    const started = this.tick;
    const generation = this.generation;
    this.loads++;
    try {
      const value = await read();
      const stale = new Set(generation !== this.generation ? keys : keys.filter((k) => (this.forgotten.get(k) ?? -1) > started));
      return { value, keep: (key) => !stale.has(key) };
    } finally {
      if (--this.loads === 0) this.forgotten.clear();
    }
  }

  private async user(userId: string, stamp?: number): Promise<UserPurchases> {
    const kept = this.users.get(userId);
    if (kept && (stamp === undefined || kept.stamp >= stamp)) return kept;
    const key = `u:${userId}`;
    const { value, keep } = await this.load([key], () => this.source.user(userId));
    if (keep(key)) this.users.set(userId, value);
    return value;
  }

  private async lists(ids: string[], perItem: number): Promise<Map<string, NeighbourList>> {
    const out = new Map<string, NeighbourList>();
    const missing: string[] = [];
    for (const id of new Set(ids)) {
      const kept = this.neighbours.get(id);
      if (kept && (kept.asked >= perItem || kept.list.length < kept.asked)) out.set(id, kept.list);
      else missing.push(id);
    }
    if (!missing.length) return out;
    const keys = missing.map((id) => `n:${id}`);
    const { value, keep } = await this.load(keys, () => this.source.neighbourLists(missing, perItem));
    for (const id of missing) {
      const list = value.get(id) ?? [];
      out.set(id, list);
      if (keep(`n:${id}`)) this.neighbours.set(id, { list, asked: perItem });
    }
    return out;
  }

  /**
   * The catalog copy: loaded once, then the rows forgotten since are read again (one query). An
   * answer racing a `clear` uses the copy it got (catalog and popularity order of one moment),
   * which is not kept.
   */
  private async items(): Promise<CatalogView> {
    let view = this.view;
    if (!view) {
      const loading = (this.viewLoading ??= this.loadCatalog());
      try {
        view = await loading;
      } finally {
        if (this.viewLoading === loading) this.viewLoading = undefined;
      }
      if (view !== this.view) return view; // cleared meanwhile
    }
    // At most two rounds: one that may already be in flight (it read what was forgotten before
    // it started), then one for what was forgotten before this answer began. Rows forgotten
    // later changed concurrently with this answer; the next answer reads them.
    for (let round = 0; round < 2 && this.staleItems.size; round++)
      await (this.refreshing ??= this.refreshItems().finally(() => (this.refreshing = undefined)));
    return this.view ?? view;
  }

  private async loadCatalog(): Promise<CatalogView> {
    const generation = this.generation;
    this.staleItems.clear();
    const catalog = await this.source.allItems();
    const popular = new PopularIndex();
    for (const [id, item] of catalog) popular.put(id, item);
    const view = { catalog, popular };
    if (generation === this.generation) this.view = view;
    return view;
  }

  private async refreshItems(): Promise<void> {
    const ids = [...this.staleItems];
    this.staleItems.clear();
    const generation = this.generation;
    let rows: Map<string, RankedItem>;
    try {
      rows = await this.source.items(ids);
    } catch (err) {
      // Not read: still stale (the next answer tries again).
      if (generation === this.generation) for (const id of ids) this.staleItems.add(id);
      throw err;
    }
    const view = this.view;
    if (generation !== this.generation || !view) return;
    // A row forgotten again while this read was in flight is in staleItems again: it is read
    // again before its next use.
    for (const id of ids) {
      const item = rows.get(id);
      if (item) view.catalog.set(id, item);
      else view.catalog.delete(id);
      view.popular.put(id, item);
    }
  }
}
