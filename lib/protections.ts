/**
 * "Break it yourself" (docs/tutorial.md): `BREAK_PROTECTION=stock-guard,inbox,idempotency-key`
 * turns off one protection at a time, so a learner can watch the test that proves it fail
 * without it, and pass again once it is back. Development and tests only: loadConfig refuses
 * the variable under NODE_ENV=production (a node does not start), and `protectionOff` never
 * answers true there, whatever the environment says.
 *
 * Read from process.env at each use rather than from AppConfig: the three places sit deep in
 * shared mechanisms (a repo's UPDATE, the consumers' inbox, the idempotency helper) that get
 * no config today, and a learner's switch is not worth threading config through all their
 * callers. The cost is one environment lookup per use.
 */

/** What each switch turns off, and where (docs/tutorial.md shows each one failing). */
export const PROTECTIONS = {
  "stock-guard":
    "the conditional stock update (services/product/product.repo.ts reserveStock): a reserve no longer states `on_hand - reserved >= quantity` in its UPDATE, so only the plain read before it decides; concurrent buyers get past it together and only the database's CHECK (products_stock_check) stops the oversell, as an error instead of a 409",
  inbox: "the consumers' inbox (lib/events/consumer.ts): a redelivered or duplicated business event is applied again instead of skipped",
  "idempotency-key":
    "the Idempotency-Key claim (lib/idempotency.ts): a retried request creates a second order, refund or return instead of answering the first",
} as const;

export type Protection = keyof typeof PROTECTIONS;

export const BREAK_PROTECTION = "BREAK_PROTECTION";

const isProtection = (name: string): name is Protection => Object.prototype.hasOwnProperty.call(PROTECTIONS, name);

/** The switches named in `env`, and what is wrong with them (unknown names; production). */
export function brokenProtections(env: NodeJS.ProcessEnv): { off: Protection[]; problems: string[] } {
  const names = (env[BREAK_PROTECTION] ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const problems: string[] = [];
  const unknown = names.filter((n) => !isProtection(n));
  if (unknown.length) problems.push(`${BREAK_PROTECTION}: unknown ${unknown.join(", ")}; known: ${Object.keys(PROTECTIONS).join(", ")}`);
  if (names.length && env.NODE_ENV === "production")
    problems.push(`${BREAK_PROTECTION}: refused under NODE_ENV=production (it turns off a protection of money or stock; tutorial only)`);
  return { off: names.filter(isProtection), problems };
}

/** True when `p` is switched off in this process (never under NODE_ENV=production). */
export function protectionOff(p: Protection): boolean {
  if (!process.env[BREAK_PROTECTION] || process.env.NODE_ENV === "production") return false;
  return brokenProtections(process.env).off.includes(p);
}
