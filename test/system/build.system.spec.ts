/**
 * The compiled build (#18): `npm run build` compiles the production code to dist/, and a
 * database migrated by one build is opened by the other. knex used to record migrations by
 * file name with the extension (`….ts` under tsx, `….js` compiled), so each build called the
 * other's database "corrupt"; lib/db.ts now records every migration as `<name>.ts` (what
 * every existing database holds) whichever build runs it. Real processes:
 * `node dist/bin/migrate.js` and `tsx bin/migrate.ts`, on SQLite and on MariaDB.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { before, it } from "mocha";
import { promisify } from "node:util";
import { createKnex, dropDatabase } from "../../lib/db";
import { loadConfig, type AppConfig } from "../../lib/config";
import { MYSQL_URL, uniqueNamespace } from "../support/servers";

const ROOT = path.join(__dirname, "..", "..");
const run = promisify(execFile);
const SERVICES = ["user", "product", "cart", "order", "notification", "payment", "recommendation"];

before(async () => {
  await run("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: ROOT, timeout: 300_000 });
});

function environment(db: "sqlite" | "mariadb"): { env: Record<string, string>; config: AppConfig } {
  const env: Record<string, string> = {
    DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), "meridian-build-")),
    NAMESPACE: uniqueNamespace("build"),
    LOG_LEVEL: "warn",
    ...(db === "mariadb" ? { MYSQL_URL } : {}),
  };
  return { env, config: loadConfig(env) };
}

async function migrate(build: "tsx" | "compiled", env: Record<string, string>, ...args: string[]): Promise<string> {
  const [cmd, argv] = build === "tsx" ? ["npx", ["tsx", "bin/migrate.ts"]] : [process.execPath, ["dist/bin/migrate.js"]];
  const { stdout } = await run(cmd, [...argv, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return stdout;
}

/** Each service's line of the migrate tool's output ("[3/7] cart: up to date"). */
const upToDate = (out: string) => SERVICES.filter((s) => new RegExp(`\\] ${s}: up to date$`, "m").test(out));

async function cleanup(config: AppConfig): Promise<void> {
  for (const s of SERVICES) await dropDatabase(config, s);
  fs.rmSync(config.dataDir, { recursive: true, force: true });
}

for (const db of ["sqlite", "mariadb"] as const) {
  it(`${db}: migrated under tsx, the compiled build finds it up to date and rolls it back; migrated compiled, tsx finds it up to date`, async () => {
    for (const [first, second] of [
      ["tsx", "compiled"],
      ["compiled", "tsx"],
    ] as const) {
      const { env, config } = environment(db);
      try {
        assert.equal(upToDate(await migrate(first, env)).length, 0, `${first}: applied, not up to date`);
        assert.deepEqual(upToDate(await migrate(second, env)), SERVICES, `${second} opens what ${first} migrated`);
        await migrate(second, env, "--down");
        assert.equal(
          upToDate(await migrate(first, env)).length,
          0,
          `${second} rolled back what ${first} applied: ${first} applies it again`,
        );
      } finally {
        await cleanup(config);
      }
    }
  });

  it(`${db}: the compiled build records the names every earlier version recorded (….ts), so an older image reads its history`, async () => {
    const { env, config } = environment(db);
    try {
      await migrate("compiled", env);
      const knex = createKnex(config, "order");
      try {
        const names = (await knex("knex_migrations").select<{ name: string }[]>("name")).map((r) => r.name);
        const files = fs
          .readdirSync(path.join(ROOT, "services", "order", "migrations"))
          .filter((f) => f.endsWith(".ts"))
          .sort();
        assert.deepEqual(names.sort(), files, "one row per migration, under its .ts file name");
      } finally {
        await knex.destroy();
      }
    } finally {
      await cleanup(config);
    }
  });
}
