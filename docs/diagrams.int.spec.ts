/**
 * Every Mermaid diagram of README.md and docs/ renders in headless Chromium with the `mermaid`
 * package from node_modules (no CDN: any request off this machine is blocked and fails the
 * test), and draws what its source names. The links, files and scripts the docs name are
 * checked in docs/docs.unit.spec.ts.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "mocha";
import { renderMermaid } from "../test/support/chromium";
import { docFiles } from "./references";

const ROOT = path.resolve(__dirname, "..");

/** The ```mermaid blocks of a Markdown text. */
const mermaidBlocks = (markdown: string): string[] => [...markdown.matchAll(/^```mermaid\n([\s\S]*?)^```$/gm)].map((m) => m[1]);

describe("docs diagrams in headless Chromium", () => {
  it("every Mermaid diagram renders, offline, with the labels its source names", async () => {
    const found = docFiles(ROOT).flatMap((file) =>
      mermaidBlocks(fs.readFileSync(path.join(ROOT, file), "utf8")).map((source) => ({ file, source })),
    );
    assert.ok(
      found.some((d) => d.file === "docs/events.md"),
      "the events page has its graph",
    );
    const { diagrams, consoleErrors, failedRequests } = await renderMermaid(found.map((d) => d.source));
    assert.deepEqual(failedRequests, []);
    assert.deepEqual(consoleErrors, []);
    diagrams.forEach((d, i) => {
      const { file, source } = found[i];
      assert.equal(d.error, undefined, `${file}, diagram ${i + 1}: ${d.error}`);
      assert.ok(d.svgBytes > 1000, `${file}, diagram ${i + 1}: an SVG`);
      // Each event name an edge of the events graph carries is drawn.
      for (const name of [...source.matchAll(/\|([^|]+)\|/g)].flatMap((m) => m[1].split("<br/>")))
        assert.ok(
          d.labels.some((l) => l.includes(name)),
          `${file}, diagram ${i + 1}: label "${name}" drawn (${d.labels.join(" / ")})`,
        );
    });
  });

  it("negative control: a diagram with a syntax error is reported, not drawn", async () => {
    const { diagrams } = await renderMermaid(["flowchart LR\n  a -->|x| b", "flowchart LR\n  a -->|unclosed b"]);
    assert.equal(diagrams[0].error, undefined);
    assert.ok(diagrams[0].labels.includes("x"), diagrams[0].labels.join(" / "));
    assert.match(diagrams[1].error ?? "", /Parse error|Lexical error|Expecting/);
  });
});
