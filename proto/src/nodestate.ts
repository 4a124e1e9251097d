/**
 * The desired state of one node: what the control plane wants the node's
 * worker to have in its BPF maps. Version meshlane.io/v1alpha3 (v1alpha2
 * had no pod uid and a boolean appSockets; a worker refuses other versions
 * and keeps the maps it has, so control plane and workers are upgraded
 * together).
 *
 * A NodeState is a whole value, not a patch: applying it twice is a no-op,
 * and the worker derives every map entry from it alone. It grows with the
 * node's pods, never with their square: sidecar -> sidecar is accelerated
 * between any two endpoints of the node that both have `accelerate: true`,
 * so no list of pairs is needed (v1alpha1 listed every ordered pair, 1.4-1.8
 * MB for 110 pods, over NATS' default max_payload).
 */

export const NODE_STATE_API_VERSION = 'meshlane.io/v1alpha3';
export const NODE_STATE_KIND = 'NodeState';

/** Port list or "*" (every port), as in Istio's include annotations. */
export type PortSelector = '*' | number[];
/** CIDR list or "*" (every destination). */
export type CidrSelector = '*' | string[];

export interface Switches {
  /** Global kill switch: false stops every new pair and sends live ones back to TCP. */
  enabled: boolean;
  /**
   * Master switch for the hops that end in an application socket (app ->
   * sidecar, sidecar -> app), which each endpoint must also allow.
   * Envoy -> Envoy is accelerated either way.
   */
  appSockets: boolean;
  /**
   * Flow control: unread bytes a redirect may queue at a peer socket before
   * that direction is held on TCP (0 = no limit).
   */
  maxQueuedBytes: number;
}

export interface InboundCapture {
  /** traffic.sidecar.istio.io/includeInboundPorts; "*" by default. */
  includePorts: PortSelector;
  /** traffic.sidecar.istio.io/excludeInboundPorts plus Istio's own and the status port. */
  excludePorts: number[];
}

export interface OutboundCapture {
  /** traffic.sidecar.istio.io/excludeOutboundPorts. */
  excludePorts: number[];
  /** traffic.sidecar.istio.io/includeOutboundIPRanges; "*" by default. */
  includeCidrs: CidrSelector;
  /** traffic.sidecar.istio.io/excludeOutboundIPRanges. */
  excludeCidrs: string[];
}

/**
 * Whether the pod's app sockets (app -> sidecar, sidecar -> app) may join:
 * "auto" (no annotation) lets the kernel side decide per socket, joining
 * only sockets it can prove safe on this kernel (see README, "app sockets");
 * "always" and "never" are the meshlane.io/app-sockets annotation's
 * override either way.
 */
export type AppSocketsPolicy = 'auto' | 'always' | 'never';
export const APP_SOCKETS_POLICIES: readonly AppSocketsPolicy[] = ['auto', 'always', 'never'];

export interface Endpoint {
  /** namespace/name of the pod; unique in a NodeState. */
  pod: string;
  /**
   * metadata.uid of the pod. The worker binds the pod's map entries to the
   * pod's own cgroup (kubelet names it after this uid), so an IP inherited
   * by another pod is never governed by the old pod's entry.
   */
  uid: string;
  /** Pod IPs (one per family). */
  ips: string[];
  /** runAsUser of the istio-proxy container. */
  proxyUid: number;
  /**
   * false when opted out or not yet synced: kept so counters can say why.
   * Two endpoints that both accelerate form an allowed sidecar pair.
   */
  accelerate: boolean;
  appSockets: AppSocketsPolicy;
  /** Envoy's outbound capture port (15001). */
  outboundPort: number;
  /** Envoy's inbound capture port (15006). */
  inboundPort: number;
  inbound: InboundCapture;
  outbound: OutboundCapture;
}

export interface NodeState {
  apiVersion: typeof NODE_STATE_API_VERSION;
  kind: typeof NODE_STATE_KIND;
  node: string;
  /** Increases with every change of this node's state. */
  generation: number;
  switches: Switches;
  endpoints: Endpoint[];
}

export const DEFAULT_SWITCHES: Switches = { enabled: true, appSockets: true, maxQueuedBytes: 16 << 20 };

/**
 * Bounds of a NodeState, enforced by the validator on every message: a
 * state within them stays far under NATS' default 1 MiB max_payload (250
 * endpoints with long names and some exclusions are about 120 KB).
 */
/**
 * The largest NodeState, delta or snapshot message the bus takes (NATS'
 * default max_payload). A state within LIMITS of realistic size is a tenth
 * of it; anything larger is refused loudly by the control plane.
 */
export const MAX_STATE_BYTES = 1 << 20;

export const LIMITS = {
  /** kubelet's --max-pods is 110 by default; large nodes run 250 to 500. */
  endpoints: 1024,
  /** One per family. */
  ipsPerEndpoint: 2,
  portsPerList: 1024,
  cidrsPerList: 256,
  /** DNS-1123 subdomain (node and pod names). */
  nameLength: 253,
  /** DNS-1123 label (namespaces). */
  namespaceLength: 63,
} as const;
