/**
 * One node's endpoints as the datapath needs them, from the model. Pure.
 *
 * A pod is an endpoint when its sockets could be part of a same-node hop at
 * all (meshed, REDIRECT capture, running, has an IP, not ambient, not host
 * network). It is accelerated only when nothing forbids it: not opted out
 * (pod or namespace) and, with the sync gate on, its sidecar is synced with
 * istiod. Opted-out endpoints stay in the state so the kernel can count why
 * their traffic is not accelerated.
 */
import type { Endpoint } from '@meshlane/proto';
import type { PodClass } from '../types.js';
import type { ClusterModel } from './model.js';

export function isEndpoint(model: ClusterModel, pod: PodClass): boolean {
  return pod.ineligible === undefined && !model.isAmbient(pod.key) && pod.ips.length > 0;
}

export function endpointOf(model: ClusterModel, pod: PodClass): Endpoint {
  return {
    pod: pod.key,
    uid: pod.uid,
    ips: pod.ips,
    proxyUid: pod.proxyUid,
    accelerate: !pod.optedOut && !model.namespaceOptedOut(pod.namespace) && model.isSynced(pod.proxyId),
    appSockets: pod.appSockets,
    outboundPort: pod.outboundPort,
    inboundPort: pod.inboundPort,
    inbound: pod.inbound,
    outbound: pod.outbound,
  };
}

/** The would-be endpoints among `pods` claiming each IP. */
export function ipOwners(model: ClusterModel, pods: readonly PodClass[]): Map<string, string[]> {
  const owners = new Map<string, string[]>();
  for (const p of pods) {
    if (!isEndpoint(model, p)) continue;
    for (const ip of p.ips) {
      const o = owners.get(ip);
      if (o) o.push(p.key);
      else owners.set(ip, [p.key]);
    }
  }
  return owners;
}

/**
 * Endpoints of a node, sorted by pod key. An IP claimed by two pods (a
 * stale object, a reused address) identifies neither with certainty, so
 * both claimants are left out.
 */
export function nodeEndpoints(model: ClusterModel, node: string): Endpoint[] {
  const eps = model
    .podsOnNode(node)
    .filter((p) => isEndpoint(model, p))
    .map((p) => endpointOf(model, p));
  const owners = new Map<string, number>();
  for (const e of eps) for (const ip of e.ips) owners.set(ip, (owners.get(ip) ?? 0) + 1);
  return eps
    .filter((e) => e.ips.every((ip) => owners.get(ip) === 1))
    .sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : 0));
}
