/**
 * classifyPod: what the datapath may do with one pod, from its manifest alone.
 *
 * When several reasons apply, the first in this order is reported: from the
 * most structural (can never change for this pod) to the most transient
 * (resolves by itself):
 *
 *   1. host-network       shares the node's netns; Istio neither injects nor captures it
 *   2. ambient            ztunnel, not a sidecar, owns the traffic (says more than not-meshed)
 *   3. not-meshed         no sidecar.istio.io/status + running istio-proxy
 *   4. interception-mode  capture is not plain REDIRECT, or cannot be read with certainty
 *   5. not-running        phase != Running, or deletionTimestamp set
 *   6. no-ip              no pod IP yet
 *
 * 'interception-mode' also covers, for want of a dedicated reason in the
 * contract: an unreadable capture setting, interfaces excluded from capture,
 * a proxy running as root (uid 0 cannot tell Envoy's sockets from the
 * app's), and a sidecar with no sign of any capture at all.
 */
import type { V1Pod } from '@kubernetes/client-node';
import type { Ineligible, PodClass } from '../types.js';
import { readCapture, noCapture, type Capture } from './capture.js';
import { ANN } from './constants.js';
import { CaptureConfigError } from './errors.js';
import { findIptablesContainer } from './iptables-args.js';
import { isAmbient, isOptedOut, isRunning, podIps, appSocketsPolicy } from './pod.js';
import { envValue, findProxy, proxyUid, type Proxy } from './proxy.js';

interface CaptureResult {
  capture: Capture;
  /** Why capture is not plain, certain REDIRECT; undefined when it is. */
  problem?: string;
}

function captureOf(pod: V1Pod, proxy: Proxy | undefined, uid: number): CaptureResult {
  let capture: Capture;
  try {
    capture = readCapture(pod);
  } catch (err) {
    if (err instanceof CaptureConfigError) return { capture: noCapture(), problem: err.message };
    throw err;
  }
  const modes = [...capture.modes];
  const metaMode = proxy && envValue(proxy.container, 'ISTIO_META_INTERCEPTION_MODE');
  if (metaMode !== undefined && metaMode !== '') modes.push(metaMode);
  const evidenced =
    findIptablesContainer(pod) !== undefined || pod.metadata?.annotations?.[ANN.interceptionMode] !== undefined;
  if (!evidenced) return { capture, problem: 'no istio-init/istio-validation and no interceptionMode annotation' };
  const other = modes.find((m) => m !== 'REDIRECT');
  if (other !== undefined) return { capture, problem: `interception mode ${other}` };
  if (capture.excludeInterfaces.length > 0) {
    return { capture, problem: `interfaces excluded from capture: ${capture.excludeInterfaces.join(',')}` };
  }
  if (uid === 0) return { capture, problem: 'proxy runs as uid 0' };
  return { capture };
}

/** First applicable reason, in the documented order. */
function ineligibility(pod: V1Pod, proxy: Proxy | undefined, captureProblem: string | undefined, ips: string[]): Ineligible | undefined {
  if (pod.spec?.hostNetwork === true) return 'host-network';
  if (isAmbient(pod)) return 'ambient';
  if (!proxy) return 'not-meshed';
  if (captureProblem !== undefined) return 'interception-mode';
  if (!isRunning(pod)) return 'not-running';
  if (ips.length === 0) return 'no-ip';
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(pod.metadata?.uid ?? '')) return 'no-uid';
  return undefined;
}

export function classifyPod(pod: V1Pod): PodClass {
  const name = pod.metadata?.name ?? '';
  const namespace = pod.metadata?.namespace ?? 'default';
  const proxy = findProxy(pod);
  const uid = proxyUid(pod, proxy);
  const ips = podIps(pod);
  const { capture, problem } = captureOf(pod, proxy, uid);
  const ineligible = ineligibility(pod, proxy, problem, ips);
  const out: PodClass = {
    key: `${namespace}/${name}`,
    namespace,
    name,
    node: pod.spec?.nodeName || undefined,
    ips,
    optedOut: isOptedOut(pod),
    uid: pod.metadata?.uid ?? '',
    appSockets: appSocketsPolicy(pod),
    proxyUid: uid,
    proxyId: `${name}.${namespace}`,
    outboundPort: capture.outboundPort,
    inboundPort: capture.inboundPort,
    inbound: capture.inbound,
    outbound: capture.outbound,
  };
  if (ineligible !== undefined) out.ineligible = ineligible;
  return out;
}

/** Why classifyPod found the pod's capture unusable (for logs); undefined when it is usable. */
export function captureProblem(pod: V1Pod): string | undefined {
  const proxy = findProxy(pod);
  return captureOf(pod, proxy, proxyUid(pod, proxy)).problem;
}
