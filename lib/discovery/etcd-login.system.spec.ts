/**
 * `loginOnClientChannels` against a real etcd with authentication (a private member): the
 * login goes over the client's own channel to the member (so with its reconnect options), a
 * wrong password is still etcd3's EtcdAuthenticationFailedError, and etcd3's internals are
 * the ones the patch expects (it says false otherwise). The outage case it exists for is
 * test/system/cluster.system.spec.ts's node started during a 60 s etcd outage.
 *
 * @shares-machine: one private etcd member and three logins (about 2 s).
 */
import assert from "node:assert/strict";
import { after, before, it } from "mocha";
import { Etcd3, EtcdAuthenticationFailedError } from "etcd3";
import { startEtcd, type EtcdHandle } from "../../test/support/etcd";
import { loginOnClientChannels } from "./etcd-login";

let etcd: EtcdHandle;
before(async () => {
  etcd = await startEtcd({ auth: { prefix: "login/" } });
});
after(async () => etcd?.destroy());

it("logins go over the client's own channel to the member; a wrong password is still refused as such", async () => {
  const client = new Etcd3({ hosts: etcd.hosts, auth: etcd.credentials });
  const wrong = new Etcd3({ hosts: etcd.hosts, auth: { username: etcd.credentials!.username, password: "wrong" } });
  try {
    assert.equal(loginOnClientChannels(client), true, "etcd3's internals are the expected ones");
    assert.equal(loginOnClientChannels(wrong), true);
    const hosts: { getServiceClient(name: string): unknown }[] = client["pool"]["hosts"];
    const asked: string[] = [];
    for (const h of hosts) {
      const get = h.getServiceClient.bind(h);
      h.getServiceClient = (name: string) => (asked.push(name), get(name));
    }
    await client.put("login/x").value("1");
    assert.equal(await client.get("login/x").string(), "1");
    assert.ok(asked.includes("Auth"), `the login used the pool's own channel (asked for ${asked.join(", ")})`);
    await assert.rejects(wrong.get("login/x").string(), EtcdAuthenticationFailedError);
  } finally {
    client.close();
    wrong.close();
  }
});
