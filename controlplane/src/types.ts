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
  | 'interception-mode' // sidecar.istio.io/interceptionMode NONE or TPROXY
  | 'not-running' // phase not Running, or being deleted
  | 'no-ip' // no pod IP yet
  | 'no-uid'; // metadata.uid missing or not RFC 4122 text: its cgroup cannot be found

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
  /** meshlane.io/accelerate: "false" as annotation or label on the pod. */
  optedOut: boolean;
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
