/**
 * GET /debug/pods/<namespace>/<name> on the ops server: what the control
 * plane decided about one pod and why, read-only, from its model (the only
 * place that knows why a pod was refused: a worker sees endpoints only).
 * `meshlane explain` renders it.
 */
import type { AppSocketsPolicy, CidrSelector, PortSelector, Switches } from '@meshlane/proto';
import type { ControlPlane } from '../controlplane.js';
import { nodeVerdicts, podVerdict } from '../model/verdict.js';
import type { Reason, Setting } from '../types.js';

export const POD_REPORT_KIND = 'PodReport';

/** One app hop of the pod (its app's sockets and its own sidecar). */
export interface AppHop {
  hop: 'app -> own sidecar' | 'own sidecar -> app';
  /** The capture port the hop goes through. */
  port: number;
  /** 'yes': accelerated; 'per-socket': the kernel joins the sockets it proves safe; 'no'. */
  accelerated: 'yes' | 'per-socket' | 'no';
  why: string;
}

export interface PodReport {
  kind: typeof POD_REPORT_KIND;
  pod: string;
  namespace: string;
  name: string;
  node: string | null;
  uid: string;
  ips: string[];
  /** "accelerated", or the first reason it is not (see controlplane/src/types.ts Reason). */
  reason: Reason;
  accelerated: boolean;
  detail: string;
  /** The label, annotation, arg or env the reason rests on. */
  setting?: Setting;
  /** When this verdict was first computed (null: computed for this answer). */
  since: string | null;
  /** An endpoint of its node, and the accelerate flag it gets (null: no endpoint), by the verdict. */
  endpoint: boolean;
  endpointAccelerate: boolean | null;
  /** Its node's desired state as last computed (what is published): generation, its endpoint, switches. */
  state: { generation: number; present: boolean; accelerate: boolean | null; switches: Switches } | null;
  syncGate: boolean;
  appSockets: AppSocketsPolicy;
  proxyUid: number;
  capture: {
    outboundPort: number;
    inboundPort: number;
    inbound: { includePorts: PortSelector; excludePorts: number[] };
    outbound: { excludePorts: number[]; includeCidrs: CidrSelector; excludeCidrs: string[] };
  };
  pairs: {
    /** Every other accelerated endpoint of the node: sidecar <-> sidecar, both directions. */
    envoy: string[];
    app: AppHop[];
  };
}

export interface DebugAnswer {
  code: number;
  body: PodReport | { error: string };
}

function appHops(policy: AppSocketsPolicy, switches: Switches, on: boolean, out: number, inb: number): AppHop[] {
  const one = (hop: AppHop['hop'], port: number): AppHop => {
    if (!on) return { hop, port, accelerated: 'no', why: 'the pod is not accelerated' };
    if (!switches.appSockets) return { hop, port, accelerated: 'no', why: 'app sockets are switched off for every node (--no-app-sockets)' };
    if (policy === 'never') return { hop, port, accelerated: 'no', why: 'meshlane.io/app-sockets: "false"' };
    if (policy === 'always') return { hop, port, accelerated: 'yes', why: 'meshlane.io/app-sockets: "true" (the app reads non-blocking)' };
    return { hop, port, accelerated: 'per-socket', why: 'appSockets auto: the kernel joins only app sockets it can prove safe' };
  };
  return [one('app -> own sidecar', out), one('own sidecar -> app', inb)];
}

/** What a report is read from: the control plane (or a model and reconciler alike). */
export type PodReportSource = Pick<ControlPlane, 'ready' | 'model' | 'reconciler'>;

export function podReport(cp: PodReportSource, namespace: string, name: string): DebugAnswer {
  if (!cp.ready()) return { code: 503, body: { error: 'the control plane has not synced its sources yet: verdicts are not final (try again shortly)' } };
  const key = `${namespace}/${name}`;
  const pod = cp.model.pods.get(key);
  if (!pod) return { code: 404, body: { error: `no pod ${key} in the control plane's model (it lists every pod of the cluster: check the name, and kubectl get pod -n ${namespace} ${name})` } };
  const switches = cp.reconciler.switches();
  const stored = cp.model.verdict(key);
  const v = stored ?? (pod.node !== undefined ? nodeVerdicts(cp.model, pod.node, switches.enabled).get(key) : undefined) ?? podVerdict(cp.model, pod, undefined, switches.enabled);
  const state = pod.node !== undefined ? cp.reconciler.state(pod.node) : undefined;
  const ep = state?.endpoints.find((e) => e.pod === key);
  const accelerated = v.reason === 'accelerated';
  const envoy = accelerated && ep?.accelerate ? (state?.endpoints ?? []).filter((e) => e.pod !== key && e.accelerate).map((e) => e.pod) : [];
  const body: PodReport = {
    kind: POD_REPORT_KIND,
    pod: key,
    namespace,
    name,
    node: pod.node ?? null,
    uid: pod.uid,
    ips: pod.ips,
    reason: v.reason,
    accelerated,
    detail: v.detail,
    ...(v.setting ? { setting: v.setting } : {}),
    since: stored ? stored.since.toISOString() : null,
    endpoint: v.endpoint,
    endpointAccelerate: v.endpoint ? v.accelerate : null,
    state: state ? { generation: state.generation, present: ep !== undefined, accelerate: ep ? ep.accelerate : null, switches: state.switches } : null,
    syncGate: cp.model.options.syncGate,
    appSockets: pod.appSockets,
    proxyUid: pod.proxyUid,
    capture: { outboundPort: pod.outboundPort, inboundPort: pod.inboundPort, inbound: pod.inbound, outbound: pod.outbound },
    pairs: { envoy, app: appHops(pod.appSockets, state?.switches ?? switches, accelerated, pod.outboundPort, pod.inboundPort) },
  };
  return { code: 200, body };
}
