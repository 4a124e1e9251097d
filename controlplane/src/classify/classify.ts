/**
 * classifyPod: what the datapath may do with one pod, from its manifest alone.
 *
 * When several reasons apply, the first in this order is reported: from the
 * most structural (can never change for this pod) to the most transient
 * (resolves by itself):
 *
 *   1. host-network       shares the node's netns; Istio neither injects nor captures it
 *   2. ambient            ztunnel, not a sidecar, owns the traffic (says more than not-meshed)
 *   3. not-meshed         no running istio-proxy, or nothing capturing to it
 *                         (neither sidecar.istio.io/status nor an istio-init
 *                         running istio-iptables: see proxy.ts meshEvidence)
 *   4. interception-mode  capture is not plain REDIRECT
 *      capture-unreadable a capture annotation or istio-iptables arg cannot be
 *                         read the way Istio reads it (named, with its value)
 *   5. not-running        phase != Running, or deletionTimestamp set
 *   6. no-ip              no pod IP yet
 *   7. no-uid             metadata.uid is not a UUID
 *
 * 'interception-mode' also covers interfaces excluded from capture, a proxy
 * running as root (uid 0 cannot tell Envoy's sockets from the app's),
 * istio-init with --skip-rule-apply, and a sidecar with no sign of any
 * capture at all. Each comes with a detail that says which (PodClass.refusal).
 */
import type { V1Pod } from '@kubernetes/client-node';
import { isPodUid } from '@meshlane/proto';
import type { Ineligible, PodClass, Refusal, Setting } from '../types.js';
import { readCapture, noCapture, type Capture } from './capture.js';
import { ANN, INIT_CONTAINER } from './constants.js';
import { CaptureConfigError } from './errors.js';
import { findIptablesContainer, skipsRuleApply } from './iptables-args.js';
import { isAmbient, isRunning, optOutOf, podIps, appSocketsPolicy } from './pod.js';
import { envValue, findProxy, meshEvidence, proxyUid, type Proxy } from './proxy.js';

interface CaptureResult {
  capture: Capture;
  /** Why capture is not plain, certain REDIRECT; undefined when it is. */
  problem?: Refusal & { reason: 'interception-mode' | 'capture-unreadable' };
}

/** The annotation or container arg a CaptureConfigError names ("istio-init -d", or an annotation key). */
function settingOf(err: CaptureConfigError): Setting {
  const m = /^(\S+) (--?[\w-]+)$/.exec(err.source);
  if (m) return { on: 'container', kind: 'arg', name: m[2] ?? '', value: err.value, container: m[1] ?? '' };
  return { on: 'pod', kind: 'annotation', name: err.source, value: err.value };
}

function captureOf(pod: V1Pod, proxy: Proxy | undefined, uid: number): CaptureResult {
  let capture: Capture;
  const iptables = findIptablesContainer(pod);
  try {
    capture = readCapture(pod);
    if (iptables?.name === INIT_CONTAINER && skipsRuleApply(iptables)) {
      return {
        capture,
        problem: {
          reason: 'interception-mode',
          detail: 'istio-init runs istio-iptables with --skip-rule-apply: it applied no capture rules',
          setting: { on: 'container', kind: 'arg', name: '--skip-rule-apply', value: 'true', container: INIT_CONTAINER },
        },
      };
    }
  } catch (err) {
    if (err instanceof CaptureConfigError) return { capture: noCapture(), problem: { reason: 'capture-unreadable', detail: err.message, setting: settingOf(err) } };
    throw err;
  }
  const modes: Array<{ mode: string; setting: Setting }> = [];
  const annMode = pod.metadata?.annotations?.[ANN.interceptionMode];
  if (annMode !== undefined) modes.push({ mode: annMode, setting: { on: 'pod', kind: 'annotation', name: ANN.interceptionMode, value: annMode } });
  if (iptables) {
    const argMode = capture.modes[annMode !== undefined ? 1 : 0] ?? 'REDIRECT';
    modes.push({ mode: argMode, setting: { on: 'container', kind: 'arg', name: '-m', value: argMode, container: iptables.name } });
  }
  const metaMode = proxy && envValue(proxy.container, 'ISTIO_META_INTERCEPTION_MODE');
  if (metaMode !== undefined && metaMode !== '') {
    modes.push({ mode: metaMode, setting: { on: 'container', kind: 'env', name: 'ISTIO_META_INTERCEPTION_MODE', value: metaMode, container: proxy?.container.name ?? '' } });
  }
  if (!iptables && annMode === undefined) {
    return { capture, problem: { reason: 'interception-mode', detail: 'no istio-init/istio-validation and no sidecar.istio.io/interceptionMode annotation: capture unproven' } };
  }
  const other = modes.find((m) => m.mode !== 'REDIRECT');
  if (other !== undefined) {
    const where = other.setting.kind === 'annotation' ? `annotation ${other.setting.name}` : `${other.setting.container} ${other.setting.kind} ${other.setting.name}`;
    return { capture, problem: { reason: 'interception-mode', detail: `interception mode ${other.mode} (${where}), not REDIRECT`, setting: other.setting } };
  }
  if (capture.excludeInterfaces.length > 0) {
    const list = capture.excludeInterfaces.join(',');
    return { capture, problem: { reason: 'interception-mode', detail: `interfaces excluded from capture: ${list} (their traffic never reaches Envoy)`, setting: { on: 'pod', kind: 'annotation', name: ANN.excludeInterfaces, value: list } } };
  }
  if (uid === 0) {
    return { capture, problem: { reason: 'interception-mode', detail: 'istio-proxy runs as uid 0: its sockets cannot be told from the app\'s', setting: { on: 'container', kind: 'field', name: 'securityContext.runAsUser', value: '0', container: proxy?.container.name ?? '' } } };
  }
  return { capture };
}

/** First applicable reason, in the documented order. */
function ineligibility(pod: V1Pod, proxy: Proxy | undefined, captureProblem: CaptureResult['problem'], ips: string[]): (Refusal & { reason: Ineligible }) | undefined {
  if (pod.spec?.hostNetwork === true) {
    return { reason: 'host-network', detail: 'spec.hostNetwork: true: it shares the node\'s network namespace', setting: { on: 'pod', kind: 'field', name: 'spec.hostNetwork', value: 'true' } };
  }
  if (isAmbient(pod)) {
    const v = pod.metadata?.annotations?.[ANN.ambientRedirection] ?? '';
    return { reason: 'ambient', detail: `${ANN.ambientRedirection}: ${JSON.stringify(v)}: ztunnel, not a sidecar, carries its traffic`, setting: { on: 'pod', kind: 'annotation', name: ANN.ambientRedirection, value: v } };
  }
  const unmeshed = meshEvidence(pod, proxy);
  if (unmeshed) return { reason: 'not-meshed', ...unmeshed };
  if (captureProblem !== undefined) return captureProblem;
  if (!isRunning(pod)) {
    const phase = pod.status?.phase ?? '(none)';
    return { reason: 'not-running', detail: pod.metadata?.deletionTimestamp != null ? `terminating (deletionTimestamp set, phase ${phase})` : `phase ${phase}, not Running` };
  }
  if (ips.length === 0) return { reason: 'no-ip', detail: 'no usable pod IP in status.podIPs / status.podIP yet' };
  const uid = pod.metadata?.uid ?? '';
  if (!isPodUid(uid)) {
    return { reason: 'no-uid', detail: `metadata.uid ${JSON.stringify(uid)} is not a UUID: the worker cannot find its cgroup`, setting: { on: 'pod', kind: 'field', name: 'metadata.uid', value: uid } };
  }
  return undefined;
}

export function classifyPod(pod: V1Pod): PodClass {
  const name = pod.metadata?.name ?? '';
  const namespace = pod.metadata?.namespace ?? 'default';
  const proxy = findProxy(pod);
  const uid = proxyUid(pod, proxy);
  const ips = podIps(pod);
  const { capture, problem } = captureOf(pod, proxy, uid);
  const refused = ineligibility(pod, proxy, problem, ips);
  const optOut = optOutOf(pod.metadata, 'pod');
  const out: PodClass = {
    key: `${namespace}/${name}`,
    namespace,
    name,
    node: pod.spec?.nodeName || undefined,
    ips,
    optedOut: optOut !== undefined,
    uid: pod.metadata?.uid ?? '',
    appSockets: appSocketsPolicy(pod),
    proxyUid: uid,
    proxyId: `${name}.${namespace}`,
    outboundPort: capture.outboundPort,
    inboundPort: capture.inboundPort,
    inbound: capture.inbound,
    outbound: capture.outbound,
  };
  if (optOut) out.optOut = optOut;
  if (refused !== undefined) {
    out.ineligible = refused.reason;
    out.refusal = { detail: refused.detail, ...(refused.setting ? { setting: refused.setting } : {}) };
  }
  return out;
}

/** Why classifyPod found the pod's capture unusable (for logs); undefined when it is usable. */
export function captureProblem(pod: V1Pod): string | undefined {
  const proxy = findProxy(pod);
  return captureOf(pod, proxy, proxyUid(pod, proxy)).problem?.detail;
}
