/**
 * The gateway's routes to business actions, derived from the contracts' HTTP rules
 * (`google.api.http` on each rpc, proto/meridian/<service>/v1): `post: "/api/orders/{id}/pay"`
 * on `OrderService.Pay` becomes the alias `"POST /orders/:id/pay": "order.pay"` of the route
 * mounted at `/api`. No business route is written by hand.
 */
import { contracts } from "../../lib/serializer/contracts-runtime";
import type { HttpRule } from "../../proto/registry";

/** A path template's `{param}` variables as moleculer-web's `:param`. */
const toAlias = (rule: HttpRule, rest: string) => `${rule.method} ${rest.replace(/\{([A-Za-z0-9_]+)\}/g, ":$1")}`;

/**
 * The aliases of the route mounted at `mount`: every rule under it, except those under a
 * more specific mount listed in `except` (they belong to that route).
 */
export function contractAliases(mount: string, except: string[] = []): Record<string, string> {
  const under = (path: string, m: string) => m === "" || path === m || path.startsWith(`${m}/`);
  const out: Record<string, string> = {};
  for (const c of contracts.actions.values()) {
    const rule = c.http;
    if (!rule || !under(rule.path, mount) || except.some((m) => under(rule.path, m))) continue;
    const alias = toAlias(rule, rule.path.slice(mount.length) || "/");
    if (out[alias]) throw new Error(`routes: ${alias} under ${mount} is both ${out[alias]} and ${c.action}`);
    out[alias] = c.action;
  }
  return out;
}
