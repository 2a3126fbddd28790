/**
 * The load generator behind `npm run load` (bin/load.ts), also used as a library by the
 * chaos runs and CI's smoke test: simulated shoppers against one or more gateways, over
 * HTTP only, so it drives an embedded process and a cluster alike.
 *
 * The traffic mix is Online Boutique's load generator's (browse 10, view cart 3, add to
 * cart 2, search 2, home 1, checkout 1) plus recommendations (2), which Meridian has and
 * Online Boutique's mix does not. Each shopper registers an account of its own, states a
 * preference, then loops: a task drawn by weight, a think pause, the next task, until the
 * duration is over or `signal` aborts. Checkout goes all the way: order (with an
 * Idempotency-Key, as are cart adds), sandbox payment completed with success, then the order is polled until
 * it is PAID (the payment arrives asynchronously through the platform's callback). The id of
 * every order answered 201 is kept (`LoadSummary.orderIds`): the chaos runs check that each
 * one exists afterwards.
 *
 * Every request is recorded under its route template (`GET /api/products/:id`) with its
 * latency. What counts as an error (see `LoadSummary.errors`): a network error or timeout,
 * any 5xx, and any 4xx the flow did not expect; a 429 too, since the only rate limit is on
 * failed logins, which shoppers never do (they register), so one means something is wrong.
 * The one expected non-2xx answer is 409 OUT_OF_STOCK on `POST /api/orders`, counted as
 * `orders.outOfStock`. A checkout whose order does not reach PAID in time is an error too.
 *
 * ```ts
 * const summary = await runLoad({ urls: [baseUrl], shoppers: 4, durationS: 10, thinkMs: 50, seed: 1, admin });
 * assert.equal(summary.errors.total, 0);
 * ```
 */
import { randomBytes } from "node:crypto";
import { rng } from "../../lib/demo-catalog";
import { mapBounded } from "../../lib/bounded";

// ---- the mix ----

export type TaskName = "browse" | "viewCart" | "addToCart" | "search" | "home" | "recommendations" | "checkout";

/** Relative weights of the shoppers' tasks (Online Boutique's, plus recommendations). */
export const DEFAULT_MIX: Readonly<Record<TaskName, number>> = {
  browse: 10,
  viewCart: 3,
  addToCart: 2,
  search: 2,
  home: 1,
  recommendations: 2,
  checkout: 1,
};

/** Route labels, as recorded in the summary. */
export const ROUTES = {
  register: "POST /api/auth/register",
  refresh: "POST /api/auth/refresh",
  preferences: "PATCH /api/users/me",
  products: "GET /api/products",
  product: "GET /api/products/:id",
  search: "GET /api/search",
  recommendations: "GET /api/recommendations",
  alsoBought: "GET /api/products/:id/also-bought",
  cart: "GET /api/cart",
  addToCart: "POST /api/cart/items",
  clearCart: "DELETE /api/cart",
  createOrder: "POST /api/orders",
  pay: "POST /api/orders/:id/pay",
  complete: "POST /api/payments/sandbox/:paymentId/complete",
  order: "GET /api/orders/:id",
} as const;

/**
 * The routes every run of the default mix uses (given enough tasks for each to come up).
 * Not listed: token refresh (runs longer than the access token's life) and clearing the
 * cart (after an OUT_OF_STOCK, or a cart grown large by failed checkouts).
 */
export const MIX_ROUTES: readonly string[] = [
  ROUTES.register,
  ROUTES.preferences,
  ROUTES.products,
  ROUTES.product,
  ROUTES.search,
  ROUTES.recommendations,
  ROUTES.alsoBought,
  ROUTES.cart,
  ROUTES.addToCart,
  ROUTES.createOrder,
  ROUTES.pay,
  ROUTES.complete,
  ROUTES.order,
];

// ---- options and results ----

export interface LoadOptions {
  /** Gateway base URLs (`http://host:3000`); requests go round-robin over them. */
  urls: string[];
  /** Concurrent simulated shoppers. */
  shoppers: number;
  /** How long shoppers start new tasks; tasks under way then finish (see `LoadSummary.durationS`). */
  durationS: number;
  /** Mean pause between one shopper's tasks, randomised ±50 %. */
  thinkMs: number;
  /** Seeds the shoppers' choices (tasks, products, words, pauses); random when absent, reported in the summary. */
  seed?: number;
  /**
   * An admin account: when given, every product the load uses is restocked to
   * `stockTarget` first, so checkouts do not run out. Without it, only products in stock
   * are used, and running out shows as `orders.outOfStock`.
   */
  admin?: { email: string; password: string };
  /** Called every `progressIntervalMs` while running, and once at the end (`phase: "done"`). */
  onProgress?: (snapshot: LoadProgress) => void;
  progressIntervalMs?: number;
  /** Stops early: no new request starts, requests under way are abandoned (not counted). */
  signal?: AbortSignal;
  /**
   * Called synchronously as each measured request is sent, with its route (`ROUTES`): the
   * chaos runs time their kills by it (a kill sent as a checkout request leaves lands while
   * that checkout is under way). A throw fails the run at its end, as `onProgress`'s does.
   */
  onRequest?: (route: string) => void;
  /** Per request; a request that takes longer is an error of kind `timeout`. Default 10 s. */
  requestTimeoutMs?: number;
  /** How long a paid order may take to show PAID before it counts as an error. Default 30 s. */
  paidTimeoutMs?: number;
  /** Task weights; missing tasks keep `DEFAULT_MIX`'s, 0 turns one off. */
  mix?: Partial<Record<TaskName, number>>;
  /** At most this many products (the catalog's first pages) are viewed, carted and bought. Default 200. */
  catalogSize?: number;
  /** With `admin`: products with less available stock than this are restocked to it. Default 100,000. */
  stockTarget?: number;
}

export interface LoadProgress {
  phase: "setup" | "running" | "draining" | "done";
  /** Seconds since shoppers started (0 during setup). */
  elapsedS: number;
  durationS: number;
  requests: number;
  /** Over the last progress interval. */
  requestsPerS: number;
  errors: number;
  ordersCreated: number;
  ordersPaid: number;
  outOfStock: number;
}

export interface RouteStats {
  count: number;
  errors: number;
  /** Latency in ms (nearest-rank percentiles over every request of the route, errors included). */
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export interface ErrorKind {
  /** `HTTP 500`, `timeout`, `network`, `flow` (an answer the checkout could not go on from, or an order not PAID in time). */
  kind: string;
  route: string;
  count: number;
  /** The first few messages (bounded). */
  samples: string[];
}

export interface LoadSummary {
  startedAt: string;
  urls: string[];
  shoppers: number;
  seed: number;
  /** From the shoppers' start to the last one's end: the requested duration plus the tasks that were finishing. */
  durationS: number;
  requests: number;
  requestsPerS: number;
  routes: Record<string, RouteStats>;
  errors: {
    /** Request errors (the routes' `errors` summed) plus flow errors. */
    total: number;
    /** By kind and route, most frequent first; at most `MAX_ERROR_KINDS`, the rest under kind `other`. */
    byKind: ErrorKind[];
  };
  /** The id of every order answered 201 to `POST /api/orders`, in the order they came (`orders.created` of them). */
  orderIds: string[];
  orders: {
    created: number;
    paid: number;
    /**
     * Created but not PAID: a request of its checkout failed (counted as that request's
     * error), it was not PAID within `paidTimeoutMs` of a successful payment, or it went
     * to another state (both counted as `flow` errors).
     */
    notPaid: number;
    /** Created but left unfinished because the run was aborted. */
    abandoned: number;
    /** Checkouts answered 409 OUT_OF_STOCK (not errors). */
    outOfStock: number;
  };
  /** Tasks run, by name. */
  tasks: Record<TaskName, number>;
  /** True when `signal` stopped the run early. */
  aborted: boolean;
}

export const MAX_ERROR_KINDS = 50;
const MAX_SAMPLES = 3;

/** The address every simulated order ships to (valid for the Address contract's rules). */
export const LOAD_ADDRESS = {
  recipient: "Load Shopper",
  phone: "+86 10 1234 5678",
  line1: "1 Market Street",
  city: "Shanghai",
  postalCode: "200000",
  country: "CN",
} as const;

// ---- recording ----

/** Nearest-rank percentile of ascending `sorted` (q in 0..1); NaN when empty. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

class Recorder {
  private readonly routes = new Map<string, { samples: number[]; errors: number }>();
  private readonly kinds = new Map<string, ErrorKind>();
  requests = 0;
  errors = 0;
  readonly orders = { created: 0, paid: 0, notPaid: 0, abandoned: 0, outOfStock: 0 };
  readonly orderIds: string[] = [];
  readonly tasks: Record<TaskName, number> = { browse: 0, viewCart: 0, addToCart: 0, search: 0, home: 0, recommendations: 0, checkout: 0 };

  request(route: string, ms: number, error?: { kind: string; message: string }): void {
    let r = this.routes.get(route);
    if (!r) this.routes.set(route, (r = { samples: [], errors: 0 }));
    r.samples.push(ms);
    this.requests++;
    if (error) {
      r.errors++;
      this.error(error.kind, route, error.message);
    }
  }

  /** Counts an error; `request` calls it for request errors, the checkout for flow errors. */
  error(kind: string, route: string, message: string): void {
    this.errors++;
    let key = `${kind} ${route}`;
    // Bounded: a run against a broken system must not grow a map of every distinct failure.
    if (!this.kinds.has(key) && this.kinds.size >= MAX_ERROR_KINDS) {
      key = "other";
      kind = "other";
      route = "*";
    }
    let k = this.kinds.get(key);
    if (!k) this.kinds.set(key, (k = { kind, route, count: 0, samples: [] }));
    k.count++;
    if (k.samples.length < MAX_SAMPLES) k.samples.push(message.slice(0, 300));
  }

  routeStats(): Record<string, RouteStats> {
    const out: Record<string, RouteStats> = {};
    for (const [route, r] of [...this.routes].sort(([a], [b]) => a.localeCompare(b))) {
      const sorted = Float64Array.from(r.samples).sort();
      const ms = (v: number) => Math.round(v * 10) / 10;
      out[route] = {
        count: sorted.length,
        errors: r.errors,
        p50: ms(percentile(sorted, 0.5)),
        p95: ms(percentile(sorted, 0.95)),
        p99: ms(percentile(sorted, 0.99)),
        max: ms(sorted[sorted.length - 1]),
      };
    }
    return out;
  }

  errorKinds(): ErrorKind[] {
    return [...this.kinds.values()].sort((a, b) => b.count - a.count || a.route.localeCompare(b.route));
  }
}

// ---- HTTP ----

/** The request failed and was recorded; the task stops here (the shopper goes on with the next). */
class TaskFailed extends Error {}
/** The run was aborted: nothing is recorded, the shopper stops. */
class Stopped extends Error {}

interface Answer {
  status: number;
  body: any;
}

interface RequestOpts {
  token?: string;
  body?: unknown;
  headers?: Record<string, string>;
  /** Statuses the flow expects besides 2xx (each checked further by the caller). */
  alsoOk?: (a: Answer) => boolean;
}

class Client {
  private next = 0;
  constructor(
    private readonly urls: string[],
    private readonly rec: Recorder,
    private readonly stop: AbortSignal,
    private readonly timeoutMs: number,
    private readonly onRequest?: (route: string) => void,
  ) {}

  /** Round-robin over the gateways, one request at a time. */
  private base(): string {
    return this.urls[this.next++ % this.urls.length];
  }

  async call(route: string, method: string, path: string, opts: RequestOpts = {}): Promise<Answer> {
    if (this.stop.aborted) throw new Stopped();
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (opts.body !== undefined) headers["content-type"] = "application/json";
    // A controller per request, fed by the run's stop signal and a timer that covers the
    // body too, both removed afterwards (AbortSignal.any would tie every request's signal
    // to the run's long-lived one).
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => ((timedOut = true), ac.abort()), this.timeoutMs);
    const onStop = () => ac.abort();
    this.stop.addEventListener("abort", onStop, { once: true });
    this.onRequest?.(route);
    const t0 = performance.now();
    let answer: Answer;
    try {
      const res = await fetch(this.base() + path, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: ac.signal,
      });
      const text = await res.text();
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
      answer = { status: res.status, body };
    } catch (err) {
      const ms = performance.now() - t0;
      if (this.stop.aborted) throw new Stopped();
      const e = err as Error & { cause?: { code?: string; message?: string } };
      if (timedOut) this.rec.request(route, ms, { kind: "timeout", message: `no answer within ${this.timeoutMs} ms` });
      else this.rec.request(route, ms, { kind: "network", message: e.cause?.code ?? e.cause?.message ?? e.message });
      throw new TaskFailed();
    } finally {
      clearTimeout(timer);
      this.stop.removeEventListener("abort", onStop);
    }
    const ms = performance.now() - t0;
    if ((answer.status >= 200 && answer.status < 300) || opts.alsoOk?.(answer)) {
      this.rec.request(route, ms);
      return answer;
    }
    this.rec.request(route, ms, { kind: `HTTP ${answer.status}`, message: describe(answer) });
    throw new TaskFailed();
  }
}

function describe(a: Answer): string {
  const err = a.body?.error;
  if (err && typeof err === "object") return `${err.code ?? "?"}: ${err.message ?? ""}`;
  return typeof a.body === "string" ? a.body : JSON.stringify(a.body ?? null);
}

/** Seconds since the epoch at which a JWT expires (its `exp`), or Infinity when unreadable. */
function jwtExpiry(token: string): number {
  try {
    const exp = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")).exp;
    return typeof exp === "number" ? exp : Infinity;
  } catch {
    return Infinity;
  }
}

// ---- the catalog the shoppers use ----

interface PoolProduct {
  id: string;
  name: string;
  category: string;
}

interface Catalog {
  /** Products shoppers view, cart and buy: in stock (restocked when an admin was given), one currency. */
  pool: PoolProduct[];
  /** Listing pages of 20 the shoppers browse. */
  pages: number;
  categories: string[];
  /** Words of the pool's names, for searches. */
  words: string[];
}

const PAGE_SIZE = 20;

/**
 * Reads the catalog's first pages (and restocks them as the admin). Its requests go
 * through a client of their own, so they are not part of the measured traffic; any
 * failure stops the run before it starts.
 */
async function loadCatalog(
  client: Client,
  rec: Recorder,
  opts: Required<Pick<LoadOptions, "catalogSize" | "stockTarget">> & Pick<LoadOptions, "admin">,
): Promise<Catalog> {
  const setup = async (what: string, run: () => Promise<Answer>): Promise<Answer> => {
    try {
      return await run();
    } catch (err) {
      if (err instanceof TaskFailed) {
        const e = rec.errorKinds()[0];
        throw new Error(`load setup: ${what} failed: ${e ? `${e.kind} ${e.route}: ${e.samples[0]}` : "?"}`, { cause: err });
      }
      throw err;
    }
  };
  let adminToken: string | undefined;
  if (opts.admin) {
    const login = await setup("admin login", () => client.call("POST /api/auth/login", "POST", "/api/auth/login", { body: opts.admin }));
    adminToken = login.body.accessToken as string;
  }
  type Listed = PoolProduct & { price: { currency: string }; stock: { available: number } };
  const listed: Listed[] = [];
  let total = 0;
  // One page size throughout: pages are offsets of (page - 1) × pageSize.
  const pageSize = Math.min(100, opts.catalogSize);
  for (let page = 1; listed.length < opts.catalogSize; page++) {
    const r = await setup("reading the catalog", () =>
      client.call(ROUTES.products, "GET", `/api/products?page=${page}&pageSize=${pageSize}`),
    );
    const items = r.body.items as Listed[];
    total = r.body.total as number;
    listed.push(...items.slice(0, opts.catalogSize - listed.length));
    if (items.length < pageSize) break;
  }
  if (!listed.length) throw new Error("load setup: the catalog is empty (load one: `npm run seed`, or DEMO_CATALOG=true)");

  // A cart holds one currency: use the most common one's products only.
  const byCurrency = new Map<string, number>();
  for (const p of listed) byCurrency.set(p.price.currency, (byCurrency.get(p.price.currency) ?? 0) + 1);
  const currency = [...byCurrency].sort((a, b) => b[1] - a[1])[0][0];
  let pool = listed.filter((p) => p.price.currency === currency);

  if (adminToken) {
    // Restocked a few at a time: enough to be quick, few enough not to be a load of its own.
    const low = pool.filter((p) => p.stock.available < opts.stockTarget);
    await mapBounded(low, 8, (p) =>
      setup(`restocking ${p.id}`, () =>
        client.call("POST /api/products/:id/stock", "POST", `/api/products/${p.id}/stock`, {
          token: adminToken,
          body: { delta: opts.stockTarget - p.stock.available },
        }),
      ),
    );
  } else {
    pool = pool.filter((p) => p.stock.available > 0);
    if (!pool.length) throw new Error("load setup: no product in stock among the catalog's first pages (give an admin to restock)");
  }
  const words = new Set<string>();
  for (const p of pool) for (const w of p.name.split(/\s+/)) if (/^[A-Za-z]{3,}$/.test(w)) words.add(w.toLowerCase());
  return {
    pool: pool.map(({ id, name, category }) => ({ id, name, category })),
    pages: Math.max(1, Math.ceil(Math.min(total, 10_000) / PAGE_SIZE)),
    categories: [...new Set(pool.map((p) => p.category))].sort(),
    words: words.size ? [...words].sort() : ["a"],
  };
}

// ---- one shopper ----

interface ShopperEnv {
  index: number;
  runId: string;
  client: Client;
  rec: Recorder;
  catalog: Catalog;
  mix: [TaskName, number][];
  thinkMs: number;
  paidTimeoutMs: number;
  random: () => number;
  /** True once no new task should start (duration over, or aborted). */
  finished: () => boolean;
  stop: AbortSignal;
}

function sleep(ms: number, stop: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (stop.aborted || ms <= 0) return resolve();
    const done = () => {
      clearTimeout(timer);
      stop.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    stop.addEventListener("abort", done, { once: true });
  });
}

async function shopper(env: ShopperEnv, deadline: number): Promise<void> {
  const { client, rec, catalog, random } = env;
  const pick = <T>(a: readonly T[]): T => a[Math.floor(random() * a.length)];
  const weightSum = env.mix.reduce((s, [, w]) => s + w, 0);
  const drawTask = (): TaskName => {
    let x = random() * weightSum;
    for (const [name, w] of env.mix) if ((x -= w) < 0) return name;
    return env.mix[env.mix.length - 1][0];
  };
  const think = () => sleep(Math.min(env.thinkMs * (0.5 + random()), deadline - Date.now()), env.stop);

  let session: { accessToken: string; refreshToken: string } | undefined;
  /** The access token, refreshed a minute before it expires (long runs outlive ACCESS_TOKEN_TTL_S). */
  const token = async (): Promise<string> => {
    if (jwtExpiry(session!.accessToken) * 1000 - Date.now() < 60_000) {
      const r = await client.call(ROUTES.refresh, "POST", "/api/auth/refresh", { body: { refreshToken: session!.refreshToken } });
      session = { accessToken: r.body.accessToken, refreshToken: r.body.refreshToken };
    }
    return session!.accessToken;
  };

  // Sign up (retried after a pause until it works or the run ends: nothing else is possible without an account).
  let attempt = 0;
  while (!session && !env.finished()) {
    try {
      const email = `load-${env.runId}-${env.index}-${attempt++}@example.com`;
      const r = await client.call(ROUTES.register, "POST", "/api/auth/register", {
        body: { email, password: `load-${randomBytes(8).toString("hex")}`, name: `Load Shopper ${env.index}` },
      });
      session = { accessToken: r.body.accessToken, refreshToken: r.body.refreshToken };
      const categories = [...new Set([pick(catalog.categories), pick(catalog.categories)])];
      await client.call(ROUTES.preferences, "PATCH", "/api/users/me", { token: await token(), body: { preferences: { categories } } });
    } catch (err) {
      if (err instanceof Stopped) return;
      if (!(err instanceof TaskFailed)) throw err;
      await think();
    }
  }

  const viewProduct = async (id: string) => client.call(ROUTES.product, "GET", `/api/products/${encodeURIComponent(id)}`);
  const addToCart = async () => {
    // With a key, as a real client would send it: the edge may then send the add once more
    // when the broker node that carried it died (the add is not idempotent without one).
    const cart = await client.call(ROUTES.addToCart, "POST", "/api/cart/items", {
      token: await token(),
      headers: { "idempotency-key": `load-${env.runId}-${env.index}-${randomBytes(6).toString("hex")}` },
      body: { productId: pick(catalog.pool).id, quantity: 1 + Math.floor(random() * 3) },
    });
    // A cart only grows when checkouts keep failing; keep it within the cart's limits
    // (99 a line, 100 lines) so a long run against a faulty system does not add 422s of its own.
    const items = (cart.body?.items ?? []) as { quantity: number }[];
    if (items.length >= 20 || items.some((i) => i.quantity >= 90))
      await client.call(ROUTES.clearCart, "DELETE", "/api/cart", { token: await token() });
    return cart;
  };

  const tasks: Record<TaskName, () => Promise<void>> = {
    async browse() {
      const list = await client.call(
        ROUTES.products,
        "GET",
        `/api/products?page=${1 + Math.floor(random() * catalog.pages)}&pageSize=${PAGE_SIZE}`,
      );
      const items = (list.body?.items ?? []) as { id: string }[];
      await viewProduct(items.length ? pick(items).id : pick(catalog.pool).id);
    },
    async viewCart() {
      await client.call(ROUTES.cart, "GET", "/api/cart", { token: await token() });
    },
    async addToCart() {
      await addToCart();
    },
    async search() {
      await client.call(ROUTES.search, "GET", `/api/search?q=${encodeURIComponent(pick(catalog.words))}`);
    },
    async home() {
      await client.call(ROUTES.products, "GET", `/api/products?pageSize=${PAGE_SIZE}`);
      await client.call(ROUTES.recommendations, "GET", "/api/recommendations", { token: await token() });
    },
    async recommendations() {
      await client.call(ROUTES.recommendations, "GET", "/api/recommendations", { token: await token() });
      await client.call(ROUTES.alsoBought, "GET", `/api/products/${encodeURIComponent(pick(catalog.pool).id)}/also-bought`);
    },
    async checkout() {
      let cart = (await client.call(ROUTES.cart, "GET", "/api/cart", { token: await token() })).body;
      if (!cart?.items?.length) cart = (await addToCart()).body;
      // The cart's lines are named explicitly rather than left to the default (the whole
      // cart): lines of the previous paid order leave the cart asynchronously, and an order
      // of "the whole cart" racing that removal could find it empty (a 422 that is no fault).
      const items = (cart.items as { productId: string; quantity: number }[]).map(({ productId, quantity }) => ({ productId, quantity }));
      const created = await client.call(ROUTES.createOrder, "POST", "/api/orders", {
        token: await token(),
        headers: { "idempotency-key": `load-${env.runId}-${env.index}-${randomBytes(6).toString("hex")}` },
        body: { shippingAddress: LOAD_ADDRESS, items },
        alsoOk: (a) => a.status === 409 && a.body?.error?.code === "OUT_OF_STOCK",
      });
      if (created.status === 409) {
        rec.orders.outOfStock++;
        // What a shopper told "sold out" does: empty the cart and go on shopping.
        await client.call(ROUTES.clearCart, "DELETE", "/api/cart", { token: await token() });
        return;
      }
      // Anything but 201 with an id is a create the shopper cannot go on from (and whose
      // order, if any, nobody could name afterwards).
      if (created.status !== 201 || typeof created.body?.id !== "string") {
        rec.error(
          "flow",
          ROUTES.createOrder,
          `answered ${created.status} without a new order's id: ${JSON.stringify(created.body).slice(0, 200)}`,
        );
        return;
      }
      rec.orders.created++;
      const orderId = created.body.id as string;
      rec.orderIds.push(orderId);
      let settled = false;
      try {
        const pay = await client.call(ROUTES.pay, "POST", `/api/orders/${encodeURIComponent(orderId)}/pay`, {
          token: await token(),
          body: { provider: "sandbox" },
        });
        // The pay URL points at PUBLIC_URL; only its token is used, against this run's gateways.
        let payToken: string | null = null;
        try {
          payToken = new URL(String(pay.body.payUrl)).searchParams.get("token");
        } catch {
          // reported below
        }
        if (!payToken || typeof pay.body.id !== "string") {
          rec.error("flow", ROUTES.pay, `no payment id or payUrl token in the answer: ${JSON.stringify(pay.body).slice(0, 200)}`);
          rec.orders.notPaid++;
          settled = true;
          return;
        }
        await client.call(ROUTES.complete, "POST", `/api/payments/sandbox/${encodeURIComponent(pay.body.id)}/complete`, {
          body: { outcome: "success", token: payToken },
        });
        // PAID arrives through the platform's callback and the order's inbox: poll for it.
        const until = Date.now() + env.paidTimeoutMs;
        for (;;) {
          const o = await client.call(ROUTES.order, "GET", `/api/orders/${encodeURIComponent(orderId)}`, { token: await token() });
          if (o.body?.status === "PAID") {
            rec.orders.paid++;
            settled = true;
            return;
          }
          if (o.body?.status !== "PENDING_PAYMENT" || Date.now() > until) {
            rec.error(
              "flow",
              ROUTES.order,
              o.body?.status !== "PENDING_PAYMENT"
                ? `order ${orderId} became ${o.body?.status} instead of PAID`
                : `order ${orderId} not PAID within ${env.paidTimeoutMs} ms of a successful sandbox payment`,
            );
            rec.orders.notPaid++;
            settled = true;
            return;
          }
          await sleep(Math.min(200, until - Date.now()), env.stop);
        }
      } finally {
        // A request error mid-checkout was counted as such; the order itself is left unpaid
        // (its hold expires). Only an abort leaves it "abandoned".
        if (!settled) {
          if (env.stop.aborted) rec.orders.abandoned++;
          else rec.orders.notPaid++;
        }
      }
    },
  };

  while (!env.finished()) {
    const name = drawTask();
    rec.tasks[name]++;
    try {
      await tasks[name]();
    } catch (err) {
      if (err instanceof Stopped) return;
      if (!(err instanceof TaskFailed)) throw err;
    }
    await think();
  }
}

// ---- the run ----

/**
 * Runs the load and resolves with its summary (also when `signal` aborts it: `aborted` is
 * then true). Rejects only when the setup fails (admin login, reading the catalog, the
 * restock), or on a bug; request failures are counted, never thrown.
 */
export async function runLoad(opts: LoadOptions): Promise<LoadSummary> {
  if (!opts.urls.length) throw new Error("runLoad: no URL");
  if (!(opts.shoppers >= 1) || !(opts.durationS > 0) || !(opts.thinkMs >= 0))
    throw new Error("runLoad: shoppers ≥ 1, durationS > 0 and thinkMs ≥ 0 are required");
  const urls = opts.urls.map((u) => u.replace(/\/+$/, ""));
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
  const mix = Object.entries({ ...DEFAULT_MIX, ...opts.mix }).filter(([, w]) => w > 0) as [TaskName, number][];
  if (!mix.length) throw new Error("runLoad: every task's weight is 0");
  const progressIntervalMs = opts.progressIntervalMs ?? 1000;

  // One controller for everything this run starts: the caller's abort reaches every
  // request and pause through it, and it is removed again at the end.
  const stopper = new AbortController();
  const onAbort = () => stopper.abort();
  if (opts.signal?.aborted) stopper.abort();
  opts.signal?.addEventListener("abort", onAbort, { once: true });

  const rec = new Recorder();
  const requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  // The first throw of onRequest or onProgress (boxed: whatever was thrown).
  let progressError: { err: unknown } | undefined;
  const onRequest =
    opts.onRequest &&
    ((route: string) => {
      try {
        opts.onRequest!(route);
      } catch (err) {
        // The request goes on; the run rejects with the error at the end.
        progressError ??= { err };
      }
    });
  const client = new Client(urls, rec, stopper.signal, requestTimeoutMs, onRequest);
  const startedAt = new Date();
  let phase: LoadProgress["phase"] = "setup";
  let t0 = 0;
  let deadline = Infinity;
  let lastTick = { at: performance.now(), requests: 0 };
  const snapshot = (): LoadProgress => {
    const now = performance.now();
    const rate = ((rec.requests - lastTick.requests) * 1000) / Math.max(1, now - lastTick.at);
    lastTick = { at: now, requests: rec.requests };
    return {
      phase: phase === "running" && Date.now() >= deadline ? "draining" : phase,
      elapsedS: t0 ? (now - t0) / 1000 : 0,
      durationS: opts.durationS,
      requests: rec.requests,
      requestsPerS: Math.round(rate * 10) / 10,
      errors: rec.errors,
      ordersCreated: rec.orders.created,
      ordersPaid: rec.orders.paid,
      outOfStock: rec.orders.outOfStock,
    };
  };
  const report = () => {
    try {
      opts.onProgress?.(snapshot());
    } catch (err) {
      // A throwing callback must not crash the timer; the run rejects with it at the end.
      progressError ??= { err };
    }
  };
  const ticker = opts.onProgress ? setInterval(report, progressIntervalMs) : undefined;
  let outcome: { summary: LoadSummary } | { err: unknown };
  try {
    let catalog: Catalog;
    try {
      const setupRec = new Recorder();
      catalog = await loadCatalog(new Client(urls, setupRec, stopper.signal, requestTimeoutMs), setupRec, {
        admin: opts.admin,
        catalogSize: opts.catalogSize ?? 200,
        stockTarget: opts.stockTarget ?? 100_000,
      });
    } catch (err) {
      if (err instanceof Stopped) catalog = { pool: [], pages: 1, categories: [], words: [] };
      else throw err;
    }
    const runId = randomBytes(4).toString("hex");
    t0 = performance.now();
    deadline = Date.now() + opts.durationS * 1000;
    phase = "running";
    lastTick = { at: t0, requests: 0 };
    const finished = () => stopper.signal.aborted || Date.now() >= deadline;
    const ends = catalog.pool.length
      ? await Promise.allSettled(
          Array.from({ length: opts.shoppers }, (_, index) =>
            shopper(
              {
                index,
                runId,
                client,
                rec,
                catalog,
                mix,
                thinkMs: opts.thinkMs,
                paidTimeoutMs: opts.paidTimeoutMs ?? 30_000,
                // Each shopper its own stream, so one's choices do not depend on the others' timing.
                random: rng(seed * 7919 + index * 104729 + 1),
                finished,
                stop: stopper.signal,
              },
              deadline,
            ).catch((err: unknown) => {
              // A bug, not a failed request: stop the other shoppers too, then reject with it.
              stopper.abort();
              throw err;
            }),
          ),
        )
      : [];
    const bug = ends.find((e): e is PromiseRejectedResult => e.status === "rejected");
    if (bug) throw bug.reason;
    const durationS = (performance.now() - t0) / 1000;
    const summary: LoadSummary = {
      startedAt: startedAt.toISOString(),
      urls,
      shoppers: opts.shoppers,
      seed,
      durationS: Math.round(durationS * 100) / 100,
      requests: rec.requests,
      requestsPerS: Math.round((rec.requests / Math.max(durationS, 1e-3)) * 10) / 10,
      routes: rec.routeStats(),
      errors: { total: rec.errors, byKind: rec.errorKinds() },
      orderIds: [...rec.orderIds],
      orders: { ...rec.orders },
      tasks: { ...rec.tasks },
      aborted: stopper.signal.aborted,
    };
    outcome = { summary };
  } catch (err) {
    outcome = { err };
  }
  if (ticker) clearInterval(ticker);
  opts.signal?.removeEventListener("abort", onAbort);
  if (opts.onProgress) {
    phase = "done";
    report();
  }
  // A callback's throw fails the run, ahead of an error of the run's own.
  if (progressError) throw progressError.err;
  if ("err" in outcome) throw outcome.err;
  return outcome.summary;
}
