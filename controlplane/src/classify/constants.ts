/**
 * Names and defaults pod classification reads, as Istio spells and applies
 * them (istio/api annotation names; istio-iptables and istio-cni defaults).
 */

export const ANN = {
  /** Written by the injector; its presence marks an injected pod. */
  sidecarStatus: 'sidecar.istio.io/status',
  interceptionMode: 'sidecar.istio.io/interceptionMode',
  statusPort: 'status.sidecar.istio.io/port',
  includeInboundPorts: 'traffic.sidecar.istio.io/includeInboundPorts',
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
  includeOutboundPorts: 'traffic.sidecar.istio.io/includeOutboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  includeOutboundIPRanges: 'traffic.sidecar.istio.io/includeOutboundIPRanges',
  excludeOutboundIPRanges: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  excludeInterfaces: 'traffic.sidecar.istio.io/excludeInterfaces',
  ambientRedirection: 'ambient.istio.io/redirection',
  accelerate: 'meshlane.io/accelerate',
  appSockets: 'meshlane.io/app-sockets',
} as const;

export const PROXY_CONTAINER = 'istio-proxy';
/** Runs istio-iptables and applies the rules (no istio-cni). */
export const INIT_CONTAINER = 'istio-init';
/** With istio-cni: same istio-iptables args, --run-validation --skip-rule-apply. */
export const VALIDATION_CONTAINER = 'istio-validation';

/** Envoy's uid in the proxyv2 image and in the injection template. */
export const DEFAULT_PROXY_UID = 1337;
/** istio-iptables -p default: Envoy's outbound (virtualOutbound) listener. */
export const DEFAULT_OUTBOUND_PORT = 15001;
/** istio-iptables -z default: Envoy's inbound (virtualInbound) listener. */
export const DEFAULT_INBOUND_PORT = 15006;
/** istio-iptables -e default: HBONE tunnel port, RETURNed first in ISTIO_INBOUND. */
export const DEFAULT_TUNNEL_PORT = 15008;
/** status.sidecar.istio.io/port default (pilot-agent status / merged metrics). */
export const DEFAULT_STATUS_PORT = 15020;

/**
 * Inbound ports Istio never captures: Envoy's Prometheus port (15090), the
 * readiness port (15021), the default status port (15020; kept even when the
 * status port moves, as istio-cni does) and the HBONE tunnel port (15008).
 */
export const ISTIO_INBOUND_EXCLUDED: readonly number[] = [15008, 15020, 15021, 15090];

/**
 * Outbound ports never treated as captured by Envoy's outbound listener.
 * 53: with DNS capture (ISTIO_META_DNS_CAPTURE, often set mesh-wide) TCP to
 * port 53 is redirected to pilot-agent's :15053, not to Envoy, so the peer of
 * such a socket is not the outbound listener. Excluding it is always safe.
 */
export const ALWAYS_EXCLUDED_OUTBOUND: readonly number[] = [53];

/** istio-cni's default for excludeOutboundPorts when the annotation is absent. */
export const CNI_DEFAULT_EXCLUDE_OUTBOUND = '15020';
