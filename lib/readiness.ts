/**
 * Readiness checks of one node: each dependency a local component uses (a service's
 * database, the transporter, the cache) registers a probe; `/health/ready` runs them all
 * and names the ones that fail. Kept per broker so several brokers in one process (tests)
 * do not mix their checks.
 */
import type { ServiceBroker } from "moleculer";

export type Probe = () => Promise<void>;
const probes = new WeakMap<ServiceBroker, Map<string, Probe>>();

export function registerProbe(broker: ServiceBroker, name: string, probe: Probe): void {
  if (!probes.has(broker)) probes.set(broker, new Map());
  probes.get(broker)!.set(name, probe);
}

export function unregisterProbe(broker: ServiceBroker, name: string): void {
  probes.get(broker)?.delete(name);
}

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, "up" | "down">;
  down: { dependency: string; reason: string }[];
}

/** Runs every probe with a deadline, so a hung dependency reads as down, not as a hung probe. */
export async function checkReadiness(broker: ServiceBroker, timeoutMs = 2000): Promise<ReadinessReport> {
  const entries = [...(probes.get(broker) ?? new Map<string, Probe>()).entries()].sort(([a], [b]) => a.localeCompare(b));
  const results = await Promise.all(
    entries.map(async ([name, probe]) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          probe(),
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs))),
        ]);
        return { name, ok: true, reason: "" };
      } catch (err) {
        return { name, ok: false, reason: err instanceof Error ? err.message : String(err) };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return {
    ready: results.every((r) => r.ok),
    checks: Object.fromEntries(results.map((r) => [r.name, r.ok ? "up" : "down"])),
    // The reason is a short driver message (e.g. "connect ECONNREFUSED 127.0.0.1:6379"), never a stack.
    down: results.filter((r) => !r.ok).map((r) => ({ dependency: r.name, reason: r.reason.split("\n")[0].slice(0, 200) })),
  };
}
