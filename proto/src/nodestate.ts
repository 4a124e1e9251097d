/**
 * The desired state of one node: what the control plane wants the node's
 * worker to have in its BPF maps. Version meshlane.io/v1alpha1.
 *
 * A NodeState is a whole value, not a patch: applying it twice is a no-op,
 * and the worker derives every map entry from it alone.
 */

export const NODE_STATE_API_VERSION = 'meshlane.io/v1alpha1';
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

export interface Endpoint {
  /** namespace/name of the pod; unique in a NodeState. */
  pod: string;
  /** Pod IPs (one per family). */
  ips: string[];
  /** runAsUser of the istio-proxy container. */
  proxyUid: number;
  /** false when opted out or not yet synced: kept so counters can say why. */
  accelerate: boolean;
  /**
   * The app reads its sockets non-blocking (epoll, Go, Node, Netty...), so
   * the app <-> sidecar hops may be accelerated too. Blocking readers can see
   * a spurious EAGAIN from the kernel's sockmap receive path; see README.
   */
  appSockets: boolean;
  /** Envoy's outbound capture port (15001). */
  outboundPort: number;
  /** Envoy's inbound capture port (15006). */
  inboundPort: number;
  inbound: InboundCapture;
  outbound: OutboundCapture;
}

/** An Envoy -> Envoy pair of this node that may be accelerated. */
export interface Pair {
  client: string;
  server: string;
}

export interface NodeState {
  apiVersion: typeof NODE_STATE_API_VERSION;
  kind: typeof NODE_STATE_KIND;
  node: string;
  /** Increases with every change of this node's state. */
  generation: number;
  switches: Switches;
  endpoints: Endpoint[];
  pairs: Pair[];
}

export const DEFAULT_SWITCHES: Switches = { enabled: true, appSockets: true, maxQueuedBytes: 16 << 20 };
