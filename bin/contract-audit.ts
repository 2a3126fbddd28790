/**
 * `npm run contracts:audit [-- <tier or spec files>]`: runs tests (default: the int tier)
 * with MERIDIAN_CONTRACT_AUDIT on, then prints, per action and event, how often its params,
 * result or payload had no contract or did not fit it, with the first reason seen. Params an
 * action refused are listed apart (bad input travels as JSON by design). Exits 1 if a valid
 * payload missed. The tests' own result is reported, not judged.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "meridian-audit-")), "audit.jsonl");
fs.writeFileSync(file, "");
const args = process.argv.slice(2);
const run = spawnSync(process.execPath, ["--import", "tsx", path.join(__dirname, "test.ts"), ...(args.length ? args : ["int"])], {
  stdio: ["ignore", "ignore", "inherit"],
  env: { ...process.env, MERIDIAN_CONTRACT_AUDIT: file },
});
const misses = new Map<string, { n: number; reason: string }>();
for (const line of fs.readFileSync(file, "utf8").split("\n")) {
  if (!line) continue;
  const { kind, name, reason } = JSON.parse(line) as { kind: string; name: string; reason: string };
  const key = `${kind} ${name}`;
  const m = misses.get(key);
  if (m) m.n++;
  else misses.set(key, { n: 1, reason });
}
process.stdout.write(`tests exited with ${run.status}\n`);
// Bad input refused by its action travels as JSON by design (its validator answers it).
const refused = [...misses].filter(([k]) => k.startsWith("REQ refused "));
const problems = [...misses].filter(([k]) => !k.startsWith("REQ refused "));
const list = (rows: typeof refused) => {
  for (const [key, { n, reason }] of rows.sort(([a], [b]) => a.localeCompare(b))) process.stdout.write(`  ${key} ×${n}: ${reason}\n`);
};
if (refused.length) {
  process.stdout.write(`refused input that did not fit (travels as JSON by design), first reason each:\n`);
  list(refused);
}
if (problems.length) {
  process.stdout.write(`payloads that miss their contract (${file}):\n`);
  list(problems);
}
process.stdout.write(
  problems.length ? `${problems.length} kinds of valid payload miss their contract\n` : "every valid business payload fits its contract\n",
);
process.exit(problems.length ? 1 : 0);
