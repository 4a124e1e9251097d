/**
 * How a meshed pod's traffic is captured, read from its manifest alone.
 *
 * Two sources describe it: the traffic.sidecar.istio.io/* annotations (what
 * istio-cni applies, with istio-cni's defaults) and the istio-iptables args of
 * istio-init / istio-validation (what the init container applied, including
 * mesh-wide defaults that never show up as annotations). They agree on every
 * pod the injector writes; where they differ (a custom template, an annotation
 * edited after the pod started) the result is the narrower capture: included =
 * captured by both, excluded = excluded by either. Accelerating less than Istio
 * captures is always safe; more never is.
 *
 * Any setting that cannot be read the way Istio reads it makes the whole
 * capture unknown (CaptureConfigError). Istio itself would have refused such a
 * value (the injector's annotation validation, istio-cni's NewRedirect), so a
 * pod carrying one was either injected before the value changed or set up by
 * something we do not model; either way we cannot tell which traffic Envoy
 * sees, and the only safe answer is not to accelerate the pod at all.
 */
import type { V1Pod } from '@kubernetes/client-node';
import type { CidrSelector, PortSelector } from '@meshlane/proto';
import {
  ALWAYS_EXCLUDED_OUTBOUND,
  ANN,
  CNI_DEFAULT_EXCLUDE_OUTBOUND,
  DEFAULT_INBOUND_PORT,
  DEFAULT_OUTBOUND_PORT,
  DEFAULT_STATUS_PORT,
  DEFAULT_TUNNEL_PORT,
  INIT_CONTAINER,
  ISTIO_INBOUND_EXCLUDED,
} from './constants.js';
import { CaptureConfigError } from './errors.js';
import { findIptablesContainer, readIptablesSettings } from './iptables-args.js';
import { parseCidrList, parseCidrSelector, parsePort, parsePortList, parsePortSelector, sortedUnique } from './lists.js';
import { intersectCidrs, intersectPorts } from './selectors.js';

export interface Capture {
  outboundPort: number;
  inboundPort: number;
  inbound: { includePorts: PortSelector; excludePorts: number[] };
  outbound: { excludePorts: number[]; includeCidrs: CidrSelector; excludeCidrs: string[] };
  /** Interface names excluded from capture altogether (traffic.sidecar.istio.io/excludeInterfaces, -c). */
  excludeInterfaces: string[];
  /** Every interception mode the sources state (REDIRECT, TPROXY, NONE, or anything else found). */
  modes: string[];
}

/** What one source says about capture. */
interface View {
  includeInbound: PortSelector;
  excludeInbound: number[];
  includeCidrs: CidrSelector;
  excludeCidrs: string[];
  excludeOutbound: number[];
  excludeInterfaces: string[];
}

/** Capture when nothing can be trusted: nothing included, so nothing accelerated. */
export function noCapture(): Capture {
  return {
    outboundPort: DEFAULT_OUTBOUND_PORT,
    inboundPort: DEFAULT_INBOUND_PORT,
    inbound: { includePorts: [], excludePorts: [...ISTIO_INBOUND_EXCLUDED] },
    outbound: { excludePorts: [...ALWAYS_EXCLUDED_OUTBOUND], includeCidrs: [], excludeCidrs: [] },
    excludeInterfaces: [],
    modes: [],
  };
}

const VALID_MODES = new Set(['REDIRECT', 'TPROXY', 'NONE']);

function interfaces(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * The annotations as istio-cni reads them (cni/pkg/plugin/sidecar_redirect.go):
 * includeInboundPorts "*" and includeOutboundIPRanges "*" by default, and, on a
 * CNI pod (no istio-init), excludeOutboundPorts "15020" when absent.
 */
function annotationView(annotations: Readonly<Record<string, string>>, cni: boolean): View {
  const get = (key: string, fallback: string): [string, string] => [key, annotations[key] ?? fallback];
  // Validated like istio-cni does, though it only ever adds capture (see report): never read further.
  parsePortSelector(...get(ANN.includeOutboundPorts, ''));
  return {
    includeInbound: parsePortSelector(...get(ANN.includeInboundPorts, '*')),
    excludeInbound: parsePortList(...get(ANN.excludeInboundPorts, '')),
    includeCidrs: parseCidrSelector(...get(ANN.includeOutboundIPRanges, '*')),
    excludeCidrs: parseCidrList(...get(ANN.excludeOutboundIPRanges, '')),
    excludeOutbound: parsePortList(...get(ANN.excludeOutboundPorts, cni ? CNI_DEFAULT_EXCLUDE_OUTBOUND : '')),
    excludeInterfaces: interfaces(annotations[ANN.excludeInterfaces] ?? ''),
  };
}

/** Reads capture; throws CaptureConfigError when any setting is unreadable. */
export function readCapture(pod: V1Pod): Capture {
  const annotations = pod.metadata?.annotations ?? {};
  const iptables = findIptablesContainer(pod);
  const cni = iptables?.name !== INIT_CONTAINER;
  const modes: string[] = [];

  const annMode = annotations[ANN.interceptionMode];
  if (annMode !== undefined) {
    if (!VALID_MODES.has(annMode)) throw new CaptureConfigError(ANN.interceptionMode, annMode, 'not REDIRECT, TPROXY or NONE');
    modes.push(annMode);
  }

  const statusPortText = annotations[ANN.statusPort] ?? String(DEFAULT_STATUS_PORT);
  const statusPort = parsePort(ANN.statusPort, statusPortText); // 0 = no status port

  const ann = annotationView(annotations, cni);
  let view = ann;
  const tunnelPorts = [DEFAULT_TUNNEL_PORT];
  let outboundPort = DEFAULT_OUTBOUND_PORT;
  let inboundPort = DEFAULT_INBOUND_PORT;

  if (iptables) {
    const s = readIptablesSettings(iptables);
    const src = (flag: string): string => `${iptables.name} -${flag}`;
    // istio-iptables only tests for "TPROXY"; anything but REDIRECT (or its default, "") is reported as is.
    modes.push(s.mode === '' ? 'REDIRECT' : s.mode);
    parsePortSelector(src('q'), s.includeOutbound);
    const args: View = {
      includeInbound: parsePortSelector(src('b'), s.includeInbound),
      excludeInbound: parsePortList(src('d'), s.excludeInbound),
      includeCidrs: parseCidrSelector(src('i'), s.includeCidrs),
      excludeCidrs: parseCidrList(src('x'), s.excludeCidrs),
      excludeOutbound: parsePortList(src('o'), s.excludeOutbound),
      excludeInterfaces: interfaces(s.excludeInterfaces),
    };
    outboundPort = parsePort(src('p'), s.outboundPort);
    inboundPort = parsePort(src('z'), s.inboundPort);
    const tunnel = parsePort(src('e'), s.tunnelPort);
    if (outboundPort === 0) throw new CaptureConfigError(src('p'), s.outboundPort, 'port 0');
    if (inboundPort === 0) throw new CaptureConfigError(src('z'), s.inboundPort, 'port 0');
    if (tunnel !== 0) tunnelPorts.push(tunnel);
    view = {
      includeInbound: intersectPorts(ann.includeInbound, args.includeInbound),
      excludeInbound: [...ann.excludeInbound, ...args.excludeInbound],
      includeCidrs: intersectCidrs(ann.includeCidrs, args.includeCidrs),
      excludeCidrs: [...new Set([...ann.excludeCidrs, ...args.excludeCidrs])],
      excludeOutbound: [...ann.excludeOutbound, ...args.excludeOutbound],
      excludeInterfaces: [...new Set([...ann.excludeInterfaces, ...args.excludeInterfaces])],
    };
  }

  return {
    outboundPort,
    inboundPort,
    inbound: {
      includePorts: view.includeInbound,
      excludePorts: sortedUnique([
        ...ISTIO_INBOUND_EXCLUDED,
        ...tunnelPorts,
        ...(statusPort === 0 ? [] : [statusPort]),
        ...view.excludeInbound,
      ]),
    },
    outbound: {
      excludePorts: sortedUnique([...ALWAYS_EXCLUDED_OUTBOUND, ...view.excludeOutbound]),
      includeCidrs: view.includeCidrs,
      excludeCidrs: view.excludeCidrs,
    },
    excludeInterfaces: view.excludeInterfaces,
    modes,
  };
}
