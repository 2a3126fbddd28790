/**
 * A service schema whose handlers, methods and lifecycle handlers see `this` as the service's
 * own interface (its methods, the mixins' `db` and `publishEvent`, its state), through
 * ServiceSchema's generics rather than a cast or `this: any`.
 */
import type { Service, ServiceSchema, ServiceSettingSchema } from "moleculer";

export type TypedServiceSchema<This, Settings = ServiceSettingSchema> = ServiceSchema<
  Settings,
  Record<string, (...args: any[]) => any>,
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
