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
    const counts = { planned: runner.total, passed: 0, failedTests: 0, skipped: 0, hookFailures: 0, afterHookFailures: 0 };
    runner.on(EVENT_TEST_PASS, () => counts.passed++);
    runner.on(EVENT_TEST_PENDING, () => counts.skipped++);
    runner.on(EVENT_TEST_FAIL, (runnable) => {
      if (runnable.type === "test") return void counts.failedTests++;
      counts.hookFailures++;
      // A failed before/beforeEach hook fails the tests it kept from running (counted as tests);
      // a failed after/afterEach hook fails no test, so it counts for itself.
      if (runnable.title.startsWith('"after')) counts.afterHookFailures++;
    });
    runner.once(EVENT_RUN_END, () => {
      const out = process.env.MERIDIAN_TEST_STATS;
      if (!out) return;
      const notRun = Math.max(0, counts.planned - counts.passed - counts.failedTests - counts.skipped);
      const result: FileCounts = {
        planned: counts.planned,
        passed: counts.passed,
        skipped: counts.skipped,
        hookFailures: counts.hookFailures,
        failed: counts.failedTests + notRun + counts.afterHookFailures,
      };
      fs.writeFileSync(out, JSON.stringify(result));
    });
  }
}

// mocha loads a reporter given by path with require() and uses the module itself as the class.
export = MeridianReporter;
