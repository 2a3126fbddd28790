/**
 * Summary of a V8 .cpuprofile (as written by `BENCH_CPU_PROF=dir npm run bench:gateway`):
 * self time by package / area and the top functions by self time.
 *
 *   npx tsx bench/cpuprofile-top.ts /tmp/prof/embedded.cpuprofile [top=25] [lastSeconds]
 *
 * lastSeconds: only the samples of the profile's last N seconds (a bench part that ends the run,
 * without the node's start-up and the set-up before it). Besides self time, the inclusive time of
 * the project's own functions (services/, lib/): where a request's time goes, callees included.
 */
import fs from "node:fs";
import path from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const [file, topArg, lastArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: tsx bench/cpuprofile-top.ts <file.cpuprofile> [top]\n");
  process.exit(2);
}
const top = Number(topArg ?? 25);
const profile = JSON.parse(fs.readFileSync(file, "utf8")) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));

// Self time per node: each sample's delta is charged to the node that was on top.
const selfUs = new Map<number, number>();
const sampleAt: number[] = [];
profile.samples.reduce((t, _, i) => (sampleAt[i] = t + (profile.timeDeltas[i] ?? 0)), profile.startTime);
const fromUs = lastArg ? profile.endTime - Number(lastArg) * 1e6 : -Infinity;
profile.samples.forEach((id, i) => {
  if (sampleAt[i] >= fromUs) selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
});
const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);

function area(url: string, fn: string): string {
  if (!url) return fn.startsWith("(") ? fn : "(native/builtin)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "node_modules/".length).split("/");
    return rest[0].startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith("node:")) return `node:${url.slice(5).split("/")[0]}`;
  const rel = path.relative(process.cwd(), url.replace(/^file:\/\//, ""));
  return rel.startsWith("..") ? url : `meridian:${rel.split("/").slice(0, 2).join("/")}`;
}

const byArea = new Map<string, number>();
const byFn = new Map<string, number>();
for (const [id, us] of selfUs) {
  const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
  const a = area(url, functionName);
  byArea.set(a, (byArea.get(a) ?? 0) + us);
  const key = `${functionName || "(anonymous)"}  ${url ? `${url.replace(/^.*node_modules\//, "")}:${lineNumber + 1}` : ""}`;
  byFn.set(key, (byFn.get(key) ?? 0) + us);
}

const show = (title: string, m: Map<string, number>) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, us] of [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top))
    process.stdout.write(`${((us / totalUs) * 100).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}\n`);
};
// Inclusive time of the project's functions: a sample counts once for each distinct project
// function on its stack (recursion not double-counted).
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const ownFn = (n: ProfileNode) =>
  /\/work\/[^/]+\/(services|lib)\//.test(n.callFrame.url) && !n.callFrame.url.includes("node_modules")
    ? `${n.callFrame.functionName || "(anonymous)"}  ${path.relative(process.cwd(), n.callFrame.url.replace(/^file:\/\//, ""))}:${n.callFrame.lineNumber + 1}`
    : undefined;
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = ownFn(byId.get(cur)!);
    if (k && !seen.has(k)) {
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + us);
    }
  }
}

process.stdout.write(`${file}: ${(totalUs / 1e6).toFixed(1)} s sampled${lastArg ? ` (the last ${lastArg} s)` : ""}\n`);
show("Self time by area", byArea);
show("Self time by function", byFn);
show("Inclusive time of the project's functions", inclusive);
