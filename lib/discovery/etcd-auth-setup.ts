/**
 * Turns etcd's authentication on for the cluster's discovery, the way an operator does it,
 * and again without harm (`npm run etcd:auth`, the k8s dev overlay's Job, the tests' private
 * members): a `root` user with the root role, a role `<user>-discovery` with readwrite on the
 * discovery prefix only, the nodes' user (ETCD_USERNAME) with that role, then auth on (etcd
 * refuses `auth enable` before a root user exists).
 *
 * Idempotent: run again, it logs in as root when auth is already on, creates what is
 * missing, sets both passwords to the ones given (a rotated ETCD_PASSWORD takes effect at the
 * nodes' next start) and grants the prefix again. Its limit: it never revokes anything, so a
 * grant another tool added stays; and a root password that no longer matches is a refusal
 * naming ETCD_ROOT_PASSWORD, not a reset (etcd has no reset short of turning auth off).
 */
import { Etcd3, EtcdAuthenticationFailedError, EtcdRoleExistsError, EtcdUserExistsError, GRPCInvalidArgumentError, Range } from "etcd3";

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
    await ignore(client.role(ROOT_USER).create(), EtcdRoleExistsError);
    await upsertUser(client, ROOT_USER, s.rootPassword);
    await client.user(ROOT_USER).addRole(ROOT_USER);
    const role = `${s.user.username}-discovery`;
    await ignore(client.role(role).create(), EtcdRoleExistsError);
    await client.role(role).grant({ permission: "Readwrite", range: Range.prefix(s.prefix) });
    await upsertUser(client, s.user.username, s.user.password);
    await client.user(s.user.username).addRole(role);
    if (!alreadyOn) await client.auth.authEnable();
    return alreadyOn ? "already on" : "enabled";
  } catch (err) {
    if (err instanceof EtcdAuthenticationFailedError) throw new EtcdAuthSetupError("ETCD_ROOT_PASSWORD: etcd refused the root user (authentication is on with another root password)");
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
