/**
 * The docs are tested (#19): the generated pages are current, and every relative link (with its
 * #anchor), every repository file, every `npm run` script and every test title (quoted beside its
 * spec file) that README.md or a page of docs/ names exists. Their diagrams render in Chromium: docs/diagrams.int.spec.ts.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "mocha";
import { stalePages } from "./generate";
import { brokenReferences, docFiles, headingAnchors } from "./references";

const ROOT = path.resolve(__dirname, "..");

describe("docs", () => {
  it("the generated pages are what the contracts give (npm run docs:gen)", () => {
    assert.deepEqual(stalePages(), []);
  });

  it("README.md and every page of docs/ name only links, anchors, files, npm scripts and test titles that exist", () => {
    const files = docFiles(ROOT);
    assert.ok(files.includes("README.md") && files.includes("docs/index.md") && files.includes("docs/events.md"), files.join(", "));
    assert.deepEqual(brokenReferences(ROOT, files), []);
  });

  it("anchors are GitHub's: lower case, punctuation dropped, spaces as hyphens, repeats numbered", () => {
    assert.deepEqual(
      [
        ...headingAnchors(
          "# Business events\n## Design notes (decided here, with the measurement or source)\n## `npm run bench`\n## Tests\n## Tests\n",
        ),
      ],
      ["business-events", "design-notes-decided-here-with-the-measurement-or-source", "npm-run-bench", "tests", "tests-1"],
    );
  });

  it("negative control: a page naming a missing file, script, link and anchor gets each one named", () => {
    const missingTitle = ["a test this file", "does not have"].join(" ");
    const dir = fs.mkdtempSync(path.join(ROOT, "docs", ".check-"));
    try {
      const page = path.join(dir, "page.md");
      fs.writeFileSync(
        page,
        "See [gone](nowhere.md), [the README's nothing](../../README.md#no-such-heading), `lib/no-such-file.ts` and `npm run no-such-script`.\n" +
          // (built from two parts: this file must not hold the title it is said to lack)
          `| \`docs/docs.unit.spec.ts\` | "${missingTitle}" |\n`,
      );
      const rel = path.relative(ROOT, page).split(path.sep).join("/");
      assert.deepEqual(brokenReferences(ROOT, [rel]), [
        `${rel}: link nowhere.md: no such file`,
        `${rel}: link ../../README.md#no-such-heading: no such heading in README.md`,
        `${rel}: file lib/no-such-file.ts does not exist`,
        `${rel}: test "${missingTitle}" is not in docs/docs.unit.spec.ts`,
        `${rel}: npm run no-such-script: no such script in package.json`,
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
