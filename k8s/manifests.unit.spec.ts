/**
 * The Kubernetes manifests (k8s/): every object of both overlays, rendered the way
 * kustomize would, is valid against the Kubernetes schemas (kubernetes-models), and the
 * wiring holds: one Deployment per service of ALL_SERVICES, each with an HPA, a PDB and a
 * NetworkPolicy; each pod gets only the Secret keys its service reads (SECRET_KEYS below,
 * the one table of them); probes on paths and ports the app serves, metrics on
 * METRICS_PORT only; an environment lib/config.ts accepts; a drain that fits in the grace
 * period; the migration Job; the Ingress → Service → gateway chain on the public paths only;
 * NetworkPolicies that let each workload reach what it uses and nothing else; no committed
 * secret in either overlay.
 *
 * kustomize is not run here: `render` below does the part of it these overlays use
 * (resources, patches of ConfigMap/Secret/Ingress/NetworkPolicy, secretGenerator, images,
 * namespace) and refuses anything else, so an overlay cannot silently outgrow it.
 * The generator's hash suffix on Secret names is left out (kustomize renames the
 * references with it). Generator inputs are git-ignored: prod's are read from the committed
 * `.example` (values empty, stand-ins added per node below), dev's come from its own
 * generator (k8s/overlays/dev/make-secrets.ts), fresh per run.
 */
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { it } from "mocha";
import { ServiceBroker } from "moleculer";
import { parseAllDocuments } from "yaml";
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import { Role, RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { Ingress, NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { brokerOptions } from "../moleculer.config";
import { ALL_SERVICES, ENV_NAMES, loadConfig, type AppConfig, type ServiceName } from "../lib/config";
import { databaseName } from "../lib/db";
import { HEALTH_PATHS, METRICS_PATH } from "../lib/health-server";
import { OPS_ALIASES, PAYMENT_NOTIFY_PATH, SANDBOX_PAGE_ALIASES } from "../services/gateway/api.service";
import { NODE_SERVICES, nodeServiceYaml, staleNodeServices } from "./generate";
import { PLATFORM_GROUPS, parsePaymentConfig } from "../services/payment/platforms/config";
import { LIVENESS } from "../services/grpc/grpc.service";
import { DEV_SECRET_FILES, devSecretFiles, writeDevSecrets } from "./overlays/dev/make-secrets";

const K8S = __dirname;
const ROOT = path.resolve(K8S, "..");
const OVERLAYS = ["dev", "prod"] as const;
type Overlay = (typeof OVERLAYS)[number];
/** Services that must survive the loss of one pod (the list, and user and search: k8s/base runs two of each too). */
const AT_LEAST_TWO = ["gateway", "order", "product", "payment", "user", "search"];

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: any;
};

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "v1/Namespace": Namespace,
  "v1/ServiceAccount": ServiceAccount,
  "rbac.authorization.k8s.io/v1/Role": Role,
  "rbac.authorization.k8s.io/v1/RoleBinding": RoleBinding,
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "batch/v1/Job": Job,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/Ingress": Ingress,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
};

// ---- which workload gets which secret: the one table ----

type Workload = ServiceName | "migrate" | "etcd-auth";
/** The workloads that are Jobs (one-off tools), by their component label. */
const JOBS = ["migrate", "etcd-auth"] as const;
type Need = "required" | "optional";

const PAYMENT_ENV_NAMES: string[] = Object.values(PLATFORM_GROUPS).flatMap((g) => [...g.required, ...g.optional]);
/** Every node: the transporter (cluster mode), the cacher, etcd's password when it has one. */
const NODE_SECRETS: Record<string, Need> = { RABBITMQ_URI: "required", REDIS_URL: "required", ETCD_PASSWORD: "optional" };
const DATABASE: Record<string, Need> = { MYSQL_URL: "required" };
/**
 * The Secret keys each workload mounts (env[].valueFrom.secretKeyRef, `optional: true` for
 * "optional": the key may be absent from the Secret), and nothing else: what its code
 * reads (checked against the sources below). Each Deployment and each Job must match it.
 */
const SECRET_KEYS: Record<Workload, Record<string, Need>> = {
  gateway: { ...NODE_SECRETS, JWT_SECRET: "required" },
  // The gRPC edge verifies access tokens as the gateway does, and reads the revocation store (Redis).
  grpc: { ...NODE_SECRETS, JWT_SECRET: "required" },
  user: { ...NODE_SECRETS, ...DATABASE, JWT_SECRET: "required", ADMIN_PASSWORD: "optional" },
  product: { ...NODE_SECRETS, ...DATABASE },
  search: { ...NODE_SECRETS, ELASTIC_SEARCH_PASSWORD: "optional" },
  notification: { ...NODE_SECRETS, ...DATABASE, SMTP_URL: "optional" },
  cart: { ...NODE_SECRETS, ...DATABASE },
  // Each platform's group whole or absent (services/payment/platforms/config.ts).
  payment: { ...NODE_SECRETS, ...DATABASE, ...Object.fromEntries(PAYMENT_ENV_NAMES.map((n) => [n, "optional" as const])) },
  order: { ...NODE_SECRETS, ...DATABASE },
  recommendation: { ...NODE_SECRETS, ...DATABASE },
  // `npm run migrate` loads the configuration as a tool and talks to MariaDB only.
  migrate: { ...DATABASE },
  // dev only: `npm run etcd:auth`, a tool on etcd alone, the one place that holds etcd's root.
  "etcd-auth": { ETCD_PASSWORD: "required", ETCD_ROOT_PASSWORD: "required" },
};

/**
 * Where a workload's traffic goes, by the credential it holds: a workload talks to a
 * dependency exactly when it mounts that dependency's key. Ports: base (prod) allows these
 * to any destination; dev narrows them to the StatefulSet named `pods` (may drop a port).
 */
const DEPENDENCIES: Record<string, { key: string; ports: number[]; pods?: string }> = {
  rabbitmq: { key: "RABBITMQ_URI", ports: [5672, 5671], pods: "rabbitmq" },
  etcd: { key: "ETCD_PASSWORD", ports: [2379], pods: "etcd" },
  redis: { key: "REDIS_URL", ports: [6379], pods: "redis" },
  mariadb: { key: "MYSQL_URL", ports: [3306], pods: "mariadb" },
  smtp: { key: "SMTP_URL", ports: [25, 465, 587] },
  elasticsearch: { key: "ELASTIC_SEARCH_PASSWORD", ports: [9200] },
  "payment platforms (HTTPS)": { key: "ALIPAY_PRIVATE_KEY", ports: [443] },
};

/** The ports a clustered dependency's members use among themselves (dev's StatefulSets). */
const PEER_PORTS: Record<string, number[]> = { rabbitmq: [4369, 25672], etcd: [2380] };

// ---- rendering (a small kustomize) ----

function readDocs(file: string): Obj[] {
  return parseAllDocuments(fs.readFileSync(file, "utf8")).flatMap((doc) => {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    const value = doc.toJS();
    return value === null ? [] : [value as Obj];
  });
}

/** KEY=value lines as kustomize's env files read them (comments and blank lines skipped). */
function parseEnv(text: string, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (!line.trim() || line.trimStart().startsWith("#")) continue;
    const i = line.indexOf("=");
    assert.ok(i > 0, `${where}: not KEY=value: ${line}`);
    out[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  return out;
}

/** Maps merge, everything else is replaced: strategic merge for kinds without list merge keys. */
function merge(target: any, patch: any): any {
  if (
    typeof target !== "object" ||
    target === null ||
    Array.isArray(target) ||
    typeof patch !== "object" ||
    patch === null ||
    Array.isArray(patch)
  )
    return patch;
  const out = { ...target };
  for (const [k, v] of Object.entries(patch)) out[k] = k in target ? merge(target[k], v) : v;
  return out;
}

interface Rendered {
  objects: Obj[];
  /** Every file a kustomization reached (resources, patches, generator inputs). */
  files: Set<string>;
}

/** A secretGenerator's inputs (absolute paths): an env file's KEY=value pairs, a file's contents. */
interface GeneratorInput {
  env(file: string, files: Set<string>): Record<string, string>;
  file(file: string, files: Set<string>): string;
}

/** prod: the committed example of the operator's git-ignored env file (prod generates no file keys). */
const fromExample: GeneratorInput = {
  env(file, files) {
    files.add(`${file}.example`);
    return parseEnv(fs.readFileSync(`${file}.example`, "utf8"), `${file}.example`);
  },
  file(file) {
    assert.fail(`${file}: prod's Secrets come from env files (secrets.env.example) only`);
  },
};

/** dev: what make-secrets.ts writes, generated afresh (the files on disk are not read). */
function fromDevGenerator(): GeneratorInput {
  const generated = devSecretFiles();
  const contents = (file: string) => {
    const name = path.basename(file) as keyof typeof generated;
    assert.ok(name in generated, `${file}: not a file make-secrets.ts writes (${DEV_SECRET_FILES.join(", ")})`);
    return generated[name];
  };
  return { env: (file) => parseEnv(contents(file), file), file: contents };
}

/** A secretGenerator's input file names (`key=file` for file entries), as its kustomization lists them. */
const generatorInputs = (gen: { envs?: string[]; files?: string[] }): string[] => [
  ...(gen.envs ?? []),
  ...(gen.files ?? []).map((f) => f.split("=").at(-1)!),
];

/** Patched kinds: their strategic merge replaces lists (no merge keys), as `merge` does. */
const PATCHABLE = ["ConfigMap", "Secret", "Ingress", "NetworkPolicy"];

function render(dir: string, input: GeneratorInput, files = new Set<string>()): Rendered {
  const kfile = path.join(dir, "kustomization.yaml");
  files.add(kfile);
  const k = readDocs(kfile)[0] as any;
  const unknown = Object.keys(k).filter(
    (key) => !["apiVersion", "kind", "namespace", "resources", "patches", "secretGenerator", "images"].includes(key),
  );
  assert.deepEqual(unknown, [], `${kfile}: this test's renderer does not know these fields; teach it or keep the overlay simpler`);
  let objects: Obj[] = [];
  for (const r of k.resources ?? []) {
    const p = path.resolve(dir, r);
    if (fs.statSync(p).isDirectory()) objects.push(...render(p, input, files).objects);
    else {
      files.add(p);
      objects.push(...readDocs(p));
    }
  }
  for (const gen of k.secretGenerator ?? []) {
    const fields = Object.keys(gen).sort().join(",");
    assert.ok(["envs,name", "files,name"].includes(fields), `${kfile}: secretGenerator with a name and envs or files only`);
    const stringData: Record<string, string> = {};
    for (const env of gen.envs ?? []) Object.assign(stringData, input.env(path.resolve(dir, env), files));
    for (const entry of gen.files ?? []) {
      const [key, file] = entry.includes("=") ? entry.split("=") : [path.basename(entry), entry];
      stringData[key] = input.file(path.resolve(dir, file), files);
    }
    objects.push({ apiVersion: "v1", kind: "Secret", metadata: { name: gen.name }, type: "Opaque", stringData });
  }
  for (const patch of k.patches ?? []) {
    assert.deepEqual(Object.keys(patch), ["path"], `${kfile}: patches by file only`);
    const p = path.resolve(dir, patch.path);
    files.add(p);
    for (const doc of readDocs(p)) {
      assert.ok(
        PATCHABLE.includes(doc.kind),
        `${p}: the renderer merges maps and replaces lists, which is strategic merge only for ${PATCHABLE.join(", ")}, not ${doc.kind}`,
      );
      const i = objects.findIndex((o) => o.kind === doc.kind && o.metadata.name === doc.metadata.name);
      assert.ok(i >= 0, `${p}: patches ${doc.kind}/${doc.metadata.name}, which no resource defines`);
      objects[i] = merge(objects[i], doc);
    }
  }
  for (const image of k.images ?? []) {
    for (const o of objects)
      for (const c of podSpec(o)?.containers ?? []) {
        const [name, tag] = String(c.image).split(":");
        if (name === image.name) c.image = `${image.newName ?? name}:${image.newTag ?? tag ?? "latest"}`;
      }
  }
  if (k.namespace)
    objects = objects.map((o) => (o.kind === "Namespace" ? o : { ...o, metadata: { ...o.metadata, namespace: k.namespace } }));
  return { objects, files };
}

// ---- helpers over rendered objects ----

function podSpec(o: Obj): any {
  return ["Deployment", "StatefulSet", "Job"].includes(o.kind) ? o.spec?.template?.spec : undefined;
}
const podLabels = (o: Obj): Record<string, string> => o.spec.template.metadata.labels;
const ofKind = (objects: Obj[], kind: string) => objects.filter((o) => o.kind === kind);
const containerEnv = (c: any, name: string) => (c.env ?? []).find((e: any) => e.name === name);
/** App Deployments are the ones that say which services they run. */
const appDeployments = (objects: Obj[]) => ofKind(objects, "Deployment").filter((d) => containerEnv(podSpec(d).containers[0], "SERVICES"));
const serviceOf = (d: Obj) => containerEnv(podSpec(d).containers[0], "SERVICES").value as ServiceName;
const jobOf = (objects: Obj[], component: (typeof JOBS)[number]) =>
  ofKind(objects, "Job").find((j) => j.metadata.labels?.["app.kubernetes.io/component"] === component);
const isJob = (w: Workload) => (JOBS as readonly string[]).includes(w);
/** The app's workloads: each node's Deployment and the Jobs (migration; dev: etcd's auth), by their role. */
const workloads = (objects: Obj[]): [Workload, Obj][] => [
  ...appDeployments(objects).map((d): [Workload, Obj] => [serviceOf(d), d]),
  ...JOBS.flatMap((w): [Workload, Obj][] => {
    const job = jobOf(objects, w);
    return job ? [[w, job]] : [];
  }),
];
const selects = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

function dataOf(o: Obj): Record<string, string> {
  const out: Record<string, string> = { ...(o.stringData ?? {}) };
  for (const [k, v] of Object.entries<string>(o.data ?? {})) out[k] = o.kind === "Secret" ? Buffer.from(v, "base64").toString("utf8") : v;
  return out;
}

/**
 * The source of a container's `node dist/….js` command, which the build must compile (one
 * of tsconfig.build.json's entry points): the image has no tsx (#18).
 */
function compiledEntry(c: { command?: string[]; args?: string[] }): string {
  const argv = [...(c.command ?? []), ...(c.args ?? [])];
  const m = argv.length === 2 && argv[0] === "node" ? /^dist\/(.+)\.js$/.exec(argv[1]) : null;
  assert.ok(m, `runs a compiled entry point (node dist/….js): ${argv.join(" ")}`);
  const source = `${m[1]}.ts`;
  const build = JSON.parse(fs.readFileSync(path.join(ROOT, "tsconfig.build.json"), "utf8").replace(/^\s*\/\/.*$/gm, "")) as {
    files: string[];
  };
  assert.ok(build.files.includes(source), `${source} is one of tsconfig.build.json's entry points`);
  return source;
}

/** The runtime stage's ENV of the Dockerfile: what every app container starts with. */
function imageEnv(): Record<string, string> {
  const stages = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8").split(/^FROM /m);
  const out: Record<string, string> = {};
  for (const m of stages.at(-1)!.matchAll(/^ENV\s+(.+)$/gm))
    for (const pair of m[1].trim().split(/\s+/)) {
      const i = pair.indexOf("=");
      assert.ok(i > 0, `Dockerfile: ENV ${m[1]}: only KEY=value is modelled`);
      out[pair.slice(0, i)] = pair.slice(i + 1);
    }
  return out;
}
const IMAGE_ENV = imageEnv();

/** A key of a ConfigMap or Secret, by an env entry's reference; undefined when optional and absent. */
function refValue(
  objects: Obj[],
  kind: "ConfigMap" | "Secret",
  ref: { name: string; key: string; optional?: boolean },
  who: string,
): string | undefined {
  const source = objects.find((o) => o.kind === kind && o.metadata.name === ref.name);
  const data = source ? dataOf(source) : undefined;
  if (data && ref.key in data) return data[ref.key];
  assert.ok(ref.optional, `${who}: ${kind}/${ref.name} has no key ${ref.key} and the reference is not optional: the pod would not start`);
  return undefined;
}

/** The environment an app container starts with: the image's ENV, then envFrom (in order), then env. */
function envOf(objects: Obj[], c: any, fieldValues: Record<string, string>, who = c.name): Record<string, string> {
  const env: Record<string, string> = { ...IMAGE_ENV };
  for (const from of c.envFrom ?? []) {
    const [kind, ref] = from.configMapRef ? ["ConfigMap", from.configMapRef] : ["Secret", from.secretRef];
    const source = objects.find((o) => o.kind === kind && o.metadata.name === ref.name);
    assert.ok(source || ref.optional, `${who}: envFrom names ${kind}/${ref.name}, which is not rendered`);
    if (source) Object.assign(env, dataOf(source));
  }
  for (const e of c.env ?? []) {
    const from = e.valueFrom;
    let value: string | undefined;
    if (!from) value = e.value ?? "";
    else if (from.secretKeyRef) value = refValue(objects, "Secret", from.secretKeyRef, `${who} ${e.name}`);
    else if (from.configMapKeyRef) value = refValue(objects, "ConfigMap", from.configMapKeyRef, `${who} ${e.name}`);
    else {
      assert.ok(
        from.fieldRef?.fieldPath in fieldValues,
        `${who} ${e.name}: only fieldRef ${Object.keys(fieldValues).join(",")}, secretKeyRef and configMapKeyRef are modelled here`,
      );
      value = fieldValues[from.fieldRef.fieldPath];
    }
    if (value === undefined) delete env[e.name];
    else env[e.name] = value;
  }
  return env;
}

/** A container port by number or name. */
function containerPort(c: any, port: number | string): number | undefined {
  return (c.ports ?? []).find((p: any) => p.containerPort === port || p.name === port)?.containerPort;
}

function quantity(q: string | number): number {
  const m = /^([0-9.]+)(m|Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  assert.ok(m, `quantity ${q}`);
  const unit = { m: 1e-3, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ""] ?? 1;
  return Number(m[1]) * unit;
}

/** Stand-ins for prod's secrets.env (the operator's values): the shapes lib/config.ts accepts, on ports the NetworkPolicies allow. */
const PROD_SECRET_STAND_INS: Record<string, string> = {
  RABBITMQ_URI: "amqps://meridian:s3cret@rabbitmq.example.internal:5671",
  REDIS_URL: "rediss://:s3cret@redis.example.internal:6379",
  MYSQL_URL: "mysql://meridian:s3cret@mysql.example.internal:3306/",
  JWT_SECRET: "x".repeat(48),
  ETCD_PASSWORD: "s3cret",
  ELASTIC_SEARCH_PASSWORD: "s3cret",
  SMTP_URL: "smtps://meridian:s3cret@smtp.example.internal:465",
};

/** What the code reads, and what Node.js itself reads (the image's NODE_OPTIONS: source maps). */
const KNOWN_ENV = new Set<string>([...ENV_NAMES, ...PAYMENT_ENV_NAMES, "NODE_OPTIONS"]);
/** Names that must come from the Secret: credentials, URIs that carry them, keys. */
const SECRET_NAME = /PASSWORD|SECRET|_KEY$|^RABBITMQ_URI$|^REDIS_URL$|^MYSQL_URL$|^SMTP_URL$/;

const rendered: Record<Overlay, Rendered> = {
  dev: render(path.join(K8S, "overlays", "dev"), fromDevGenerator()),
  prod: render(path.join(K8S, "overlays", "prod"), fromExample),
};

/** A workload's container environment, with prod's stand-ins for the operator's secrets. */
function workloadEnv(overlay: Overlay, objects: Obj[], o: Obj): Record<string, string> {
  const env = envOf(objects, podSpec(o).containers[0], { "metadata.name": `${o.metadata.name}-5d8f7c9b4-x2x7q` }, o.metadata.name);
  // prod's secrets.env is the operator's to fill in: every value there is empty.
  return overlay === "prod" ? { ...env, ...Object.fromEntries(Object.entries(PROD_SECRET_STAND_INS).filter(([k]) => k in env)) } : env;
}

/** The config each app node of an overlay starts with, by lib/config.ts itself. */
function nodeConfig(overlay: Overlay, objects: Obj[], d: Obj): { env: Record<string, string>; config: AppConfig } {
  const env = workloadEnv(overlay, objects, d);
  return { env, config: loadConfig(env) };
}

// ---- NetworkPolicy helpers ----

const policies = (objects: Obj[]) => ofKind(objects, "NetworkPolicy");
/** The policies (other than the default deny) that select a workload's pods. */
const ownPolicies = (objects: Obj[], o: Obj) =>
  policies(objects).filter(
    (p) => p.metadata.name !== "meridian-default-deny" && selects(p.spec.podSelector.matchLabels ?? {}, podLabels(o)),
  );

/** A peer as a short string: `namespace:<name>`, `pods:<k=v,…>` (this namespace), `ipBlock:<cidr>`. */
function peerId(peer: any): string {
  assert.ok(!peer.namespaceSelector || !peer.podSelector, "a peer with both selectors is not modelled here");
  if (peer.namespaceSelector) {
    const labels = peer.namespaceSelector.matchLabels ?? {};
    assert.deepEqual(Object.keys(labels), ["kubernetes.io/metadata.name"], "namespaces by their name label");
    return `namespace:${labels["kubernetes.io/metadata.name"]}`;
  }
  if (peer.podSelector)
    return `pods:${Object.entries<string>(peer.podSelector.matchLabels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .sort()
      .join(",")}`;
  return `ipBlock:${peer.ipBlock.cidr}`;
}

/** Each rule as `peer → protocol/port` strings; `*` for any peer or any port. */
function ruleIds(rules: any[] | undefined, peers: "from" | "to"): string[] {
  return (rules ?? []).flatMap((r) => {
    const ps = r[peers]?.length ? r[peers].map(peerId) : ["*"];
    const ports = r.ports?.length ? r.ports.map((p: any) => `${p.protocol ?? "TCP"}/${p.port}`) : ["*"];
    return ps.flatMap((p: string) => ports.map((port: string) => `${p} → ${port}`));
  });
}

/** Whether some egress rule of the policies allows TCP to `port` at a destination: in-namespace pods (labels) or outside the cluster. */
function egressAllows(ps: Obj[], port: number, dest: { pods: Record<string, string> } | "outside", protocol = "TCP"): boolean {
  return ps.some((p) =>
    (p.spec.egress ?? []).some((r: any) => {
      const portOk = !r.ports?.length || r.ports.some((x: any) => (x.protocol ?? "TCP") === protocol && x.port === port);
      const peerOk =
        !r.to?.length ||
        r.to.some((peer: any) =>
          dest === "outside"
            ? Boolean(peer.ipBlock)
            : Boolean(peer.podSelector && !peer.namespaceSelector && selects(peer.podSelector.matchLabels ?? {}, dest.pods)),
        );
      return portOk && peerOk;
    }),
  );
}

const DEFAULT_PORTS: Record<string, number> = {
  "amqp:": 5672,
  "amqps:": 5671,
  "redis:": 6379,
  "rediss:": 6379,
  "mysql:": 3306,
  "smtp:": 587,
  "smtps:": 465,
  "http:": 80,
  "https:": 443,
};
/** host:port of every server a node's environment points it at. */
function dependencyAddresses(env: Record<string, string>): { name: string; host: string; port: number }[] {
  const out: { name: string; host: string; port: number }[] = [];
  for (const name of ["RABBITMQ_URI", "REDIS_URL", "MYSQL_URL", "SMTP_URL", "ELASTIC_SEARCH_NODE", "ZIPKIN_URL"]) {
    if (!env[name]) continue;
    // RABBITMQ_URI may list a cluster's nodes.
    for (const each of env[name].split(",")) {
      const u = new URL(each.trim());
      out.push({ name, host: u.hostname, port: Number(u.port || DEFAULT_PORTS[u.protocol]) });
    }
  }
  for (const h of (env.ETCD_HOSTS ?? "").split(",").filter(Boolean)) {
    const u = new URL(h.includes("://") ? h : `http://${h}`);
    out.push({ name: `ETCD_HOSTS ${h}`, host: u.hostname, port: Number(u.port || 2379) });
  }
  return out;
}

/** The in-namespace Service a host name means (`svc`, or `pod.svc` under a headless Service), if any. */
function serviceForHost(objects: Obj[], host: string): Obj | undefined {
  const labels = host.split(".");
  return ofKind(objects, "Service").find(
    (s) => s.metadata.name === labels[0] || (labels.length === 2 && s.spec.clusterIP === "None" && s.metadata.name === labels[1]),
  );
}

/** Ingress Prefix matching: the path itself, or below it on an element boundary. */
const prefixMatches = (prefix: string, request: string) =>
  request === prefix || request.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`);

// ---- the checks ----

for (const overlay of OVERLAYS) {
  const { objects } = rendered[overlay];

  it(`${overlay}: every object is valid against the Kubernetes schemas, once`, () => {
    assert.ok(objects.length > 0);
    const seen = new Set<string>();
    for (const o of objects) {
      const key = `${o.apiVersion}/${o.kind}`;
      const Model = MODELS[key];
      assert.ok(Model, `${key} ${o.metadata?.name}: no schema listed in MODELS`);
      assert.doesNotThrow(
        () => new Model(o).validate(),
        (err: Error) => `${o.kind}/${o.metadata.name}: ${err.message}`,
      );
      const id = `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
      assert.ok(!seen.has(id), `${id} defined twice`);
      seen.add(id);
    }
  });

  it(`${overlay}: exactly one Deployment per service of ALL_SERVICES, with SERVICES set to it`, () => {
    const deployments = appDeployments(objects);
    for (const service of ALL_SERVICES) {
      const own = deployments.filter((d) => serviceOf(d) === service);
      assert.equal(
        own.length,
        1,
        `${own.length} Deployments run SERVICES=${service}: add it to NODE_SERVICES in k8s/generate.ts and run npm run k8s:gen (Deployment, HPA, PDB, NetworkPolicy), list k8s/base/${service}.yaml in k8s/base/kustomization.yaml, and give it a row in SECRET_KEYS here`,
      );
    }
    for (const d of deployments)
      assert.ok(
        (ALL_SERVICES as readonly string[]).includes(serviceOf(d)),
        `${d.metadata.name}: SERVICES=${serviceOf(d)} is not one service of ALL_SERVICES`,
      );
    assert.equal(deployments.length, ALL_SERVICES.length);
  });

  it(`${overlay}: every variable given to a node is one lib/config.ts (or the payment platforms) validates, and secrets come from the Secret`, () => {
    for (const [, o] of workloads(objects)) {
      const env = envOf(objects, podSpec(o).containers[0], { "metadata.name": "pod" }, o.metadata.name);
      const unknown = Object.keys(env).filter((n) => !KNOWN_ENV.has(n));
      assert.deepEqual(unknown, [], `${o.kind}/${o.metadata.name}: variables no code reads`);
    }
    for (const cm of ofKind(objects, "ConfigMap")) {
      const leaked = Object.keys(dataOf(cm)).filter((k) => SECRET_NAME.test(k));
      assert.deepEqual(leaked, [], `ConfigMap/${cm.metadata.name} holds secrets; move them to the Secret`);
    }
    for (const d of appDeployments(objects)) {
      const nodeId = containerEnv(podSpec(d).containers[0], "NODE_ID");
      assert.equal(
        nodeId?.valueFrom?.fieldRef?.fieldPath,
        "metadata.name",
        `${d.metadata.name}: NODE_ID is the pod's name (unique per replica)`,
      );
    }
  });

  it(`${overlay}: each pod mounts exactly the Secret keys of SECRET_KEYS, one by one, and no workload takes a whole Secret`, () => {
    for (const o of [...ofKind(objects, "Deployment"), ...ofKind(objects, "StatefulSet"), ...ofKind(objects, "Job")])
      for (const c of [...podSpec(o).containers, ...(podSpec(o).initContainers ?? [])])
        assert.ok(
          !(c.envFrom ?? []).some((f: any) => f.secretRef),
          `${o.kind}/${o.metadata.name} ${c.name}: envFrom a Secret gives the pod every key; use env[].valueFrom.secretKeyRef per key`,
        );
    for (const [workload, o] of workloads(objects)) {
      const c = podSpec(o).containers[0];
      const mounted: Record<string, Need> = {};
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef;
        if (!ref) continue;
        assert.equal(ref.name, "meridian-secrets", `${o.metadata.name} ${e.name}: from the application's Secret`);
        assert.equal(ref.key, e.name, `${o.metadata.name}: ${e.name} is the Secret's key of that name`);
        mounted[e.name] = ref.optional ? "optional" : "required";
      }
      assert.deepEqual(
        mounted,
        SECRET_KEYS[workload],
        `${o.kind}/${o.metadata.name}: the Secret keys of ${workload} (name: required or optional), as SECRET_KEYS says`,
      );
    }
  });

  it(`${overlay}: each node's environment passes lib/config.ts as a cluster node of its one service, with JWT_SECRET exactly where required`, () => {
    for (const d of appDeployments(objects)) {
      const service = serviceOf(d);
      const { env, config } = nodeConfig(overlay, objects, d);
      assert.equal(config.mode, "cluster", `${d.metadata.name}: RABBITMQ_URI makes it a cluster node`);
      assert.deepEqual(config.services, [service]);
      assert.ok(config.etcd, "etcd discovery");
      assert.ok(config.redisUrl, "Redis: the cacher on every node");
      assert.equal(
        Boolean(config.mysqlUrl),
        "MYSQL_URL" in SECRET_KEYS[service],
        `${d.metadata.name}: MariaDB only where the service has a database`,
      );
      assert.equal(config.production, true, `${d.metadata.name}: NODE_ENV=production`);
      assert.ok(config.metricsPort > 0, `${d.metadata.name}: METRICS_PORT is set (off in a cluster otherwise)`);
      // lib/config.ts's own rule, not a copy of it: without the variable, the node must not start where it is required.
      const tokens = service === "gateway" || service === "grpc" || service === "user";
      assert.equal("JWT_SECRET" in env, tokens, `${d.metadata.name}: JWT_SECRET only where tokens are signed or verified`);
      for (const name of ["JWT_SECRET", "REDIS_URL"]) {
        const without = { ...env };
        delete without[name];
        if (tokens) assert.throws(() => loadConfig(without), new RegExp(name), `${d.metadata.name}: ${name} is required there`);
        else assert.doesNotThrow(() => loadConfig(without), `${d.metadata.name}: ${name} is not required there`);
      }
      if (service === "payment") assert.doesNotThrow(() => parsePaymentConfig(env, { mode: "cluster" }), "payment platform variables");
      if (service === "gateway")
        assert.equal(config.trustProxyHops, 1, "TRUST_PROXY: one proxy (ingress-nginx) appends to X-Forwarded-For");
    }
  });

  it(`${overlay}: replicas (≥ 2 for ${AT_LEAST_TWO.join(", ")}), an HPA and a PDB per Deployment`, () => {
    for (const d of appDeployments(objects)) {
      const name = d.metadata.name;
      const service = serviceOf(d);
      const labels = d.spec.template.metadata.labels;
      assert.ok(selects(d.spec.selector.matchLabels, labels), `${name}: selector matches its pods`);
      const others = appDeployments(objects).filter((o) => o !== d);
      assert.ok(
        others.every((o) => !selects(d.spec.selector.matchLabels, o.spec.template.metadata.labels)),
        `${name}: selector takes no other Deployment's pods`,
      );

      const hpas = ofKind(objects, "HorizontalPodAutoscaler").filter(
        (h) => h.spec.scaleTargetRef.kind === "Deployment" && h.spec.scaleTargetRef.name === name,
      );
      assert.equal(hpas.length, 1, `${name}: one HPA`);
      const hpa = hpas[0];
      assert.equal(hpa.apiVersion, "autoscaling/v2");
      assert.equal(hpa.spec.scaleTargetRef.apiVersion, "apps/v1");
      assert.equal(
        d.spec.replicas,
        hpa.spec.minReplicas,
        `${name}: replicas is the HPA's floor (a re-apply then never scales below what the HPA keeps)`,
      );
      assert.ok(hpa.spec.maxReplicas > hpa.spec.minReplicas, `${name}: the HPA can scale`);
      if (AT_LEAST_TWO.includes(service)) assert.ok(d.spec.replicas >= 2 && hpa.spec.minReplicas >= 2, `${name}: at least 2 replicas`);
      // CPU utilisation is relative to requests: without them the HPA cannot act.
      assert.ok(hpa.spec.metrics.some((m: any) => m.resource?.name === "cpu"));

      const pdbs = ofKind(objects, "PodDisruptionBudget").filter((p) => selects(p.spec.selector.matchLabels, labels));
      assert.equal(pdbs.length, 1, `${name}: one PDB selecting its pods`);
      assert.ok(
        others.every((o) => !selects(pdbs[0].spec.selector.matchLabels, o.spec.template.metadata.labels)),
        `${name}: its PDB covers no other Deployment`,
      );
      // A budget that allows no eviction blocks every node drain.
      const { maxUnavailable, minAvailable } = pdbs[0].spec;
      assert.ok(
        (maxUnavailable !== undefined && maxUnavailable !== 0) || (typeof minAvailable === "number" && minAvailable < d.spec.replicas),
        `${name}: its PDB allows an eviction`,
      );
    }
  });

  it(`${overlay}: every container has resource requests and limits (requests ≤ limits)`, () => {
    for (const o of objects) {
      for (const c of [...(podSpec(o)?.containers ?? []), ...(podSpec(o)?.initContainers ?? [])]) {
        for (const r of ["cpu", "memory"]) {
          const req = c.resources?.requests?.[r];
          const lim = c.resources?.limits?.[r];
          assert.ok(req !== undefined && lim !== undefined, `${o.kind}/${o.metadata.name} ${c.name}: ${r} request and limit`);
          assert.ok(quantity(req) <= quantity(lim), `${o.kind}/${o.metadata.name} ${c.name}: ${r} request above its limit`);
        }
      }
    }
  });

  it(`${overlay}: probes hit a path and port the node serves; metrics on METRICS_PORT only, for every node`, () => {
    assert.ok(!(`GET ${METRICS_PATH}` in OPS_ALIASES), "the gateway's public port does not serve /metrics");
    for (const d of appDeployments(objects)) {
      const c = podSpec(d).containers[0];
      const { config } = nodeConfig(overlay, objects, d);
      const gateway = config.services.includes("gateway");
      assert.equal(containerPort(c, "metrics"), config.metricsPort, `${d.metadata.name}: a container port named metrics is METRICS_PORT`);
      // The gRPC edge: Kubernetes' native gRPC probes on GRPC_PORT, liveness on the health
      // service that is SERVING while the process runs, readiness on "" (services/grpc).
      if (config.services.includes("grpc")) {
        for (const [probe, service] of [
          ["startupProbe", LIVENESS],
          ["livenessProbe", LIVENESS],
          ["readinessProbe", undefined],
        ] as const) {
          const probeGrpc = c[probe]?.grpc;
          assert.ok(probeGrpc, `${d.metadata.name}: ${probe} over gRPC`);
          assert.equal(probeGrpc.port, config.grpcPort, `${d.metadata.name}: ${probe} on GRPC_PORT`);
          assert.equal(probeGrpc.service, service, `${d.metadata.name}: ${probe} health service`);
        }
        assert.equal(containerPort(c, "grpc"), config.grpcPort, `${d.metadata.name}: a container port named grpc is GRPC_PORT`);
        assert.ok((c.readinessProbe.timeoutSeconds ?? 1) > 2, `${d.metadata.name}: readiness timeout above 2 s`);
        continue;
      }
      // The gateway is probed on PORT (what the Ingress reaches); any other node on its internal listener.
      const port = gateway ? config.port : config.metricsPort;
      const paths = gateway ? { live: "/health/live", ready: "/health/ready" } : HEALTH_PATHS;
      if (gateway) for (const p of Object.values(paths)) assert.ok(`GET ${p}` in OPS_ALIASES, `the gateway routes GET ${p}`);
      for (const [probe, expected] of [
        ["startupProbe", paths.live],
        ["livenessProbe", paths.live],
        ["readinessProbe", paths.ready],
      ] as const) {
        const get = c[probe]?.httpGet;
        assert.ok(get, `${d.metadata.name}: ${probe} over HTTP`);
        assert.equal(get.path, expected, `${d.metadata.name}: ${probe} path`);
        assert.equal(
          containerPort(c, get.port),
          port,
          `${d.metadata.name}: ${probe} port ${get.port} is the container port of ${gateway ? "PORT" : "METRICS_PORT"}`,
        );
      }
      // Readiness answers within checkReadiness's 2 s deadline; a shorter timeout would flap.
      assert.ok((c.readinessProbe.timeoutSeconds ?? 1) > 2, `${d.metadata.name}: readiness timeout above 2 s`);
      // Prometheus scrape annotations: METRICS_PORT for every node, the gateway's too.
      const ann = d.spec.template.metadata?.annotations ?? {};
      assert.equal(ann["prometheus.io/scrape"], "true", `${d.metadata.name}: prometheus.io/scrape`);
      assert.equal(Number(ann["prometheus.io/port"]), config.metricsPort, `${d.metadata.name}: prometheus.io/port is METRICS_PORT`);
      assert.equal(ann["prometheus.io/path"], METRICS_PATH, `${d.metadata.name}: prometheus.io/path`);
    }
    for (const s of ofKind(objects, "StatefulSet")) {
      for (const c of podSpec(s).containers)
        assert.ok(c.readinessProbe && c.livenessProbe, `StatefulSet/${s.metadata.name}: readiness and liveness probes`);
    }
  });

  it(`${overlay}: the grace period covers a preStop drain and Moleculer's stop`, () => {
    // The broker's own figures: stopDelay (after it announces it takes no more calls), then
    // in-flight calls wait up to tracking.shutdownTimeout at the broker and again per service.
    const options = brokerOptions(loadConfig({ JWT_SECRET: "x".repeat(32), DATA_DIR: "/nonexistent" }));
    const shutdownS = (options.tracking?.shutdownTimeout ?? 0) / 1000;
    const stopDelayS = ((options.registry as any)?.stopDelay ?? (ServiceBroker as any).defaultOptions.registry.stopDelay) / 1000;
    assert.ok(shutdownS > 0 && stopDelayS > 0);
    for (const d of appDeployments(objects)) {
      const spec = podSpec(d);
      const cmd = spec.containers[0].lifecycle?.preStop?.exec?.command as string[] | undefined;
      const sleepS = cmd ? Number(cmd[cmd.indexOf("sleep") + 1]) : 0;
      if (serviceOf(d) === "gateway") assert.ok(sleepS >= 3, "the gateway keeps serving while its endpoints are removed (preStop sleep)");
      const needed = sleepS + stopDelayS + 2 * shutdownS + 5;
      assert.ok(
        spec.terminationGracePeriodSeconds >= needed,
        `${d.metadata.name}: terminationGracePeriodSeconds ${spec.terminationGracePeriodSeconds} < ${needed} s`,
      );
    }
  });

  it(`${overlay}: the migration Job runs the compiled npm run migrate for every service, as a tool, on the nodes' image and databases`, () => {
    assert.deepEqual(
      ofKind(objects, "Job")
        .map((j) => j.metadata.labels?.["app.kubernetes.io/component"])
        .sort(),
      overlay === "dev" ? ["etcd-auth", "migrate"] : ["migrate"],
      "the Jobs: the migration (and dev's etcd authentication)",
    );
    const job = jobOf(objects, "migrate")!;
    const c = podSpec(job).containers[0];
    assert.equal(compiledEntry(c), "bin/migrate.ts");
    assert.ok(["Never", "OnFailure"].includes(podSpec(job).restartPolicy));
    assert.equal(containerEnv(c, "SERVICES"), undefined, "SERVICES unset: every service's database");
    const nodes = appDeployments(objects);
    assert.equal(c.image, podSpec(nodes[0]).containers[0].image);
    const env = workloadEnv(overlay, objects, job);
    // Without RABBITMQ_URI a tool is in embedded mode and keeps a JWT secret in DATA_DIR: a
    // writable mount there (the emptyDir on /tmp), and a scratch directory for this check.
    const mounts = (c.volumeMounts ?? []).map((m: any) => m.mountPath as string);
    assert.ok(
      mounts.some((m: string) => env.DATA_DIR.startsWith(`${m}/`)),
      `DATA_DIR ${env.DATA_DIR} is on a writable volume (${mounts})`,
    );
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-migrate-"));
    let config: AppConfig;
    try {
      config = loadConfig({ ...env, DATA_DIR: scratch }, { tool: true });
    } finally {
      fs.rmSync(scratch, { recursive: true, force: true });
    }
    assert.deepEqual(config.services, [...ALL_SERVICES]);
    assert.equal(config.production, true, "NODE_ENV=production: placeholders refused here too");
    // The same databases as the nodes: the same server and credentials, the same names (NAMESPACE).
    for (const d of nodes.filter((n) => "MYSQL_URL" in SECRET_KEYS[serviceOf(n)])) {
      const node = nodeConfig(overlay, objects, d).config;
      assert.equal(config.mysqlUrl, node.mysqlUrl, `${d.metadata.name}: the Job's MYSQL_URL is the node's`);
      assert.equal(
        databaseName(config, serviceOf(d)),
        databaseName(node, serviceOf(d)),
        `${d.metadata.name}: the Job migrates the database the node opens`,
      );
    }
  });

  it(`${overlay}: Ingress → gateway Service → gateway pods on PORT, at PUBLIC_URL's host, on the public paths only`, () => {
    const gateway = appDeployments(objects).find((d) => serviceOf(d) === "gateway")!;
    const { config } = nodeConfig(overlay, objects, gateway);
    const gc = podSpec(gateway).containers[0];
    const ingresses = ofKind(objects, "Ingress");
    assert.equal(ingresses.length, 1);
    const rules = ingresses[0].spec.rules;
    assert.deepEqual(
      rules.map((r: any) => r.host),
      [new URL(config.publicUrl).hostname],
      "the Ingress host is PUBLIC_URL's",
    );
    const paths = rules.flatMap((r: any) => r.http.paths);
    for (const p of paths) {
      assert.equal(p.pathType, "Prefix", `${p.path}: Prefix (matched on path elements)`);
      const backend = p.backend.service;
      const svc = ofKind(objects, "Service").find((s) => s.metadata.name === backend.name);
      assert.ok(svc, `Ingress backend Service ${backend.name} exists`);
      assert.ok(selects(svc.spec.selector, gateway.spec.template.metadata.labels), `${backend.name} selects the gateway pods`);
      const sp = svc.spec.ports.find((x: any) => x.port === backend.port.number || x.name === backend.port.name);
      assert.ok(sp, `Ingress points at a port of ${backend.name}`);
      assert.equal(containerPort(gc, sp.targetPort ?? sp.port), config.port, "the Service's targetPort is the gateway's PORT");
    }
    const gatewayServices = ofKind(objects, "Service").filter((s) => selects(s.spec.selector ?? {}, gateway.spec.template.metadata.labels));
    for (const s of gatewayServices)
      for (const sp of s.spec.ports)
        assert.equal(containerPort(gc, sp.targetPort ?? sp.port), config.port, `Service/${s.metadata.name}: PORT only, never METRICS_PORT`);

    // What clients reach, and what they must not: matched as ingress-nginx matches Prefix paths.
    const exposed = (request: string) => paths.some((p: any) => prefixMatches(p.path, request));
    const payment = appDeployments(objects).find((d) => serviceOf(d) === "payment")!;
    const { env: payEnv, config: payConfig } = nodeConfig(overlay, objects, payment);
    const sandbox =
      parsePaymentConfig(payEnv, { mode: "cluster" }).enabled.includes("sandbox") && (payConfig.payments.sandbox ?? !payConfig.production);
    const sandboxPage = `/sandbox${Object.keys(SANDBOX_PAGE_ALIASES)[0].split(" ")[1].replace(":paymentId", "pay_1")}`;
    const wanted = [
      "/api/products",
      `${PAYMENT_NOTIFY_PATH}/alipay`,
      "/api/openapi.json",
      ...Object.keys(OPS_ALIASES)
        .filter((a) => a.startsWith("GET /docs"))
        .map((a) => a.split(" ")[1]),
      "/docs/assets/swagger-ui.css",
    ];
    for (const r of wanted) assert.ok(exposed(r), `${r} is reachable through the Ingress`);
    assert.equal(
      exposed(sandboxPage),
      sandbox,
      `the sandbox pay page (${sandboxPage}) is on the Ingress exactly when the sandbox platform is on (${sandbox})`,
    );
    for (const r of ["/", "/index.html", ...Object.values(HEALTH_PATHS), METRICS_PATH, "/apix", "/docsx"])
      assert.ok(!exposed(r), `${r} is not on the Ingress`);
    assert.deepEqual(
      paths.map((p: any) => p.path).sort(),
      ["/api", "/docs", ...(sandbox ? ["/sandbox"] : [])],
      "the Ingress paths: /api, /docs (and its assets), /sandbox with the sandbox",
    );
    if (overlay === "prod") {
      assert.ok(config.publicUrl.startsWith("https://"));
      assert.deepEqual(ingresses[0].spec.tls?.[0]?.hosts, [new URL(config.publicUrl).hostname], "TLS for the public host");
      assert.equal(sandbox, false, "no sandbox payments in prod");
    }
  });

  it(`${overlay}: NetworkPolicies: default deny, then one policy per workload`, () => {
    const deny = policies(objects).filter((p) => p.metadata.name === "meridian-default-deny");
    assert.equal(deny.length, 1, "meridian-default-deny");
    assert.deepEqual(deny[0].spec.policyTypes, ["Ingress", "Egress"]);
    assert.ok(!deny[0].spec.ingress?.length && !deny[0].spec.egress?.length, "the default deny allows nothing");
    const all = workloads(objects);
    for (const [workload, o] of all) {
      assert.ok(selects(deny[0].spec.podSelector.matchLabels, podLabels(o)), `${o.metadata.name}: under the default deny`);
      const own = ownPolicies(objects, o);
      assert.equal(own.length, 1, `${o.metadata.name}: one NetworkPolicy of its own (${own.map((p) => p.metadata.name).join(",")})`);
      assert.deepEqual([...own[0].spec.policyTypes].sort(), ["Egress", "Ingress"], `${own[0].metadata.name}: both directions`);
      for (const [other, x] of all)
        if (x !== o)
          assert.ok(
            !selects(own[0].spec.podSelector.matchLabels, podLabels(x)),
            `${own[0].metadata.name} (${workload}) also selects ${other}'s pods`,
          );
    }
  });

  it(`${overlay}: NetworkPolicies: ingress only from the ingress controller (gateway, PORT) and the monitoring namespace (METRICS_PORT)`, () => {
    const gateway = appDeployments(objects).find((d) => serviceOf(d) === "gateway")!;
    const { config } = nodeConfig(overlay, objects, gateway);
    const payment = `pods:app.kubernetes.io/component=payment,app.kubernetes.io/name=meridian`;
    for (const [workload, o] of workloads(objects)) {
      const [policy] = ownPolicies(objects, o);
      const expected = isJob(workload)
        ? []
        : [
            ...(workload === "gateway" ? [`namespace:ingress-nginx → TCP/${config.port}`, `${payment} → TCP/${config.port}`] : []),
            ...(workload === "grpc" ? [`namespace:ingress-nginx → TCP/${config.grpcPort}`] : []),
            `namespace:monitoring → TCP/${config.metricsPort}`,
          ];
      assert.deepEqual(ruleIds(policy.spec.ingress, "from").sort(), expected.sort(), `${policy.metadata.name}: ingress sources`);
    }
  });

  it(`${overlay}: NetworkPolicies: egress to DNS and to each dependency the workload holds a credential for, nothing else`, () => {
    const gatewayPods = `pods:app.kubernetes.io/component=gateway,app.kubernetes.io/name=meridian`;
    const gateway = appDeployments(objects).find((d) => serviceOf(d) === "gateway")!;
    const port = nodeConfig(overlay, objects, gateway).config.port;
    const egressPorts = new Map<Workload, Set<number>>();
    for (const [workload, o] of workloads(objects)) {
      const [policy] = ownPolicies(objects, o);
      const ids = ruleIds(policy.spec.egress, "to");
      const dns = ids.filter((i) => i.startsWith("namespace:kube-system"));
      assert.deepEqual(
        dns.sort(),
        ["namespace:kube-system → TCP/53", "namespace:kube-system → UDP/53"],
        `${policy.metadata.name}: DNS to kube-system`,
      );
      const rest = ids.filter((i) => !dns.includes(i));
      assert.ok(
        rest.every((i) => !i.endsWith("→ *")),
        `${policy.metadata.name}: every egress rule names its ports`,
      );
      const uses = Object.entries(DEPENDENCIES).filter(([, dep]) => dep.key in SECRET_KEYS[workload]);
      const allowed = new Set(uses.flatMap(([, dep]) => dep.ports.map((p) => `TCP/${p}`)));
      // The payment node's sandbox notifier calls PUBLIC_URL: the gateway pods when it resolves inside.
      const toGateway = workload === "payment" ? [`${gatewayPods} → TCP/${port}`] : [];
      for (const id of rest) {
        if (toGateway.includes(id)) continue;
        const [peer, p] = id.split(" → ");
        assert.ok(allowed.has(p), `${policy.metadata.name}: egress ${id} is to nothing ${workload} uses`);
        const dep = uses.find(([, d]) => d.ports.includes(Number(p.split("/")[1])))![1];
        // dev: the dependencies with a StatefulSet here are reached at its pods only.
        if (overlay === "dev" && dep.pods)
          assert.equal(
            peer,
            `pods:app.kubernetes.io/name=${dep.pods},app.kubernetes.io/part-of=meridian-dev`,
            `${policy.metadata.name}: ${id} is to ${dep.pods}'s pods`,
          );
        if (overlay === "prod")
          assert.equal(
            peer,
            "*",
            `${policy.metadata.name}: ${id}: prod's dependencies are outside (by port; an operator may add ipBlocks)`,
          );
      }
      for (const id of toGateway) assert.ok(rest.includes(id), `${policy.metadata.name}: ${id}`);
      for (const [name, dep] of uses)
        assert.ok(
          dep.ports.some((p) => rest.some((i) => i.endsWith(`→ TCP/${p}`))),
          `${policy.metadata.name}: no egress to ${name}, which ${workload} uses (${dep.key})`,
        );
      egressPorts.set(workload, new Set(rest.map((i) => Number(i.split("/").at(-1)))));
    }
    // The review's own points, spelt out.
    for (const w of ["gateway", "search"] as const) assert.ok(!egressPorts.get(w)!.has(3306), `${w}: no egress to MariaDB`);
    assert.deepEqual(
      [...egressPorts].filter(([, ports]) => ports.has(443)).map(([w]) => w),
      ["payment"],
      "payment is the only workload with HTTPS out",
    );
  });

  it(`${overlay}: NetworkPolicies let each node reach every server its environment names`, () => {
    for (const [workload, o] of workloads(objects)) {
      const env = workloadEnv(overlay, objects, o);
      const ps = [...policies(objects).filter((p) => selects(p.spec.podSelector.matchLabels ?? {}, podLabels(o)))];
      const addresses = dependencyAddresses(env);
      assert.ok(addresses.length >= (isJob(workload) ? 1 : 3), `${o.metadata.name}: RabbitMQ, Redis, etcd (MariaDB or etcd for a Job)`);
      for (const a of addresses) {
        const svc = serviceForHost(objects, a.host);
        const dest = svc ? { pods: svc.spec.selector } : ("outside" as const);
        if (svc)
          assert.ok(
            svc.spec.ports.some((p: any) => p.port === a.port),
            `${a.name}: Service ${svc.metadata.name} serves port ${a.port}`,
          );
        assert.ok(
          egressAllows(ps, a.port, dest),
          `${o.metadata.name}: ${a.name} (${a.host}:${a.port}) is not reachable under its NetworkPolicies`,
        );
      }
    }
    // The gateway pods accept what payment's egress sends them, and Prometheus on METRICS_PORT everywhere.
    const gateway = appDeployments(objects).find((d) => serviceOf(d) === "gateway")!;
    const payment = appDeployments(objects).find((d) => serviceOf(d) === "payment")!;
    const port = nodeConfig(overlay, objects, gateway).config.port;
    assert.ok(
      egressAllows(ownPolicies(objects, payment), port, { pods: podLabels(gateway) }),
      "payment → gateway on PORT (sandbox notifier)",
    );
  });

  it(`${overlay}: the app image and pods`, () => {
    const images = new Set([...appDeployments(objects), ...ofKind(objects, "Job")].map((o) => podSpec(o).containers[0].image));
    assert.equal(images.size, 1, "one image for every node and the Jobs");
    const [image] = images;
    assert.match(image, /:[\w.-]+$/);
    assert.ok(!image.endsWith(":latest"), "a pinned tag");
    for (const o of [...appDeployments(objects), ...ofKind(objects, "Job")]) {
      assert.equal(podSpec(o).securityContext?.runAsNonRoot, true, `${o.metadata.name}: non-root`);
      assert.equal(podSpec(o).containers[0].securityContext?.allowPrivilegeEscalation, false);
    }
  });

  it(`${overlay}: no Secret is committed; they are generated from git-ignored files`, () => {
    const { files } = rendered[overlay];
    for (const f of files)
      if (f.endsWith(".yaml"))
        assert.ok(
          readDocs(f).every((o) => o.kind !== "Secret"),
          `${f}: a Secret manifest`,
        );
    const dir = path.join(K8S, "overlays", overlay);
    const k = readDocs(path.join(dir, "kustomization.yaml"))[0] as any;
    const inputs = (k.secretGenerator ?? []).flatMap(generatorInputs);
    assert.ok(inputs.length > 0, "a secretGenerator");
    const ignore = fs.readFileSync(path.join(dir, ".gitignore"), "utf8");
    for (const f of inputs) assert.match(ignore, new RegExp(`^${f.replace(/\./g, "\\.")}$`, "m"), `${overlay}/${f} is git-ignored`);
  });
}

it("dev: StatefulSets for RabbitMQ, etcd, Redis and MariaDB, and the nodes point at them with the generated passwords", () => {
  const { objects } = rendered.dev;
  assert.deepEqual(
    ofKind(objects, "StatefulSet")
      .map((s) => s.metadata.name)
      .sort(),
    ["etcd", "mariadb", "rabbitmq", "redis"],
  );
  for (const s of ofKind(objects, "StatefulSet")) {
    assert.ok(s.spec.volumeClaimTemplates?.length, `${s.metadata.name}: a PVC template`);
    const svc = ofKind(objects, "Service").find((x) => x.metadata.name === s.spec.serviceName);
    assert.ok(svc && svc.spec.clusterIP === "None", `${s.metadata.name}: its headless Service`);
    assert.ok(selects(svc.spec.selector, s.spec.template.metadata.labels));
    // Only the application's pods reach its clients' port; a clustered one's members reach
    // each other on their peer ports, and nothing else does.
    const guards = policies(objects).filter((p) => selects(p.spec.podSelector.matchLabels ?? {}, podLabels(s)));
    const own = `pods:app.kubernetes.io/name=${s.metadata.name},app.kubernetes.io/part-of=meridian-dev`;
    const peers = (PEER_PORTS[s.metadata.name] ?? []).map((p) => `${own} → TCP/${p}`);
    const clients = svc.spec.ports.filter((p: any) => !(PEER_PORTS[s.metadata.name] ?? []).includes(p.port));
    assert.deepEqual(
      guards.flatMap((p) => ruleIds(p.spec.ingress, "from")).sort(),
      [...clients.map((p: any) => `pods:app.kubernetes.io/name=meridian → TCP/${p.port}`), ...peers].sort(),
      `${s.metadata.name}: ingress from the application (and its own members) only`,
    );
  }
  // #17: no single point in the bus. RabbitMQ and etcd run three members each, with a PDB
  // that keeps the majority through a voluntary disruption, and the nodes list all three.
  for (const name of ["rabbitmq", "etcd"]) {
    const s = ofKind(objects, "StatefulSet").find((x) => x.metadata.name === name)!;
    assert.equal(s.spec.replicas, 3, `${name}: three members`);
    assert.equal(s.spec.podManagementPolicy, "Parallel", `${name}: the members start together (each waits for the others at first boot)`);
    const pdbs = ofKind(objects, "PodDisruptionBudget").filter((p) => selects(p.spec.selector.matchLabels, podLabels(s)));
    assert.deepEqual(
      pdbs.map((p) => p.spec.maxUnavailable),
      [1],
      `${name}: one PDB, maxUnavailable 1`,
    );
    const svc = ofKind(objects, "Service").find((x) => x.metadata.name === s.spec.serviceName)!;
    assert.equal(svc.spec.publishNotReadyAddresses, true, `${name}: members resolve each other before they are ready`);
  }
  const rabbitSet = ofKind(objects, "StatefulSet").find((x) => x.metadata.name === "rabbitmq")!;
  const rabbitConfig = dataOf(objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === "rabbitmq-config")!);
  assert.match(rabbitConfig.enabled_plugins, /rabbitmq_peer_discovery_k8s/, "the Kubernetes peer-discovery plugin");
  const conf = Object.fromEntries(
    rabbitConfig["rabbitmq.conf"]
      .split("\n")
      .filter((l: string) => l.trim() && !l.trim().startsWith("#"))
      .map((l: string) => l.split("=").map((x) => x.trim())),
  );
  assert.equal(conf["cluster_formation.peer_discovery_backend"], "rabbit_peer_discovery_k8s");
  assert.equal(
    conf["cluster_formation.k8s.service_name"],
    rabbitSet.spec.serviceName,
    "discovery through the StatefulSet's headless Service",
  );
  assert.equal(conf.default_queue_type, "quorum", "quorum queues by default");
  const rabbitEnv = envOf(objects, podSpec(rabbitSet).containers[0], { "metadata.name": "rabbitmq-0" }, "rabbitmq");
  assert.ok(rabbitEnv.RABBITMQ_ERLANG_COOKIE?.length >= 32, "one Erlang cookie for the three, from the generated Secret");
  assert.match(
    rabbitEnv.RABBITMQ_NODENAME,
    new RegExp(`^rabbit@\\$\\(POD_NAME\\)\\.${rabbitSet.spec.serviceName}\\.`),
    "a stable node name per pod (its volume is found again)",
  );
  const binding = objects.find((o) => o.kind === "RoleBinding")!;
  assert.equal(binding.subjects[0].name, podSpec(rabbitSet).serviceAccountName, "the pods' ServiceAccount may read the endpoints");
  const role = objects.find((o) => o.kind === "Role" && o.metadata.name === binding.roleRef.name)!;
  assert.deepEqual(role.rules, [{ apiGroups: [""], resources: ["endpoints"], verbs: ["get"] }], "endpoints, read-only: nothing more");
  const gateway = appDeployments(objects).find((d) => serviceOf(d) === "gateway")!;
  const user = appDeployments(objects).find((d) => serviceOf(d) === "user")!;
  const { env } = nodeConfig("dev", objects, user);
  assert.equal(nodeConfig("dev", objects, gateway).env.RABBITMQ_URI, env.RABBITMQ_URI);
  for (const name of ["RABBITMQ_URI", "REDIS_URL", "MYSQL_URL"])
    for (const each of env[name].split(",")) {
      const u = new URL(each);
      assert.ok(serviceForHost(objects, u.hostname), `${name} points at a Service of the overlay (${u.host})`);
    }
  const podsOf = (list: string[]) => list.map((h) => h.split("@").at(-1)!.split(":")[0]).sort();
  assert.deepEqual(
    podsOf(env.RABBITMQ_URI.split(",")),
    ["rabbitmq-0.rabbitmq", "rabbitmq-1.rabbitmq", "rabbitmq-2.rabbitmq"],
    "RABBITMQ_URI: the three RabbitMQ pods",
  );
  assert.deepEqual(podsOf(env.ETCD_HOSTS.split(",")), ["etcd-0.etcd", "etcd-1.etcd", "etcd-2.etcd"], "ETCD_HOSTS: the three etcd members");
  // The dependencies' passwords (what their containers start with) and the nodes' URIs agree.
  const depsSecret = objects.find((o) => o.kind === "Secret" && o.metadata.name === "meridian-dev-deps")!;
  const deps = dataOf(depsSecret);
  const containerOf = (name: string) => podSpec(objects.find((o) => o.kind === "StatefulSet" && o.metadata.name === name)!).containers[0];
  const depEnv = (name: string) => envOf(objects, containerOf(name), { "metadata.name": `${name}-0` }, name);
  const amqp = new URL(env.RABBITMQ_URI.split(",")[0]);
  const rabbit = depEnv("rabbitmq");
  assert.equal(`${amqp.username}:${amqp.password}`, `${rabbit.RABBITMQ_DEFAULT_USER}:${rabbit.RABBITMQ_DEFAULT_PASS}`);
  const mysql = new URL(env.MYSQL_URL);
  assert.equal(`${mysql.username}:${mysql.password}`, `root:${depEnv("mariadb").MARIADB_ROOT_PASSWORD}`);
  const redis = containerOf("redis");
  const redisEnv = depEnv("redis");
  const args: string[] = redis.args ?? [];
  assert.equal(args[args.indexOf("--requirepass") + 1], "$(REDIS_PASSWORD)", "redis-server takes the password from its env");
  assert.equal(new URL(env.REDIS_URL).password, redisEnv.REDIS_PASSWORD);
  assert.equal(redisEnv.REDISCLI_AUTH, redisEnv.REDIS_PASSWORD, "the probes' redis-cli authenticates");
  for (const v of Object.values(deps)) assert.ok(v.length >= 8, "generated values, not empty");
  // The sandbox is asked for explicitly (NODE_ENV=production), with a key pair every payment replica shares.
  const payment = appDeployments(objects).find((d) => serviceOf(d) === "payment")!;
  const pay = nodeConfig("dev", objects, payment);
  assert.equal(pay.config.payments.sandbox, true, "SANDBOX_PAY=true");
  assert.deepEqual(parsePaymentConfig(pay.env, { mode: "cluster" }).enabled, ["sandbox"]);
});

it("dev: etcd runs with authentication: JWT tokens from the generated pair, the etcd-auth Job creates the nodes' user for their prefix, the nodes present it", () => {
  const { objects } = rendered.dev;
  const etcd = ofKind(objects, "StatefulSet").find((x) => x.metadata.name === "etcd")!;
  const c = podSpec(etcd).containers[0];
  const flag = (name: string) => (c.command as string[]).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const token = Object.fromEntries(
    flag("auth-token")!
      .split(",")
      .slice(1)
      .map((kv) => kv.split("=")),
  );
  assert.equal(flag("auth-token")!.split(",")[0], "jwt", "JWT tokens: valid at every member, not only the one that issued them");
  const mount = (c.volumeMounts as any[]).find((m) => token["priv-key"].startsWith(`${m.mountPath}/`))!;
  assert.ok(mount, "the signing key is on a mounted volume");
  const volume = (podSpec(etcd).volumes as any[]).find((v) => v.name === mount.name)!;
  const secret = dataOf(objects.find((o) => o.kind === "Secret" && o.metadata.name === volume.secret.secretName)!);
  const key = createPrivateKey(secret[path.basename(token["priv-key"])]);
  assert.equal(
    createPublicKey(key).export({ type: "spki", format: "pem" }),
    secret[path.basename(token["pub-key"])],
    "the pair's public half",
  );
  assert.equal(token["sign-method"], "RS256");

  // The Job: npm run etcd:auth, as a tool, with the nodes' etcd settings and the root password.
  const job = jobOf(objects, "etcd-auth")!;
  const jc = podSpec(job).containers[0];
  assert.equal(compiledEntry(jc), "bin/etcd-auth.ts");
  assert.ok(["Never", "OnFailure"].includes(podSpec(job).restartPolicy));
  const jobEnv = workloadEnv("dev", objects, job);
  const jobConfig = loadConfig(jobEnv, { tool: true });
  const gateway = appDeployments(objects).find((d) => serviceOf(d) === "gateway")!;
  for (const d of appDeployments(objects)) {
    const node = nodeConfig("dev", objects, d);
    assert.ok(node.config.etcd?.username && node.config.etcd.password, `${d.metadata.name}: presents ETCD_USERNAME / ETCD_PASSWORD`);
    assert.deepEqual(
      { ...jobConfig.etcd, rootPassword: undefined },
      { ...node.config.etcd, rootPassword: undefined },
      `${d.metadata.name}: the Job creates the user the node presents, on the same members`,
    );
    assert.equal(jobConfig.namespace, node.config.namespace, `${d.metadata.name}: the Job grants the node's discovery prefix`);
    assert.equal(node.env.ETCD_ROOT_PASSWORD, undefined, `${d.metadata.name}: no node holds etcd's root password`);
  }
  assert.ok(
    jobConfig.etcd?.rootPassword && jobConfig.etcd.rootPassword !== jobConfig.etcd.password,
    "the Job holds a root password of its own",
  );
  assert.notEqual(jobConfig.etcd?.username, "root");
  assert.ok(nodeConfig("dev", objects, gateway).config.etcd?.hosts.length === 3);
});

it("dev: make-secrets.ts writes its files once, owner-only, with fresh values; after an upgrade it adds only what is missing", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-dev-secrets-"));
  try {
    const written = writeDevSecrets(dir);
    assert.deepEqual(
      written.map((f) => path.basename(f)),
      [...DEV_SECRET_FILES],
    );
    for (const f of written) assert.equal(fs.statSync(f).mode & 0o077, 0, `${f}: owner-only`);
    const first = fs.readFileSync(written[0], "utf8");
    assert.throws(() => writeDevSecrets(dir), /already there/, "never replaces the passwords the data volumes were initialised with");
    writeDevSecrets(dir, { force: true });
    assert.notEqual(fs.readFileSync(written[0], "utf8"), first, "random per run");
    // An upgrade: a variable a later version added, and etcd's key pair, are added; nothing
    // already there changes.
    const [secretsEnv, depsEnv, jwtKey] = written as [string, string, string];
    const before = fs.readFileSync(secretsEnv, "utf8");
    fs.writeFileSync(
      secretsEnv,
      before
        .split("\n")
        .filter((l) => !l.startsWith("ETCD_ROOT_PASSWORD="))
        .join("\n"),
    );
    fs.rmSync(jwtKey);
    const added = writeDevSecrets(dir).map((f) => path.basename(f));
    assert.deepEqual(added, ["secrets.env (ETCD_ROOT_PASSWORD)", "etcd-jwt.key", "etcd-jwt.pub"]);
    const after = fs.readFileSync(secretsEnv, "utf8");
    for (const line of before.split("\n").filter((l) => l.includes("=") && !l.startsWith("ETCD_ROOT_PASSWORD=")))
      assert.ok(after.includes(`${line}\n`), `kept: ${line.split("=")[0]}`);
    assert.match(after, /^ETCD_ROOT_PASSWORD=[0-9a-f]{48}$/m);
    // A whole env file missing beside the other: refused (its passwords must match).
    fs.rmSync(depsEnv);
    assert.throws(() => writeDevSecrets(dir), /deps\.env missing beside/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const k = readDocs(path.join(K8S, "overlays", "dev", "kustomization.yaml"))[0] as any;
  assert.deepEqual(
    k.secretGenerator.flatMap(generatorInputs).sort(),
    [...DEV_SECRET_FILES].sort(),
    "the overlay reads what the script writes",
  );
});

it("prod: external dependencies only, and no secret value committed", () => {
  const { objects } = rendered.prod;
  assert.deepEqual(ofKind(objects, "StatefulSet"), [], "no StatefulSets: the dependencies run elsewhere");
  // The only Secret is generated from the operator's git-ignored secrets.env; its committed
  // example has every value empty.
  const secrets = ofKind(objects, "Secret");
  assert.deepEqual(
    secrets.map((s) => s.metadata.name),
    ["meridian-secrets"],
  );
  assert.deepEqual(
    Object.entries(dataOf(secrets[0])).filter(([, v]) => v !== ""),
    [],
    "secrets.env.example holds names, not values",
  );
  // Every key a workload requires is listed (an absent required key stops the pod).
  const required = new Set(
    workloads(objects).flatMap(([w]) =>
      Object.entries(SECRET_KEYS[w])
        .filter(([, n]) => n === "required")
        .map(([k]) => k),
    ),
  );
  for (const name of [...required, ...Object.keys(PROD_SECRET_STAND_INS)])
    assert.ok(name in dataOf(secrets[0]), `secrets.env.example lists ${name}`);
});

it("SECRET_KEYS is what the code reads: databases, tokens, the admin, mail, Elasticsearch, the payment platforms", () => {
  const sources = (dir: string): string => {
    let out = "";
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) out += sources(p);
      else if (e.name.endsWith(".ts") && !/\.(unit|int|system)\.spec\.ts$/.test(e.name) && !e.name.includes("fixture"))
        out += fs.readFileSync(p, "utf8");
    }
    return out;
  };
  /** The key, and the code that needs it. */
  const EVIDENCE: Record<string, RegExp> = {
    MYSQL_URL: /\bDbMixin\(/,
    // The edges' door (lib/auth/edge-door.ts) verifies tokens with config.jwtSecret.
    JWT_SECRET: /\bconfig\.jwtSecret\b|\bcreateEdgeDoor\(/,
    ADMIN_PASSWORD: /\bconfig\.admin\b/,
    SMTP_URL: /\bconfig\.mail\b/,
    ELASTIC_SEARCH_PASSWORD: /\bconfig\.elasticsearch\b/,
  };
  const PAYMENT_CODE = /\b(loadPaymentConfig|parsePaymentConfig)\(/;
  for (const service of ALL_SERVICES) {
    const src = sources(path.join(ROOT, "services", service));
    const keys = SECRET_KEYS[service];
    for (const [key, re] of Object.entries(EVIDENCE))
      assert.equal(key in keys, re.test(src), `${service}: ${key} in SECRET_KEYS ⇔ its code matches ${re}`);
    for (const name of PAYMENT_ENV_NAMES)
      assert.equal(
        name in keys,
        PAYMENT_CODE.test(src),
        `${service}: ${name} in SECRET_KEYS ⇔ its code reads the payment platforms' configuration`,
      );
    // Every node's broker: transporter, cacher, discovery (moleculer.config.ts).
    for (const [key, need] of Object.entries(NODE_SECRETS)) assert.equal(keys[key], need, `${service}: ${key}`);
    const explained = new Set([...Object.keys(NODE_SECRETS), ...Object.keys(EVIDENCE), ...PAYMENT_ENV_NAMES]);
    assert.deepEqual(
      Object.keys(keys).filter((k) => !explained.has(k)),
      [],
      `${service}: keys no evidence explains`,
    );
  }
  const broker = fs.readFileSync(path.join(ROOT, "moleculer.config.ts"), "utf8");
  for (const field of ["rabbitmqUris", "redisUrl", "etcd"])
    assert.match(broker, new RegExp(`config\\.${field}\\b`), `moleculer.config.ts uses config.${field}`);
  // bin/migrate.ts: a tool (no JWT_SECRET, REDIS_URL), on the databases only.
  const migrate = fs.readFileSync(path.join(ROOT, "bin", "migrate.ts"), "utf8");
  assert.match(migrate, /loadConfigOrExit\(\{ tool: true \}\)/);
  assert.doesNotMatch(migrate, /createBroker|jwtSecret|redisUrl/);
  assert.deepEqual(SECRET_KEYS.migrate, { MYSQL_URL: "required" });
  // bin/etcd-auth.ts: a tool on etcd alone, the nodes' user and etcd's root.
  const etcdAuth = fs.readFileSync(path.join(ROOT, "bin", "etcd-auth.ts"), "utf8");
  assert.match(etcdAuth, /loadConfigOrExit\(\{ tool: true \}\)/);
  assert.match(etcdAuth, /etcd\.password\b/);
  assert.match(etcdAuth, /\.rootPassword\b/);
  assert.doesNotMatch(etcdAuth, /createBroker|jwtSecret|redisUrl|mysqlUrl|rabbitmqUris/);
});

it("the payment variables named in the docs' configuration table and in k8s/ are the ones the payment config knows", () => {
  const PAYMENTISH = /\b(?:SANDBOX_PAY_|ALIPAY_|WECHAT_?PAY_|WXPAY_|WEIXIN_)[A-Z0-9_]+\b/g;
  const known = new Set(PAYMENT_ENV_NAMES);
  const readme = fs.readFileSync(path.join(ROOT, "docs", "configuration.md"), "utf8");
  const section = readme.slice(readme.indexOf("\n## Configuration"), readme.indexOf("\n## ", readme.indexOf("\n## Configuration") + 1));
  const tableNames = new Set(
    section
      .split("\n")
      .filter((l) => l.startsWith("| `"))
      .flatMap((l) => [...l.split("|")[1].matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1])),
  );
  const inTable = [...tableNames].filter((n) => n.match(PAYMENTISH));
  assert.deepEqual(
    [...new Set([...readme.matchAll(PAYMENTISH)].map((m) => m[0]))].filter((n) => !known.has(n)),
    [],
    "docs/configuration.md names payment variables the config does not know",
  );
  assert.deepEqual(inTable.sort(), [...known].sort(), "docs/configuration.md's table lists each payment variable, in its first column");

  const manifestNames = new Set<string>();
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ya?ml$|\.env\.example$/.test(e.name))
        for (const m of fs.readFileSync(p, "utf8").matchAll(PAYMENTISH)) manifestNames.add(m[0]);
    }
  };
  walk(K8S);
  assert.deepEqual(
    [...manifestNames].filter((n) => !known.has(n)),
    [],
    "k8s/ names payment variables the config does not know",
  );
  assert.deepEqual(
    [...known].filter((n) => !manifestNames.has(n)),
    [],
    "k8s/ leaves out payment variables the config knows",
  );
  const example = fs.readFileSync(path.join(K8S, "overlays", "prod", "secrets.env.example"), "utf8");
  for (const n of known) assert.match(example, new RegExp(`^#? ?${n}=`, "m"), `prod's secrets.env.example lists ${n}`);
});

it("every manifest under k8s/ is used by an overlay", () => {
  const used = new Set([...rendered.dev.files, ...rendered.prod.files]);
  const all: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ya?ml$/.test(e.name)) all.push(p);
    }
  };
  walk(K8S);
  assert.deepEqual(
    all.filter((f) => !used.has(f)).map((f) => path.relative(K8S, f)),
    [],
    "files no kustomization lists",
  );
});

it("the image runs the compiled build: its CMD is node dist/bin/start.js, and tsx is no production dependency", () => {
  const runtime = fs
    .readFileSync(path.join(ROOT, "Dockerfile"), "utf8")
    .split(/^FROM /m)
    .at(-1)!;
  const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(runtime);
  assert.ok(cmd, "the runtime stage has an exec-form CMD");
  assert.equal(compiledEntry({ command: JSON.parse(cmd[1]) as string[] }), "bin/start.ts");
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
    scripts: Record<string, string>;
  };
  assert.equal(pkg.dependencies.tsx, undefined, "tsx is a dev dependency (npm start, the tests)");
  assert.match(pkg.scripts.build ?? "", /tsc -p tsconfig\.build\.json/);
});

it("k8s/base's node services are what k8s/generate.ts gives (one template, one list); the check notices a stale file", () => {
  assert.deepEqual(staleNodeServices(), [], "run npm run k8s:gen");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-k8s-gen-"));
  try {
    for (const svc of NODE_SERVICES) fs.writeFileSync(path.join(dir, `${svc.name}.yaml`), nodeServiceYaml(svc));
    assert.deepEqual(staleNodeServices(dir), []);
    fs.appendFileSync(path.join(dir, "cart.yaml"), "# edited by hand\n");
    fs.rmSync(path.join(dir, "order.yaml"));
    assert.deepEqual(staleNodeServices(dir), ["k8s/base/cart.yaml", "k8s/base/order.yaml"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
