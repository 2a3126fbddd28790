/**
 * The contract registry, read from the custom options of the .proto files (see
 * meridian/options/v1/options.proto): action name → {request, response} message types and
 * the rpc's edge options, event name → message type. The serializer, the generator, the
 * gateway's routes and the OpenAPI document all use it, so the .proto files stay the single
 * source of truth.
 */
import type protobuf from "protobufjs";

export type Auth = "none" | "user" | "admin";
export type Visibility = "internal" | "published";

export interface HttpRule {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** As annotated, with `{param}` path variables. */
  path: string;
  /** `*` (the whole request from the body) or unset (no body). */
  body?: string;
}

export interface ActionContract {
  action: string;
  /** The protobuf service and rpc, e.g. meridian.order.v1.OrderService / Create. */
  service: string;
  rpc: string;
  request: protobuf.Type;
  /** null when the action answers null (`google.protobuf.Empty`). */
  response: protobuf.Type | null;
  auth?: Auth;
  visibility: Visibility;
  http?: HttpRule;
  successStatus?: number;
  /** Served by the REST edge only (a platform's callback, an HTML page), not over gRPC. */
  httpOnly: boolean;
  /**
   * Sending it twice is safe: "idempotent" (protobuf's `idempotency_level` IDEMPOTENT or
   * NO_SIDE_EFFECTS), "key" (when the request carries an Idempotency-Key: the
   * `idempotency_key` option); unset otherwise.
   */
  idempotency?: "idempotent" | "key";
  errors: string[];
  summary?: string;
  tags: string[];
}

/** A Moleculer service's contract as a whole: what it calls, consumes and publishes. */
export interface ServiceContract {
  name: string;
  /** The protobuf service, e.g. meridian.order.v1.OrderService. */
  service: string;
  calls: string[];
  /** Events applied through the service's work queue (one replica each). */
  consumes: string[];
  /** Events every replica follows through a queue of its own (BroadcastEventsMixin). */
  follows: string[];
  /** The events declared in the service's package. */
  publishes: string[];
}

export interface Contracts {
  actions: Map<string, ActionContract>;
  events: Map<string, protobuf.Type>;
  services: Map<string, ServiceContract>;
}

const EMPTY = "google.protobuf.Empty";
const OPT = "meridian.options.v1";
const AUTHS: Record<string, Auth> = { AUTH_NONE: "none", AUTH_USER: "user", AUTH_ADMIN: "admin" };
const VISIBILITIES: Record<string, Visibility> = { VISIBILITY_INTERNAL: "internal", VISIBILITY_PUBLISHED: "published" };
const HTTP_METHODS = ["get", "post", "put", "patch", "delete"] as const;

/** The contracts' integer scalar types, by width: 64-bit ones carry safe JS integers only. */
export const INT32_TYPES: ReadonlySet<string> = new Set(["int32", "sint32", "sfixed32", "uint32", "fixed32"]);
export const INT64_TYPES: ReadonlySet<string> = new Set(["int64", "sint64", "sfixed64", "uint64", "fixed64"]);
/** Every scalar type a JS number carries. */
export const NUMBER_TYPES: ReadonlySet<string> = new Set(["double", "float", ...INT32_TYPES, ...INT64_TYPES]);

export function fullName(t: protobuf.ReflectionObject): string {
  return t.fullName.replace(/^\./, "");
}

/** The action of an rpc: `GetAddress` → `getAddress`. */
export const actionName = (service: string, rpc: string) => `${service}.${rpc[0].toLowerCase()}${rpc.slice(1)}`;

/** Every object of a namespace, depth first, in declaration order. */
export function* walk(ns: protobuf.NamespaceBase): Generator<protobuf.ReflectionObject> {
  for (const obj of ns.nestedArray) {
    yield obj;
    if ("nestedArray" in obj) yield* walk(obj as protobuf.NamespaceBase);
  }
}

/** All values of an option that may repeat (protobufjs keeps repeated options in parsedOptions). */
function optionValues(obj: protobuf.ReflectionObject, name: string): unknown[] {
  const out: unknown[] = [];
  for (const o of (obj.parsedOptions ?? []) as Record<string, unknown>[]) if (name in o) out.push(o[name]);
  if (!out.length && obj.options && name in obj.options) {
    // A repeated option of a reflection loaded from JSON (protobufjs keeps no parsedOptions
    // for services there): the generator writes all its values as an array.
    const v: unknown = obj.options[name];
    const values: unknown[] = Array.isArray(v) ? v : [v];
    out.push(...values);
  }
  return out;
}
const option = (obj: protobuf.ReflectionObject, name: string): unknown => optionValues(obj, name).at(-1);

function httpRule(method: protobuf.Method, where: string): HttpRule | undefined {
  const rule = option(method, "(google.api.http)") as Record<string, string> | undefined;
  if (!rule) return undefined;
  const verbs = HTTP_METHODS.filter((m) => typeof rule[m] === "string");
  if (verbs.length !== 1) throw new Error(`proto: ${where}: google.api.http needs exactly one of ${HTTP_METHODS.join(", ")}`);
  const verb = verbs[0];
  return { method: verb.toUpperCase() as HttpRule["method"], path: rule[verb], body: rule.body || undefined };
}

export function readContracts(root: protobuf.Root): Contracts {
  const actions = new Map<string, ActionContract>();
  const events = new Map<string, protobuf.Type>();
  const services = new Map<string, ServiceContract>();
  const packageOf = (o: protobuf.ReflectionObject) => fullName(o.parent!);
  for (const obj of walk(root)) {
    if (obj.constructor.name === "Service" && option(obj, `(${OPT}.service)`)) {
      const service = obj as protobuf.Service;
      const moleculerName = String(option(obj, `(${OPT}.service)`));
      if (services.has(moleculerName)) throw new Error(`proto: service ${moleculerName} is declared twice`);
      services.set(moleculerName, {
        name: moleculerName,
        service: fullName(service),
        calls: optionValues(obj, `(${OPT}.calls)`).map(String),
        consumes: optionValues(obj, `(${OPT}.consumes)`).map(String),
        follows: optionValues(obj, `(${OPT}.follows)`).map(String),
        publishes: [],
      });
      for (const method of service.methodsArray) {
        method.resolve();
        const action = actionName(moleculerName, method.name);
        const where = `${fullName(service)}.${method.name}`;
        if (actions.has(action)) throw new Error(`proto: action ${action} is declared twice`);
        const response = method.resolvedResponseType!;
        const auth = option(method, `(${OPT}.auth)`) as string | undefined;
        const visibility = VISIBILITIES[String(option(method, `(${OPT}.visibility)`))];
        if (!visibility) throw new Error(`proto: ${where} needs (${OPT}.visibility)`);
        const http = httpRule(method, where);
        if (visibility === "published" && !AUTHS[String(auth)]) throw new Error(`proto: ${where} is published and needs (${OPT}.auth)`);
        if (visibility === "internal" && (http || auth)) throw new Error(`proto: ${where} is internal: no http route, no auth`);
        const status = option(method, `(${OPT}.success_status)`) as number | undefined;
        if (option(method, `(${OPT}.http_only)`) === true && !http)
          throw new Error(`proto: ${where} is http_only and needs a google.api.http route`);
        actions.set(action, {
          action,
          service: fullName(service),
          rpc: method.name,
          request: method.resolvedRequestType!,
          response: fullName(response) === EMPTY ? null : response,
          auth: auth ? AUTHS[auth] : undefined,
          visibility,
          http,
          successStatus: status ? Number(status) : undefined,
          httpOnly: option(method, `(${OPT}.http_only)`) === true,
          idempotency: idempotencyOf(method, where),
          errors: optionValues(method, `(${OPT}.errors)`).map(String),
          summary: (option(method, `(${OPT}.summary)`) as string | undefined) ?? method.comment ?? undefined,
          tags: optionValues(method, `(${OPT}.tags)`).map(String),
        });
      }
    } else if (obj.constructor.name === "Type" && option(obj, `(${OPT}.event)`)) {
      const event = String(option(obj, `(${OPT}.event)`));
      if (events.has(event)) throw new Error(`proto: event ${event} is declared twice`);
      events.set(event, obj as protobuf.Type);
    }
  }
  for (const s of services.values()) {
    const pkg = s.service.slice(0, s.service.lastIndexOf("."));
    s.publishes = [...events].filter(([, t]) => packageOf(t) === pkg).map(([name]) => name);
    for (const a of s.calls) if (!actions.has(a)) throw new Error(`proto: ${s.name} calls ${a}, which no contract declares`);
    for (const e of [...s.consumes, ...s.follows])
      if (!events.has(e)) throw new Error(`proto: ${s.name} consumes ${e}, which no contract declares`);
  }
  return { actions, events, services };
}

function idempotencyOf(method: protobuf.Method, where: string): ActionContract["idempotency"] {
  const level = option(method, "idempotency_level");
  const keyed = option(method, `(${OPT}.idempotency_key)`) === true;
  const idempotent = level === "IDEMPOTENT" || level === "NO_SIDE_EFFECTS";
  if (keyed && idempotent) throw new Error(`proto: ${where} is idempotent already: no (${OPT}.idempotency_key)`);
  return idempotent ? "idempotent" : keyed ? "key" : undefined;
}

export function isWrapper(type: protobuf.Type): boolean {
  return type.options?.[`(${OPT}.wrapper)`] === true;
}
