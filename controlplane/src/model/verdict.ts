/**
 * Why a pod is, or is not, accelerated: the first reason that applies, from
 * the model alone (pure). It follows the same rules as the node states
 * (endpoints.ts), so that a verdict says what the published state does:
 *
 *   classification (classifyPod)   host-network, ambient, not-meshed,
 *                                  interception-mode, capture-unreadable,
 *                                  not-running, no-ip, no-uid
 *   istiod                         ambient (istiod serves it as an ambient workload)
 *   the node                       ip-conflict (another endpoint claims its IP)
 *   endpoint, accelerate: false    opted-out-pod, opted-out-namespace, not-synced
 *   the switches                   switched-off (the kill switch is off)
 *   else                           accelerated
 */
import type { PodClass, Verdict } from '../types.js';
import { ipOwners, isEndpoint } from './endpoints.js';
import type { ClusterModel } from './model.js';

function describe(s: { kind: string; name: string; value: string }): string {
  return `${s.kind} ${s.name}: ${JSON.stringify(s.value)}`;
}

/**
 * One pod's verdict. `owners`: how many endpoints of its node claim each IP
 * (ipOwners over the node's pods); undefined for a pod on no node.
 */
export function podVerdict(model: ClusterModel, pod: PodClass, owners: ReadonlyMap<string, string[]> | undefined, enabled: boolean): Verdict {
  if (pod.ineligible !== undefined) {
    return {
      reason: pod.ineligible,
      detail: pod.refusal?.detail ?? pod.ineligible,
      ...(pod.refusal?.setting ? { setting: pod.refusal.setting } : {}),
      endpoint: false,
      accelerate: false,
    };
  }
  if (model.isAmbient(pod.key)) {
    return { reason: 'ambient', detail: 'istiod serves it as an ambient workload (ztunnel, not a sidecar, carries its traffic)', endpoint: false, accelerate: false };
  }
  if (!isEndpoint(model, pod)) return { reason: 'no-ip', detail: 'no pod IP', endpoint: false, accelerate: false };
  for (const ip of pod.ips) {
    const others = (owners?.get(ip) ?? []).filter((k) => k !== pod.key);
    if (others.length > 0) {
      return { reason: 'ip-conflict', detail: `IP ${ip} is also claimed by ${others.join(', ')} on this node: it identifies neither pod`, endpoint: false, accelerate: false };
    }
  }
  if (pod.optedOut) {
    const s = pod.optOut;
    return { reason: 'opted-out-pod', detail: s ? `the pod's ${describe(s)} opts it out` : 'the pod opts out (meshlane.io/accelerate)', ...(s ? { setting: s } : {}), endpoint: true, accelerate: false };
  }
  if (model.namespaceOptedOut(pod.namespace)) {
    const s = model.namespaceOptOut(pod.namespace);
    return {
      reason: 'opted-out-namespace',
      detail: s ? `namespace ${pod.namespace}'s ${describe(s)} opts it out` : `namespace ${pod.namespace} opts out (meshlane.io/accelerate)`,
      ...(s ? { setting: s } : {}),
      endpoint: true,
      accelerate: false,
    };
  }
  if (!model.isSynced(pod.proxyId)) {
    return { reason: 'not-synced', detail: `istiod does not report sidecar ${pod.proxyId} connected with its config ACKed (istio.io/debug/syncz)`, endpoint: true, accelerate: false };
  }
  if (!enabled) {
    return { reason: 'switched-off', detail: 'the control plane\'s global kill switch is off (--disable): nothing new is accelerated', endpoint: true, accelerate: true };
  }
  return { reason: 'accelerated', detail: 'endpoint with accelerate: true', endpoint: true, accelerate: true };
}

/** Verdicts of every pod of a node, keyed by pod. */
export function nodeVerdicts(model: ClusterModel, node: string, enabled: boolean): Map<string, Verdict> {
  const pods = model.podsOnNode(node);
  const owners = ipOwners(model, pods);
  return new Map(pods.map((p) => [p.key, podVerdict(model, p, owners, enabled)]));
}
