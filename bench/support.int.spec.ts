import assert from "node:assert/strict";
import path from "node:path";
import { eventually } from "../test/support/eventually";
import { spawnTs } from "../test/support/proc";

/** Whether a process `pid` still runs (signal 0 only checks). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("bench cleanup (bench/support.ts)", function () {
  this.timeout(60_000);

  for (const crash of ["rejection", "exception"]) {
    it(`a bench that crashes (${crash === "rejection" ? "a rejection nobody handles" : "an uncaught exception"}) stops the nodes it started before it exits, with code 1`, async () => {
      const bench = spawnTs(path.join(__dirname, "fixtures", "crashing-bench.ts"), { name: `crashing-bench (${crash})`, args: [crash] });
      let childPid: number | undefined;
      let passed = false;
      try {
        childPid = Number((await bench.waitForLine(/^child pid (\d+)$/, 30_000))[1]);
        await bench.waitExit();
        assert.equal(bench.exitCode, 1, `exit code 1 although the bench's main exits 0 after the crash:\n${bench.lines.join("\n")}`);
        assert.ok(
          bench.lines.some((l) => l.includes(`planted: an ${crash === "rejection" ? "unhandled rejection" : "uncaught exception"}`)),
          "the crash is printed",
        );
        // The cleanup awaited the child's exit (SIGTERM) before the bench exited, and reaped it.
        assert.equal(alive(childPid), false, `the node under test (pid ${childPid}) still runs after the bench crashed`);
        passed = true;
      } finally {
        // Only after a failure: a pid that is gone may be reused by an unrelated process.
        if (!passed) {
          bench.kill("SIGKILL");
          if (childPid && alive(childPid)) process.kill(childPid, "SIGKILL");
        }
      }
    });
  }

  it("a bench whose main exits 0 while a crash's cleanup runs still exits 1", async () => {
    const bench = spawnTs(path.join(__dirname, "fixtures", "crashing-bench.ts"), {
      name: "crashing-bench (exit during cleanup)",
      args: ["rejection", "exit-during-cleanup"],
    });
    await bench.waitExit();
    assert.equal(bench.exitCode, 1, bench.lines.join("\n"));
    // The child got its SIGTERM from the cleanup before the exit; it ends by itself.
    const childPid = Number(bench.lines.map((l) => /^child pid (\d+)$/.exec(l)?.[1]).find(Boolean));
    await eventually(`the node under test (pid ${childPid}) gone`, async () => !alive(childPid));
  });
});
