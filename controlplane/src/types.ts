/**
 * The contracts between the control plane's parts: what pod classification
 * produces, and what the istiod source reports. The model joins them; the
 * reconciler turns the model into one NodeState per node.
 */
import type { AppSocketsPolicy, PortSelector, CidrSelector } from '@meshlane/proto';

/** Why a pod's sockets may not be accelerated; absent when they may. */
export type Ineligible =
  | 'not-meshed' // no istio-proxy sidecar injected
  | 'host-network' // shares the node's network namespace
  | 'ambient' // ambient.istio.io/redirection: enabled (ztunnel, no sidecar)
  | 'interception-mode' // not plain REDIRECT capture: TPROXY, NONE, excluded interfaces, proxy as root, no sign of capture
  | 'capture-unreadable' // a capture annotation or istio-iptables arg that cannot be read the way Istio reads it
  | 'not-running' // phase not Running, or being deleted
  | 'no-ip' // no pod IP yet
  | 'no-uid'; // metadata.uid missing or not RFC 4122 text: its cgroup cannot be found

/**
 * A label, annotation, container arg or env value a verdict rests on, so
 * that an operator is told exactly what to look at.
 */
export interface Setting {
  /** Whose: the pod's or its namespace's metadata, or one of the pod's containers. */
  on: 'pod' | 'namespace' | 'container';
  kind: 'label' | 'annotation' | 'arg' | 'env' | 'field';
  /** The label/annotation key, the arg ("-d"), the env name, or the field's path ("spec.hostNetwork"). */
  name: string;
  value: string;
  /** The container, when `on` is 'container'. */
  container?: string;
}

/** Why classification refused a pod, in words, and the setting it rests on when there is one. */
export interface Refusal {
  detail: string;
  setting?: Setting;
}

/** What the datapath needs to know about one pod, read from its manifest alone. */
export interface PodClass {
  /** namespace/name */
  key: string;
  namespace: string;
  name: string;
  /** spec.nodeName; undefined while unscheduled. */
  node: string | undefined;
  /** status.podIPs (dual-stack) or status.podIP. */
  ips: string[];
  ineligible?: Ineligible;
  /** Why it is ineligible (present exactly when `ineligible` is). */
  refusal?: Refusal;
  /** meshlane.io/accelerate: "false" as annotation or label on the pod. */
  optedOut: boolean;
  /** The label or annotation that opts it out (present exactly when `optedOut` is, from classifyPod). */
  optOut?: Setting;
  /** metadata.uid: the worker finds the pod's cgroup by it. */
  uid: string;
  /** meshlane.io/app-sockets: "true" always, "false" never, absent: auto. */
  appSockets: AppSocketsPolicy;
  /** istio-proxy securityContext.runAsUser, 1337 by default. */
  proxyUid: number;
  /** Istio's proxy id for this pod, as syncz reports it: "<name>.<namespace>". */
  proxyId: string;
  outboundPort: number;
  inboundPort: number;
  inbound: { includePorts: PortSelector; excludePorts: number[] };
  outbound: { excludePorts: number[]; includeCidrs: CidrSelector; excludeCidrs: string[] };
}

/** A proxy as istiod sees it (istio.io/debug/syncz). */
export interface ProxySync {
  /** "<pod name>.<namespace>" */
  proxyId: string;
  /** Connected and every subscribed type ACKed at the version istiod sent. */
  synced: boolean;
}

/** What the istiod connection reports; every callback carries full state, not deltas. */
export interface IstiodSource {
  start(): void;
  stop(): Promise<void>;
  /** Proxies connected to istiod and whether each is synced. */
  onProxies(cb: (proxies: ReadonlyMap<string, ProxySync>) => void): void;
  /** Pod keys (namespace/name) that istiod serves as ambient workloads. */
  onAmbient(cb: (pods: ReadonlySet<string>) => void): void;
  /** true once istiod answered at least once since the last (re)connect. */
  connected(): boolean;
}

/**
 * What the control plane decided about one pod, the first reason that
 * applies, in this order: classification's (host-network, ambient,
 * not-meshed, interception-mode, capture-unreadable, not-running, no-ip,
 * no-uid), then the model's: ambient (istiod), ip-conflict, opted-out-pod,
 * opted-out-namespace, not-synced, switched-off; else accelerated.
 */
export type Reason =
  | 'accelerated'
  | Ineligible
  | 'ip-conflict' // another pod of the node claims one of its IPs: neither is an endpoint
  | 'opted-out-pod' // meshlane.io/accelerate on the pod
  | 'opted-out-namespace' // meshlane.io/accelerate on its namespace
  | 'not-synced' // the sync gate is on and istiod does not report its sidecar connected and synced
  | 'switched-off'; // the global kill switch is off (--disable)

export const REASONS: readonly Reason[] = [
  'accelerated',
  'host-network',
  'ambient',
  'not-meshed',
  'interception-mode',
  'capture-unreadable',
  'not-running',
  'no-ip',
  'no-uid',
  'ip-conflict',
  'opted-out-pod',
  'opted-out-namespace',
  'not-synced',
  'switched-off',
];

export interface Verdict {
  reason: Reason;
  /** One line for an operator: what exactly, with the value. */
  detail: string;
  setting?: Setting;
  /** In its node's state (reasons from ip-conflict on are endpoints, except ip-conflict itself). */
  endpoint: boolean;
  /** Its endpoint has accelerate: true (still subject to the node's switches). */
  accelerate: boolean;
}
