/**
 * Moleculer's Etcd3Discoverer, made to ride out etcd outages.
 *
 * Moleculer's version (moleculer/src/registry/discoverers/etcd3.js) turns an etcd outage into a
 * service outage although the transporter keeps working:
 *  - its lease "lost" handler immediately re-sends the heartbeat / INFO with a new lease, whose grant
 *    fails and emits "lost" again: a tight loop (one core and ~15 MB/s of warnings per node);
 *  - the base discoverer's heartbeat check removes every remote node after heartbeatTimeout without
 *    a beat, and collectOnlineNodes() removes nodes whose beat key is missing right after etcd
 *    returns, before they had a chance to re-put it;
 *  - a broker started during the outage fails its transporter connection (discoverAllNodes rejects)
 *    and failed discoverNode() calls are unhandled rejections.
 *
 * What this subclass guarantees:
 *  - Any failed etcd operation (or a lost lease) switches to "etcd down": ONE warning, then one summary
 *    line every `outageLogInterval` s. Our leases are released (their keepalive loops stop) and a single
 *    retry loop, with capped exponential backoff and at most one attempt in flight, re-grants leases
 *    and re-puts INFO and BEAT. The first successful attempt ends the outage, so the local node is back
 *    in etcd within `retryMaxDelay` (default: one heartbeat interval) of etcd being reachable.
 *  - While etcd is down and for `recoveryGracePeriod` s after it is back, no remote node is removed
 *    for lack of heartbeats, neither by the base class's timeout check nor for a missing beat key:
 *    the grace gives every live node time to notice etcd is back and re-put its keys. Afterwards,
 *    discovery is exactly Moleculer's (new nodes found, dead ones removed after heartbeatTimeout).
 *    Graceful stops still propagate during the outage (DISCONNECT packet over the transporter).
 *  - broker.start() succeeds during an outage; the node registers and discovers the others once
 *    etcd is reachable.
 *  - With several etcd members (ETCD_HOSTS), losing one of them, the leader included, is not an
 *    outage: each call has a short deadline (CALL_TIMEOUT_MS) and the client's next attempt goes
 *    to another member, and no remote node is removed while this node's own reads of the beats
 *    are late (a stalled etcd call must not pass for a dead node: measured before this rule, a
 *    killed leader stalled the heartbeat loop past heartbeatTimeout and every node dropped the
 *    others). Tested with three members and authentication (the system spec).
 *
 * Limits:
 *  - A node that really dies during the outage stays in the registries until the grace period
 *    ends; requests balanced to it fail with a RequestTimeoutError after `requestTimeout`. So does
 *    one stopped gracefully then: its DISCONNECT removes it at once, but etcd restores its leases
 *    with a fresh TTL when it restarts, and the stale keys bring it back until the grace ends.
 *  - Discovery is etcd-only: nodes started and service changes made during the outage are only
 *    seen once etcd is back.
 *  - Protection is based on this node's own view of etcd: a node that can reach etcd while another
 *    cannot (network partition) removes the other one as usual once its keys expire.
 */
import { circuitBreaker, ConsecutiveBreaker, handleWhen } from "cockatiel";
import { Etcd3, isRecoverableError, type CallContext, type IOptions, type Lease } from "etcd3";
import { Discoverers, METRIC, type Registry } from "moleculer";
import { loginOnClientChannels } from "./etcd-login";

export interface ResilientEtcd3DiscovererOptions extends Omit<Discoverers.Etcd3.Etcd3DiscovererOptions, "etcd"> {
  // Named again: Moleculer's options extend Record<string, any>, and Omit of such a type keeps
  // only its index signature (every field `any`).
  heartbeatInterval?: number;
  heartbeatTimeout?: number;
  /** etcd3 client options. Unless `defaultCallOptions` is given, unary calls get a CALL_TIMEOUT_MS deadline. */
  etcd: IOptions;
  /** First retry delay after a failure, in ms. Default 250; doubles on each failed attempt. */
  retryMinDelay?: number;
  /** Retry delay cap, in ms. Default: min(5000, heartbeatInterval). */
  retryMaxDelay?: number;
  /** Seconds after etcd is back during which no remote node is removed. Default: heartbeatTimeout + retryMaxDelay. */
  recoveryGracePeriod?: number;
  /** Seconds between two "etcd still unavailable" warnings. Default 30. */
  outageLogInterval?: number;
}

/**
 * A unary etcd call's deadline. An etcd answers in milliseconds; a member that died or lost its
 * leader mid-call answers never, and the client's retry (another member) only starts once this
 * has passed: well under a heartbeat interval.
 */
const CALL_TIMEOUT_MS = 1000;
/**
 * grpc-js keeps one connection per address for the whole process (its global subchannel pool)
 * and, after failures, waits longer and longer before trying it again (up to 120 s): after a
 * 60 s etcd outage a node's client could wait most of a minute more, past the recovery grace
 * period, and the others dropped it (seen in the cluster system test). The client gets its own
 * connections, tried again every second or two.
 */
const GRPC_RECONNECT = {
  "grpc.use_local_subchannel_pool": 1,
  "grpc.initial_reconnect_backoff_ms": 500,
  "grpc.max_reconnect_backoff_ms": 2000,
};
/**
 * A member that failed three calls in a row is skipped for a second (etcd3's default: 5 s),
 * then tried again: the next member answers meanwhile, and after a whole outage the client
 * tries again within the recovery grace period.
 */
const HOST_BREAKER = () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) });
/** A token etcd no longer takes (its users or roles changed): only a fresh client logs in again. */
const STALE_TOKEN = /revision of auth store is old|invalid auth token/i;
/** This node's view of the beats is late after this many heartbeat intervals without a read. */
const STALE_VIEW_HEARTBEATS = 2;
const INFO_LEASE_TTL = 60; // same as Moleculer's

export class ResilientEtcd3Discoverer extends Discoverers.Etcd3 {
  declare opts: ResilientEtcd3DiscovererOptions;
  declare client: Etcd3;
  declare leaseBeat: Lease | null;
  declare leaseInfo: Lease | null;
  // Set by Etcd3Discoverer.init(), missing from its typings.
  declare serializer: { serialize(obj: object, type: string): Buffer };
  declare BEAT_KEY: string;
  declare INFO_KEY: string;

  private cfg!: { retryMin: number; retryMax: number; graceMs: number; logEveryMs: number };
  private down = false;
  private downSince = 0;
  private lastOutageLog = 0;
  private failedAttempts = 0;
  private retryDelay = 0;
  /** Set from scheduling a recovery attempt until it has finished: one attempt at a time. */
  private retryTimer: NodeJS.Timeout | null = null;
  private graceUntil = 0;
  /** When this node last read every beat from etcd. */
  private lastCollected = Date.now();
  /** The failure that started or continued the outage. */
  private lastError: Error | undefined;
  private infoDirty = true;
  private stopped = false;
  /** Every etcd write sequence runs through this queue, so leases are never granted concurrently. */
  private queue: Promise<void> = Promise.resolve();

  constructor(opts: ResilientEtcd3DiscovererOptions) {
    super({
      ...opts,
      etcd: {
        defaultCallOptions: (ctx: CallContext) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
        faultHandling: { host: () => HOST_BREAKER(), ...opts.etcd.faultHandling },
        ...opts.etcd,
        grpcOptions: { ...GRPC_RECONNECT, ...opts.etcd.grpcOptions },
      },
    });
  }

  override init(registry: Registry): void {
    super.init(registry); // fills heartbeatInterval/-Timeout from the broker options if unset
    this.loginOnOwnChannels(); // super.init made the client
    const retryMin = this.opts.retryMinDelay ?? 250;
    const retryMax = this.opts.retryMaxDelay ?? Math.max(retryMin, Math.min(5000, this.opts.heartbeatInterval! * 1000));
    this.cfg = {
      retryMin,
      retryMax,
      graceMs: (this.opts.recoveryGracePeriod ?? this.opts.heartbeatTimeout! + retryMax / 1000) * 1000,
      logEveryMs: (this.opts.outageLogInterval ?? 30) * 1000,
    };
  }

  override stop(): Promise<void> {
    this.halt();
    return super.stop();
  }

  /** Heartbeat tick: publish INFO (if changed) and BEAT, then sync the registry. While etcd is down the retry loop does the publishing. */
  override sendHeartbeat(): Promise<void> {
    return this.serial(async () => {
      if (this.down) return;
      const timeEnd = this.broker.metrics.timer(METRIC.MOLECULER_DISCOVERER_ETCD_COLLECT_TIME);
      try {
        await this.publish();
        await this.collectOnlineNodes();
      } finally {
        timeEnd();
        this.broker.metrics.increment(METRIC.MOLECULER_DISCOVERER_ETCD_COLLECT_TOTAL);
      }
    });
  }

  override sendLocalNodeInfo(nodeID?: string): Promise<void> {
    this.infoDirty = true;
    const subscribed = !nodeID && this.broker.options.disableBalancer ? this.transit!.tx.makeBalancedSubscriptions() : Promise.resolve();
    return subscribed.then(() => this.beat());
  }

  /** Called by the transit on (re)connect: a rejection would fail the transporter connection, hence broker.start(). */
  override discoverAllNodes(): Promise<void> {
    return this.serial(async () => {
      if (!this.down) await this.collectOnlineNodes();
    });
  }

  /** heartbeatReceived() calls this without handling its rejection. */
  override discoverNode(nodeID: string) {
    return super.discoverNode(nodeID).catch((err) => this.fail(err));
  }

  override async collectOnlineNodes(): Promise<void> {
    await super.collectOnlineNodes();
    this.lastCollected = Date.now();
  }

  override checkRemoteNodes(): void {
    if (!this.protectingNodes()) super.checkRemoteNodes();
  }

  /**
   * collectOnlineNodes() passes isUnexpected=true for a missing beat key (it has already logged
   * "Removing from registry..." at info level); DISCONNECT packets pass false and always apply.
   */
  override remoteNodeDisconnected(nodeID: string, isUnexpected: boolean): void {
    if (!isUnexpected || !this.protectingNodes()) super.remoteNodeDisconnected(nodeID, isUnexpected);
  }

  /**
   * Sends DISCONNECT, then removes our keys, after any etcd operation in flight so that none can
   * register the stopping node again. Failures are ignored (halted): the keys expire with their leases.
   */
  override localNodeDisconnected(): Promise<void> {
    this.halt();
    return this.serial(() => super.localNodeDisconnected());
  }

  private halt(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  private protectingNodes(): boolean {
    const now = Date.now();
    return this.down || now < this.graceUntil || now - this.lastCollected > STALE_VIEW_HEARTBEATS * this.opts.heartbeatInterval! * 1000;
  }

  private serial(task: () => Promise<void>): Promise<void> {
    return (this.queue = this.queue.then(task).catch((err) => this.fail(err)));
  }

  /** Puts INFO (when changed, or after a lease loss) and BEAT under our leases, granting them as needed. */
  private async publish(): Promise<void> {
    const { broker } = this;
    const seq = this.localNode!.seq;
    if (this.infoDirty || seq !== this.lastInfoSeq) {
      this.leaseInfo ??= await this.grantLease(INFO_LEASE_TTL);
      this.infoDirty = false;
      const info = { ver: broker.PROTOCOL_VERSION, sender: broker.nodeID, ...broker.getLocalNodeInfo() };
      await this.leaseInfo.put(this.INFO_KEY).value(this.serializer.serialize(info, "INFO"));
      this.lastInfoSeq = seq;
    }
    this.leaseBeat ??= await this.grantLease(this.opts.heartbeatTimeout!);
    const beat = {
      ver: broker.PROTOCOL_VERSION,
      sender: broker.nodeID,
      cpu: this.localNode!.cpu,
      seq,
      instanceID: broker.instanceID,
    };
    await this.leaseBeat.put(`${this.BEAT_KEY}/${seq}`).value(this.serializer.serialize(beat, "HEARTBEAT"));
    if (seq !== this.lastBeatSeq) {
      // The beat key embeds seq: drop the previous one (Moleculer revokes its lease instead).
      await this.client.delete().key(`${this.BEAT_KEY}/${this.lastBeatSeq}`);
      this.lastBeatSeq = seq;
    }
  }

  private async grantLease(ttl: number): Promise<Lease> {
    const lease = this.client.lease(ttl);
    // "lost": keepalives failed for 2*ttl, or etcd reports the lease expired. A failed grant emits it
    // too, but then the lease is not ours yet and the grant() rejection below reports the failure.
    lease.on("lost", (err) => {
      if (lease === this.leaseBeat || lease === this.leaseInfo) this.fail(err);
    });
    await lease.grant();
    return lease;
  }

  /** Enters or stays in "etcd down" mode and makes sure one recovery attempt is scheduled. */
  private fail(cause: unknown): void {
    if (this.stopped) return;
    const err = cause instanceof Error ? cause : new Error(String(cause));
    this.lastError = err;
    const now = Date.now();
    this.failedAttempts = this.down ? this.failedAttempts + 1 : 1;
    if (!this.down) {
      this.down = true;
      this.downSince = this.lastOutageLog = now;
      this.retryDelay = this.cfg.retryMin;
      this.logger.warn(`etcd unavailable (${err.message}). Keeping all known nodes; retrying every <= ${this.cfg.retryMax} ms.`);
    } else if (now - this.lastOutageLog >= this.cfg.logEveryMs) {
      this.lastOutageLog = now;
      this.logger.warn(
        `etcd still unavailable after ${Math.round((now - this.downSince) / 1000)} s ` +
          `(${this.failedAttempts} failed attempts, last error: ${err.message}).`,
      );
    }
    // Releasing stops the leases' keepalive loops; etcd expires them (and any key not re-put) after their TTL.
    this.leaseBeat?.release();
    this.leaseInfo?.release();
    this.leaseBeat = this.leaseInfo = null;
    this.infoDirty = true;
    if (this.retryTimer) return;
    // `serial` never rejects: a failure goes to fail(), which schedules the next attempt.
    this.retryTimer = setTimeout(() => void this.serial(() => this.recover()), this.retryDelay);
    this.retryTimer.unref();
    this.retryDelay = Math.min(this.retryDelay * 2, this.cfg.retryMax);
  }

  /** Logins over the client's own channels, with its short reconnect backoff (lib/discovery/etcd-login.ts). */
  private loginOnOwnChannels(): void {
    if (!loginOnClientChannels(this.client))
      this.logger.warn(
        "etcd3's internals changed: logins after an etcd outage may wait for gRPC's default reconnect backoff (up to 120 s)",
      );
  }

  private async recover(): Promise<void> {
    try {
      // The same client (its connections back off briefly: GRPC_RECONNECT, HOST_BREAKER), so it
      // logs in again only when its token went stale, which etcd3 does not do by itself
      // (microsoft/etcd3#198): then a fresh one. A fresh client per attempt would log in each
      // time, on a channel etcd3 makes without our options (the process-wide one, backing off
      // up to 120 s).
      if (this.lastError && STALE_TOKEN.test(this.lastError.message)) {
        this.client.close();
        this.client = new Etcd3(this.opts.etcd);
        this.loginOnOwnChannels();
      }
      await this.publish();
    } finally {
      this.retryTimer = null;
    }
    this.down = false;
    this.graceUntil = Date.now() + this.cfg.graceMs;
    this.logger.warn(
      `etcd reachable again after ${Math.round((Date.now() - this.downSince) / 1000)} s ` +
        `(${this.failedAttempts} failed attempts); local node re-registered, no node removed for ${this.cfg.graceMs / 1000} s.`,
    );
    await this.collectOnlineNodes();
  }
}
