/**
 * The Kubernetes manifests (k8s/): every object of both overlays, rendered the way
 * kustomize would, is valid against the Kubernetes schemas (kubernetes-models), and the
 * wiring holds: one Deployment per service of ALL_SERVICES, each with an HPA and a PDB,
 * probes on paths and ports the app serves, an environment lib/config.ts accepts,
 * a drain that fits in the grace period, the migration Job, the Ingress → Service →
 * gateway chain, and no default secret in prod.
 *
 * kustomize is not run here: `render` below does the part of it these overlays use
 * (resources, patches of ConfigMap/Secret/Ingress, a secretGenerator, images,
 * namespace) and refuses anything else, so an overlay cannot silently outgrow it.
 * The generator's hash suffix on Secret names is left out (kustomize renames the
 * references with it).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { ServiceBroker } from "moleculer";
import { parseAllDocuments } from "yaml";
import { ConfigMap, Namespace, Secret, Service } from "kubernetes-models/v1";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { Ingress } from "kubernetes-models/networking.k8s.io/v1";
import { brokerOptions } from "../moleculer.config";
import { ALL_SERVICES, ENV_NAMES, loadConfig, type AppConfig } from "../lib/config";
import { HEALTH_PATHS, METRICS_PATH } from "../lib/health-server";
import { OPS_ALIASES } from "../services/gateway/api.service";
import { PLATFORM_GROUPS, parsePaymentConfig } from "../services/payment/platforms/config";

const K8S = __dirname;
const OVERLAYS = ["dev", "prod"] as const;
/** Services that must survive the loss of one pod (the list). */
const AT_LEAST_TWO = ["gateway", "order", "product", "payment"];

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: any };

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "v1/Namespace": Namespace,
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "batch/v1/Job": Job,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/Ingress": Ingress,
};

// ---- rendering (a small kustomize) ----

function readDocs(file: string): Obj[] {
  return parseAllDocuments(fs.readFileSync(file, "utf8")).flatMap((doc) => {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    const value = doc.toJS();
    return value === null ? [] : [value as Obj];
  });
}

/** KEY=value lines as kustomize's env files read them (comments and blank lines skipped). */
function readEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (!line.trim() || line.trimStart().startsWith("#")) continue;
    const i = line.indexOf("=");
    assert.ok(i > 0, `${file}: not KEY=value: ${line}`);
    out[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  return out;
}

/** Maps merge, everything else is replaced: strategic merge for kinds without list merge keys. */
function merge(target: any, patch: any): any {
  if (typeof target !== "object" || target === null || Array.isArray(target) || typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const out = { ...target };
  for (const [k, v] of Object.entries(patch)) out[k] = k in target ? merge(target[k], v) : v;
  return out;
}

interface Rendered {
  objects: Obj[];
  /** Every file a kustomization reached (resources, patches, generator inputs). */
  files: Set<string>;
}

/** Generator inputs are git-ignored (prod's secrets.env): the test reads the committed `.example`. */
function render(dir: string, files = new Set<string>()): Rendered {
  const kfile = path.join(dir, "kustomization.yaml");
  files.add(kfile);
  const k = readDocs(kfile)[0] as any;
  const unknown = Object.keys(k).filter((key) => !["apiVersion", "kind", "namespace", "resources", "patches", "secretGenerator", "images"].includes(key));
  assert.deepEqual(unknown, [], `${kfile}: this test's renderer does not know these fields; teach it or keep the overlay simpler`);
  let objects: Obj[] = [];
  for (const r of k.resources ?? []) {
    const p = path.resolve(dir, r);
    if (fs.statSync(p).isDirectory()) objects.push(...render(p, files).objects);
    else {
      files.add(p);
      objects.push(...readDocs(p));
    }
  }
  for (const gen of k.secretGenerator ?? []) {
    assert.deepEqual(Object.keys(gen).sort(), ["envs", "name"], `${kfile}: secretGenerator with name and envs only`);
    const stringData: Record<string, string> = {};
    for (const env of gen.envs) {
      const example = path.resolve(dir, `${env}.example`);
      files.add(example);
      Object.assign(stringData, readEnvFile(example));
    }
    objects.push({ apiVersion: "v1", kind: "Secret", metadata: { name: gen.name }, type: "Opaque", stringData });
  }
  for (const patch of k.patches ?? []) {
    assert.deepEqual(Object.keys(patch), ["path"], `${kfile}: patches by file only`);
    const p = path.resolve(dir, patch.path);
    files.add(p);
    for (const doc of readDocs(p)) {
      assert.ok(["ConfigMap", "Secret", "Ingress"].includes(doc.kind), `${p}: the renderer merges maps and replaces lists, which is strategic merge only for ConfigMap, Secret and Ingress, not ${doc.kind}`);
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
  if (k.namespace) objects = objects.map((o) => (o.kind === "Namespace" ? o : { ...o, metadata: { ...o.metadata, namespace: k.namespace } }));
  return { objects, files };
}

// ---- helpers over rendered objects ----

function podSpec(o: Obj): any {
  return ["Deployment", "StatefulSet", "Job"].includes(o.kind) ? o.spec?.template?.spec : undefined;
}
const ofKind = (objects: Obj[], kind: string) => objects.filter((o) => o.kind === kind);
const containerEnv = (c: any, name: string) => (c.env ?? []).find((e: any) => e.name === name);
/** App Deployments are the ones that say which services they run. */
const appDeployments = (objects: Obj[]) => ofKind(objects, "Deployment").filter((d) => containerEnv(podSpec(d).containers[0], "SERVICES"));
const serviceOf = (d: Obj) => containerEnv(podSpec(d).containers[0], "SERVICES").value as string;
const selects = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

function dataOf(o: Obj): Record<string, string> {
  const out: Record<string, string> = { ...(o.stringData ?? {}) };
  for (const [k, v] of Object.entries<string>(o.data ?? {})) out[k] = o.kind === "Secret" ? Buffer.from(v, "base64").toString("utf8") : v;
  return out;
}

/** The environment a container starts with: envFrom (in order), then env. */
function envOf(objects: Obj[], c: any, fieldValues: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const [kind, ref] = from.configMapRef ? ["ConfigMap", from.configMapRef] : ["Secret", from.secretRef];
    const source = objects.find((o) => o.kind === kind && o.metadata.name === ref.name);
    assert.ok(source, `envFrom names ${kind}/${ref.name}, which is not rendered`);
    Object.assign(env, dataOf(source));
  }
  for (const e of c.env ?? []) {
    if (e.valueFrom) {
      assert.ok(e.valueFrom.fieldRef?.fieldPath in fieldValues, `${e.name}: only fieldRef ${Object.keys(fieldValues)} is modelled here`);
      env[e.name] = fieldValues[e.valueFrom.fieldRef.fieldPath];
    } else env[e.name] = e.value ?? "";
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

/** Stand-ins for prod's secrets.env (the operator's values): the shapes lib/config.ts accepts. */
const PROD_SECRET_STAND_INS: Record<string, string> = {
  RABBITMQ_URI: "amqps://meridian:s3cret@rabbitmq.example.internal:5671",
  REDIS_URL: "rediss://:s3cret@redis.example.internal:6380",
  MYSQL_URL: "mysql://meridian:s3cret@mysql.example.internal:3306/",
  JWT_SECRET: "x".repeat(48),
  ETCD_PASSWORD: "s3cret",
  ELASTIC_SEARCH_PASSWORD: "s3cret",
  SMTP_URL: "smtps://meridian:s3cret@smtp.example.internal:465",
};

const PAYMENT_ENV_NAMES = Object.values(PLATFORM_GROUPS).flatMap((g) => [...g.required, ...g.optional]);
const KNOWN_ENV = new Set<string>([...ENV_NAMES, ...PAYMENT_ENV_NAMES]);
/** Names that must come from the Secret: credentials, URIs that carry them, keys. */
const SECRET_NAME = /PASSWORD|SECRET|_KEY$|^RABBITMQ_URI$|^REDIS_URL$|^MYSQL_URL$|^SMTP_URL$/;

const rendered = Object.fromEntries(OVERLAYS.map((o) => [o, render(path.join(K8S, "overlays", o))])) as Record<(typeof OVERLAYS)[number], Rendered>;

/** The config each app node of an overlay starts with, by lib/config.ts itself. */
function nodeConfig(overlay: (typeof OVERLAYS)[number], objects: Obj[], d: Obj): { env: Record<string, string>; config: AppConfig } {
  let env = envOf(objects, podSpec(d).containers[0], { "metadata.name": `${d.metadata.name}-5d8f7c9b4-x2x7q` });
  // prod's secrets.env is the operator's to fill in: every value there is empty.
  if (overlay === "prod") env = { ...env, ...Object.fromEntries(Object.entries(PROD_SECRET_STAND_INS).filter(([k]) => k in env)) };
  return { env, config: loadConfig(env) };
}

// ---- the checks ----

for (const overlay of OVERLAYS) {
  const { objects } = rendered[overlay];

  test(`${overlay}: every object is valid against the Kubernetes schemas, once`, () => {
    assert.ok(objects.length > 0);
    const seen = new Set<string>();
    for (const o of objects) {
      const key = `${o.apiVersion}/${o.kind}`;
      const Model = MODELS[key];
      assert.ok(Model, `${key} ${o.metadata?.name}: no schema listed in MODELS`);
      assert.doesNotThrow(() => new Model(o).validate(), (err: Error) => `${o.kind}/${o.metadata.name}: ${err.message}`);
      const id = `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
      assert.ok(!seen.has(id), `${id} defined twice`);
      seen.add(id);
    }
  });

  test(`${overlay}: exactly one Deployment per service of ALL_SERVICES, with SERVICES set to it`, () => {
    const deployments = appDeployments(objects);
    for (const service of ALL_SERVICES) {
      const own = deployments.filter((d) => serviceOf(d) === service);
      assert.equal(own.length, 1, `${own.length} Deployments run SERVICES=${service}: add k8s/base/${service}.yaml (Deployment, HPA, PDB; copy one of the others) and list it in k8s/base/kustomization.yaml`);
    }
    for (const d of deployments)
      assert.ok((ALL_SERVICES as readonly string[]).includes(serviceOf(d)), `${d.metadata.name}: SERVICES=${serviceOf(d)} is not one service of ALL_SERVICES`);
    assert.equal(deployments.length, ALL_SERVICES.length);
  });

  test(`${overlay}: every variable given to a node is one lib/config.ts (or the payment platforms) validates, and secrets come from the Secret`, () => {
    for (const o of [...appDeployments(objects), ...ofKind(objects, "Job")]) {
      for (const c of podSpec(o).containers) {
        const names = Object.keys(envOf(objects, c, { "metadata.name": "pod" }));
        const unknown = names.filter((n) => !KNOWN_ENV.has(n));
        assert.deepEqual(unknown, [], `${o.kind}/${o.metadata.name}: variables no code reads`);
      }
    }
    for (const cm of ofKind(objects, "ConfigMap")) {
      const leaked = Object.keys(dataOf(cm)).filter((k) => SECRET_NAME.test(k));
      assert.deepEqual(leaked, [], `ConfigMap/${cm.metadata.name} holds secrets; move them to the Secret`);
    }
    for (const d of appDeployments(objects)) {
      const nodeId = containerEnv(podSpec(d).containers[0], "NODE_ID");
      assert.equal(nodeId?.valueFrom?.fieldRef?.fieldPath, "metadata.name", `${d.metadata.name}: NODE_ID is the pod's name (unique per replica)`);
    }
  });

  test(`${overlay}: each node's environment passes lib/config.ts as a cluster node of its one service`, () => {
    for (const d of appDeployments(objects)) {
      const { env, config } = nodeConfig(overlay, objects, d);
      assert.equal(config.mode, "cluster", `${d.metadata.name}: RABBITMQ_URI makes it a cluster node`);
      assert.deepEqual(config.services, [serviceOf(d)]);
      assert.ok(config.etcd, "etcd discovery");
      assert.ok(config.mysqlUrl && config.redisUrl, "MariaDB and Redis");
      if (serviceOf(d) === "payment") assert.doesNotThrow(() => parsePaymentConfig(env, { mode: "cluster" }), "payment platform variables");
    }
  });

  test(`${overlay}: replicas (≥ 2 where the issue asks), an HPA and a PDB per Deployment`, () => {
    for (const d of appDeployments(objects)) {
      const name = d.metadata.name;
      const service = serviceOf(d);
      const labels = d.spec.template.metadata.labels;
      assert.ok(selects(d.spec.selector.matchLabels, labels), `${name}: selector matches its pods`);
      const others = appDeployments(objects).filter((o) => o !== d);
      assert.ok(others.every((o) => !selects(d.spec.selector.matchLabels, o.spec.template.metadata.labels)), `${name}: selector takes no other Deployment's pods`);

      const hpas = ofKind(objects, "HorizontalPodAutoscaler").filter((h) => h.spec.scaleTargetRef.kind === "Deployment" && h.spec.scaleTargetRef.name === name);
      assert.equal(hpas.length, 1, `${name}: one HPA`);
      const hpa = hpas[0];
      assert.equal(hpa.apiVersion, "autoscaling/v2");
      assert.equal(hpa.spec.scaleTargetRef.apiVersion, "apps/v1");
      assert.equal(d.spec.replicas, hpa.spec.minReplicas, `${name}: replicas is the HPA's floor (a re-apply then never scales below what the HPA keeps)`);
      assert.ok(hpa.spec.maxReplicas > hpa.spec.minReplicas, `${name}: the HPA can scale`);
      if (AT_LEAST_TWO.includes(service)) assert.ok(d.spec.replicas >= 2 && hpa.spec.minReplicas >= 2, `${name}: at least 2 replicas`);
      // CPU utilisation is relative to requests: without them the HPA cannot act.
      assert.ok(hpa.spec.metrics.some((m: any) => m.resource?.name === "cpu"));

      const pdbs = ofKind(objects, "PodDisruptionBudget").filter((p) => selects(p.spec.selector.matchLabels, labels));
      assert.equal(pdbs.length, 1, `${name}: one PDB selecting its pods`);
      assert.ok(others.every((o) => !selects(pdbs[0].spec.selector.matchLabels, o.spec.template.metadata.labels)), `${name}: its PDB covers no other Deployment`);
      // A budget that allows no eviction blocks every node drain.
      const { maxUnavailable, minAvailable } = pdbs[0].spec;
      assert.ok((maxUnavailable !== undefined && maxUnavailable !== 0) || (typeof minAvailable === "number" && minAvailable < d.spec.replicas), `${name}: its PDB allows an eviction`);
    }
  });

  test(`${overlay}: every container has resource requests and limits (requests ≤ limits)`, () => {
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

  test(`${overlay}: probes on every node hit a path and port the node serves`, () => {
    for (const d of appDeployments(objects)) {
      const c = podSpec(d).containers[0];
      const { config } = nodeConfig(overlay, objects, d);
      const gateway = config.services.includes("gateway");
      // The gateway serves its routes on PORT; any other node its health server on HEALTH_PORT.
      const port = gateway ? config.port : config.healthPort;
      assert.ok(port > 0, `${d.metadata.name}: ${gateway ? "PORT" : "HEALTH_PORT"} is set (0 turns the health server off)`);
      const paths = gateway
        ? { live: "/health/live", ready: "/health/ready" }
        : HEALTH_PATHS;
      if (gateway) for (const p of Object.values(paths)) assert.ok(`GET ${p}` in OPS_ALIASES, `the gateway routes GET ${p}`);
      for (const [probe, expected] of [["startupProbe", paths.live], ["livenessProbe", paths.live], ["readinessProbe", paths.ready]] as const) {
        const get = c[probe]?.httpGet;
        assert.ok(get, `${d.metadata.name}: ${probe} over HTTP`);
        assert.equal(get.path, expected, `${d.metadata.name}: ${probe} path`);
        assert.equal(containerPort(c, get.port), port, `${d.metadata.name}: ${probe} port ${get.port} is the container port of ${gateway ? "PORT" : "HEALTH_PORT"}`);
      }
      // Readiness answers within checkReadiness's 2 s deadline; a shorter timeout would flap.
      assert.ok((c.readinessProbe.timeoutSeconds ?? 1) > 2, `${d.metadata.name}: readiness timeout above 2 s`);
      // Prometheus scrape annotations: the path this node serves /metrics on, on that port.
      const ann = d.spec.template.metadata?.annotations ?? {};
      assert.equal(ann["prometheus.io/scrape"], "true", `${d.metadata.name}: prometheus.io/scrape`);
      assert.equal(Number(ann["prometheus.io/port"]), port, `${d.metadata.name}: prometheus.io/port is ${gateway ? "PORT" : "HEALTH_PORT"}`);
      assert.equal(ann["prometheus.io/path"], METRICS_PATH, `${d.metadata.name}: prometheus.io/path`);
      if (gateway) assert.ok(`GET ${METRICS_PATH}` in OPS_ALIASES, "the gateway routes GET /metrics");
    }
    for (const s of ofKind(objects, "StatefulSet")) {
      for (const c of podSpec(s).containers) assert.ok(c.readinessProbe && c.livenessProbe, `StatefulSet/${s.metadata.name}: readiness and liveness probes`);
    }
  });

  test(`${overlay}: the grace period covers a preStop drain and Moleculer's stop`, () => {
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
      assert.ok(spec.terminationGracePeriodSeconds >= needed, `${d.metadata.name}: terminationGracePeriodSeconds ${spec.terminationGracePeriodSeconds} < ${needed} s`);
    }
  });

  test(`${overlay}: the migration Job runs npm run migrate for every service, with the nodes' image and configuration`, () => {
    const jobs = ofKind(objects, "Job");
    assert.equal(jobs.length, 1);
    const job = jobs[0];
    const c = podSpec(job).containers[0];
    assert.equal([...(c.command ?? []), ...(c.args ?? [])].join(" "), "npm run migrate");
    assert.ok(["Never", "OnFailure"].includes(podSpec(job).restartPolicy));
    assert.equal(containerEnv(c, "SERVICES"), undefined, "SERVICES unset: every service's database");
    const node = podSpec(appDeployments(objects)[0]).containers[0];
    assert.equal(c.image, node.image);
    assert.deepEqual(c.envFrom, node.envFrom);
  });

  test(`${overlay}: Ingress → gateway Service → gateway pods on PORT, at PUBLIC_URL's host`, () => {
    const gateway = appDeployments(objects).find((d) => serviceOf(d) === "gateway")!;
    const { config } = nodeConfig(overlay, objects, gateway);
    const gc = podSpec(gateway).containers[0];
    const ingresses = ofKind(objects, "Ingress");
    assert.equal(ingresses.length, 1);
    const rules = ingresses[0].spec.rules;
    assert.deepEqual(rules.map((r: any) => r.host), [new URL(config.publicUrl).hostname], "the Ingress host is PUBLIC_URL's");
    for (const p of rules.flatMap((r: any) => r.http.paths)) {
      const backend = p.backend.service;
      const svc = ofKind(objects, "Service").find((s) => s.metadata.name === backend.name);
      assert.ok(svc, `Ingress backend Service ${backend.name} exists`);
      assert.ok(selects(svc.spec.selector, gateway.spec.template.metadata.labels), `${backend.name} selects the gateway pods`);
      const sp = svc.spec.ports.find((x: any) => x.port === backend.port.number || x.name === backend.port.name);
      assert.ok(sp, `Ingress points at a port of ${backend.name}`);
      assert.equal(containerPort(gc, sp.targetPort ?? sp.port), config.port, "the Service's targetPort is the gateway's PORT");
    }
    if (overlay === "prod") {
      assert.ok(config.publicUrl.startsWith("https://"));
      assert.deepEqual(ingresses[0].spec.tls?.[0]?.hosts, [new URL(config.publicUrl).hostname], "TLS for the public host");
    }
  });

  test(`${overlay}: the app image and pods`, () => {
    const images = new Set([...appDeployments(objects), ...ofKind(objects, "Job")].map((o) => podSpec(o).containers[0].image));
    assert.equal(images.size, 1, "one image for every node and the Job");
    const [image] = images;
    assert.match(image, /:[\w.-]+$/);
    assert.ok(!image.endsWith(":latest"), "a pinned tag");
    for (const o of [...appDeployments(objects), ...ofKind(objects, "Job")]) {
      assert.equal(podSpec(o).securityContext?.runAsNonRoot, true, `${o.metadata.name}: non-root`);
      assert.equal(podSpec(o).containers[0].securityContext?.allowPrivilegeEscalation, false);
    }
  });
}

test("dev: StatefulSets for RabbitMQ, etcd, Redis and MariaDB, and the nodes point at them", () => {
  const { objects } = rendered.dev;
  assert.deepEqual(ofKind(objects, "StatefulSet").map((s) => s.metadata.name).sort(), ["etcd", "mariadb", "rabbitmq", "redis"]);
  for (const s of ofKind(objects, "StatefulSet")) {
    assert.ok(s.spec.volumeClaimTemplates?.length, `${s.metadata.name}: a PVC template`);
    const svc = ofKind(objects, "Service").find((x) => x.metadata.name === s.spec.serviceName);
    assert.ok(svc && svc.spec.clusterIP === "None", `${s.metadata.name}: its headless Service`);
    assert.ok(selects(svc.spec.selector, s.spec.template.metadata.labels));
  }
  const gateway = appDeployments(objects).find((d) => serviceOf(d) === "gateway")!;
  const { env } = nodeConfig("dev", objects, gateway);
  const servesAt = (host: string, port: number) => {
    const svc = ofKind(objects, "Service").find((s) => s.metadata.name === host.split(".").at(-1) || s.metadata.name === host);
    return Boolean(svc?.spec.ports.some((p: any) => p.port === port));
  };
  for (const name of ["RABBITMQ_URI", "REDIS_URL", "MYSQL_URL"]) {
    const u = new URL(env[name]);
    assert.ok(servesAt(u.hostname, Number(u.port)), `${name} points at a Service of the overlay (${u.host})`);
  }
  for (const h of env.ETCD_HOSTS.split(",")) {
    const [host, port] = h.split(":");
    // etcd-0.etcd: the pod's name under the headless Service etcd.
    assert.ok(servesAt(host.split(".")[1] ?? host, Number(port)), `ETCD_HOSTS ${h}`);
  }
  // The dependencies' passwords and the nodes' URIs agree.
  const deps = dataOf(objects.find((o) => o.kind === "Secret" && o.metadata.name === "meridian-dev-deps")!);
  const amqp = new URL(env.RABBITMQ_URI);
  assert.equal(`${amqp.username}:${amqp.password}`, `${deps.RABBITMQ_DEFAULT_USER}:${deps.RABBITMQ_DEFAULT_PASS}`);
  const mysql = new URL(env.MYSQL_URL);
  assert.equal(`${mysql.username}:${mysql.password}`, `root:${deps.MARIADB_ROOT_PASSWORD}`);
});

test("prod: external dependencies only, and no secret value committed", () => {
  const { objects, files } = rendered.prod;
  assert.deepEqual(ofKind(objects, "StatefulSet"), [], "no StatefulSets: the dependencies run elsewhere");
  // The only Secret is generated from the operator's git-ignored secrets.env; its committed
  // example has every value empty, and no committed manifest of the overlay is a Secret.
  const secrets = ofKind(objects, "Secret");
  assert.deepEqual(secrets.map((s) => s.metadata.name), ["meridian-secrets"]);
  assert.deepEqual(Object.entries(dataOf(secrets[0])).filter(([, v]) => v !== ""), [], "secrets.env.example holds names, not values");
  for (const name of Object.keys(PROD_SECRET_STAND_INS)) assert.ok(name in dataOf(secrets[0]), `secrets.env.example lists ${name}`);
  for (const f of files) if (f.endsWith(".yaml")) assert.ok(readDocs(f).every((o) => o.kind !== "Secret"), `${f}: a Secret manifest`);
  const ignore = fs.readFileSync(path.join(K8S, "overlays", "prod", ".gitignore"), "utf8");
  assert.match(ignore, /^secrets\.env$/m, "secrets.env is git-ignored");
});

test("every manifest under k8s/ is used by an overlay", () => {
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
  assert.deepEqual(all.filter((f) => !used.has(f)).map((f) => path.relative(K8S, f)), [], "files no kustomization lists");
});
