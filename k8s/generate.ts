/**
 * `npm run k8s:gen` (#18): k8s/base/<service>.yaml of the services that run as plain
 * Moleculer nodes (no HTTP listener but the internal health/metrics one), written from ONE
 * template and the short per-service list below: the Deployment, its HPA, its PDB and its
 * NetworkPolicy. What differs between services is only what the list says (replicas,
 * resources, the Secret keys each reads, extra egress). The gateway and the gRPC edge (their
 * own listeners, Services, probes and ingress rules) stay hand-written in gateway.yaml and
 * grpc.yaml. `npm run k8s:gen -- --check` (and the manifest test) fails when a file is not
 * what the list gives, so an edit goes to the list, not to a copy.
 */
import fs from "node:fs";
import path from "node:path";

export interface NodeService {
  name: string;
  /** The file's first comment: what the service is, and what sets its size. */
  about: string;
  /** The HPA's floor (also the Deployment's `replicas`) and ceiling; 2+ replicas spread over nodes. */
  replicas: [min: number, max: number];
  requests: { cpu: string; memory: string };
  limits: { cpu: string; memory: string };
  /** Whether it owns a MariaDB database (MYSQL_URL, egress to 3306). */
  database: boolean;
  /** Secret keys beyond the transporter's, the cacher's, etcd's password and MYSQL_URL. */
  secrets?: { key: string; optional?: boolean }[];
  /** What the comment over the Secret keys says this service reads besides the common ones. */
  secretsAbout: string;
  /** A ConfigMap of its own (`meridian-<name>-config`), loaded after meridian-config. */
  ownConfig?: boolean;
  /** What this service uses Redis for. */
  redis?: string;
  /** Egress rules besides DNS, RabbitMQ, etcd, Redis and its database (YAML, 4-space indent). */
  egress?: string;
}

export const NODE_SERVICES: NodeService[] = [
  {
    name: "user",
    about: "accounts and tokens; argon2id hashing (19 MiB, CPU-bound per login) sets its size.",
    replicas: [2, 6],
    requests: { cpu: "200m", memory: "256Mi" },
    limits: { cpu: '"1"', memory: "512Mi" },
    database: true,
    secrets: [{ key: "JWT_SECRET" }, { key: "ADMIN_PASSWORD", optional: true }],
    secretsAbout: "its database, the token secret and the first admin's password",
    ownConfig: true,
    redis: "cacher, token revocations and request limits",
  },
  {
    name: "product",
    about: "catalog, stock and reservations.",
    replicas: [2, 6],
    requests: { cpu: "100m", memory: "192Mi" },
    limits: { cpu: '"1"', memory: "512Mi" },
    database: true,
    secretsAbout: "its database",
  },
  {
    name: "search",
    about:
      "every replica holds the whole catalog in its in-process index (docs/catalog.md: the documents plus ~110 MB of index at 100,000 products) unless ELASTIC_SEARCH_NODE is set.",
    replicas: [2, 4],
    requests: { cpu: "200m", memory: "512Mi" },
    limits: { cpu: '"1"', memory: "1Gi" },
    database: false,
    secrets: [{ key: "ELASTIC_SEARCH_PASSWORD", optional: true }],
    secretsAbout: "Elasticsearch's password",
    ownConfig: true,
    egress: `    # Elasticsearch (ELASTIC_SEARCH_NODE), when set.
    - ports:
        - { protocol: TCP, port: 9200 }
`,
  },
  {
    name: "notification",
    about: "in-app notifications and e-mail.",
    replicas: [1, 3],
    requests: { cpu: "100m", memory: "192Mi" },
    limits: { cpu: '"500m"', memory: "384Mi" },
    database: true,
    secrets: [{ key: "SMTP_URL", optional: true }],
    secretsAbout: "its database and SMTP",
    egress: `    # SMTP (SMTP_URL): submission, SMTPS and plain SMTP.
    - ports:
        - { protocol: TCP, port: 25 }
        - { protocol: TCP, port: 465 }
        - { protocol: TCP, port: 587 }
`,
  },
  {
    name: "cart",
    about: "carts; prices read from the product service.",
    replicas: [1, 4],
    requests: { cpu: "100m", memory: "192Mi" },
    limits: { cpu: '"500m"', memory: "384Mi" },
    database: true,
    secretsAbout: "its database",
  },
  {
    name: "payment",
    about: "payments, platform callbacks (through the gateway) and reconciliation.",
    replicas: [2, 4],
    requests: { cpu: "100m", memory: "192Mi" },
    limits: { cpu: '"1"', memory: "512Mi" },
    database: true,
    secrets: [
      "SANDBOX_PAY_PRIVATE_KEY",
      "SANDBOX_PAY_PUBLIC_KEY",
      "ALIPAY_APP_ID",
      "ALIPAY_SELLER_ID",
      "ALIPAY_PRIVATE_KEY",
      "ALIPAY_PUBLIC_KEY",
      "ALIPAY_GATEWAY",
      "WECHATPAY_MCH_ID",
      "WECHATPAY_APP_ID",
      "WECHATPAY_SERIAL_NO",
      "WECHATPAY_PRIVATE_KEY",
      "WECHATPAY_API_V3_KEY",
      "WECHATPAY_PLATFORM_CERTS",
      "WECHATPAY_BASE_URL",
    ].map((key) => ({ key, optional: true })),
    secretsAbout: "its database and the payment platforms' variables",
    egress: `    # The payment platforms' APIs (Alipay, WeChat Pay) over HTTPS; also PUBLIC_URL when it
    # resolves outside the cluster (the sandbox notifier's callback).
    - ports:
        - { protocol: TCP, port: 443 }
    # The sandbox notifier's callback when PUBLIC_URL resolves to the gateway pods.
    - to:
        - podSelector:
            matchLabels:
              app.kubernetes.io/name: meridian
              app.kubernetes.io/component: gateway
      ports:
        - { protocol: TCP, port: 3000 }
`,
  },
  {
    name: "order",
    about: "orders and their state machine.",
    replicas: [2, 6],
    requests: { cpu: "100m", memory: "192Mi" },
    limits: { cpu: '"1"', memory: "512Mi" },
    database: true,
    secretsAbout: "its database",
  },
  {
    name: "recommendation",
    about: "recommendations from order events and preferences.",
    replicas: [1, 3],
    requests: { cpu: "100m", memory: "256Mi" },
    limits: { cpu: '"1"', memory: "768Mi" },
    database: true,
    secretsAbout: "its database",
  },
];

/** `text` as `#` comment lines at `indent`, wrapped before column 100. */
function comment(indent: string, text: string): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && indent.length + 2 + line.length + 1 + word.length > 100) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(line);
  return lines.map((l) => `${indent}# ${l}\n`).join("");
}

const secretRef = (key: string, optional?: boolean) => `            - name: ${key}
              valueFrom:
                secretKeyRef: { name: meridian-secrets, key: ${key}${optional ? ", optional: true" : ""} }
`;

const labels = (s: string, indent: string) => `${indent}app.kubernetes.io/name: meridian
${indent}app.kubernetes.io/component: ${s}
`;

export function nodeServiceYaml(s: NodeService): string {
  const [min, max] = s.replicas;
  const spread =
    min >= 2
      ? `      # Replicas on different nodes where possible, so one node's loss keeps the service up.
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
${labels(s.name, "              ")}`
      : "";
  const secrets = [...(s.database ? [{ key: "MYSQL_URL" }] : []), ...(s.secrets ?? [])];
  return `# Generated by \`npm run k8s:gen\` from k8s/generate.ts (NODE_SERVICES): edit the list there.
${comment("", `${s.name}: ${s.about}`)}apiVersion: apps/v1
kind: Deployment
metadata:
  name: meridian-${s.name}
  labels:
${labels(s.name, "    ")}spec:
  # The HPA's floor; kubectl apply does not reset what the HPA set while this value is unchanged.
  replicas: ${min}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
${labels(s.name, "      ")}  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      # Prometheus: GET /metrics on METRICS_PORT (Moleculer's metrics and the business counters).
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "3001"
        prometheus.io/path: /metrics
      labels:
${labels(s.name, "        ")}    spec:
      # Moleculer's own drain: the node first announces it takes no more calls (stopDelay
      # 0.1 s), in-flight calls get up to tracking.shutdownTimeout = 10 s at the broker and
      # 10 s more per service, then the services, the transporter and the cache close; plus
      # a margin. No preStop sleep: no Service sends traffic here, calls come over RabbitMQ.
      terminationGracePeriodSeconds: 35
${spread}      securityContext:
        runAsNonRoot: true
        runAsUser: 1000
        runAsGroup: 1000
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: meridian
          image: meridian
          imagePullPolicy: IfNotPresent
          env:
            - name: SERVICES
              value: ${s.name}
            - name: NODE_ID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
${comment("            ", `Only the Secret keys this service reads, by name (SECRET_KEYS in k8s/manifests.unit.spec.ts): the transporter, the cacher, etcd's password if any; here also ${s.secretsAbout}. optional: true where the key may be absent from the Secret.`)}${secretRef("RABBITMQ_URI")}${secretRef("REDIS_URL")}${secretRef("ETCD_PASSWORD", true)}${secrets.map((k) => secretRef(k.key, k.optional)).join("")}          envFrom:
            - configMapRef:
                name: meridian-config
${
  s.ownConfig
    ? `            - configMapRef:
                name: meridian-${s.name}-config
`
    : ""
}          ports:
            - name: metrics
              containerPort: 3001  # METRICS_PORT in meridian-config
          # The internal listener of lib/health-server.ts (METRICS_PORT; a node without the
          # gateway serves no other HTTP). Readiness gates rollouts (maxUnavailable 0) and the PDB.
          # Live from the start; the startup probe gives the start up to 2 minutes.
          startupProbe:
            httpGet:
              path: /health/live
              port: metrics
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /health/live
              port: metrics
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          # Each readiness check has a 2 s deadline (lib/readiness.ts), hence the 3 s timeout.
          readinessProbe:
            httpGet:
              path: /health/ready
              port: metrics
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          resources:
            requests:
              cpu: ${s.requests.cpu}
              memory: ${s.requests.memory}
            limits:
              cpu: ${s.limits.cpu}
              memory: ${s.limits.memory}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        # DATA_DIR: the only writable place.
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: meridian-${s.name}
  labels:
${labels(s.name, "    ")}spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: meridian-${s.name}
  minReplicas: ${min}
  maxReplicas: ${max}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: 70
---
# One pod at a time may be evicted (a node drain): never blocks a drain, even at 1 replica.
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: meridian-${s.name}
  labels:
${labels(s.name, "    ")}spec:
  maxUnavailable: 1
  selector:
    matchLabels:
${labels(s.name, "      ")}---
${comment("", `${s.name}'s traffic, on top of meridian-default-deny (networkpolicy.yaml). Needs a CNI that enforces NetworkPolicies. Egress by port only: in prod the dependencies run outside the cluster (add ipBlocks to narrow them); the dev overlay narrows each to its StatefulSet.`)}apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: meridian-${s.name}
  labels:
${labels(s.name, "    ")}spec:
  podSelector:
    matchLabels:
${labels(s.name, "      ")}  policyTypes: [Ingress, Egress]
  ingress:
    # METRICS_PORT (/metrics, the health routes) from the monitoring namespace only (Prometheus;
    # change the name to where yours runs). Kubelet probes are not subject to NetworkPolicies
    # on most CNIs. Nothing else calls this node: calls come over RabbitMQ.
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: monitoring
      ports:
        - { protocol: TCP, port: 3001 }
  egress:
    # DNS: the cluster's resolver in kube-system.
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: kube-system
      ports:
        - { protocol: UDP, port: 53 }
        - { protocol: TCP, port: 53 }
    # RabbitMQ: AMQP, and AMQPS for a managed broker.
    - ports:
        - { protocol: TCP, port: 5672 }
        - { protocol: TCP, port: 5671 }
    # etcd (discovery).
    - ports:
        - { protocol: TCP, port: 2379 }
    # Redis (${s.redis ?? "cacher"}).
    - ports:
        - { protocol: TCP, port: 6379 }
${
  s.database
    ? `    # MariaDB/MySQL: this service's database.
    - ports:
        - { protocol: TCP, port: 3306 }
`
    : ""
}${s.egress ?? ""}`;
}

export const BASE_DIR = path.join(__dirname, "base");

/** The files that differ from what the list gives (empty: current). */
export function staleNodeServices(dir = BASE_DIR): string[] {
  return NODE_SERVICES.filter((s) => {
    const file = path.join(dir, `${s.name}.yaml`);
    return !fs.existsSync(file) || fs.readFileSync(file, "utf8") !== nodeServiceYaml(s);
  }).map((s) => `k8s/base/${s.name}.yaml`);
}

if (require.main === module) {
  if (process.argv.includes("--check")) {
    const stale = staleNodeServices();
    if (stale.length) {
      process.stderr.write(`not what k8s/generate.ts gives (run npm run k8s:gen): ${stale.join(", ")}\n`);
      process.exit(1);
    }
    process.stdout.write(`k8s/base: the ${NODE_SERVICES.length} node services' manifests are current\n`);
  } else {
    for (const s of NODE_SERVICES) fs.writeFileSync(path.join(BASE_DIR, `${s.name}.yaml`), nodeServiceYaml(s));
    process.stdout.write(`k8s/base: wrote ${NODE_SERVICES.map((s) => `${s.name}.yaml`).join(", ")}\n`);
  }
}
