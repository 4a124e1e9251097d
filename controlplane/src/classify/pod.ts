/** Pod-level facts: addresses, lifecycle, meshlane opt-out / opt-in. */
import { isIP } from 'node:net';
import type { V1Pod } from '@kubernetes/client-node';
import { bytesToIp, ipToBytes, type AppSocketsPolicy } from '@meshlane/proto';
import type { Setting } from '../types.js';
import { ANN } from './constants.js';

/**
 * One address in the canonical text the NodeState contract requires, or
 * undefined for what it refuses: zone ids, and IPv4-mapped IPv6 spellings
 * (they would name an IPv4 address the pod was not given as one).
 */
function canonical(ip: string): string | undefined {
  if (ip.includes('%') || !isIP(ip)) return undefined;
  const text = bytesToIp(ipToBytes(ip));
  return isIP(text) === isIP(ip) ? text : undefined;
}

/** status.podIPs[].ip (dual-stack), else status.podIP; malformed or empty entries dropped. */
export function podIps(pod: V1Pod): string[] {
  const listed = (pod.status?.podIPs ?? []).map((p) => p.ip);
  const candidates = listed.length > 0 ? listed : [pod.status?.podIP ?? ''];
  return [...new Set(candidates.map((ip) => (ip === '' ? undefined : canonical(ip))).filter((ip): ip is string => ip !== undefined))];
}

/** Phase Running and not being deleted (a set deletionTimestamp means terminating). */
export function isRunning(pod: V1Pod): boolean {
  return pod.status?.phase === 'Running' && pod.metadata?.deletionTimestamp == null;
}

/**
 * ambient.istio.io/redirection: Istio sets "enabled" once ztunnel captures the
 * pod and "pending" while enrolment is under way; any value but "disabled"
 * means ztunnel has or may soon have the pod's traffic.
 */
export function isAmbient(pod: V1Pod): boolean {
  const v = pod.metadata?.annotations?.[ANN.ambientRedirection];
  return v !== undefined && v !== 'disabled';
}

/** The metadata an opt-out is read from: a pod's or a namespace's. */
export interface OptOutMeta {
  labels?: Record<string, string> | undefined;
  annotations?: Record<string, string> | undefined;
}

/**
 * Whether one meshlane.io/accelerate value opts out. Documented value:
 * "false". Any value other than "true" (trimmed, any case) also opts out: a
 * typo in an opt-out must not keep a pod accelerated.
 */
export function optsOut(value: string): boolean {
  return value.trim().toLowerCase() !== 'true';
}

/**
 * THE reading of meshlane.io/accelerate, for pods and namespaces alike: the
 * label or annotation that opts out (the label first when both do), or
 * undefined. Either place opting out wins over the other saying "true".
 */
export function optOutOf(meta: OptOutMeta | undefined, on: 'pod' | 'namespace'): Setting | undefined {
  const label = meta?.labels?.[ANN.accelerate];
  if (label !== undefined && optsOut(label)) return { on, kind: 'label', name: ANN.accelerate, value: label };
  const annotation = meta?.annotations?.[ANN.accelerate];
  if (annotation !== undefined && optsOut(annotation)) return { on, kind: 'annotation', name: ANN.accelerate, value: annotation };
  return undefined;
}

/** meshlane.io/accelerate on the pod (see optOutOf). */
export function isOptedOut(pod: V1Pod): boolean {
  return optOutOf(pod.metadata, 'pod') !== undefined;
}

/**
 * meshlane.io/app-sockets annotation, the override of the kernel's own
 * per-socket decision: "true" always, "false" never (trimmed, any case);
 * absent or anything else leaves it to the kernel side ("auto"), which
 * only joins sockets it can prove safe.
 */
export function appSocketsPolicy(pod: V1Pod): AppSocketsPolicy {
  const v = pod.metadata?.annotations?.[ANN.appSockets]?.trim().toLowerCase();
  return v === 'true' ? 'always' : v === 'false' ? 'never' : 'auto';
}
