/**
 * What the informers keep of each object: a projection, not the object.
 *
 * A real injected pod is ~14-17 KB of JSON (about half of it managedFields) and ~40 KB once
 * deserialized by the client library; classification reads ~1-2 KB of it. The informers cache, and
 * hand to consumers, plain objects typed as V1Pod / V1Node / V1Namespace that hold only the fields
 * below (all others absent, as optional fields are in the model types). Dates are Date objects, as
 * ObjectSerializer would make them, so listed and watched objects have one shape.
 *
 * Pods keep every field controlplane/src/classify reads:
 *   metadata: name, namespace, uid, resourceVersion, creationTimestamp, deletionTimestamp, labels,
 *             annotations (without kubectl's last-applied-configuration, a copy of the whole object);
 *   spec:     nodeName, hostNetwork, securityContext.{runAsUser,runAsGroup,runAsNonRoot},
 *             containers[] and initContainers[] with name, command, args, env, restartPolicy,
 *             securityContext.{runAsUser,runAsGroup,runAsNonRoot};
 *             env only has the variables classification reads (ISTIO_META_INTERCEPTION_MODE and the
 *             istio-iptables flag variables, CLASSIFIED_ENV): a sidecar's env is otherwise ~40% of
 *             what is left of a pod; each keeps name and value, and a valueFrom only as an empty
 *             `{}` marker (classification only asks whether a value is literal);
 *   status:   phase, podIP, podIPs[].ip, hostIP.
 * Dropped: managedFields, ownerReferences, finalizers, generateName, volumes, tolerations, affinity,
 * images, ports, probes, resources, volumeMounts, conditions, container statuses, ...
 * Anything new classification reads must be added here, to POD_SELECTION below, and to the
 * projection test (test/controlplane/kube-projection.test.ts), which checks that classifying the
 * projection gives the same result as classifying the full pod.
 *
 * Nodes keep metadata (as above) plus spec.{podCIDR,podCIDRs,providerID,unschedulable} and
 * status.addresses (a node's status.images alone can be tens of KB). Namespaces keep metadata and
 * status.phase.
 */
import type {
  V1Container,
  V1EnvVar,
  V1Namespace,
  V1Node,
  V1NodeAddress,
  V1ObjectMeta,
  V1Pod,
  V1PodIP,
  V1SecurityContext,
} from '@kubernetes/client-node';
import { IPTABLES_FLAGS } from '../classify/iptables-args.js';
import { where, type Selection } from './json-select.js';

/**
 * Container env variables classification reads: the proxy's ISTIO_META_INTERCEPTION_MODE
 * (classify.ts) and, on istio-init / istio-validation, the variables istio-iptables binds to its
 * flags (iptables-args.ts readIptablesSettings: the long name upper-cased, "-" -> "_").
 */
export const CLASSIFIED_ENV: ReadonlySet<string> = new Set([
  'ISTIO_META_INTERCEPTION_MODE',
  ...Object.values(IPTABLES_FLAGS).map((f) => f.long.toUpperCase().replaceAll('-', '_')),
]);

type Json = Record<string, unknown>;

/** Annotations never kept: kubectl's copy of the whole applied manifest. */
const DROPPED_ANNOTATIONS: ReadonlySet<string> = new Set(['kubectl.kubernetes.io/last-applied-configuration']);

function obj(v: unknown): Json | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

function bool(v: unknown): boolean | undefined {
  return typeof v === 'boolean' ? v : undefined;
}

function strList(v: unknown): string[] | undefined {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : undefined;
}

function strMap(v: unknown, drop?: ReadonlySet<string>): Record<string, string> | undefined {
  const o = obj(v);
  if (!o) return undefined;
  const out: Record<string, string> = {};
  for (const k in o) {
    const x = o[k];
    if (typeof x === 'string' && !drop?.has(k)) out[k] = x;
  }
  return out;
}

function date(v: unknown): Date | undefined {
  if (v instanceof Date) return v;
  return typeof v === 'string' ? new Date(v) : undefined;
}

// Absent fields stay absent (not present-but-undefined). Each assignment is written out, not done
// by a helper: one shared `target[key] = value` site sees every shape and key, and is several
// times slower for it (this runs for every object of every list).

/** The object's metadata; undefined when it has no name (not a usable object). */
function projectMeta(v: unknown): V1ObjectMeta | undefined {
  const m = obj(v);
  const name = str(m?.name);
  if (!m || name === undefined) return undefined;
  const out: V1ObjectMeta = { name };
  const namespace = str(m.namespace);
  if (namespace !== undefined) out.namespace = namespace;
  const uid = str(m.uid);
  if (uid !== undefined) out.uid = uid;
  const resourceVersion = str(m.resourceVersion);
  if (resourceVersion !== undefined) out.resourceVersion = resourceVersion;
  const creationTimestamp = date(m.creationTimestamp);
  if (creationTimestamp !== undefined) out.creationTimestamp = creationTimestamp;
  const deletionTimestamp = date(m.deletionTimestamp);
  if (deletionTimestamp !== undefined) out.deletionTimestamp = deletionTimestamp;
  const labels = strMap(m.labels);
  if (labels !== undefined) out.labels = labels;
  const annotations = strMap(m.annotations, DROPPED_ANNOTATIONS);
  if (annotations !== undefined) out.annotations = annotations;
  return out;
}

function projectSecurityContext(v: unknown): V1SecurityContext | undefined {
  const s = obj(v);
  if (!s) return undefined;
  const out: V1SecurityContext = {};
  const runAsUser = num(s.runAsUser);
  if (runAsUser !== undefined) out.runAsUser = runAsUser;
  const runAsGroup = num(s.runAsGroup);
  if (runAsGroup !== undefined) out.runAsGroup = runAsGroup;
  const runAsNonRoot = bool(s.runAsNonRoot);
  if (runAsNonRoot !== undefined) out.runAsNonRoot = runAsNonRoot;
  return out;
}

function projectEnv(v: unknown): V1EnvVar[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: V1EnvVar[] = [];
  for (const e of v) {
    const o = obj(e);
    const name = str(o?.name);
    if (!o || name === undefined || !CLASSIFIED_ENV.has(name)) continue;
    const x: V1EnvVar = { name };
    const value = str(o.value);
    if (value !== undefined) x.value = value;
    // Only "is it literal" matters downstream; the reference itself (fieldRef, secretKeyRef, ...) is dropped.
    if (o.valueFrom !== undefined && o.valueFrom !== null) x.valueFrom = {};
    out.push(x);
  }
  return out;
}

function projectContainers(v: unknown): V1Container[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: V1Container[] = [];
  for (const c of v) {
    const o = obj(c);
    const name = str(o?.name);
    if (!o || name === undefined) continue;
    const x: V1Container = { name };
    const command = strList(o.command);
    if (command !== undefined) x.command = command;
    const args = strList(o.args);
    if (args !== undefined) x.args = args;
    const env = projectEnv(o.env);
    if (env !== undefined) x.env = env;
    const restartPolicy = str(o.restartPolicy);
    if (restartPolicy !== undefined) x.restartPolicy = restartPolicy;
    const securityContext = projectSecurityContext(o.securityContext);
    if (securityContext !== undefined) x.securityContext = securityContext;
    out.push(x);
  }
  return out;
}

function projectPodIps(v: unknown): V1PodIP[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: V1PodIP[] = [];
  for (const p of v) {
    const ip = str(obj(p)?.ip);
    if (ip !== undefined) out.push({ ip });
  }
  return out;
}

/** The projection of a raw (JSON) or already projected pod; undefined when it has no metadata.name. */
export function projectPod(raw: unknown): V1Pod | undefined {
  const o = obj(raw);
  const metadata = projectMeta(o?.metadata);
  if (!o || !metadata) return undefined;
  const s = obj(o.spec);
  const spec: NonNullable<V1Pod['spec']> = { containers: projectContainers(s?.containers) ?? [] };
  if (s) {
    const nodeName = str(s.nodeName);
    if (nodeName !== undefined) spec.nodeName = nodeName;
    const hostNetwork = bool(s.hostNetwork);
    if (hostNetwork !== undefined) spec.hostNetwork = hostNetwork;
    const sc = projectSecurityContext(s.securityContext);
    if (sc !== undefined) spec.securityContext = sc;
    const initContainers = projectContainers(s.initContainers);
    if (initContainers !== undefined) spec.initContainers = initContainers;
  }
  const pod: V1Pod = { metadata, spec };
  const st = obj(o.status);
  if (st) {
    const status: NonNullable<V1Pod['status']> = {};
    const phase = str(st.phase);
    if (phase !== undefined) status.phase = phase;
    const podIP = str(st.podIP);
    if (podIP !== undefined) status.podIP = podIP;
    const podIPs = projectPodIps(st.podIPs);
    if (podIPs !== undefined) status.podIPs = podIPs;
    const hostIP = str(st.hostIP);
    if (hostIP !== undefined) status.hostIP = hostIP;
    pod.status = status;
  }
  return pod;
}

export function projectNode(raw: unknown): V1Node | undefined {
  const o = obj(raw);
  const metadata = projectMeta(o?.metadata);
  if (!o || !metadata) return undefined;
  const node: V1Node = { metadata };
  const s = obj(o.spec);
  if (s) {
    const spec: NonNullable<V1Node['spec']> = {};
    const podCIDR = str(s.podCIDR);
    if (podCIDR !== undefined) spec.podCIDR = podCIDR;
    const podCIDRs = strList(s.podCIDRs);
    if (podCIDRs !== undefined) spec.podCIDRs = podCIDRs;
    const providerID = str(s.providerID);
    if (providerID !== undefined) spec.providerID = providerID;
    const unschedulable = bool(s.unschedulable);
    if (unschedulable !== undefined) spec.unschedulable = unschedulable;
    node.spec = spec;
  }
  const st = obj(o.status);
  if (st && Array.isArray(st.addresses)) {
    const addresses: V1NodeAddress[] = [];
    for (const a of st.addresses) {
      const ao = obj(a);
      const type = str(ao?.type);
      const address = str(ao?.address);
      if (type !== undefined && address !== undefined) addresses.push({ type, address });
    }
    node.status = { addresses };
  }
  return node;
}

export function projectNamespace(raw: unknown): V1Namespace | undefined {
  const o = obj(raw);
  const metadata = projectMeta(o?.metadata);
  if (!o || !metadata) return undefined;
  const ns: V1Namespace = { metadata };
  const phase = str(obj(o.status)?.phase);
  if (phase !== undefined) ns.status = { phase };
  return ns;
}

// ------------------------------------------------------------------ byte-level selections
// What a list page keeps before JSON.parse (see json-select.ts). Each keeps at least what the
// projector above reads, so projecting the selection equals projecting the whole object.

const META: Selection = {
  name: true,
  namespace: true,
  uid: true,
  resourceVersion: true,
  creationTimestamp: true,
  deletionTimestamp: true,
  labels: true,
  annotations: true,
};

const SECURITY_CONTEXT: Selection = { runAsUser: true, runAsGroup: true, runAsNonRoot: true };

const CONTAINER: Selection = {
  name: true,
  command: true,
  args: true,
  env: where({ name: true, value: true, valueFrom: {} }, 'name', CLASSIFIED_ENV),
  restartPolicy: true,
  securityContext: SECURITY_CONTEXT,
};

export const POD_SELECTION: Selection = {
  metadata: META,
  spec: { nodeName: true, hostNetwork: true, securityContext: SECURITY_CONTEXT, containers: CONTAINER, initContainers: CONTAINER },
  status: { phase: true, podIP: true, podIPs: { ip: true }, hostIP: true },
};

export const NODE_SELECTION: Selection = {
  metadata: META,
  spec: { podCIDR: true, podCIDRs: true, providerID: true, unschedulable: true },
  status: { addresses: { type: true, address: true } },
};

export const NAMESPACE_SELECTION: Selection = { metadata: META, status: { phase: true } };

/** A list response keeps its kind and list metadata, and each item by `item`. */
export function listSelection(item: Selection): Selection {
  return { kind: true, apiVersion: true, metadata: true, items: item };
}

/** List-page selections by resource, so that a worker thread can find one by name. */
export const LIST_SELECTIONS = {
  pods: listSelection(POD_SELECTION),
  nodes: listSelection(NODE_SELECTION),
  namespaces: listSelection(NAMESPACE_SELECTION),
} as const satisfies Record<string, Selection>;

export type ListSelectionName = keyof typeof LIST_SELECTIONS;
