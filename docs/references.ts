/**
 * What the docs name, checked against the repository (docs/docs.unit.spec.ts): relative
 * links and their anchors, repository files in backticks, `npm run` scripts, and the test
 * titles quoted beside their spec file. Written here
 * rather than taken from a link checker because it also knows this repository's files and
 * scripts, and needs no network.
 */
import fs from "node:fs";
import path from "node:path";

/** README.md and every Markdown page under docs/ (paths relative to `root`, `/`-separated). */
export function docFiles(root: string): string[] {
  const out = ["README.md"];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory() && !e.name.startsWith(".")) walk(rel);
      else if (e.name.endsWith(".md")) out.push(rel);
    }
  };
  walk("docs");
  return out;
}

/** The anchors GitHub gives a Markdown text's headings, in order (a repeat gets -1, -2, …). */
export function headingAnchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const m = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = m[1]
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/ /g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n ? `${base}-${n}` : base);
  }
  return anchors;
}

const codeCache = new Map<string, string>();
/** Every TypeScript file of the code (not the tests, not node_modules), as one text. */
function codeText(root: string): string {
  let text = codeCache.get(root);
  if (text === undefined) {
    const parts: string[] = [];
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        if (e.name === "node_modules" || e.name.startsWith(".") || e.name === "dist") continue;
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith(".ts") && !e.name.endsWith(".spec.ts")) parts.push(fs.readFileSync(p, "utf8"));
      }
    };
    for (const d of ["app.ts", "bin", "lib", "mixins", "services", "proto"]) {
      const p = path.join(root, d);
      if (!fs.existsSync(p)) continue;
      if (fs.statSync(p).isDirectory()) walk(p);
      else parts.push(fs.readFileSync(p, "utf8"));
    }
    text = parts.join("\n");
    codeCache.set(root, text);
  }
  return text;
}

/** Everything `files` name that does not exist, one line each ("<file>: <what>"). */
export function brokenReferences(root: string, files: string[]): string[] {
  const scripts = (JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
  const problems: string[] = [];
  for (const file of files) {
    const text = fs.readFileSync(path.join(root, file), "utf8");
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/i.test(target)) continue;
      const [rel, anchor] = target.split("#");
      if (!rel) {
        // A heading of this page.
        if (!headingAnchors(text).has(anchor)) problems.push(`${file}: link ${target}: no such heading here`);
        continue;
      }
      const resolved = path.resolve(root, path.dirname(file), rel);
      if (!fs.existsSync(resolved)) {
        problems.push(`${file}: link ${target}: no such file`);
        continue;
      }
      if (anchor && resolved.endsWith(".md") && !headingAnchors(fs.readFileSync(resolved, "utf8")).has(anchor))
        problems.push(`${file}: link ${target}: no such heading in ${path.relative(root, resolved).split(path.sep).join("/")}`);
    }
    for (const [, p] of text.matchAll(/`((?:[\w.@-]+\/)+[\w.-]+\.(?:ts|md|json|proto|ya?ml|mjs|cjs|sh|js))`/g))
      if (!fs.existsSync(path.join(root, p))) problems.push(`${file}: file ${p} does not exist`);
    // A test named beside its spec file (`file.spec.ts` … "title", on one line) is a test of that file.
    for (const line of text.split("\n")) {
      const spec = /`((?:[\w.@-]+\/)+[\w.-]+\.spec\.ts)`/.exec(line)?.[1];
      if (!spec || !fs.existsSync(path.join(root, spec))) continue;
      const source = fs.readFileSync(path.join(root, spec), "utf8");
      for (const [, title] of line.matchAll(/"([^"]{12,})"/g))
        if (!source.includes(title)) problems.push(`${file}: test "${title}" is not in ${spec}`);
    }
    // The diagrams name the code that does each step: a file there exists, a name right after
    // a file is in it, and every other camelCase name is somewhere in the code.
    // (The first line is Mermaid's: the diagram's kind, `sequenceDiagram`.)
    for (const [, diagram] of text.matchAll(/^```mermaid\n[^\n]*\n([\s\S]*?)^```$/gm)) {
      for (const [, p, name] of diagram.matchAll(/\b((?:[\w.@-]+\/)+[\w.-]+\.ts)(?:\s+(\w+))?/g)) {
        if (!fs.existsSync(path.join(root, p))) problems.push(`${file}: diagram names ${p}, which does not exist`);
        else if (name && /[a-z][A-Z]|^[a-z]+$/.test(name) && !new RegExp(`\\b${name}\\b`).test(fs.readFileSync(path.join(root, p), "utf8")))
          problems.push(`${file}: diagram names ${name} in ${p}, which does not have it`);
      }
      for (const [name] of diagram.matchAll(/\b[a-z]+(?:[A-Z][a-z0-9]*)+\b/g))
        if (!new RegExp(`\\b${name}\\b`).test(codeText(root)))
          problems.push(`${file}: diagram names ${name}, which is nowhere in the code`);
    }
    for (const [, name] of text.matchAll(/npm run ([\w:.-]+)/g)) {
      const script = name.replace(/[:.]+$/, "");
      if (!(script in scripts)) problems.push(`${file}: npm run ${script}: no such script in package.json`);
    }
  }
  return problems;
}
