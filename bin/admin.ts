/**
 * `npm run admin -- promote <email>`: an operator makes an existing account admin, with the
 * same environment as the nodes (it opens the user service's database, and the revocation
 * store so a running cluster honours the new role on the account's next request). Embedded,
 * the running node keeps its revocation store in its own memory: the new role reaches the
 * account's next login (tokens issued before keep the role they were issued with).
 * Configuration (ADMIN_EMAIL) never promotes an account that exists: whoever registered the
 * address first would become admin. This command is the explicit, audited way.
 * Exit codes: 0 done (or already admin), 1 no such account, 2 usage.
 */
import { createRevocations } from "../lib/auth/revocations";
import { createKnex } from "../lib/db";
import { changeRole } from "../services/user/user.service";
import { findCredentialsByEmail } from "../services/user/user.repo";
import { normalizeEmail } from "../services/user/user.domain";
import { loadConfigOrExit } from "./start";

const USAGE = "usage: npm run admin -- promote <email>";

async function main(): Promise<number> {
  const [command, address] = process.argv.slice(2);
  if (command !== "promote" || !address) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const config = loadConfigOrExit({ tool: true });
  // The running nodes of a cluster read role changes from Redis; without it the change would
  // reach new logins only.
  if (config.mode === "cluster" && !config.redisUrl) {
    process.stderr.write("REDIS_URL: required with RABBITMQ_URI (the nodes read role changes from Redis); use the nodes' environment\n");
    return 2;
  }
  const db = createKnex(config, "user");
  const revocations = createRevocations(config);
  try {
    const email = normalizeEmail(address);
    const found = await findCredentialsByEmail(db, email);
    if (!found) {
      process.stderr.write(
        `No account has the address ${email}. Sign up first (or let ADMIN_EMAIL/ADMIN_PASSWORD create it at start when no one has it).\n`,
      );
      return 1;
    }
    if (found.user.role === "admin") {
      process.stdout.write(`${email} is already an admin.\n`);
      return 0;
    }
    await changeRole(db, revocations, found.user.id, "admin");
    process.stdout.write(`${email} (user ${found.user.id}) is now an admin.\n`);
    return 0;
  } finally {
    await Promise.all([db.destroy(), revocations.close()]);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`admin: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
