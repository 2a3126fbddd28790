/**
 * At a node's start: does etcd accept this node's credentials, and may it read and write its
 * discovery keys? A refusal stops the start with a message naming the variable to fix,
 * instead of the discoverer's outage loop (ResilientEtcd3Discoverer rides out an etcd that
 * does not answer, and would retry a refused password forever). An etcd that does not
 * answer is not a refusal: the node starts and the discoverer registers it once etcd is back.
 *
 * Each member is asked on its own, once (a client of that member alone, no retries): the
 * etcd3 client's pool tries the members in turn and reports only the last one's error, so a
 * refusal by two members and a member down would pass for an outage. Any member's refusal
 * stops the start; only no answer from any member counts as an outage. Each member has
 * PROBE_TIMEOUT_MS in all, so a start waits that long at most (the members are asked at once).
 *
 * The probe writes, reads and deletes one key under the prefix
 * (`<prefix>/access-check/<nodeID>`: read-only credentials would pass a read and fail the first
 * heartbeat), under a short lease, so a probe cut short leaves nothing behind for long.
 */
import { noop } from "cockatiel";
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  GRPCFailedPreconditionError,
  GRPCInvalidArgumentError,
  type IOptions,
} from "etcd3";

/** A refusal by etcd: the node must not start. */
export class EtcdAccessError extends Error {
  override name = "EtcdAccessError";
}

/** One call's deadline, and one member's whole probe (login, grant, put, get, revoke). */
const CALL_TIMEOUT_MS = 2000;
const PROBE_TIMEOUT_MS = 5000;
const PROBE_LEASE_TTL_S = 10;

/** Moleculer's etcd3 discoverer's key prefix (moleculer/src/registry/discoverers/etcd3.js). */
export function discoveryPrefix(namespace: string | undefined): string {
  return `moleculer${namespace ? `-${namespace}` : ""}/discovery`;
}

interface AccessCheck {
  hosts: string[];
  auth?: IOptions["auth"];
  prefix: string;
  nodeID: string;
}

export async function checkEtcdAccess(opts: AccessCheck): Promise<void> {
  const answers = await Promise.all(opts.hosts.map((host) => probe(host, opts)));
  const refusal = answers.find((a) => a instanceof EtcdAccessError);
  if (refusal) throw refusal;
}

/** One member's answer: ok, a refusal, or none (down, no leader, too slow). */
async function probe(host: string, opts: AccessCheck): Promise<"ok" | "no answer" | EtcdAccessError> {
  const client = new Etcd3({
    hosts: [host],
    auth: opts.auth,
    faultHandling: { global: noop, host: () => noop },
    defaultCallOptions: () => ({ deadline: Date.now() + CALL_TIMEOUT_MS }),
  });
  const key = `${opts.prefix}/access-check/${opts.nodeID}`;
  let timer: NodeJS.Timeout | undefined;
  try {
    const lease = client.lease(PROBE_LEASE_TTL_S, { autoKeepAlive: false });
    const attempt = (async () => {
      await lease.put(key).value("1");
      await client.get(key).string();
      await lease.revoke();
      return "ok" as const;
    })();
    const late = new Promise<"no answer">((resolve) => (timer = setTimeout(() => resolve("no answer"), PROBE_TIMEOUT_MS)));
    return await Promise.race([attempt, late]).catch((err: unknown) => refusalOf(err, opts) ?? ("no answer" as const));
  } finally {
    clearTimeout(timer);
    client.close();
  }
}

function refusalOf(err: unknown, opts: AccessCheck): EtcdAccessError | undefined {
  const user = opts.auth?.username;
  if (err instanceof EtcdAuthenticationFailedError) {
    return new EtcdAccessError(
      `ETCD_PASSWORD: etcd refused user '${user}' (wrong password, or no such user: check ETCD_USERNAME and ETCD_PASSWORD)`,
    );
  }
  if (err instanceof GRPCInvalidArgumentError && /user name is empty/.test(err.message)) {
    return new EtcdAccessError(
      "ETCD_USERNAME / ETCD_PASSWORD: this etcd has authentication on; set both to a user whose role reaches the discovery prefix",
    );
  }
  if (err instanceof GRPCFailedPreconditionError && /authentication is not enabled/.test(err.message)) {
    return new EtcdAccessError(
      "ETCD_USERNAME / ETCD_PASSWORD: set, but this etcd has authentication off (unset both, or turn etcd's authentication on)",
    );
  }
  if (err instanceof EtcdPermissionDeniedError) {
    return new EtcdAccessError(
      `ETCD_USERNAME: user '${user}' may not read and write '${opts.prefix}/' (grant its role readwrite on that prefix: etcdctl role grant-permission <role> --prefix=true readwrite ${opts.prefix}/)`,
    );
  }
  // Unreachable, no leader, a deadline: an outage, which the discoverer rides out.
  return undefined;
}
