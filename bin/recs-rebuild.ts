/**
 * `npm run recs:rebuild [-- --url http://host:3000]`: recomputes the recommendation model
 * from the order history on a running system and shows its progress.
 *
 * It goes through the gateway (POST then GET /api/admin/recommendations/rebuild) as an
 * admin, so it works the same against an embedded process (whose services nobody else can
 * reach) and a cluster (any recommendation replica runs it; every replica reports it).
 * Credentials: ADMIN_EMAIL and ADMIN_PASSWORD, as the system's own first admin is given.
 * The URL: --url, else PUBLIC_URL, else http://localhost:$PORT (3000).
 * A rebuild already running is followed rather than started again.
 */
import { api, gatewayUrl } from "../lib/gateway-client";
import { followRebuild, type RebuildStatus } from "../lib/operations";

const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

async function main(): Promise<number> {
  const base = gatewayUrl(opt("--url"));
  const email = process.env.ADMIN_EMAIL;
  const password = process.env.ADMIN_PASSWORD;
  if (!email || !password) {
    process.stderr.write("ADMIN_EMAIL and ADMIN_PASSWORD must be set (an admin account of the running system)\n");
    return 2;
  }
  const login = await api<{ accessToken: string }>(base, "POST", "/api/auth/login", undefined, { email, password });
  if (login.status !== 200) {
    process.stderr.write(`Login at ${base} failed: ${login.status} ${JSON.stringify(login.body)}\n`);
    return 1;
  }
  const token = login.body.accessToken;
  const started = await api(base, "POST", "/api/admin/recommendations/rebuild", token);
  if (started.status === 409) process.stderr.write("A rebuild is already running: following it.\n");
  else if (started.status !== 202) {
    process.stderr.write(`Could not start the rebuild: ${started.status} ${JSON.stringify(started.body)}\n`);
    return 1;
  }
  let final: RebuildStatus;
  try {
    final = await followRebuild(
      async () => {
        const s = await api<RebuildStatus>(base, "GET", "/api/admin/recommendations/rebuild", token);
        if (s.status !== 200) throw new Error(`Status failed: ${s.status} ${JSON.stringify(s.body)}`);
        return s.body;
      },
      "",
      500,
    );
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`Rebuild done: ${JSON.stringify(final.summary)}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`recs:rebuild failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
