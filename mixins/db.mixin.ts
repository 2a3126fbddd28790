/**
 * `db` mixin factory: gives a service `this.db` (knex) on its own database, migrates it at
 * start in embedded mode (cluster mode migrates as a separate step, `npm run migrate`, and
 * a node refuses to start on a schema that is behind), and registers a readiness probe.
 */
import type { Service, ServiceSchema } from "moleculer";
import { typedMixin } from "../lib/service-schema";
import type { AppConfig } from "../lib/config";
import { createKnex, ensureDatabase, migrateLatest, pendingMigrations, type Db } from "../lib/db";
import { registerProbe, unregisterProbe } from "../lib/readiness";

export interface DbMixinOptions {
  /** Database (and probe) name: usually the service name. */
  name: string;
  migrationsDir: string;
  config: AppConfig;
}

export interface DbServiceThis {
  db: Db;
}

/**
 * The readiness probe's statement. It runs whenever readiness is asked (`/health/ready`, and the
 * gRPC edge's health loop every 2 s), so a test counting a request's statements leaves it out.
 */
export const READINESS_QUERY = "select 1";

export function DbMixin(opts: DbMixinOptions): Partial<ServiceSchema> {
  const probeName = `database:${opts.name}`;
  return typedMixin<DbServiceThis & Service>({
    created(this: DbServiceThis & Service) {
      this.db = createKnex(opts.config, opts.name);
    },
    async started(this: DbServiceThis & Service) {
      if (opts.config.migrateOnStart) {
        await ensureDatabase(opts.config, opts.name);
        const applied = await migrateLatest(this.db, opts.migrationsDir);
        if (applied.length) this.logger.info(`Applied ${applied.length} migration(s) to '${opts.name}'`);
      } else {
        const pending = await pendingMigrations(this.db, opts.migrationsDir);
        if (pending > 0) throw new Error(`Database '${opts.name}' has ${pending} pending migration(s): run \`npm run migrate\` first`);
      }
      registerProbe(this.broker, probeName, async () => {
        await this.db.raw(READINESS_QUERY);
      });
    },
    async stopped(this: DbServiceThis & Service) {
      unregisterProbe(this.broker, probeName);
      await this.db.destroy();
    },
  });
}
