/**
 * A service schema whose handlers, methods and lifecycle handlers see `this` as the service's
 * own interface (its methods, the mixins' `db` and `publishEvent`, its state), through
 * ServiceSchema's generics rather than a cast or `this: any`.
 */
import type { Service, ServiceSchema, ServiceSettingSchema } from "moleculer";

export type TypedServiceSchema<This, Settings = ServiceSettingSchema> = ServiceSchema<Settings, Record<string, (...args: any[]) => any>, Record<string, unknown>, This & Service>;
