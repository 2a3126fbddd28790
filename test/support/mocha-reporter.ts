/**
 * The suite's mocha reporter: mocha's own spec report, plus one JSON line of counts written to
 * the file named by MERIDIAN_TEST_STATS when the run ends, which `bin/test.ts` (one mocha
 * process per spec file) adds up into the suite's last line. A file run alone (`npx mocha
 * <file>`) prints the spec report only.
 *
 * The counts are what a reader of "N passed, N failed" needs: a test that never ran because a
 * hook before it failed is counted failed (mocha's `fail-hook-affected-tests`, on in
 * .mocharc.json, reports it so), and so is a failed hook that no test answers for (an after
 * hook), so a failure can never read as a smaller suite.
 */
import fs from "node:fs";
import Mocha from "mocha";
import type { FileCounts } from "./test-counts";

const { EVENT_RUN_END, EVENT_TEST_FAIL, EVENT_TEST_PASS, EVENT_TEST_PENDING } = Mocha.Runner.constants;

class MeridianReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    // Each test's last outcome: a test that passed and then failed (an error after its end)
    // counts once, as failed.
    const outcome = new Map<Mocha.Runnable, "passed" | "failed" | "skipped">();
    let otherFailures = 0;
    runner.on(EVENT_TEST_PASS, (test) => void (outcome.get(test) !== "failed" && outcome.set(test, "passed")));
    runner.on(EVENT_TEST_PENDING, (test) => void outcome.set(test, "skipped"));
    runner.on(EVENT_TEST_FAIL, (runnable) => {
      if (runnable.type === "test") return void outcome.set(runnable, "failed");
      // A failed before/beforeEach hook fails the tests it kept from running (counted as tests,
      // fail-hook-affected-tests); a failed after/afterEach hook fails no test, and an error
      // outside any test or hook (mocha's "Uncaught error outside test suite") neither: each
      // counts for itself.
      if (runnable.type !== "hook" || runnable.title.startsWith('"after')) otherFailures++;
    });
    runner.once(EVENT_RUN_END, () => {
      const out = process.env.MERIDIAN_TEST_STATS;
      if (!out) return;
      const count = (o: string) => [...outcome.values()].filter((v) => v === o).length;
      const [passed, failedTests, skipped] = [count("passed"), count("failed"), count("skipped")];
      const notRun = Math.max(0, runner.total - passed - failedTests - skipped);
      const result: FileCounts = {
        passed,
        skipped,
        failed: failedTests + notRun + otherFailures,
      };
      fs.writeFileSync(out, JSON.stringify(result));
    });
  }
}

// mocha loads a reporter given by path with require() and uses the module itself as the class.
export = MeridianReporter;
