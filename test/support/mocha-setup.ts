/**
 * Loaded by mocha before any spec file (.mocharc.json `require`, after tsx): what every test
 * process has, whether `bin/test.ts` started it or someone ran `npx mocha <file>`.
 */
// Never production (which turns the sandbox platform off and refuses placeholder secrets), here
// and in the node processes the system tests spawn with this environment.
process.env.NODE_ENV ??= "test";
