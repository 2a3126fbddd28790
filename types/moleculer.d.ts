/**
 * Meridian's own keys on Moleculer's action schema, declared once (as Moleculer's TypeScript
 * template does in types/moleculer.d.ts), so a service schema needs no cast.
 */
import type { ActionAuth, ActionOpenApiMeta } from "../lib/openapi";
import type { NamedLimit } from "../lib/request-limits";

declare module "moleculer/src/service" {
  // Merges with Moleculer's `Service.ActionSchema` (its module is `export = Service`).
  interface ActionSchema {
    /** Who may call the action through the gateway (checked before the call); the contract's `auth` option says the same. */
    auth?: ActionAuth;
    /** The request budget a routed action draws from (lib/request-limits.ts). */
    rateLimit?: NamedLimit;
    /** What the contract cannot say about a response: a non-JSON media type, a description. */
    openapi?: ActionOpenApiMeta;
  }
}

declare module "moleculer" {
  /** Moleculer's built-in middlewares by name: its index.js exports them, its index.d.ts does not. */
  export const Middlewares: Record<string, (broker: import("moleculer").ServiceBroker) => import("moleculer").Middleware>;
}
