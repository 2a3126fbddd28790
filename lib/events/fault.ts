/**
 * Fault injection for the crash tests, never set in production: with
 * `MERIDIAN_FAULT=crash-after-outbox-commit` the process SIGKILLs itself right after a
 * transaction that wrote an outbox row commits, before the relay can publish it. It is read
 * here rather than in lib/config.ts on purpose: it is a test switch, not configuration.
 */
export function afterOutboxCommit(): void {
  if (process.env.MERIDIAN_FAULT === "crash-after-outbox-commit") process.kill(process.pid, "SIGKILL");
}
