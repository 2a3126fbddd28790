/**
 * `npm test`: every spec file, in tiers — unit (pure), int (brokers in one process,
 * SQLite and the real MariaDB/Redis/RabbitMQ), system (several node processes against
 * the real servers). `npm test -- unit` (or int, system) runs one tier; a path runs one file.
 *
 * Node's own test runner, one process per file, one run per tier so each tier gets its own
 * concurrency: the unit and int tiers run TIER_CONCURRENCY files at once (each file isolates
 * itself: a unique namespace, so its own databases, Redis keys, etcd prefix and RabbitMQ
 * vhost; its private servers on free ports), the system tier one at a time (its files start
 * clusters of node processes and servers, each sized for the whole machine). Every tier runs
 * even when an earlier one failed, so one CI run reports every failure; the exit code is
 * non-zero when any tier failed.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const ROOT = path.resolve(__dirname, "..");
const TIERS = ["unit", "int", "system"] as const;
type Tier = (typeof TIERS)[number];
const SKIP_DIRS = new Set(["node_modules", "dist", "data", ".git"]);
/** Files at once per tier (TEST_CONCURRENCY overrides the unit and int tiers'). */
const override = Math.floor(Number(process.env.TEST_CONCURRENCY));
const atOnce = override >= 1 ? override : Math.min(2, os.availableParallelism());
const TIER_CONCURRENCY: Record<Tier, number> = { unit: atOnce, int: atOnce, system: 1 };

function findSpecs(dir: string, out: string[] = []): string[] {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name) && !entry.name.startsWith(".")) findSpecs(path.join(dir, entry.name), out);
    } else if (/\.(unit|int|system)\.spec\.ts$/.test(entry.name)) out.push(path.relative(ROOT, path.join(dir, entry.name)));
  }
  return out;
}

const tierOf = (file: string): Tier => TIERS.find((t) => file.includes(`.${t}.spec.ts`)) ?? "system";

const args = process.argv.slice(2);
const tiers = args.filter((a): a is Tier => (TIERS as readonly string[]).includes(a));
const files = args.filter((a) => a.endsWith(".ts"));
// Paths given: those, each in its tier; else every spec of the tiers asked (all by default).
const pool = files.length ? files : findSpecs(ROOT).sort();
const runs = TIERS.filter((t) => files.length || !tiers.length || tiers.includes(t)).map((t): [Tier, string[]] => [
  t,
  pool.filter((f) => tierOf(f) === t),
]);
const selected = runs.filter(([, f]) => f.length);

if (!selected.length) {
  process.stderr.write("No spec files selected\n");
  process.exit(1);
}
const failed: Tier[] = [];
for (const [tier, tierFiles] of selected) {
  const concurrency = tierFiles.length > 1 ? TIER_CONCURRENCY[tier] : 1;
  process.stdout.write(`\n== ${tier}: ${tierFiles.length} file(s), ${concurrency} at a time\n`);
  const result = spawnSync(
    process.execPath,
    ["--import", "tsx", "--test", `--test-concurrency=${concurrency}`, "--test-reporter=spec", ...tierFiles],
    { cwd: ROOT, stdio: "inherit", env: { ...process.env, NODE_ENV: "test" } },
  );
  if (result.status !== 0) failed.push(tier);
}
process.stdout.write(`\n== tiers: ${selected.map(([t]) => `${t} ${failed.includes(t) ? "FAILED" : "passed"}`).join(", ")}\n`);
process.exit(failed.length ? 1 : 0);
