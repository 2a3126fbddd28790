/**
 * At a node's start: does etcd accept this node's credentials, and may it read and write its
 * discovery keys? A refusal stops the start with a message naming the variable to fix,
 * instead of the discoverer's outage loop (ResilientEtcd3Discoverer rides out an etcd that
 * does not answer, and would retry a refused password forever). An etcd that does not
 * answer is not a refusal: the node starts and the discoverer registers it once etcd is back.
 *
 * The probe writes and deletes one key under the prefix (`<prefix>/access-check/<nodeID>`):
 * read-only credentials would pass a read and fail the first heartbeat.
 */
import { Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError, GRPCFailedPreconditionError, GRPCInvalidArgumentError, type IOptions } from "etcd3";

/** A refusal by etcd: the node must not start. */
export class EtcdAccessError extends Error {
  override name = "EtcdAccessError";
}

const CHECK_TIMEOUT_MS = 5000;

/** Moleculer's etcd3 discoverer's key prefix (moleculer/src/registry/discoverers/etcd3.js). */
export function discoveryPrefix(namespace: string | undefined): string {
  return `moleculer${namespace ? `-${namespace}` : ""}/discovery`;
}

export async function checkEtcdAccess(opts: { hosts: string[]; auth?: IOptions["auth"]; prefix: string; nodeID: string }): Promise<void> {
  const client = new Etcd3({
    hosts: opts.hosts,
    auth: opts.auth,
    // One attempt per host: a refusal is final, and an etcd that does not answer is the discoverer's.
    defaultCallOptions: () => ({ deadline: Date.now() + CHECK_TIMEOUT_MS }),
  });
  const user = opts.auth?.username;
  const key = `${opts.prefix}/access-check/${opts.nodeID}`;
  try {
    await client.put(key).value("1");
    await client.get(key).string();
    await client.delete().key(key);
  } catch (err) {
    if (err instanceof EtcdAuthenticationFailedError) {
      throw new EtcdAccessError(`ETCD_PASSWORD: etcd refused user '${user}' (wrong password, or no such user: check ETCD_USERNAME and ETCD_PASSWORD)`);
    }
    if (err instanceof GRPCInvalidArgumentError && /user name is empty/.test(err.message)) {
      throw new EtcdAccessError("ETCD_USERNAME / ETCD_PASSWORD: this etcd has authentication on; set both to a user whose role reaches the discovery prefix");
    }
    if (err instanceof GRPCFailedPreconditionError && /authentication is not enabled/.test(err.message)) {
      throw new EtcdAccessError("ETCD_USERNAME / ETCD_PASSWORD: set, but this etcd has authentication off (unset both, or turn etcd's authentication on)");
    }
    if (err instanceof EtcdPermissionDeniedError) {
      throw new EtcdAccessError(
        `ETCD_USERNAME: user '${user}' may not read and write '${opts.prefix}/' (grant its role readwrite on that prefix: etcdctl role grant-permission <role> --prefix=true readwrite ${opts.prefix}/)`,
      );
    }
    // Unreachable, no leader, a deadline: an outage, which the discoverer rides out.
  } finally {
    client.close();
  }
}
