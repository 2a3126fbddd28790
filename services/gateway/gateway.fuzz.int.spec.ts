/**
 * Property-based fuzz of every route of the gateway (fast-check), embedded (SQLite), with
 * the sandbox, Alipay and WeChat Pay enabled (the last two with keys made per run and local
 * stand-ins for their gateways: fuzz-platforms.ts).
 *
 * The routes are the running gateway's own alias tables (every route of its settings: the
 * REST API, the payment callbacks, the sandbox pay page, the probes and the docs), checked to
 * contain API_ALIASES, OPS_ALIASES, PAYMENT_NOTIFY_ALIASES and SANDBOX_PAGE_ALIASES. For each
 * alias the same number of requests, each with:
 * - a caller: anonymous, the customer or the admin (ADMIN_EMAIL/ADMIN_PASSWORD), sometimes a
 *   broken Authorization header instead;
 * - every path parameter replaced: mostly by a real id of an existing thing (users,
 *   addresses, products, orders, returns, notifications, payments, platforms), else by a
 *   value its rule accepts, else by a hostile segment;
 * - params generated from the action's own params schema as the broker's registry holds it
 *   (fuzz-schema.ts): all valid (real values where the system has them), broken in exactly
 *   one field, or mixed with unknown keys; sent as the query string for GET/DELETE and as a
 *   JSON body otherwise, or as broken JSON, a wrong content type, a forbidden key, an
 *   oversized body, no body;
 * - for the payment callbacks, a raw body of any content type: each platform's format
 *   signed with the right key (its fields valid or broken, about real payments or not),
 *   or forged one part at a time, or bytes;
 * - sometimes another method, an Idempotency-Key (a few shared ones, so replays happen) and
 *   odd headers.
 * One request in three is "deep" (the route's own caller and method, real ids in the state the
 * action acts on, valid params, a genuine callback), so that handlers run past their guards;
 * a few fixtures are kept from the destructive routes for the routes after them.
 * Ids the fuzz creates (orders, payments, products, addresses, returns) join the pools, so
 * later requests act on them.
 *
 * Property: every request gets an answer and none is >= 500 (503 included: every dependency
 * is in this process or a local stand-in, so none is really unavailable, and a 503 here would
 * be a bug); every >= 400 answer is the contract's error shape, except the platforms' own
 * refusals on the callback route (400 with their documented body) and Node's bare 431 for a
 * request line plus headers over 16 KB (answered before the app sees it); no uncaught exception or
 * unhandled rejection; the process still answers /health/live. Coverage is asserted, not
 * assumed: every alias with each caller, real ids in every path parameter, valid and broken
 * params, and a 2xx answer on every alias (so handlers ran, not only the guards).
 *
 * FUZZ_RUNS_PER_ALIAS (default 80: 4,400 requests over the 55 aliases of today) and FUZZ_SEED
 * (printed with the status table, and by fast-check on failure) reproduce a run.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "mocha";
import type { KeyObject } from "node:crypto";
import fc from "fast-check";
import { ERROR_SCHEMA } from "../../lib/openapi";
import { http, startTestApp, type TestApp } from "../../test/support/app";
import { eventually } from "../../test/support/eventually";
import { schemaProblem } from "../../test/support/schema-check";
import { API_ALIASES, OPS_ALIASES, PAYMENT_NOTIFY_ALIASES, PAYMENT_NOTIFY_PATH, SANDBOX_PAGE_ALIASES } from "./api.service";
import {
  NASTY_STRINGS,
  encodeAny,
  normalizeRule,
  paramsArbitrary,
  requestParams,
  toQueryString,
  validValue,
  type Hints,
  type ParamsSchema,
} from "./fuzz-schema";
import { PLATFORM_ENV_NAMES, notifyRequest, startPlatformStandIns, type KnownPayment, type NotifyRequest } from "./fuzz-platforms";
import { SHIPPING_ADDRESS } from "../../test/support/fixtures";

const RUNS_PER_ALIAS = Number(process.env.FUZZ_RUNS_PER_ALIAS ?? 80);
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Date.now() % 2 ** 31;

const ADMIN = { email: "root@example.com", password: "admin-password-1" };
const CUSTOMER = { email: "fuzz@example.com", password: "fuzz password", name: "F" };
/** Whose credentials the login/refresh/logout fuzz uses: not the customer, whose session must last. */
const OTHER = { email: "other@example.com", password: "other password", name: "O" };
type Caller = "anonymous" | "customer" | "admin";
interface Route {
  method: string;
  /** The full path template, e.g. /api/orders/:id/pay. */
  template: string;
  action: string;
  pathParams: string[];
}

/** Every alias of every route the running gateway serves: its own tables, not a copy. */
function gatewayRoutes(app: TestApp): Route[] {
  const settings = (
    app.broker.getLocalService("api") as unknown as { settings: { routes: { path?: string; aliases?: Record<string, unknown> }[] } }
  ).settings;
  const routes: Route[] = [];
  for (const r of settings.routes) {
    for (const [alias, action] of Object.entries(r.aliases ?? {})) {
      // The live feeds' Server-Sent Events (function aliases, live-sse.ts) never end by design:
      // not fuzzed here; services/grpc/live.int.spec.ts holds their errors to the contract's shape.
      if (typeof action !== "string") continue;
      const [method, aliasPath] = alias.split(/\s+/) as [string, string];
      const template = `${r.path ?? ""}/${aliasPath.replace(/^\//, "")}`.replace(/\/+$/, "") || "/";
      routes.push({
        method: method.toUpperCase(),
        template,
        action: String(action),
        pathParams: [...template.matchAll(/:(\w+)/g)].map((m) => m[1]),
      });
    }
  }
  return routes;
}

/** What kind of thing an `id` is, per action (other fields are named after their kind). */
const ID_KIND: Record<string, keyof Pools> = {
  "user.setRole": "user",
  "user.updateAddress": "address",
  "user.deleteAddress": "address",
  "product.get": "product",
  "product.update": "product",
  "product.remove": "product",
  "product.adjustStock": "product",
  "recommendation.alsoBought": "product",
  "order.get": "order",
  "order.cancel": "order",
  "order.pay": "order",
  "order.ship": "order",
  "order.deliver": "order",
  "order.refund": "order",
  "order.requestReturn": "order",
  "order.listOrderReturns": "order",
  "order.approveReturn": "return",
  "order.rejectReturn": "return",
  "notification.read": "notification",
  "payment.get": "payment",
};
const FIELD_KIND: Record<string, keyof Pools> = { productId: "product", paymentId: "payment", userId: "user", addressId: "address" };
/** Fixtures an action leaves alone (see `kept`), so that the routes after it still find them. */
const RESERVED_FROM: Record<string, "product" | "address" | "order" | "paid" | "return"> = {
  "product.remove": "product",
  "user.deleteAddress": "address",
  "order.cancel": "order",
  "order.ship": "paid",
  "order.approveReturn": "return",
};
/** The states an action acts on: half of its real ids are drawn from things last seen in them. */
const WANTED_STATE: Record<string, string[]> = {
  "order.pay": ["PENDING_PAYMENT"],
  "order.cancel": ["PENDING_PAYMENT"],
  "order.ship": ["PAID"],
  "order.deliver": ["SHIPPED"],
  "order.refund": ["PAID", "SHIPPED", "DELIVERED"],
  "order.requestReturn": ["DELIVERED"],
  "order.approveReturn": ["REQUESTED"],
  "order.rejectReturn": ["REQUESTED"],
};

interface Pools {
  user: string[];
  address: string[];
  product: string[];
  order: string[];
  return: string[];
  notification: string[];
  payment: string[];
}

/** A hostile path segment: traversal, bad percent-encoding, encoded slashes and NULs, very long. */
const hostileSegment = fc.oneof(
  fc.string({ maxLength: 40 }).map(encodeAny),
  fc.constantFrom(
    "..",
    "%2e%2e",
    "%",
    "%zz",
    "%00",
    "a%2Fb",
    "%C0%AF",
    "%F0%9F%9B%92",
    ";",
    "a;b=c",
    "*",
    "'",
    "x".repeat(500),
    "0",
    "-1",
    "1e999",
    "null",
  ),
  fc.constantFrom(...NASTY_STRINGS.filter((s) => s !== "")).map(encodeAny),
  fc.uuid(),
);

const BODY_METHODS = new Set(["POST", "PUT", "PATCH"]);

interface Sent {
  route: Route;
  caller: Caller;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  paramsMode: string;
  realIds: string[];
  pathValues: Record<string, string>;
}

/** A request as the failure message shows it. */
function describeSent(sent: Sent): string {
  const b = sent.body === undefined ? "" : Buffer.isBuffer(sent.body) ? sent.body.toString("latin1") : sent.body;
  return `${sent.caller} ${sent.method} ${sent.path.slice(0, 300)} headers=${JSON.stringify(sent.headers).slice(0, 400)} body=${JSON.stringify(b.slice(0, 400))} [${sent.paramsMode}]`;
}

describe("gateway fuzz", () => {
  let app: TestApp;
  let standIns: Awaited<ReturnType<typeof startPlatformStandIns>>;
  const savedEnv: Record<string, string | undefined> = {};
  const tokens: Record<Caller, string> = { anonymous: "", customer: "", admin: "" };
  const pools: Pools = { user: [], address: [], product: [], order: [], return: [], notification: [], payment: [] };
  const payments: (KnownPayment & { token?: string })[] = [];
  const refreshTokens: string[] = [];
  let sandboxKey: KeyObject;
  let routes: Route[] = [];
  let schemas = new Map<string, ParamsSchema | undefined>();
  let auths = new Map<string, string | undefined>();
  /** Fixtures the destructive actions leave alone, so later routes still find them. */
  const kept = {
    product: new Set<string>(),
    address: new Set<string>(),
    order: new Set<string>(),
    paid: new Set<string>(),
    return: new Set<string>(),
  };
  const crashes: unknown[] = [];
  const onCrash = (err: unknown) => crashes.push(err);

  const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
  const ok = (r: { status: number; text: string }, what: string) =>
    assert.ok(r.status >= 200 && r.status < 300, `${what}: ${r.status} ${r.text.slice(0, 300)}`);

  /** Last seen state of orders and returns, by id; the lines of orders. */
  const states = new Map<string, string>();
  const orderLines = new Map<string, { productId: string; quantity: number }[]>();
  let cartProducts: string[] = [];

  /** Keeps what a successful answer created (and the states it shows), so later requests act on it. */
  function harvest(action: string, body: any, pathValues: Record<string, string> = {}) {
    // Deleted things leave their pool (a deleted id still comes up as a random one).
    if (action === "product.remove") pools.product = pools.product.filter((id) => id !== pathValues.id);
    if (action === "user.deleteAddress") pools.address = pools.address.filter((id) => id !== pathValues.id);
    if (!body || typeof body !== "object") return;
    if (action.startsWith("cart.") && Array.isArray(body.items))
      cartProducts = body.items.map((i: { productId?: unknown }) => String(i.productId));
    const listed = ["order.list", "order.listReturns", "order.listOrderReturns"].includes(action);
    for (const item of Array.isArray(body) ? body : listed && Array.isArray(body.items) ? body.items : [body])
      if (action.startsWith("order.") && typeof item?.id === "string" && typeof item.status === "string") {
        states.set(item.id, item.status);
        if (!listed && action !== "order.requestReturn" && Array.isArray(item.items)) orderLines.set(item.id, item.items);
      }
    const add = (list: string[], id: unknown) => typeof id === "string" && !list.includes(id) && list.push(id);
    if (action === "order.create") add(pools.order, body.id);
    if (action === "product.create") add(pools.product, body.id);
    if (action === "user.createAddress") add(pools.address, body.id);
    if (action === "order.requestReturn") add(pools.return, body.id);
    if (action === "user.register" || action === "user.login" || action === "user.refresh") {
      if (typeof body.refreshToken === "string") refreshTokens.push(body.refreshToken);
      if (action === "user.register") add(pools.user, body.user?.id);
    }
    if (action === "order.pay" && typeof body.id === "string" && !pools.payment.includes(body.id)) {
      pools.payment.push(body.id);
      const token =
        typeof body.payUrl === "string" && body.provider === "sandbox"
          ? (new URL(body.payUrl).searchParams.get("token") ?? undefined)
          : undefined;
      payments.push({ id: body.id, provider: body.provider, amountMinor: body.amount?.amount, currency: body.amount?.currency, token });
    }
  }

  const fromList = (list: () => readonly unknown[], none = "nothing-here") =>
    fc.nat().map((i) => {
      const l = list();
      return l.length ? l[i % l.length] : none;
    });

  /** Real values of the system for a field of `action` (see ID_KIND, FIELD_KIND). */
  function hintsFor(action: string): Hints {
    return (field) => {
      const kind = field === "id" ? ID_KIND[action] : FIELD_KIND[field];
      if (kind) {
        // Fixtures kept for the routes after this one (which run later), then half of the
        // time things in the state this action acts on, else any id of the kind.
        const reserved = RESERVED_FROM[action];
        const candidates = () => (reserved ? pools[kind].filter((id) => !kept[reserved].has(id)) : pools[kind]);
        const wanted = field === "id" ? WANTED_STATE[action] : undefined;
        if (wanted)
          return fc.oneof(
            fromList(candidates),
            fromList(() => {
              const inState = candidates().filter((id) => wanted.includes(states.get(id) ?? ""));
              return inState.length ? inState : candidates();
            }),
          );
        // A cart's lines are changed through the products in it.
        if (kind === "product" && (action === "cart.updateItem" || action === "cart.removeItem"))
          return fc.oneof(
            fromList(candidates),
            fromList(() => (cartProducts.length ? cartProducts : candidates())),
          );
        return fromList(candidates);
      }
      switch (field) {
        case "provider":
          return fc.constantFrom("sandbox", "alipay", "wechatpay");
        case "token":
          return fromList(() => payments.flatMap((p) => (p.token ? [p.token] : [])));
        case "refreshToken":
          return fromList(() => refreshTokens);
        case "email":
          return action === "user.register" ? undefined : fc.constantFrom(OTHER.email, ADMIN.email);
        case "password":
          return fc.constant(OTHER.password);
        case "currency":
          return fc.constantFrom("CNY", "USD");
        case "country":
          return fc.constant("CN");
        // What a client sends most of the time (the rules allow far more: the raw values still
        // come one time in five, and the broken ones in their own mode).
        case "page":
          return fc.integer({ min: 1, max: 3 });
        case "pageSize":
        case "limit":
          return fc.integer({ min: 1, max: 20 });
        case "quantity":
          return fc.integer({ min: 1, max: 3 });
        case "delta":
          return fc.integer({ min: -2, max: 50 }).filter((n) => n !== 0);
        case "amount":
          return fc.integer({ min: 1, max: 100 });
        default:
          return undefined;
      }
    };
  }

  /** Whole valid bodies where a rule spans fields (order.create: items from the catalog, and an address id or an address, not both). */
  const EXAMPLES: Record<string, () => fc.Arbitrary<Record<string, unknown>>> = {
    "order.create": () =>
      fc
        .record({
          items: fc.array(fc.record({ productId: fromList(() => [...kept.product]), quantity: fc.integer({ min: 1, max: 3 }) }), {
            minLength: 1,
            maxLength: 2,
          }),
          where: fc.oneof(
            fc.constant({ shippingAddress: SHIPPING_ADDRESS }),
            fromList(() => [...kept.address]).map((addressId) => ({ addressId })),
          ),
        })
        .map(({ items, where }) => ({
          items: items.filter((it, i) => items.findIndex((x) => x.productId === it.productId) === i),
          ...where,
        })),
  };

  /** The request for one alias: caller, path, params (schema-made) or callback body, headers. */
  function requestFor(route: Route): fc.Arbitrary<Sent> {
    const schema = schemas.get(route.action);
    const hints = hintsFor(route.action);
    const realOrValid = (name: string) => {
      const hint = hints(name);
      const rule = schema?.[name] ?? { type: "string", min: 1, max: 64 };
      const valid = validValue(rule, name).map((v) => ({ segment: encodeAny(String(v)), real: false, value: String(v) }));
      return { real: hint?.map((v) => ({ segment: encodeAny(String(v)), real: true, value: String(v) })), valid };
    };
    const pathArbs = route.pathParams.map((name) => {
      const { real, valid } = realOrValid(name);
      return fc.oneof(
        ...(real ? [{ arbitrary: real, weight: 6 }] : []),
        { arbitrary: valid, weight: 2 },
        { arbitrary: hostileSegment.map((s) => ({ segment: s, real: false, value: s })), weight: 2 },
      );
    });
    const deepPathArbs = route.pathParams.map((name) => realOrValid(name).real ?? realOrValid(name).valid);
    const isNotify = route.action === "payment.notify";
    // Any caller on any route (the deep requests below use the one the route is for).
    const auth = auths.get(route.action) ?? "admin";
    const fits: Caller = auth === "admin" ? "admin" : auth === "user" ? "customer" : "anonymous";
    const caller = fc.constantFrom<Caller>("anonymous", "customer", "admin");
    // Mostly the caller's own token; one request in twelve a broken Authorization header.
    const authOverride = fc.oneof(
      { arbitrary: fc.constant(null), weight: 11 },
      { arbitrary: fc.string({ maxLength: 60 }).map((s) => `Bearer ${s}`), weight: 1 },
      {
        arbitrary: fc.constantFrom(
          "Bearer",
          "Bearer a.b.c",
          "Basic eDp5",
          "bearer CUSTOMER",
          "Bearer CUSTOMER.x",
          "Bearer  CUSTOMER",
          "CUSTOMER",
        ),
        weight: 1,
      },
    );
    const method = fc.oneof(
      { arbitrary: fc.constant(route.method), weight: 12 },
      { arbitrary: fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"), weight: 1 },
    );
    const extraHeaders = fc.record(
      {
        "idempotency-key": fc.oneof(fc.constantFrom("fuzz-key-1", "fuzz-key-2", "fuzz-key-3"), fc.string({ maxLength: 40 })),
        "x-request-id": fc.oneof(fc.string({ maxLength: 80 }), fc.constant("a".repeat(129)), fc.constant("req-1")),
        "x-forwarded-for": fc.oneof(fc.ipV4(), fc.string({ maxLength: 30 })),
        "content-encoding": fc.constantFrom("gzip", "identity", "br"),
        accept: fc.constantFrom("*/*", "text/html", "application/xml"),
      },
      { requiredKeys: [] },
    );
    const skip = new Set(route.pathParams);
    const params = requestParams(schema, { hints, skip, examples: EXAMPLES[route.action]?.() });
    // How a body travels: JSON mostly; else the ways a JSON body goes wrong.
    const encoding = fc.oneof(
      { arbitrary: fc.constant("json"), weight: 20 },
      {
        arbitrary: fc.constantFrom(
          "json+suffix",
          "truncated",
          "not-an-object",
          "wrong-type",
          "none",
          "forbidden-key",
          "oversized",
          "query-too",
        ),
        weight: 8,
      },
    );
    // One request in three is "deep": the route's own caller and method, real ids, valid
    // params (a known-good body where a rule spans fields), JSON, a genuine callback. So every
    // handler runs past its guards often enough for the 2xx check below to hold on every run;
    // the other two thirds vary every dimension.
    const deepParams = EXAMPLES[route.action]
      ? fc.oneof(
          EXAMPLES[route.action]().map((value) => ({ mode: "valid" as const, value })),
          paramsArbitrary(schema ?? {}, { hints, skip, mode: "valid" }).map((value) => ({ mode: "valid" as const, value })),
        )
      : paramsArbitrary(schema ?? {}, { hints, skip, mode: "valid" }).map((value) => ({ mode: "valid" as const, value }));
    return fc
      .record({
        deep: fc.oneof({ arbitrary: fc.constant(true), weight: 1 }, { arbitrary: fc.constant(false), weight: 2 }),
        caller,
        authOverride,
        method,
        extraHeaders,
        path: fc.tuple(...pathArbs),
        deepPath: fc.tuple(...deepPathArbs),
        params,
        deepParams,
        encoding,
        cut: fc.nat(),
        notASpecificObject: fc.oneof(
          fc.jsonValue({ maxDepth: 2 }).filter((v) => v === null || typeof v !== "object" || Array.isArray(v)),
          fc.constant(""),
        ),
        queryToo: paramsArbitrary(schema ?? {}, { hints, skip, mode: "mixed" }),
        withKey: fc.boolean(),
        coherent: fc.boolean(),
      })
      .map((g) =>
        g.deep
          ? {
              ...g,
              caller: fits,
              authOverride: null,
              method: route.method,
              path: g.deepPath,
              params: g.deepParams,
              encoding: "json",
              coherent: true,
              withKey: false,
            }
          : g,
      )
      .chain((g) => {
        if (!isNotify) return fc.constant({ ...g, notify: undefined as NotifyRequest | undefined });
        const provider = g.path[route.pathParams.indexOf("provider")]?.value ?? "";
        return notifyRequest(
          safeDecode(provider),
          () => payments,
          () => sandboxKey,
          { genuine: g.deep },
        ).map((notify) => ({ ...g, notify }));
      })
      .map((g): Sent => {
        let path = route.template;
        route.pathParams.forEach((name, i) => (path = path.replace(`:${name}`, g.path[i].segment)));
        const realIds = route.pathParams.filter((_, i) => g.path[i].real);
        const params = { ...g.params.value };
        // Values that must agree with the thing in the path (a schema cannot say so), half of
        // the time and always when deep: the sandbox pages need the payment's own token, a
        // return names a line of its order, a customer's refund (before shipping) is of all
        // that is left, an approved return refunds at most what was paid.
        const inPath = (name: string) => g.path[route.pathParams.indexOf(name)]?.value;
        if (g.coherent && route.pathParams.includes("paymentId")) {
          const p = payments.find((x) => x.id === inPath("paymentId"));
          if (p?.token) params.token = p.token;
        }
        if (g.coherent && g.params.mode === "valid" && route.action === "order.requestReturn") {
          const lines = orderLines.get(inPath("id") ?? "");
          if (lines?.length) params.items = [{ productId: lines[0].productId, quantity: 1 }];
        }
        if (g.coherent && g.params.mode === "valid" && route.action === "order.refund") delete params.amount;
        if (g.coherent && g.params.mode === "valid" && route.action === "order.approveReturn" && typeof params.amount === "number")
          params.amount = 1 + (params.amount % 50);
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(g.extraHeaders)) headers[k] = clean(v);
        if (!g.withKey) delete headers["idempotency-key"];
        const token = tokens[g.caller];
        if (g.authOverride !== null) headers.authorization = clean(g.authOverride.replaceAll("CUSTOMER", tokens.customer));
        else if (token) headers.authorization = `Bearer ${token}`;
        let body: string | Buffer | undefined;
        let query = "";
        if (g.notify) {
          if (g.notify.contentType !== undefined) headers["content-type"] = g.notify.contentType;
          Object.assign(headers, g.notify.headers);
          body = g.notify.body;
          if (g.encoding === "query-too") query = toQueryString(g.queryToo);
        } else if (!BODY_METHODS.has(route.method)) {
          query = toQueryString(params);
        } else {
          const json = JSON.stringify(params);
          headers["content-type"] = "application/json";
          switch (g.encoding) {
            case "json":
              body = json;
              break;
            case "json+suffix":
              headers["content-type"] = "application/merge-patch+json; charset=utf-8";
              body = json;
              break;
            case "truncated":
              body = json.slice(0, g.cut % Math.max(json.length, 1));
              break;
            case "not-an-object":
              body = JSON.stringify(g.notASpecificObject);
              break;
            case "wrong-type":
              headers["content-type"] = [
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/jsonp",
              ][g.cut % 4]!;
              body = json;
              break;
            case "none":
              delete headers["content-type"];
              break;
            case "forbidden-key":
              body = json.replace(/^\{/, `{"a":{"b":{"\\u005f_proto__":{"isAdmin":true}}},`).replace(/,\}$/, "}");
              break;
            case "oversized":
              body = JSON.stringify({ ...params, pad: "x".repeat(app.config.bodyLimitBytes) });
              break;
            case "query-too":
              body = json;
              query = toQueryString(g.queryToo);
              break;
          }
        }
        if (query) path += `?${query}`;
        const sentMethod = g.method;
        return {
          route,
          caller: g.caller,
          method: sentMethod,
          path,
          headers,
          body: sentMethod === "GET" || sentMethod === "HEAD" ? undefined : body,
          paramsMode: `${isNotify ? (g.notify?.kind ?? "callback") : g.params.mode}${g.deep ? " deep" : ""}`,
          realIds,
          pathValues: Object.fromEntries(route.pathParams.map((n, i) => [n, g.path[i].value])),
        };
      });
  }

  before(async () => {
    process.on("uncaughtException", onCrash);
    process.on("unhandledRejection", onCrash);
    standIns = await startPlatformStandIns();
    // The payment service reads the platforms' configuration from process.env when it is created.
    for (const name of PLATFORM_ENV_NAMES) savedEnv[name] = process.env[name];
    Object.assign(process.env, standIns.env);
    app = await startTestApp({
      env: {
        ADMIN_EMAIL: ADMIN.email,
        ADMIN_PASSWORD: ADMIN.password,
        LOGIN_RATE_LIMIT: "100000",
        // The customer places many orders: with the default hoarding limits (3 unpaid orders)
        // order creation would stop at the guard after the first few.
        MAX_UNPAID_ORDERS: "1000",
        MAX_UNPAID_UNITS_PER_PRODUCT: "1000000",
      },
    });
    const enabled = (
      app.broker.getLocalService("payment") as unknown as { paymentConfig: { enabled: string[]; sandbox: { privateKey: KeyObject } } }
    ).paymentConfig;
    assert.deepEqual(enabled.enabled, ["sandbox", "alipay", "wechatpay"]);
    sandboxKey = enabled.sandbox.privateKey;

    // Callers and users.
    const adminLogin = await call("POST", "/api/auth/login", { body: ADMIN });
    ok(adminLogin, "admin login");
    tokens.admin = adminLogin.body.accessToken;
    const customer = await call("POST", "/api/auth/register", { body: CUSTOMER });
    ok(customer, "customer");
    tokens.customer = customer.body.accessToken;
    for (const u of [OTHER, { email: "victim@example.com", password: "victim password", name: "V" }]) {
      const r = await call("POST", "/api/auth/register", { body: u });
      ok(r, "user");
      harvest("user.register", r.body);
    }
    for (let i = 0; i < 3; i++)
      harvest("user.login", (await call("POST", "/api/auth/login", { body: { email: OTHER.email, password: OTHER.password } })).body);

    // The catalog: CNY (every platform takes it) and USD, with stock for the whole run.
    for (const [currency, amount] of [
      ["CNY", 1999],
      ["CNY", 50],
      ["CNY", 120000],
      ["USD", 999],
    ] as const) {
      const r = await call("POST", "/api/products", {
        token: tokens.admin,
        body: {
          sku: `FZ-${pools.product.length}`,
          name: `Fuzz ${currency} ${amount}`,
          description: "fuzz",
          category: "fuzz",
          brand: "Fz",
          price: { amount, currency },
          stock: 1_000_000,
        },
      });
      ok(r, "product");
      harvest("product.create", r.body);
    }

    // The customer's addresses, a cart line, orders (below) and notifications.
    for (let i = 0; i < 2; i++)
      harvest(
        "user.createAddress",
        (await call("POST", "/api/users/me/addresses", { token: tokens.customer, body: SHIPPING_ADDRESS })).body,
      );
    ok(await call("POST", "/api/cart/items", { token: tokens.customer, body: { productId: pools.product[0], quantity: 2 } }), "cart");
    const order = async () => {
      const r = await call("POST", "/api/orders", {
        token: tokens.customer,
        body: {
          items: [
            { productId: pools.product[0], quantity: 2 },
            { productId: pools.product[1], quantity: 1 },
          ],
          shippingAddress: SHIPPING_ADDRESS,
        },
      });
      ok(r, "order");
      harvest("order.create", r.body);
      return r.body.id as string;
    };
    const pay = async (orderId: string, provider: string) => {
      const r = await call("POST", `/api/orders/${orderId}/pay`, { token: tokens.customer, body: { provider } });
      ok(r, `pay with ${provider}`);
      harvest("order.pay", r.body);
      return r.body;
    };
    const paidWithSandbox = async () => {
      const id = await order();
      const p = await pay(id, "sandbox");
      ok(
        await call("POST", `/api/payments/sandbox/${p.id}/complete`, { body: { outcome: "success", token: payments.at(-1)!.token } }),
        "sandbox complete",
      );
      await eventually(
        "the sandbox-paid order PAID",
        async () => (await call("GET", `/api/orders/${id}`, { token: tokens.customer })).body?.status === "PAID",
      );
      return id;
    };
    const shipped = async () => {
      const id = await paidWithSandbox();
      ok(await call("POST", `/api/orders/${id}/ship`, { token: tokens.admin, body: { carrier: "SF", trackingNumber: "SF1" } }), "ship");
      return id;
    };
    // Orders in every state a route acts on: delivered with a return requested (approve,
    // reject, more returns), shipped (deliver), paid (ship, refund), awaiting payment with
    // each platform's trade (pay again, cancel, the callbacks), and unpaid.
    for (let i = 0; i < 2; i++) {
      const id = await shipped();
      ok(await call("POST", `/api/orders/${id}/deliver`, { token: tokens.admin }), "deliver");
      const ret = await call("POST", `/api/orders/${id}/returns`, {
        token: tokens.customer,
        body: { items: [{ productId: pools.product[0], quantity: 1 }], reason: "fuzz" },
      });
      ok(ret, "return");
      harvest("order.requestReturn", ret.body);
    }
    await shipped();
    for (let i = 0; i < 4; i++) {
      const id = await paidWithSandbox();
      if (i < 2) kept.paid.add(id); // for the refunds, after the ships
    }
    await pay(await order(), "alipay");
    await pay(await order(), "wechatpay");
    await pay(await order(), "sandbox");
    for (let i = 0; i < 4; i++) kept.order.add(await order());
    for (const id of pools.order) harvest("order.get", (await call("GET", `/api/orders/${id}`, { token: tokens.customer })).body);
    for (const id of pools.return) states.set(id, "REQUESTED");
    kept.return.add(pools.return[0]);
    for (const id of pools.product.slice(0, 3)) kept.product.add(id);
    kept.address.add(pools.address[0]);
    const notes = await eventually("a notification", async () => {
      const n = (await call("GET", "/api/notifications", { token: tokens.customer })).body;
      const list = (Array.isArray(n) ? n : (n?.items ?? [])) as { id: string }[];
      return list.length > 0 && list;
    });
    for (const n of notes) pools.notification.push(n.id);

    routes = gatewayRoutes(app);
    const actions = app.broker.registry.getActionList({ onlyAvailable: false, skipInternal: true, withEndpoints: false }) as {
      name: string;
      action: { params?: ParamsSchema; auth?: string };
    }[];
    schemas = new Map(actions.map((a) => [a.name, a.action.params]));
    auths = new Map(actions.map((a) => [a.name, a.action.auth]));
  });

  after(async () => {
    await app?.stop();
    await standIns?.close();
    for (const name of PLATFORM_ENV_NAMES) {
      if (savedEnv[name] === undefined) delete process.env[name];
      else process.env[name] = savedEnv[name];
    }
    process.off("uncaughtException", onCrash);
    process.off("unhandledRejection", onCrash);
  });

  it("the fuzzed routes are the gateway's own tables, notify and the sandbox page included", () => {
    const key = (method: string, template: string) => `${method} ${template}`;
    const served = new Set(routes.map((r) => key(r.method, r.template)));
    const tables: [string, Record<string, string>][] = [
      ["/api", API_ALIASES],
      ["", OPS_ALIASES],
      [PAYMENT_NOTIFY_PATH, PAYMENT_NOTIFY_ALIASES],
      ["/sandbox", SANDBOX_PAGE_ALIASES],
    ];
    const expected = tables.flatMap(([prefix, t]) => Object.keys(t).map((a) => key(a.split(" ")[0], `${prefix}${a.split(" ")[1]}`)));
    assert.deepEqual(
      expected.filter((e) => !served.has(e)),
      [],
      "every exported alias is served",
    );
    assert.ok(served.has(key("POST", "/api/payments/notify/:provider")) && served.has(key("GET", "/sandbox/pay/:paymentId")));
    for (const r of routes) assert.ok(schemas.has(r.action), `${r.action} is in the registry`);
  });

  it("params made from each routed action's schema: 'valid' ones pass the broker's validator, 'broken' ones fail it", async () => {
    // Without the system's real values (those are valid by construction): the generator's own.
    const validator = (
      app.broker as unknown as { validator: { compile(s: object): (p: object) => true | unknown[] | Promise<true | unknown[]> } }
    ).validator;
    let checked = 0;
    for (const action of new Set(routes.map((r) => r.action))) {
      const schema = schemas.get(action);
      if (!schema || action === "payment.notify") continue;
      const check = validator.compile(schema);
      for (const [mode, expect] of [
        ["valid", true],
        ["broken", false],
      ] as const) {
        if (mode === "broken" && !Object.keys(schema).some((k) => !k.startsWith("$$"))) continue;
        for (const p of fc.sample(paramsArbitrary(schema, { mode }), { numRuns: 30, seed: SEED })) {
          // fastest-validator itself throws on some broken values (an array holding
          // {"toString": 1}: see the next test): a refusal too, though not its own kind.
          let result: true | unknown[] | "threw";
          try {
            result = await check(structuredClone(p));
          } catch {
            result = "threw";
          }
          assert.equal(
            result === true,
            expect,
            `${action} ${mode}: ${JSON.stringify(p).slice(0, 300)} → ${JSON.stringify(result).slice(0, 300)}`,
          );
          checked++;
        }
      }
    }
    assert.ok(checked > 1000, `${checked} objects checked`);
  });

  it('a value fastest-validator cannot print (an array holding {"toString": …}) is refused as 400, in body and query', async () => {
    // The validator threw while writing its message for such a value: a 500 on any route with
    // a string field, found by this fuzz. The gateway now refuses the key before validation.
    for (const raw of [
      '{"email": [{"toString": 1}], "password": "x"}',
      '{"email": "a@b.c", "password": [{"toString": {}}]}',
      '{"email": [[{"valueOf": 1, "toString": 1}]], "password": "x"}',
    ]) {
      const r = await call("POST", "/api/auth/login", { raw, headers: { "content-type": "application/json" } });
      assert.equal(r.status, 400, `${raw} → ${r.status} ${r.text}`);
      assert.equal(r.body.error.code, "VALIDATION_ERROR");
    }
    const q = await call("GET", "/api/products?category[0][toString]=1");
    assert.equal(q.status, 400, `query → ${q.status} ${q.text}`);
  });

  it("null in each optional, non-nullable body field of every routed action is refused (422 VALIDATION_ERROR), never answered >= 500", async () => {
    // The fuzz sends such nulls at random; this sweep sends each one once, deterministically,
    // in an otherwise valid body from the route's own caller, on real ids.
    const failures: string[] = [];
    let sent = 0;
    const one = <T>(arb: fc.Arbitrary<T>) => fc.sample(arb, { numRuns: 1, seed: SEED })[0];
    for (const route of routes) {
      const schema = schemas.get(route.action);
      if (!schema || !BODY_METHODS.has(route.method) || route.action === "payment.notify") continue;
      const fields = Object.entries(schema).filter(
        ([k, r]) => !k.startsWith("$$") && !route.pathParams.includes(k) && normalizeRule(r).optional && !normalizeRule(r).nullable,
      );
      if (!fields.length) continue;
      const hints = hintsFor(route.action);
      const base = Object.fromEntries(
        Object.entries(
          one(EXAMPLES[route.action]?.() ?? paramsArbitrary(schema, { hints, skip: new Set(route.pathParams), mode: "valid" })),
        ).filter(([, v]) => v !== null),
      );
      let path = route.template;
      for (const name of route.pathParams) path = path.replace(`:${name}`, encodeAny(String(one(hints(name) ?? fc.constant("x")))));
      const auth = auths.get(route.action);
      const token = auth === "admin" ? tokens.admin : auth === "user" ? tokens.customer : "";
      for (const [field] of fields) {
        const r = await call(route.method, path, { token: token || undefined, body: { ...base, [field]: null } });
        sent++;
        // lib/validator.ts: null is not "not given" where the rule is not nullable.
        if (r.status !== 422 || r.body?.error?.code !== "VALIDATION_ERROR")
          failures.push(`${route.method} ${path} {${field}: null} → ${r.status} ${r.text.slice(0, 120)}`);
      }
    }
    console.log(`null sweep: ${sent} requests`);
    assert.deepEqual(failures, []);
    assert.ok(sent >= 20, `${sent} requests`);
  });

  it(`${RUNS_PER_ALIAS} requests per alias, as anonymous, customer and admin: never >= 500, always the contract's error shape, the process stays up`, async () => {
    const statuses = new Map<string, Map<number, number>>();
    const byCaller = new Map<string, Set<Caller>>();
    const realIdsSeen = new Map<string, Set<string>>();
    const modes = new Map<string, Set<string>>();
    let requests = 0;
    let parserRefusals = 0;
    const started = Date.now();
    for (const route of routes) {
      const id = `${route.method} ${route.template}`;
      await fc.assert(
        fc.asyncProperty(requestFor(route), async (sent) => {
          requests++;
          let res: Response;
          try {
            res = await fetch(app.baseUrl + sent.path, {
              method: sent.method,
              headers: sent.headers,
              body: sent.body,
              signal: AbortSignal.timeout(15_000),
            });
          } catch (err) {
            // No answer at all: the server closed the connection, crashed, or hung.
            assert.fail(
              `no answer (${(err as Error).message}; ${String((err as { cause?: Error }).cause ?? "")}) to ${describeSent(sent)}`,
            );
          }
          const text = await res.text();
          const status = res.status;
          // Counted under the alias only when sent with its method (another method is another route, or none).
          const key = sent.method === route.method ? id : `${sent.method} ${route.template} (method changed)`;
          const perRoute = statuses.get(key) ?? new Map<number, number>();
          perRoute.set(status, (perRoute.get(status) ?? 0) + 1);
          statuses.set(key, perRoute);
          if (sent.method === route.method) {
            (byCaller.get(id) ?? byCaller.set(id, new Set()).get(id)!).add(sent.caller);
            for (const p of sent.realIds) (realIdsSeen.get(id) ?? realIdsSeen.set(id, new Set()).get(id)!).add(p);
            (modes.get(id) ?? modes.set(id, new Set()).get(id)!).add(sent.paramsMode.split(" ")[0]);
          }
          assert.ok(status < 500, `${status} ${text.slice(0, 300)} ← ${describeSent(sent)}`);
          let body: any;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            body = undefined;
          }
          if (status < 300 && sent.method === route.method) harvest(route.action, body, sent.pathValues);
          if (status >= 400 && sent.method !== "HEAD") {
            const type = res.headers.get("content-type") ?? "";
            const provider = safeDecode(sent.path.split("?")[0].split("/")[4] ?? "");
            const platformRefusal =
              route.action === "payment.notify" &&
              sent.method === "POST" &&
              status === 400 &&
              ((["sandbox", "alipay"].includes(provider) && text === "fail" && type.startsWith("text/plain")) ||
                (provider === "wechatpay" && body?.code === "FAIL" && typeof body?.message === "string" && Object.keys(body).length === 2));
            // Node's HTTP parser refuses a request line plus headers over its limit (16 KB) with a
            // bare 431 before the app sees it: no body, so no shape to check (counted below).
            const parserRefusal = status === 431 && text === "" && type === "";
            if (parserRefusal) parserRefusals++;
            if (!platformRefusal && !parserRefusal) {
              assert.match(type, /^application\/json/, `${status} not JSON (${type}): ${text.slice(0, 200)} ← ${describeSent(sent)}`);
              // The document's Error schema, derived from meridian.common.v1.ErrorResponse: a
              // detail key the contract names must have its type.
              const problem = schemaProblem(ERROR_SCHEMA, body);
              assert.equal(problem, null, `${status} not the error shape (${problem}): ${text.slice(0, 300)} ← ${describeSent(sent)}`);
            }
          }
        }),
        // endOnFailure: the first failing request is reported as sent (shrinking would replay
        // requests against a server whose state has moved on).
        { numRuns: RUNS_PER_ALIAS, seed: SEED, endOnFailure: true },
      );
    }
    const seconds = Math.round((Date.now() - started) / 1000);
    const table = Object.fromEntries([...statuses].map(([k, v]) => [k, Object.fromEntries([...v].sort((a, b) => a[0] - b[0]))]));
    console.log(
      `fuzz: ${requests} requests over ${routes.length} aliases in ${seconds} s (seed ${SEED}); ${parserRefusals} bare 431s from Node's parser\n${JSON.stringify(table, null, 1)}`,
    );

    // Coverage, so that "every route, every caller, deep" is checked rather than hoped for.
    for (const route of routes) {
      const id = `${route.method} ${route.template}`;
      assert.deepEqual([...(byCaller.get(id) ?? [])].sort(), ["admin", "anonymous", "customer"], `${id}: every caller`);
      assert.deepEqual(
        [...(realIdsSeen.get(id) ?? [])].sort(),
        [...route.pathParams].sort(),
        `${id}: a real value in every path parameter`,
      );
      const schema = schemas.get(route.action);
      if (
        schema &&
        route.action !== "payment.notify" &&
        Object.keys(schema).some((k) => !k.startsWith("$$") && !route.pathParams.includes(k))
      )
        assert.ok(
          modes.get(id)?.has("valid") && modes.get(id)?.has("broken"),
          `${id}: valid and broken params (${[...(modes.get(id) ?? [])].join(",")})`,
        );
      const answered2xx = [...(statuses.get(id) ?? new Map<number, number>()).keys()].some((s) => s >= 200 && s < 300);
      assert.ok(answered2xx, `${id}: no 2xx answer in ${RUNS_PER_ALIAS} requests (only guards ran): ${JSON.stringify(table[id])}`);
    }
    assert.deepEqual(crashes, [], "no uncaught exception or unhandled rejection");
    assert.equal((await call("GET", "/health/live")).status, 200, "still up");
  });

  it("raw malformed HTTP: each case is answered with a status line < 500, or closed by the server where the case expects that; the process stays up", async () => {
    const port = Number(new URL(app.baseUrl).port);
    // Each case is written, then our side half-closes (EOF), so the server can still answer.
    // expect "status": the server must answer with a status line (< 500); a close without one
    // fails. expect "close": there is no request to answer (no bytes at all), so the server
    // closes without a status line — it may, but it must close, not hang.
    const cases: { name: string; data: string; expect: "status" | "close" }[] = [
      { name: "no bytes at all (then EOF)", data: "", expect: "close" },
      { name: "garbage request line", data: "GARBAGE\r\n\r\n", expect: "status" },
      { name: "headers cut short (then EOF)", data: "GET /health/live HTTP/1.1\r\nHost: x\r\n", expect: "status" },
      { name: "an HTTP/2 preface", data: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", expect: "status" },
      { name: "a TLS ClientHello", data: "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", expect: "status" },
      {
        name: "Content-Length larger than the body (then EOF)",
        data: 'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":1}',
        expect: "status",
      },
      {
        name: "Content-Length smaller than the body",
        data: 'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{"email":"x"}',
        expect: "status",
      },
      {
        name: "control bytes in Authorization",
        data: "GET /api/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \u0000\u0001\r\n\r\n",
        expect: "status",
      },
      { name: "non-ASCII header value", data: "GET /api/users/me HTTP/1.1\r\nHost: x\r\nX-Bad: \xff\xfe\r\n\r\n", expect: "status" },
      { name: "negative Content-Length", data: "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", expect: "status" },
      {
        name: "bad chunk size",
        data: "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        expect: "status",
      },
      {
        name: "Content-Length and Transfer-Encoding both",
        data: "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        expect: "status",
      },
      { name: "20,000-byte path", data: `GET /${"a".repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`, expect: "status" },
      { name: "3,000 headers", data: "GET /health/live HTTP/1.1\r\n" + "X-Many: y\r\n".repeat(3000) + "\r\n", expect: "status" },
      {
        name: "callback with a body cut short (then EOF)",
        data: `POST ${PAYMENT_NOTIFY_PATH}/sandbox HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"paymentId":`,
        expect: "status",
      },
      {
        name: "callback with a bad chunk",
        data: `POST ${PAYMENT_NOTIFY_PATH}/alipay HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab\r\n`,
        expect: "status",
      },
      { name: "percent-garbage path on the sandbox page", data: "GET /sandbox/pay/%E0%A4%A HTTP/1.1\r\nHost: x\r\n\r\n", expect: "status" },
      { name: "HTTP/0.9-style request", data: "GET /health/live\r\n\r\n", expect: "status" },
      { name: "absolute-form target", data: "GET http://evil.example/api/products HTTP/1.1\r\nHost: x\r\n\r\n", expect: "status" },
    ];
    const failures: string[] = [];
    const seen: string[] = [];
    for (const c of cases) {
      const outcome = await new Promise<{ statusLine: string; hung: boolean }>((resolve) => {
        const socket = net.connect(port, "127.0.0.1", () => socket.end(c.data, "latin1"));
        let out = "";
        let hung = false;
        socket.on("data", (d) => (out += d.toString("latin1")));
        socket.on("close", () => resolve({ statusLine: out.includes("\r\n") ? out.split("\r\n")[0] : "", hung }));
        socket.on("error", () => undefined);
        // A hang detector, not a timing claim: every case must end (answer or close) eventually.
        socket.setTimeout(10_000, () => {
          hung = true;
          socket.destroy();
        });
      });
      const code = Number(/^HTTP\/1\.[01] (\d{3})/.exec(outcome.statusLine)?.[1] ?? NaN);
      seen.push(`${c.name} [${c.expect}]: ${outcome.hung ? "hung" : outcome.statusLine || "closed, no status line"}`);
      if (outcome.hung) failures.push(`${c.name}: neither answered nor closed (hang)`);
      else if (Number.isFinite(code) && code >= 500) failures.push(`${c.name}: ${outcome.statusLine}`);
      else if (!Number.isFinite(code) && c.expect === "status")
        failures.push(`${c.name}: closed with no status line (got ${JSON.stringify(outcome.statusLine.slice(0, 80))})`);
    }
    console.log(`raw HTTP:\n  ${seen.join("\n  ")}`);
    assert.deepEqual(failures, []);
    assert.deepEqual(crashes, [], "no uncaught exception or unhandled rejection");
    assert.equal((await call("GET", "/health/live")).status, 200, "still up");
  });
});

/** Header values as fetch() sends them (visible ASCII); the raw-socket test covers the rest. */
function clean(v: string): string {
  return v.replace(/[^\x20-\x7e]/g, "").trim();
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
