/**
 * The progress bar off a terminal (CI logs): plain lines, never a `\r` or an escape sequence;
 * on a terminal: redrawn in place.
 */
import assert from "node:assert/strict";
import { it } from "mocha";
import { Writable } from "node:stream";
import { progress, progressSteps, statusLine } from "./progress";

function sink(isTTY: boolean): Writable & { isTTY: boolean; columns: number; text(): string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return Object.assign(w, { isTTY, columns: 120, text: () => chunks.join("") });
}

it("off a terminal: plain lines (start, every everyMs, last), no \\r or escape sequence, the last one complete", async () => {
  const out = sink(false);
  const p = progress("Seeding", 40, { stream: out, everyMs: 20 });
  for (let i = 1; i <= 40; i++) {
    p.update(i, i === 20 ? { info: "half" } : undefined);
    await new Promise((r) => setTimeout(r, 2));
  }
  p.stop();
  p.stop();
  const text = out.text();
  // eslint-disable-next-line no-control-regex -- on purpose: no carriage return and no ANSI escape (ESC) in non-TTY output
  assert.doesNotMatch(text, /[\r\x1b]/);
  const lines = text.split("\n").filter(Boolean);
  assert.ok(lines.length >= 2, `a line at the start and more along the way: ${JSON.stringify(lines)}`);
  assert.ok(text.endsWith("\n"), "the last line ended");
  assert.match(lines.at(-1)!, /^Seeding \[#{30}\] 40\/40 half$/);
  assert.match(lines[0], /^Seeding \[\.{30}\] 0\/40 $/);
});

it("a phase with a new label and total (recs:rebuild)", () => {
  const out = sink(false);
  const p = progress("starting", 1, { stream: out, everyMs: 60_000 });
  p.update(5, { label: "orders", total: 10 });
  p.stop();
  assert.match(out.text().split("\n").filter(Boolean).at(-1)!, /^orders \[#{15}\.{15}\] 5\/10 $/);
});

it("on a terminal: the bar is redrawn in place", () => {
  const out = sink(true);
  const p = progress("Seeding", 2, { stream: out });
  p.update(1);
  p.update(2);
  p.stop();
  assert.match(out.text(), /Seeding \[#{30}\] 2\/2/);
  assert.ok(out.text().endsWith("\n"));
});

it("statusLine off a terminal: the text as plain lines, the last one current", () => {
  const out = sink(false);
  const line = statusLine("starting", { stream: out, everyMs: 60_000 });
  line.set("12 requests, 0 errors");
  line.stop();
  const lines = out.text().split("\n").filter(Boolean);
  assert.deepEqual([lines[0], lines.at(-1)], ["starting", "12 requests, 0 errors"]);
  // eslint-disable-next-line no-control-regex -- on purpose: no carriage return and no ANSI escape (ESC) in non-TTY output
  assert.doesNotMatch(out.text(), /[\r\x1b]/);
});

it("progressSteps: one bar per label, each ended at its total or when the next label starts", () => {
  const out = sink(false);
  const step = progressSteps({ stream: out, everyMs: 60_000 });
  step("products", 50, 100);
  step("users", 1, 2);
  step("users", 2, 2);
  const lines = out.text().split("\n").filter(Boolean);
  assert.ok(
    lines.some((l) => /^products \[#{15}\.{15}\] 50\/100 $/.test(l)),
    lines.join("\n"),
  );
  assert.match(lines.at(-1)!, /^users \[#{30}\] 2\/2 $/);
});
