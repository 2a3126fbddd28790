/**
 * `npm run proto:breaking`: `buf breaking` of the contracts against the previous commit
 * (HEAD~1, read from .git by buf): a change that breaks the wire or the JSON names (a field
 * renumbered, retyped or renamed, a message or rpc removed) fails, so nodes built from two
 * consecutive commits can talk (docs/contracts.md, "Contracts"). The rules are buf.yaml's `breaking`
 * section (WIRE_JSON). Its limit: commits are compared pairwise, not with the last release
 * (no release tags yet), and a shallow clone has no previous commit; on the repository's
 * first commit with a buf.yaml there is nothing to compare with, and it says so.
 */
import { spawnSync } from "node:child_process";
import path from "node:path";

const ROOT = path.resolve(__dirname, "..");
export const BUF = path.join(ROOT, "node_modules/.bin/buf");

/** Runs buf breaking of `input` against `against`; returns buf's output and whether it passed. */
export function bufBreaking(input: string, against: string, cwd = ROOT): { ok: boolean; output: string } {
  const r = spawnSync(BUF, ["breaking", input, "--against", against, "--error-format", "text"], { cwd, encoding: "utf8" });
  if (r.error) throw r.error;
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() };
}

/** The commit to compare with: HEAD~1 if it exists and has a buf.yaml, else null. */
export function previousCommit(cwd = ROOT): string | null {
  const git = (...args: string[]) => spawnSync("git", args, { cwd, encoding: "utf8" });
  const prev = git("rev-parse", "--verify", "--quiet", "HEAD~1^{commit}");
  if (prev.status !== 0) return null;
  const sha = prev.stdout.trim();
  return git("cat-file", "-e", `${sha}:buf.yaml`).status === 0 ? sha : null;
}

if (require.main === module) {
  const sha = previousCommit();
  if (!sha) {
    process.stdout.write("proto:breaking: no previous commit with a buf.yaml to compare with\n");
  } else {
    const { ok, output } = bufBreaking(".", `.git#ref=${sha}`);
    process.stdout.write(ok ? `proto:breaking: no breaking change against ${sha.slice(0, 12)}\n` : `${output}\n`);
    process.exit(ok ? 0 : 1);
  }
}
