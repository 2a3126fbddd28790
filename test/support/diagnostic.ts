/**
 * A measured figure a test reports beside its result (what node:test's `t.diagnostic` was):
 * one indented `# ` line on stdout, printed while the test runs, so it sits just above the
 * test's line in mocha's spec report. A diagnostic is for the reader; no test asserts on it.
 */
export function diagnostic(message: string): void {
  process.stdout.write(`      # ${message}\n`);
}
