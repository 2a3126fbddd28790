/**
 * `npm run migrate`: creates each selected service's database when missing and applies its
 * migrations (cluster mode runs this as a separate step, later a Kubernetes Job).
 * `npm run migrate -- --down` rolls every migration back.
 */
import path from "node:path";
import { createKnex, ensureDatabase, migrateDown, migrateLatest } from "../lib/db";
import { loadConfigOrExit } from "./start";

/** Services that own a database, and where their migrations live. */
const MIGRATIONS: Record<string, string> = {
  user: path.join(__dirname, "..", "services", "user", "migrations"),
  product: path.join(__dirname, "..", "services", "product", "migrations"),
  cart: path.join(__dirname, "..", "services", "cart", "migrations"),
  order: path.join(__dirname, "..", "services", "order", "migrations"),
  notification: path.join(__dirname, "..", "services", "notification", "migrations"),
  payment: path.join(__dirname, "..", "services", "payment", "migrations"),
  recommendation: path.join(__dirname, "..", "services", "recommendation", "migrations"),
};

async function main(): Promise<void> {
  const config = loadConfigOrExit({ tool: true });
  const down = process.argv.includes("--down");
  const targets = config.services.filter((s) => s in MIGRATIONS);
  for (const [i, service] of targets.entries()) {
    process.stdout.write(`[${i + 1}/${targets.length}] ${service}: `);
    await ensureDatabase(config, service);
    const db = createKnex(config, service);
    try {
      if (down) {
        await migrateDown(db, MIGRATIONS[service]);
        process.stdout.write("rolled back\n");
      } else {
        const applied = await migrateLatest(db, MIGRATIONS[service]);
        process.stdout.write(applied.length ? `applied ${applied.join(", ")}\n` : "up to date\n");
      }
    } finally {
      await db.destroy();
    }
  }
}

main().catch((err) => {
  process.stderr.write(`Migration failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
