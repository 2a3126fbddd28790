/**
 * Moleculer's runner (`moleculer-runner`; `npm run dev`: hot reload and the REPL, #18) loads
 * moleculer.config.ts's default export and the default export of each
 * `services/<name>/*.service.ts`. Both take the ONE validated configuration from here: the
 * environment read and checked once per process by lib/config.ts, as `npm start` does (an
 * invalid one stops the runner with the same message). `SERVICES` keeps its meaning: the
 * config's default export gives the runner the validated list and `SERVICEDIR=services`, so it
 * loads `services/<name>/` for each service this node runs.
 */
import type { ServiceBroker } from "moleculer";
import type { AnyServiceSchema } from "./service-schema";
import { loadConfig, type AppConfig } from "./config";

let config: AppConfig | undefined;

export function runnerConfig(): AppConfig {
  return (config ??= loadConfig(process.env));
}

/** A service file's default export: the runner calls it with the broker and gets the schema. */
export function forRunner(factory: (config: AppConfig) => AnyServiceSchema): (broker: ServiceBroker) => AnyServiceSchema {
  return () => factory(runnerConfig());
}
