/**
 * The nat rules istio-iptables installs for REDIRECT interception, as
 * iptables-restore input. Same chains, same order, same uid/gid-1337 and
 * 127.0.0.6 exemptions, so the datapath sees the tuples a real pod makes.
 */
export interface CaptureRules {
  proxyUid: number;
  outboundPort: number;
  inboundPort: number;
  excludeInboundPorts: number[];
  excludeOutboundPorts: number[];
  /** false for IPv6 rules. */
  v4: boolean;
}

export function istioNatRules(r: CaptureRules): string {
  const lo = r.v4 ? '127.0.0.1/32' : '::1/128';
  const six = r.v4 ? '127.0.0.6/32' : '::6/128';
  const lines = [
    '*nat',
    ':ISTIO_INBOUND - [0:0]',
    ':ISTIO_IN_REDIRECT - [0:0]',
    ':ISTIO_OUTPUT - [0:0]',
    ':ISTIO_REDIRECT - [0:0]',
    '-A PREROUTING -p tcp -j ISTIO_INBOUND',
    '-A OUTPUT -p tcp -j ISTIO_OUTPUT',
    ...[15008, 15090, 15021, 15020, ...r.excludeInboundPorts].map((p) => `-A ISTIO_INBOUND -p tcp --dport ${p} -j RETURN`),
    '-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT',
    `-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports ${r.inboundPort}`,
    `-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports ${r.outboundPort}`,
    `-A ISTIO_OUTPUT -s ${six} -o lo -j RETURN`,
    `-A ISTIO_OUTPUT ! -d ${lo} -o lo -p tcp -m owner --uid-owner ${r.proxyUid} -j ISTIO_IN_REDIRECT`,
    `-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner ${r.proxyUid} -j RETURN`,
    `-A ISTIO_OUTPUT -m owner --uid-owner ${r.proxyUid} -j RETURN`,
    `-A ISTIO_OUTPUT ! -d ${lo} -o lo -p tcp -m owner --gid-owner ${r.proxyUid} -j ISTIO_IN_REDIRECT`,
    `-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner ${r.proxyUid} -j RETURN`,
    `-A ISTIO_OUTPUT -m owner --gid-owner ${r.proxyUid} -j RETURN`,
    `-A ISTIO_OUTPUT -d ${lo} -j RETURN`,
    ...r.excludeOutboundPorts.map((p) => `-A ISTIO_OUTPUT -p tcp --dport ${p} -j RETURN`),
    '-A ISTIO_OUTPUT -j ISTIO_REDIRECT',
    'COMMIT',
    '',
  ];
  return lines.join('\n');
}
