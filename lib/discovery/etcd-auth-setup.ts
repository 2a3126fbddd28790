/**
 * Turns etcd's authentication on for the cluster's discovery, the way an operator does it,
 * and again without harm (`npm run etcd:auth`, the k8s dev overlay's Job, the tests' private
 * members): a `root` user with the root role, a role `<user>-discovery` with readwrite on the
 * discovery prefix only, the nodes' user (ETCD_USERNAME) with that role, then auth on (etcd
 * refuses `auth enable` before a root user exists).
 *
 * Idempotent: run again, it logs in as root when auth is already on, creates what is
 * missing, and changes only what differs: a password is set only when it no longer logs in, the
 * prefix granted only when the role lacks it. That matters: every change to etcd's users or
 * roles makes every logged-in client's token stale ("revision of auth store is old"), so a
 * re-run that rewrote everything would send every running node through its discoverer's outage
 * mode. A rotated ETCD_PASSWORD applies in etcd at once: running nodes keep working until their
 * token expires (10 min, the JWT ttl), so restart them right after. Its limits: it never
 * revokes anything (a grant another tool added stays), and a root password that no longer
 * matches is a refusal naming ETCD_ROOT_PASSWORD, not a reset (etcd has none short of turning
 * auth off).
 */
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdRoleExistsError,
  EtcdUserExistsError,
  EtcdUserNotFoundError,
  GRPCInvalidArgumentError,
  Range,
} from "etcd3";

export interface EtcdAuthSetup {
  hosts: string[];
  rootPassword: string;
  /** The nodes' user and password (ETCD_USERNAME / ETCD_PASSWORD). */
  user: { username: string; password: string };
  /** The key prefix the nodes' role may read and write (the discovery prefix, with its `/`). */
  prefix: string;
}

/** What the run found: auth off (now on), or on already (users and grants brought up to date). */
export type EtcdAuthOutcome = "enabled" | "already on";

export class EtcdAuthSetupError extends Error {
  override name = "EtcdAuthSetupError";
}

export const ROOT_USER = "root";

export async function setUpEtcdAuth(s: EtcdAuthSetup): Promise<EtcdAuthOutcome> {
  if (s.user.username === ROOT_USER) throw new EtcdAuthSetupError("ETCD_USERNAME: the nodes' user must not be root (it reaches every key)");
  const alreadyOn = await authIsOn(s.hosts);
  const client = new Etcd3({ hosts: s.hosts, auth: alreadyOn ? { username: ROOT_USER, password: s.rootPassword } : undefined });
  try {
    // Granting a role a user already has, or creating an existing role, changes nothing in
    // etcd (no new auth revision); a password or a permission written again would.
    await ignore(client.role(ROOT_USER).create(), EtcdRoleExistsError);
    if (!alreadyOn) await upsertUser(client, ROOT_USER, s.rootPassword);
    await client.user(ROOT_USER).addRole(ROOT_USER);
    const role = `${s.user.username}-discovery`;
    await ignore(client.role(role).create(), EtcdRoleExistsError);
    const range = Range.prefix(s.prefix);
    const granted = (await client.role(role).permissions()).some((p) => p.permission === "Readwrite" && p.range.compare(range) === 0);
    if (!granted) await client.role(role).grant({ permission: "Readwrite", range });
    if (!alreadyOn || !(await logsIn(s.hosts, s.user, `${s.prefix}access-check/etcd-auth`)))
      await upsertUser(client, s.user.username, s.user.password);
    await client.user(s.user.username).addRole(role);
    if (!alreadyOn) await client.auth.authEnable();
    return alreadyOn ? "already on" : "enabled";
  } catch (err) {
    if (err instanceof EtcdAuthenticationFailedError)
      throw new EtcdAuthSetupError("ETCD_ROOT_PASSWORD: etcd refused the root user (authentication is on with another root password)");
    throw err;
  } finally {
    client.close();
  }
}

/** With auth on, a request without a token is refused as "user name is empty". */
async function authIsOn(hosts: string[]): Promise<boolean> {
  const probe = new Etcd3({ hosts });
  try {
    await probe.getRoles();
    return false;
  } catch (err) {
    if (err instanceof GRPCInvalidArgumentError && /user name is empty/.test(err.message)) return true;
    throw err;
  } finally {
    probe.close();
  }
}

/** Whether etcd accepts this user's password (a read under its prefix: no change, and within its grant). */
async function logsIn(hosts: string[], user: { username: string; password: string }, key: string): Promise<boolean> {
  const probe = new Etcd3({ hosts, auth: user });
  try {
    await probe.get(key).string();
    return true;
  } catch (err) {
    if (err instanceof EtcdAuthenticationFailedError) return false;
    if (err instanceof EtcdUserNotFoundError) return false;
    throw err;
  } finally {
    probe.close();
  }
}

async function upsertUser(client: Etcd3, username: string, password: string): Promise<void> {
  try {
    await client.user(username).create(password);
  } catch (err) {
    if (!(err instanceof EtcdUserExistsError)) throw err;
    await client.user(username).setPassword(password);
  }
}

async function ignore(p: Promise<unknown>, kind: new (...args: never[]) => Error): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof kind)) throw err;
  }
}
