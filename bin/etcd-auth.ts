/**
 * `npm run etcd:auth`: turns etcd's authentication on for the cluster's discovery, or brings
 * its users up to date when it is on already (lib/discovery/etcd-auth-setup.ts), with
 * ETCD_HOSTS, NAMESPACE, ETCD_USERNAME / ETCD_PASSWORD as the nodes have them, plus the
 * administrator's ETCD_ROOT_PASSWORD (which a node refuses to hold). The nodes' user may then
 * read and write their discovery prefix (NAMESPACE's) and nothing else. The k8s dev overlay runs it as a Job; an operated etcd has its own.
 * Exit codes: 0 done, 1 refused (a message naming the variable), 2 usage.
 */
import { discoveryPrefix } from "../lib/discovery/etcd-access";
import { EtcdAuthSetupError, setUpEtcdAuth } from "../lib/discovery/etcd-auth-setup";
import { loadConfigOrExit } from "./start";

async function main(): Promise<number> {
  // As a tool: etcd alone (no transporter, database or cache), and the only place that takes ETCD_ROOT_PASSWORD.
  const config = loadConfigOrExit({ tool: true });
  const { etcd } = config;
  const rootPassword = etcd?.rootPassword;
  if (!etcd?.username || !etcd.password || !rootPassword) {
    process.stderr.write("ETCD_HOSTS, ETCD_USERNAME, ETCD_PASSWORD and ETCD_ROOT_PASSWORD: all four are needed\n");
    return 2;
  }
  const prefix = `${discoveryPrefix(config.namespace)}/`;
  try {
    const outcome = await setUpEtcdAuth({
      hosts: etcd.hosts,
      rootPassword,
      user: { username: etcd.username, password: etcd.password },
      prefix,
    });
    process.stdout.write(
      `etcd authentication ${outcome === "enabled" ? "turned on" : "was on; users and grants brought up to date"}: user '${etcd.username}' reads and writes ${prefix} only\n`,
    );
    return 0;
  } catch (err) {
    if (!(err instanceof EtcdAuthSetupError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 1;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`etcd:auth failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
