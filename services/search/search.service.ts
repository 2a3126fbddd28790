/**
 * Search service: `GET /api/search` and `GET /api/search/suggest` over a copy of the
 * catalog kept by each replica (docs/catalog.md, "Search").
 *
 * Engine: the in-process MiniSearch index (embedded mode and small clusters), or
 * Elasticsearch when ELASTIC_SEARCH_NODE is set (one index shared by every replica).
 *
 * How the copy stays current, and why it is correct:
 * - every replica receives every product event (BroadcastEventsMixin: a queue per replica);
 * - each product event carries the product at its row version, raised by every write
 *   (product service, `version` column). A change is applied only when its version is newer
 *   than the one this replica holds (`known`; deletions are kept there as tombstones), so
 *   duplicates, reordering and a rebuild racing the events all settle on the newest copy.
 *   Elasticsearch applies the same rule itself (external versioning), for replicas that
 *   write the shared index in different orders;
 * - a rebuild reads the whole catalog from the product service (`product.export`, keyset
 *   pages) and runs whenever the subscription is (re)established, AFTER it is in place:
 *   a change committed before a page was read is in the page, one committed later arrives
 *   as an event. Products the source no longer lists, and that no event touched during the
 *   rebuild, are removed (deleted while this replica was not listening).
 * - Readiness (`search:index`) is down until the first rebuild has finished.
 * Limit: between a change's commit and its event's arrival (milliseconds: the outbox relay
 * is woken by the commit) searches answer from the previous copy.
 */
import { forRunner } from "../../lib/runner";
import type { Context } from "moleculer";
import type { RequestContext } from "../../lib/context";
import type { AppConfig } from "../../lib/config";
import { registerProbe, unregisterProbe } from "../../lib/readiness";
import { BroadcastEventsMixin } from "../../mixins/broadcast-events.mixin";
import { createElasticsearchClient, ElasticsearchEngine } from "./engines/elasticsearch-engine";
import { parseSearchQuery, parseSuggest, type ProductDoc, type SearchEngine } from "./engines/engine";
import { MiniSearchEngine } from "./engines/minisearch-engine";
import { callAction } from "../../lib/call";
import { Events } from "../../proto/gen/contracts";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Params } from "../../proto/gen/params";
import { periodic, type Periodic } from "../../lib/periodic";
import type { ActionParams, ActionResponse, EventPayload } from "../../proto/gen/contracts";

const EXPORT_PAGE = 500;
const MAX_REBUILD_BACKOFF_MS = 30_000;

interface Known {
  version: number;
  deleted: boolean;
}

interface SearchThis {
  engine: SearchEngine;
  known: Map<string, Known>;
  /** Ids an event changed while a rebuild runs (undefined when none runs). */
  touched: Set<string> | undefined;
  /** Rebuilds: coalesced (a request during one runs one more after it), retried with backoff until one succeeds. */
  rebuild: { loop: Periodic; done: number; lastAt?: string; lastMs?: number; stopped: boolean };
  ready: boolean;
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
  broker: Context["broker"];
  applyProduct(p: ProductDoc): Promise<void>;
  applyRemoval(id: string, version: number): Promise<void>;
  requestRebuild(): void;
  runRebuild(): Promise<void>;
}

export function createEngine(config: AppConfig): SearchEngine {
  const es = config.elasticsearch;
  if (!es) return new MiniSearchEngine();
  return new ElasticsearchEngine({ client: createElasticsearchClient(es.node, es.username, es.password), index: es.index });
}

type Ctx<P> = RequestContext<P>;

export function createSearchService(
  config: AppConfig,
  engineFactory: (c: AppConfig) => SearchEngine = createEngine,
): TypedServiceSchema<SearchThis> {
  const probeName = "search:index";
  return {
    name: "search",

    mixins: [
      BroadcastEventsMixin({
        name: "search",
        config,
        handlers: {
          [Events.ProductCreated]: function (this: SearchThis, p: ProductDoc) {
            return this.applyProduct(p);
          },
          [Events.ProductUpdated]: function (this: SearchThis, p: ProductDoc) {
            return this.applyProduct(p);
          },
          [Events.ProductDeleted]: function (this: SearchThis, p: ProductDoc) {
            return this.applyRemoval(p.id, p.version);
          },
          // Stock moves change `stock.available` (the inStock filter); the event carries the product.
          [Events.StockChanged]: function (this: SearchThis, e: EventPayload<typeof Events.StockChanged>) {
            if (e.deleted) return this.applyRemoval(e.productId, e.version);
            if (e.product) return this.applyProduct(e.product);
          },
        },
        onResync(this: SearchThis) {
          this.requestRebuild();
        },
      }),
    ],

    actions: {
      search: {
        auth: "none",
        // parseSearchQuery checks what the contract's rules cannot (a price range's order, the
        // result window).
        params: Params["search.search"],
        async handler(this: SearchThis, ctx: Ctx<ActionParams<"search.search">>): Promise<ActionResponse<"search.search">> {
          return this.engine.search(parseSearchQuery(ctx.params));
        },
      },

      suggest: {
        auth: "none",
        params: Params["search.suggest"],
        async handler(this: SearchThis, ctx: Ctx<ActionParams<"search.suggest">>): Promise<ActionResponse<"search.suggest">> {
          const { prefix, limit } = parseSuggest(ctx.params.q, ctx.params.limit);
          return { suggestions: prefix ? await this.engine.suggest(prefix, limit) : [] };
        },
      },

      /** This replica's index: engine, documents, rebuilds (tests, REPL, operators). Not routed. */
      status: {
        visibility: "public",
        params: Params["search.status"],
        async handler(this: SearchThis): Promise<ActionResponse<"search.status">> {
          const { loop, done, lastAt, lastMs } = this.rebuild;
          const [running, failures] = [loop.running !== undefined, loop.failures];
          return {
            engine: this.engine.kind,
            ready: this.ready,
            documents: await this.engine.count(),
            known: this.known.size,
            rebuilds: { running, done, lastAt, lastMs, failures },
          };
        },
      },

      /**
       * Rebuild now (operators, after restoring a product database), or right after the one
       * running; while failed rebuilds back off, at the next retry. Not routed.
       */
      reindex: {
        visibility: "public",
        params: Params["search.reindex"],
        async handler(this: SearchThis): Promise<ActionResponse<"search.reindex">> {
          this.requestRebuild();
          return { requested: true };
        },
      },
    },

    methods: {
      async applyProduct(this: SearchThis, p: ProductDoc) {
        const cur = this.known.get(p.id);
        if (cur && cur.version >= p.version) return;
        // Recorded before the write's await, so a racing older copy already loses here.
        this.known.set(p.id, { version: p.version, deleted: false });
        this.touched?.add(p.id);
        await this.engine.upsert(p);
      },

      async applyRemoval(this: SearchThis, id: string, version: number) {
        const cur = this.known.get(id);
        if (cur && cur.version >= version) return;
        this.known.set(id, { version, deleted: true });
        this.touched?.add(id);
        await this.engine.remove(id, version);
      },

      /**
       * Starts a rebuild, or queues one more after the one running (coalesced); after a failure
       * the retry comes on its backoff (lib/periodic.ts), not sooner.
       */
      requestRebuild(this: SearchThis) {
        this.rebuild.loop.kick();
      },

      /** One rebuild; `touched` (events seen meanwhile) ends with it, whatever happens. */
      async runRebuild(this: SearchThis) {
        try {
          const started = Date.now();
          await this.broker.waitForServices(["product"], 30_000);
          this.touched = new Set();
          const seen = new Set<string>();
          let after: string | undefined;
          let pages = 0;
          do {
            const page = await callAction(this.broker, "product.export", { after, limit: EXPORT_PAGE });
            const fresh: ProductDoc[] = [];
            for (const p of page.items) {
              seen.add(p.id);
              const cur = this.known.get(p.id);
              if (cur && cur.version >= p.version) continue;
              this.known.set(p.id, { version: p.version, deleted: false });
              fresh.push(p);
            }
            if (fresh.length) await this.engine.index(fresh);
            after = page.next ?? undefined;
            pages++;
          } while (after && !this.rebuild.stopped);
          // Stopped mid-way: `seen` holds only the pages read, so nothing may be judged gone (an
          // Elasticsearch index is shared by every replica).
          if (this.rebuild.stopped) return;
          // Gone from the source while nobody told us (no event during the rebuild either).
          let removed = 0;
          for (const [id, k] of this.known) {
            if (k.deleted || seen.has(id) || this.touched.has(id)) continue;
            this.known.set(id, { version: k.version, deleted: true });
            await this.engine.remove(id);
            removed++;
          }
          this.rebuild.done++;
          this.rebuild.lastAt = new Date().toISOString();
          this.rebuild.lastMs = Date.now() - started;
          if (!this.ready)
            this.logger.info(
              `Search index (${this.engine.kind}) built: ${seen.size} products in ${this.rebuild.lastMs} ms (${pages} page(s))`,
            );
          else if (removed) this.logger.info(`Search index resynced: ${removed} product(s) gone from the catalog removed`);
          this.ready = true;
        } finally {
          this.touched = undefined;
        }
      },
    },

    created(this: SearchThis) {
      this.engine = engineFactory(config);
      this.known = new Map();
      this.touched = undefined;
      this.ready = false;
      this.rebuild = {
        loop: periodic("Search index rebuild", undefined, () => this.runRebuild(), this.logger, {
          backoffMs: (failures) => Math.min(MAX_REBUILD_BACKOFF_MS, 500 * 2 ** (failures - 1)),
          // Not waited for at stop (as before): stopping ends the page loop, and a stopped
          // rebuild judges nothing gone (runRebuild).
          stopWaitMs: 0,
        }),
        done: 0,
        stopped: false,
      };
    },

    async started(this: SearchThis) {
      registerProbe(this.broker, probeName, async () => {
        if (!this.ready) throw new Error("index not built yet");
      });
    },

    async stopped(this: SearchThis) {
      this.rebuild.stopped = true;
      await this.rebuild.loop.stop();
      unregisterProbe(this.broker, probeName);
    },
  };
}

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createSearchService);
