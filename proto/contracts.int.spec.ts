/**
 * The contracts cover the services exactly: every action of the eight services is an rpc of
 * its service's contract and every rpc is an action; the contract's visibility and auth are
 * the action's; every route of the gateway to a business action is the rpc's HTTP rule and
 * every rpc with an HTTP rule is routed; the calls and consumed events each contract
 * declares (the dependency map of docs/contracts.md "Contracts") are the ones its code makes; every
 * action validates with the params derived from its request message.
 */
import { it } from "mocha";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { createBroker } from "../app";
import { contracts } from "../lib/serializer/contracts-runtime";
import { API_ALIASES, PAYMENT_NOTIFY_ALIASES, PAYMENT_NOTIFY_PATH, SANDBOX_PAGE_ALIASES } from "../services/gateway/api.service";
import { testConfig } from "../test/support/app";
import { Params } from "./gen/params";

const BUSINESS = ["user", "product", "cart", "order", "payment", "notification", "search", "recommendation"] as const;

interface ActionDef {
  visibility?: string;
  auth?: string;
  params?: unknown;
}

const broker = () => createBroker(testConfig({ services: [...BUSINESS] }), [...BUSINESS]);

function serviceActions(): Map<string, ActionDef> {
  const out = new Map<string, ActionDef>();
  for (const svc of broker().services) {
    if (!BUSINESS.includes(svc.name as (typeof BUSINESS)[number])) continue;
    const schemaActions = (svc.schema.actions ?? {}) as Record<string, ActionDef | ((...a: unknown[]) => unknown)>;
    for (const [name, def] of Object.entries(schemaActions)) out.set(`${svc.name}.${name}`, typeof def === "function" ? {} : def);
  }
  return out;
}

it("every action of the eight services has a contract, and every contract rpc is an action", () => {
  const actions = serviceActions();
  const missing = [...actions.keys()].filter((a) => !contracts.actions.has(a)).sort();
  const extra = [...contracts.actions.keys()].filter((a) => !actions.has(a)).sort();
  assert.deepEqual({ missing, extra }, { missing: [], extra: [] });
});

it("the contract's visibility and auth are the action's", () => {
  const wrong: string[] = [];
  for (const [name, def] of serviceActions()) {
    const c = contracts.actions.get(name);
    if (!c) continue;
    const internal = def.visibility === "public";
    if (internal !== (c.visibility === "internal"))
      wrong.push(`${name}: action visibility ${def.visibility ?? "published"}, contract ${c.visibility}`);
    if (!internal && def.auth !== c.auth) wrong.push(`${name}: action auth ${def.auth}, contract ${c.auth}`);
  }
  assert.deepEqual(wrong, []);
});

it("every action validates with its contract's params (proto/gen/params.ts), none other", () => {
  // Moleculer copies a schema when it merges mixins, so this compares values, not identity.
  const actual = Object.fromEntries([...serviceActions()].map(([name, def]) => [name, def.params]));
  const derived = Object.fromEntries(Object.keys(actual).map((name) => [name, Params[name as keyof typeof Params]]));
  assert.deepEqual(actual, derived);
});

it("the gateway's routes to business actions are the contracts' HTTP rules, both ways", () => {
  const routes = new Map<string, string>();
  const add = (prefix: string, aliases: Record<string, string>) => {
    for (const [alias, action] of Object.entries(aliases)) {
      if (!BUSINESS.includes(action.slice(0, action.indexOf(".")) as (typeof BUSINESS)[number])) continue;
      const [method, p] = alias.split(" ");
      routes.set(action, `${method} ${`${prefix}${p}`.replace(/:([A-Za-z]+)/g, "{$1}")}`);
    }
  };
  add("/api", API_ALIASES);
  add(PAYMENT_NOTIFY_PATH, PAYMENT_NOTIFY_ALIASES);
  add("/sandbox", SANDBOX_PAGE_ALIASES);
  const rules = new Map([...contracts.actions.values()].filter((c) => c.http).map((c) => [c.action, `${c.http!.method} ${c.http!.path}`]));
  assert.deepEqual(Object.fromEntries([...rules].sort()), Object.fromEntries([...routes].sort()));
});

/** `callAction(x, "svc.action"` in a service's own files (not its specs). */
function callsInCode(service: string): string[] {
  const dir = path.join(__dirname, "..", "services", service);
  const found = new Set<string>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts") && !e.name.includes(".spec."))
        for (const m of fs.readFileSync(p, "utf8").matchAll(/callAction\(\s*[\w.]+,\s*"([\w.]+)"/g)) found.add(m[1]);
    }
  };
  walk(dir);
  return [...found].sort();
}

it("each contract declares exactly the actions its service calls, the events it consumes through its work queue and those its replicas follow", () => {
  const declared: Record<string, { calls: string[]; consumes: string[]; follows: string[] }> = {};
  const actual: Record<string, { calls: string[]; consumes: string[]; follows: string[] }> = {};
  for (const svc of broker().services) {
    if (!BUSINESS.includes(svc.name as (typeof BUSINESS)[number])) continue;
    const c = contracts.services.get(svc.name);
    assert.ok(c, `${svc.name} has a contract`);
    declared[svc.name] = { calls: [...c.calls].sort(), consumes: [...c.consumes].sort(), follows: [...c.follows].sort() };
    const meta = svc.metadata as { consumes?: string[]; broadcastConsumes?: string[] };
    actual[svc.name] = {
      calls: callsInCode(svc.name),
      consumes: [...(meta.consumes ?? [])].sort(),
      follows: [...(meta.broadcastConsumes ?? [])].sort(),
    };
  }
  assert.deepEqual(declared, actual);
});

it("every routed rpc documents itself: a summary (its comment) and a tag", () => {
  const missing = [...contracts.actions.values()]
    .filter((c) => c.visibility === "published" && (!c.summary?.trim() || c.tags.length === 0))
    .map((c) => `${c.action}: ${c.summary?.trim() ? "" : "no summary "}${c.tags.length ? "" : "no tag"}`.trim());
  assert.deepEqual(missing, []);
});
