/**
 * `npm run etcd:auth` against a real etcd (a private member, Debian's etcd 3.4), as an operator
 * or the k8s dev overlay's Job runs it: auth goes on with a root user and the nodes' user
 * reaching only the discovery prefix; run again it changes nothing (running nodes' tokens stay
 * good) but a password that differs; a wrong root password or root as the nodes' user is
 * refused with the variable named.
 * The nodes' own start check (lib/discovery/etcd-access.ts) is the judge of the result.
 *
 * @shares-machine: one private etcd member and a few short commands (about 10 s).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { after, before, it } from "mocha";
import { Etcd3, EtcdPermissionDeniedError } from "etcd3";
import { startEtcd, type EtcdHandle } from "../../test/support/etcd";
import { checkEtcdAccess, discoveryPrefix, EtcdAccessError } from "./etcd-access";

const ROOT = path.resolve(__dirname, "..", "..");
const NAMESPACE = `auth-${randomBytes(3).toString("hex")}`;
const PREFIX = discoveryPrefix(NAMESPACE);
let etcd: EtcdHandle;

/** The command as the Job runs it: etcd's part of the nodes' environment, plus ETCD_ROOT_PASSWORD. */
function etcdAuth(env: Record<string, string>) {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "bin", "etcd-auth.ts")], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 60_000,
    env: {
      PATH: process.env.PATH,
      NODE_ENV: "production",
      NAMESPACE,
      ETCD_HOSTS: etcd.hosts,
      ETCD_USERNAME: "meridian",
      ...env,
    },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const access = (username: string, password: string) =>
  checkEtcdAccess({ hosts: etcd.hosts.split(","), auth: { username, password }, prefix: PREFIX, nodeID: "probe" });

before(async () => {
  etcd = await startEtcd();
});
after(async () => etcd?.destroy());

it("etcd:auth turns authentication on, the nodes' user reaches its prefix only; again, it only sets the passwords; refusals name their variable", async () => {
  const root = randomBytes(8).toString("hex");
  const first = randomBytes(8).toString("hex");
  const r1 = etcdAuth({ ETCD_PASSWORD: first, ETCD_ROOT_PASSWORD: root });
  assert.equal(r1.code, 0, r1.out);
  assert.match(r1.out, /turned on: user 'meridian' reads and writes .*\/discovery\/ only/);

  // A node with these credentials starts; without, or with another password, it does not.
  await access("meridian", first);
  await assert.rejects(
    checkEtcdAccess({ hosts: etcd.hosts.split(","), prefix: PREFIX, nodeID: "probe" }),
    (e) => e instanceof EtcdAccessError && /authentication on/.test(e.message),
  );
  await assert.rejects(access("meridian", "wrong"), (e) => e instanceof EtcdAccessError && /^ETCD_PASSWORD/.test(e.message));
  // Outside its prefix the nodes' user may do nothing; root may.
  const user = new Etcd3({ hosts: etcd.hosts, auth: { username: "meridian", password: first } });
  const admin = new Etcd3({ hosts: etcd.hosts, auth: { username: "root", password: root } });
  try {
    await assert.rejects(user.put("moleculer-other/discovery/x").value("1").exec(), EtcdPermissionDeniedError);
    await assert.rejects(user.get("config").string(), EtcdPermissionDeniedError);
    await admin.put("config").value("kept");

    // Again with the same passwords: nothing changes in etcd, so a client logged in before
    // still works (any change to users or roles would make its token stale: "revision of
    // auth store is old", which the etcd3 client does not answer by logging in again).
    await user.put(`${PREFIX}/probe`).value("1");
    const same = etcdAuth({ ETCD_PASSWORD: first, ETCD_ROOT_PASSWORD: root });
    assert.equal(same.code, 0, same.out);
    assert.match(same.out, /was on/);
    assert.equal(await user.get(`${PREFIX}/probe`).string(), "1", "a token from before the re-run is still good");

    // Again, with a rotated ETCD_PASSWORD: auth stays on, the new password works, the old does not.
    const second = randomBytes(8).toString("hex");
    const r2 = etcdAuth({ ETCD_PASSWORD: second, ETCD_ROOT_PASSWORD: root });
    assert.equal(r2.code, 0, r2.out);
    assert.match(r2.out, /was on; users and grants brought up to date/);
    await access("meridian", second);
    await assert.rejects(access("meridian", first), (e) => e instanceof EtcdAccessError && /^ETCD_PASSWORD/.test(e.message));
    assert.equal(await admin.get("config").string(), "kept");
    assert.deepEqual(
      (await admin.user("meridian").roles()).map((r) => r.name),
      ["meridian-discovery"],
    );

    // Refusals: another root password; root as the nodes' user; a variable missing.
    const wrongRoot = etcdAuth({ ETCD_PASSWORD: second, ETCD_ROOT_PASSWORD: "not-root's" });
    assert.equal(wrongRoot.code, 1, wrongRoot.out);
    assert.match(wrongRoot.out, /^ETCD_ROOT_PASSWORD: etcd refused the root user/m);
    const rootUser = etcdAuth({ ETCD_USERNAME: "root", ETCD_PASSWORD: root, ETCD_ROOT_PASSWORD: root });
    assert.equal(rootUser.code, 1, rootUser.out);
    assert.match(rootUser.out, /^ETCD_USERNAME: the nodes' user must not be root/m);
    const missing = etcdAuth({ ETCD_PASSWORD: second });
    assert.equal(missing.code, 2, missing.out);
    assert.match(missing.out, /ETCD_ROOT_PASSWORD/);
    await access("meridian", second);
  } finally {
    user.close();
    admin.close();
  }
});
