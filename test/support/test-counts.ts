/** What one spec file's mocha process reports (test/support/mocha-reporter.ts) and bin/test.ts adds up. */
export interface FileCounts {
  passed: number;
  /** Failed tests, tests a failed hook kept from running, failed after hooks and errors outside any test (which fail no test). */
  failed: number;
  skipped: number;
}
