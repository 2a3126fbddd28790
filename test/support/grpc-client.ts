/**
 * A gRPC client of Meridian built from proto/ alone, as a client in another language would be:
 * the .proto files loaded by @grpc/proto-loader (no generated code of ours, no serializer of
 * ours), the status details decoded with googleapis' google/rpc protos.
 */
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { PROTO_DIR, protoFiles } from "../../proto/load";

const GOOGLE_PROTOS = path.dirname(require.resolve("google-proto-files/package.json"));

/** The contracts as a client sees them: camelCase fields, int64 as numbers, every field present. */
export const contractPackage = protoLoader.loadSync(
  protoFiles().filter((f) => f.startsWith("meridian/")),
  { includeDirs: [PROTO_DIR, GOOGLE_PROTOS], keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true },
);
const loaded = grpc.loadPackageDefinition(contractPackage);

const rpcTypes = (() => {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(GOOGLE_PROTOS, target);
  // keepCase: protobufjs's google.protobuf.Any knows only `type_url`. The details keep googleapis' names (field_violations).
  root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
  root.resolveAll();
  return root;
})();

export interface CallOptions {
  token?: string;
  idempotencyKey?: string;
  /** Milliseconds from now; 10 s when not given. */
  deadlineMs?: number;
  /** Cancels the call when aborted (the client gives up). */
  signal?: AbortSignal;
  metadata?: Record<string, string>;
}

export interface Answer<T> {
  value: T;
  /** The initial metadata the server sent (x-request-id). */
  headers: grpc.Metadata;
}

/** A failed call as a client reads it: the status name, its message, and the rich details by type. */
export interface GrpcFailure {
  code: string;
  message: string;
  /** google.rpc.ErrorInfo.reason: the REST error catalog's code. */
  reason?: string;
  details: Record<string, Record<string, any>>;
  metadata: grpc.Metadata;
}

export function failureOf(err: unknown): GrpcFailure {
  const e = err as grpc.ServiceError;
  if (typeof e?.code !== "number") throw err;
  const details: Record<string, Record<string, any>> = {};
  const raw = e.metadata?.get("grpc-status-details-bin")[0];
  if (raw instanceof Buffer) {
    const Status = rpcTypes.lookupType("google.rpc.Status");
    // The decoded message itself: toObject would unpack each Any into `{"@type", ...}`.
    const s = Status.decode(raw) as unknown as { code: grpc.status; details?: { type_url: string; value: Uint8Array }[] };
    if (s.code !== e.code) throw new Error(`status details say ${s.code}, the status is ${e.code}`);
    for (const d of s.details ?? []) {
      const name = d.type_url.slice(d.type_url.lastIndexOf("/") + 1);
      const t = rpcTypes.lookupType(name);
      details[name] = t.toObject(t.decode(d.value), { longs: Number });
    }
  }
  return { code: grpc.status[e.code], message: e.details, reason: details["google.rpc.ErrorInfo"]?.reason, details, metadata: e.metadata };
}

function metadataOf(o: CallOptions): grpc.Metadata {
  const md = new grpc.Metadata();
  if (o.token) md.set("authorization", `Bearer ${o.token}`);
  if (o.idempotencyKey) md.set("idempotency-key", o.idempotencyKey);
  for (const [k, v] of Object.entries(o.metadata ?? {})) md.set(k, v);
  return md;
}

export interface LiveStream<T> {
  /** Every message so far, in order. */
  received: T[];
  ended: Promise<GrpcFailure | "OK">;
  cancel(): void;
  /** The first message that passes `check`, waiting for it (fails after `timeoutMs`). */
  until(what: string, check: (m: T) => boolean, timeoutMs?: number): Promise<T>;
}

/** A generated client's rpc: unary (request, metadata, options, callback) or server-streaming (no callback). */
type Rpc = (...args: any[]) => grpc.ClientUnaryCall | grpc.ClientReadableStream<unknown>;
type Ctor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, Rpc>;

export class MeridianGrpc {
  private clients = new Map<string, grpc.Client & Record<string, Rpc>>();
  private generic: grpc.Client;

  constructor(readonly address: string) {
    this.generic = new grpc.Client(address, grpc.credentials.createInsecure());
  }

  private client(service: string) {
    let c = this.clients.get(service);
    if (!c) {
      const Ctor = service.split(".").reduce<any>((o, k) => o?.[k], loaded) as Ctor | undefined;
      if (typeof Ctor !== "function") throw new Error(`no service ${service} in proto/`);
      c = new Ctor(this.address, grpc.credentials.createInsecure());
      this.clients.set(service, c);
    }
    return c;
  }

  /** A unary call: `meridian.order.v1.OrderService`, `Create`. Rejects with a grpc ServiceError (see failureOf). */
  call<T = any>(service: string, rpc: string, request: object, o: CallOptions = {}): Promise<Answer<T>> {
    const c = this.client(service);
    if (typeof c[rpc] !== "function") throw new Error(`no rpc ${service}/${rpc} in proto/`);
    return new Promise((resolve, reject) => {
      let headers = new grpc.Metadata();
      const call = c[rpc].call(
        c,
        request,
        metadataOf(o),
        { deadline: Date.now() + (o.deadlineMs ?? 10_000) },
        (err: grpc.ServiceError | null, value: T) => (err ? reject(err) : resolve({ value, headers })),
      );
      call.on("metadata", (md: grpc.Metadata) => (headers = md));
      o.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    });
  }

  /**
   * A server stream: every message as it comes, in order, until the test ends it (`cancel()`)
   * or it ends with a status (`ended`: OK, or the failure).
   */
  stream<T = any>(service: string, rpc: string, request: object, o: CallOptions = {}): LiveStream<T> {
    const c = this.client(service);
    if (typeof c[rpc] !== "function") throw new Error(`no rpc ${service}/${rpc} in proto/`);
    const call = c[rpc].call(
      c,
      request,
      metadataOf(o),
      o.deadlineMs ? { deadline: Date.now() + o.deadlineMs } : {},
    ) as grpc.ClientReadableStream<T>;
    const received: T[] = [];
    const waiters = new Set<() => void>();
    const wake = () => waiters.forEach((w) => w());
    call.on("data", (m: T) => {
      received.push(m);
      wake();
    });
    const ended = new Promise<GrpcFailure | "OK">((resolve) => {
      call.on("error", (err) => {
        resolve(failureOf(err));
        wake();
      });
      call.on("end", () => {
        resolve("OK");
        wake();
      });
    });
    return {
      received,
      ended,
      cancel: () => call.cancel(),
      async until(what, check, timeoutMs = 10_000) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const hit = received.find(check);
          if (hit !== undefined) return hit;
          if (Date.now() > deadline) throw new Error(`${what}: not received within ${timeoutMs} ms (got ${received.length})`);
          await new Promise<void>((resolve) => {
            const w = () => {
              waiters.delete(w);
              clearTimeout(t);
              resolve();
            };
            const t = setTimeout(w, Math.max(1, deadline - Date.now()));
            waiters.add(w);
          });
        }
      },
    };
  }

  /** The same call, answering the failure (and failing the test if it succeeded). */
  async fail(service: string, rpc: string, request: object, o: CallOptions = {}): Promise<GrpcFailure> {
    try {
      const ok = await this.call(service, rpc, request, o);
      throw new Error(`${service}/${rpc} succeeded: ${JSON.stringify(ok.value)}`);
    } catch (err) {
      if ((err as grpc.ServiceError).code === undefined) throw err;
      return failureOf(err);
    }
  }

  /** Raw bytes to a method path (`/meridian.user.v1.UserService/Me`), for the fuzz: whatever the server answers. */
  raw(methodPath: string, bytes: Buffer, o: CallOptions = {}): Promise<{ ok: true; bytes: Buffer } | { ok: false; failure: GrpcFailure }> {
    return new Promise((resolve) => {
      this.generic.makeUnaryRequest(
        methodPath,
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        metadataOf(o),
        { deadline: Date.now() + (o.deadlineMs ?? 10_000) },
        (err, value) => resolve(err ? { ok: false, failure: failureOf(err) } : { ok: true, bytes: value! }),
      );
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.generic.close();
  }
}

/** The grpc-js address of a test app's gRPC edge. */
export const grpcAddressOf = (port: number) => `127.0.0.1:${port}`;
