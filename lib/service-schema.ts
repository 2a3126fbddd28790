/**
 * A service schema whose handlers, methods and lifecycle handlers see `this` as the service's
 * own interface (its methods, the mixins' `db` and `publishEvent`, its state), through
 * ServiceSchema's generics rather than a cast or `this: any`.
 */
import type { Service, ServiceSchema, ServiceSettingSchema } from "moleculer";

export type TypedServiceSchema<This, Settings = ServiceSettingSchema> = ServiceSchema<
  Settings,
  Record<string, (...args: never[]) => unknown>,
  Record<string, unknown>,
  This & Service
>;

/**
 * A mixin's part of a schema, its handlers typed by what the mixin itself gives and needs
 * (`this.db` for DbMixin), handed to a service's `mixins`. Moleculer types `mixins` as
 * schemas whose `this` is any Service: a handler needing `this.db` cannot be proven to get
 * it there, so this one place widens the type (the service lists the mixin, which is what
 * makes `db` exist at run time).
 */
export function typedMixin<This>(schema: Partial<TypedServiceSchema<This>>): Partial<ServiceSchema> {
  return schema as Partial<ServiceSchema>;
}

/** The `actions` of a TypedServiceSchema, for a service whose actions come from several files. */
export type TypedActions<This> = NonNullable<TypedServiceSchema<This>["actions"]>;

/**
 * Any service's schema, whatever its own `this`: what a list of services (app.ts, the runner)
 * holds. Each schema's handlers want their own service as `this`, and Moleculer gives each its
 * own; no single type fits them all, and Moleculer's `createService` takes this same `any`.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above: the one place a schema is untyped
export type AnyServiceSchema = ServiceSchema<any, any, any>;
