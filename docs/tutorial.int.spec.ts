/**
 * The tutorial's runner (docs/tutorial.ts): how it reads the page, and that it fails when a
 * step does not do what the page says (the negative controls of docs/tutorial.system.spec.ts,
 * which runs the real page).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "mocha";
import { expand, parseTutorial, runTutorial, type RunHooks } from "./tutorial";

const ROOT = path.resolve(__dirname, "..");
const fence = "```";

/** A tiny REPL for terminal 1: a prompt, each line echoed back, `quit` ends it. */
const FAKE_REPL = `node -e 'process.stdout.write("ready\\nmol $ "); require("readline").createInterface({input: process.stdin}).on("line", (l) => { if (l === "quit") process.exit(0); process.stdout.write("you typed " + l + "\\nmol $ "); })'`;

const page = (...parts: string[]) => parts.join("\n\n");
const sh = (code: string, directive?: string) => `${directive ? `<!-- run: ${directive} -->\n\n` : ""}${fence}sh\n${code}\n${fence}`;
const typed = (code: string, directive: string) => `<!-- run: ${directive} -->\n\n${fence}text\n${code}\n${fence}`;

function hooks(pressed: string[] = []): RunHooks & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    log: (line) => void lines.push(line),
    pressButton: async (url, button, until) => {
      pressed.push(`${url} ${button} ${until}`);
      return until;
    },
  };
}

const run = (markdown: string, h = hooks()) => runTutorial(parseTutorial(markdown), ROOT, { ...process.env }, h);

describe("the tutorial's runner", () => {
  it("reads the real page: every sh block is a step, terminal 1 starts first, the switches' runs must fail", () => {
    const markdown = fs.readFileSync(path.join(ROOT, "docs", "tutorial.md"), "utf8");
    const steps = parseTutorial(markdown);
    const shBlocks = [...markdown.matchAll(/^```sh$/gm)].length;
    assert.equal(steps.filter((s) => s.kind === "sh" || s.kind === "background").length, shBlocks, "no sh block is left out");
    assert.equal(steps[0].kind, "background");
    assert.ok(steps.some((s) => s.kind === "browser"));
    const failing = steps.filter((s) => s.fails).map((s) => s.code);
    for (const p of ["stock-guard", "inbox", "idempotency-key"])
      assert.ok(
        failing.some((c) => c.includes(`BREAK_PROTECTION=${p} `)),
        `the ${p} switch's run is expected to fail`,
      );
    assert.ok(failing.some((c) => c.includes("NODE_ENV=production")));
    // A test run by its title: a title that no longer matches would run nothing and pass.
    for (const step of steps.filter((s) => s.code.includes("npx mocha ") && !s.fails))
      assert.ok(
        step.expect.some((e) => / passing$/.test(e)),
        `docs/tutorial.md:${step.line} expects its tests to pass by their count`,
      );
  });

  it("variables carry from block to block and into what is typed; the browser step gets the URL", async () => {
    const pressed: string[] = [];
    const h = hooks(pressed);
    await run(
      page(
        sh(FAKE_REPL, 'background until "ready"'),
        sh("ORDER=o-42\nURL=http://localhost/pay", 'expect ""'),
        '<!-- run: browser $URL click "Pay" until "Done" -->',
        typed("business-events --order $ORDER", 'type until "you typed business-events --order o-42"'),
        typed("quit", "type until exit"),
      ),
      h,
    );
    assert.deepEqual(pressed, ["http://localhost/pay Pay Done"]);
  });

  it("fails (naming the line) when a block exits non-zero, when a 'fails' block succeeds, when an expected text is missing", async () => {
    await assert.rejects(run(page("intro", sh("false"))), /tutorial\.md:3: exited 1, where the page says it succeeds/);
    await assert.rejects(run(sh("true", "fails")), /exited 0, where the page says it fails/);
    await assert.rejects(run(sh("echo nothing here", 'expect "PAID"')), /expected "PAID" in its output/);
    // errexit and pipefail: a failing command inside a block fails the block.
    await assert.rejects(run(sh("false | cat\necho after")), /exited 1/);
    await assert.rejects(run(sh("echo $UNSET_IN_THIS_TEST")), /exited 1/);
  });

  it("fails when terminal 1 never shows its text, or a typed line never gets its answer", async () => {
    await assert.rejects(run(sh(FAKE_REPL, 'background until "never printed"; timeout 2')), /"never printed" not seen within 2 s/);
    await assert.rejects(
      run(page(sh(FAKE_REPL, 'background until "ready"'), typed("invariants", 'type until "0 problem(s)"; timeout 2'))),
      /"0 problem\(s\)" not seen within 2 s/,
    );
    // Terminal 1 gone before its text: said at once, not at the timeout.
    await assert.rejects(
      run(page(sh(FAKE_REPL, 'background until "ready"'), typed("quit", 'type until "bye"; timeout 60'))),
      /terminal 1 exited \(0\) without printing "bye"/,
    );
  });

  it("a step is stopped at its timeout and fails", async () => {
    await assert.rejects(run(sh("sleep 30", "timeout 1")), /stopped after its 1 s/);
  });

  it("refuses a comment it cannot read, a dangling comment, and directives on a block that is not run", () => {
    assert.throws(() => parseTutorial(sh("true", "sometimes")), /unknown run directive "sometimes"/);
    assert.throws(() => parseTutorial("<!-- run: fails -->\n\nno block"), /no block after it/);
    assert.throws(() => parseTutorial(`<!-- run: fails -->\n\n${fence}json\n{}\n${fence}`), /run directives on a json block/);
    assert.throws(
      () => parseTutorial(`<!-- run: fails -->\n\n${fence}\nfalse\n${fence}\n\n${sh("true")}`),
      /run directives on a \(unlabelled\) block/,
    );
    assert.throws(() => expand("$NOPE", {}), /\$NOPE is not set/);
  });
});
