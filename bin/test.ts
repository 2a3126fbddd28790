/**
 * `npm test`: every spec file, in tiers — unit (pure), int (brokers in one process,
 * SQLite and the real MariaDB/Redis/RabbitMQ), system (several node processes against
 * the real servers). `npm test -- unit` (or int, system) runs one tier; a path runs one file.
 * Node's own test runner: one process per file, files run one at a time because the
 * system tier starts servers and node processes of its own.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const ROOT = path.resolve(__dirname, "..");
const TIERS = ["unit", "int", "system"] as const;
const SKIP_DIRS = new Set(["node_modules", "dist", "data", ".git"]);

function findSpecs(dir: string, out: string[] = []): string[] {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name) && !entry.name.startsWith(".")) findSpecs(path.join(dir, entry.name), out);
    } else if (/\.(unit|int|system)\.spec\.ts$/.test(entry.name)) out.push(path.relative(ROOT, path.join(dir, entry.name)));
  }
  return out;
}

const args = process.argv.slice(2);
const tiers = args.filter((a): a is (typeof TIERS)[number] => (TIERS as readonly string[]).includes(a));
const files = args.filter((a) => a.endsWith(".ts"));
const all = findSpecs(ROOT).sort();
const selected = files.length
  ? files
  : TIERS.filter((t) => !tiers.length || tiers.includes(t)).flatMap((t) => all.filter((f) => f.includes(`.${t}.spec.ts`)));

if (!selected.length) {
  process.stderr.write("No spec files selected\n");
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...selected],
  { cwd: ROOT, stdio: "inherit", env: { ...process.env, NODE_ENV: "test" } },
);
process.exit(result.status ?? 1);
