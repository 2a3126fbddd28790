/**
 * etcd3 (~1.1.2) logs in on gRPC channels of its own: each login attempt makes a new `Auth` stub
 * on the member's address, without the client's `grpcOptions`, so on grpc-js's process-wide
 * subchannel with its default reconnect backoff (growing to 120 s). While etcd is down, a client
 * that must log in (a node started during the outage, or one whose token expired meanwhile)
 * keeps failing on that subchannel, and once etcd is back it logs in only when that backoff
 * ends: measured 23 s after a 45 s outage here, and a CI run saw a node started during a 60 s
 * outage not join within 20 s of etcd's return (test/system/cluster.system.spec.ts).
 *
 * `loginOnClientChannels` sends the login over the client's own channel to that member
 * instead, which carries its `grpcOptions` (the discoverer's short reconnect backoff). Written
 * here because etcd3 offers no option for it; it reaches into etcd3's connection pool
 * (`pool.authenticator`, `pool.hosts`), so etcd3's version is pinned to the 1.1 line, and a
 * client whose internals differ is left as it is (with a warning).
 */
import { Metadata, type CallOptions, type Client } from "@grpc/grpc-js";
import { castGrpcError, type Etcd3 } from "etcd3";

interface AuthStub extends Client {
  authenticate(
    req: { name: string; password: string },
    meta: Metadata,
    options: CallOptions,
    cb: (err: Error | null, res?: { token: string }) => void,
  ): void;
}

/** etcd3's `Authenticator.getCredentialsFromHost`: one login at one member, the token. */
type Login = (
  address: string,
  name: string,
  password: string,
  callOptions: CallOptions | undefined,
  credentials: unknown,
) => Promise<string>;

interface PoolHost {
  getServiceClient(name: "Auth"): Client;
}

/** Makes `client` log in over its own channels; returns false (unchanged) when etcd3's internals are not the expected ones. */
export function loginOnClientChannels(client: Etcd3): boolean {
  const pool = client["pool"];
  // etcd3's private fields (checked just below before anything is used).
  const authenticator = pool["authenticator"] as { getCredentialsFromHost?: Login } | undefined;
  const hosts: unknown = pool["hosts"];
  if (!authenticator || typeof authenticator.getCredentialsFromHost !== "function" || !Array.isArray(hosts)) return false;
  if (
    !hosts.every(
      (h: { host?: unknown; getServiceClient?: unknown }) => typeof h.host === "string" && typeof h.getServiceClient === "function",
    )
  )
    return false;
  const byAddress = new Map<string, PoolHost>(hosts.map((h: PoolHost & { host: string }) => [h.host, h]));
  const own = authenticator.getCredentialsFromHost.bind(authenticator);
  authenticator.getCredentialsFromHost = (address, name, password, callOptions, credentials) =>
    new Promise<string>((resolve, reject) => {
      const host = byAddress.get(address);
      // Not one of the pool's members (etcd3 logs in on those only): its own way.
      if (!host) return void own(address, name, password, callOptions, credentials).then(resolve, reject);
      const stub = host.getServiceClient("Auth") as AuthStub;
      stub.authenticate({ name, password }, new Metadata(), callOptions ?? {}, (err, res) =>
        err ? reject(castGrpcError(err)) : resolve(res!.token),
      );
    });
  return true;
}
