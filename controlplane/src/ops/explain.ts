/**
 * `meshlane explain NAMESPACE/POD`: what the control plane decided about
 * one pod and why. The facts come from the control plane (GET
 * /debug/pods/<ns>/<name> on its ops server): only it knows why it refused
 * a pod; a node's state on the bus holds endpoints alone. With --bus, an
 * endpoint is also looked up in its node's state on the bus, as `meshlane
 * pairs` reads it (auditor credentials are enough).
 */
import type { PodReport } from '../debug/pods.js';
import { CliError, messageOf } from './errors.js';
import type { NodeView } from './pairs.js';

export const DEFAULT_CONTROLPLANE_URL = 'http://127.0.0.1:9465';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** "namespace/name" -> its parts; a CliError naming what is wrong otherwise. */
export function parsePodRef(text: string): { namespace: string; name: string } {
  const parts = text.split('/');
  if (parts.length !== 2) throw new CliError(`${JSON.stringify(text)}: want NAMESPACE/POD, e.g. default/hello-5d7b9c6f4-x2x7q`);
  const [namespace = '', name = ''] = parts;
  if (namespace.length > 63 || !DNS1123_LABEL.test(namespace)) throw new CliError(`${JSON.stringify(namespace)}: not a namespace name (DNS-1123 label)`);
  if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) throw new CliError(`${JSON.stringify(name)}: not a pod name (DNS-1123 subdomain)`);
  return { namespace, name };
}

function isReport(x: unknown): x is PodReport {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'PodReport' && typeof (x as { reason?: unknown }).reason === 'string';
}

/** Asks the control plane; every failure is a CliError (exit 2) that says what to do. */
export async function fetchReport(base: string, namespace: string, name: string, timeoutMs: number): Promise<PodReport> {
  let url: URL;
  try {
    url = new URL(`debug/pods/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`, base.endsWith('/') ? base : `${base}/`);
  } catch {
    throw new CliError(`--controlplane ${JSON.stringify(base)}: not a URL (e.g. ${DEFAULT_CONTROLPLANE_URL})`);
  }
  const hint = `is the control plane running and its ops port reachable? e.g. kubectl -n istio-system port-forward deploy/meshlane-controlplane 9465, or --controlplane URL (env MESHLANE_CONTROLPLANE_URL)`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
  } catch (err) {
    const why = err instanceof Error && err.name === 'TimeoutError' ? `no answer in ${timeoutMs / 1000}s` : messageOf(err);
    throw new CliError(`cannot reach the control plane at ${base}: ${why} (${hint})`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new CliError(`the control plane at ${base} answered ${res.status} with no JSON${res.status === 404 ? ' (too old for meshlane explain, or not a meshlane control plane?)' : ''}: ${text.trim().slice(0, 200)}`);
  }
  if (res.status !== 200) {
    const msg = typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string' ? (body as { error: string }).error : text.trim();
    throw new CliError(`control plane at ${base}: ${msg}`);
  }
  if (!isReport(body)) throw new CliError(`the control plane at ${base} answered something that is not a pod report`);
  return body;
}

/** What the node's state on the bus says of the pod (--bus), and whether it agrees with the verdict. */
export function crossCheck(r: PodReport, view: NodeView): { agrees: boolean; line: string } {
  const ep = view.state.endpoints.find((e) => e.pod === r.pod);
  const where = `node ${view.state.node}'s state on the bus (generation ${view.state.generation})`;
  if (!ep) {
    return r.endpoint ? { agrees: false, line: `${where} has no endpoint ${r.pod}: not published yet, or the worker's state lags` } : { agrees: true, line: `${where}: no endpoint, as expected` };
  }
  if (!r.endpoint) return { agrees: false, line: `${where} still has endpoint ${r.pod} (accelerate ${ep.accelerate}): not published yet` };
  const want = r.endpointAccelerate;
  if (want !== null && ep.accelerate !== want) return { agrees: false, line: `${where}: accelerate ${ep.accelerate}, the control plane decided ${want}: not published yet` };
  if (ep.uid !== r.uid) return { agrees: false, line: `${where}: uid ${ep.uid}, the control plane has ${r.uid}` };
  return { agrees: true, line: `${where}: endpoint present, accelerate ${ep.accelerate}, agrees` };
}

const list = (x: readonly (string | number)[] | '*'): string => (x === '*' ? '*' : x.length ? x.join(',') : '(none)');

export function renderReport(r: PodReport, bus?: { line: string }): string {
  const settingLine = r.setting
    ? `${r.setting.on === 'container' ? `container ${r.setting.container ?? ''} ` : `${r.setting.on} `}${r.setting.kind} ${r.setting.name}${r.setting.value !== '' ? ` = ${JSON.stringify(r.setting.value)}` : ' (absent)'}`
    : undefined;
  const out = [
    `pod         ${r.pod}`,
    `node        ${r.node ?? '(not scheduled)'}`,
    `uid         ${r.uid || '(none)'}`,
    `ips         ${r.ips.join(', ') || '(none)'}`,
    `verdict     ${r.accelerated ? 'ACCELERATED' : `NOT ACCELERATED: ${r.reason}`}`,
    `            ${r.detail}`,
    ...(settingLine ? [`            setting: ${settingLine}`] : []),
    ...(r.since ? [`            since ${r.since}`] : []),
    `endpoint    ${r.endpoint ? 'yes' : 'no'}${r.state ? `; ${r.node}'s state generation ${r.state.generation}: ${r.state.present ? `endpoint with accelerate ${r.state.accelerate}` : 'no endpoint'}` : ''}`,
    ...(r.state ? [`switches    enabled=${r.state.switches.enabled} appSockets=${r.state.switches.appSockets}`] : []),
    `sync gate   ${r.syncGate ? 'on (a sidecar must be synced with istiod)' : 'off (no --istiod)'}`,
    `appSockets  ${r.appSockets}`,
    `capture${r.reason === 'capture-unreadable' ? ' (a setting is unreadable: nothing is taken as captured)' : ''}`,
    `  Envoy     outbound :${r.capture.outboundPort}, inbound :${r.capture.inboundPort}, proxy uid ${r.proxyUid}`,
    `  inbound   include ports ${list(r.capture.inbound.includePorts)}; exclude ports ${list(r.capture.inbound.excludePorts)}`,
    `  outbound  exclude ports ${list(r.capture.outbound.excludePorts)}; include CIDRs ${list(r.capture.outbound.includeCidrs)}; exclude CIDRs ${list(r.capture.outbound.excludeCidrs)}`,
    'pairs',
    `  Envoy <-> Envoy, both directions, with every other accelerated endpoint of the node: ${r.pairs.envoy.length ? r.pairs.envoy.length : r.accelerated ? 'none yet (no other accelerated endpoint on the node)' : 'none (not accelerated)'}`,
    ...r.pairs.envoy.map((p) => `    ${r.pod} <-> ${p}`),
    '  app hops',
    ...r.pairs.app.map((h) => `    ${h.hop.padEnd(18)}  ${(h.hop === 'app -> own sidecar' ? `outbound capture :${h.port}` : `after inbound capture :${h.port}`).padEnd(28)}  ${h.accelerated.padEnd(10)}  ${h.why}`),
    ...(bus ? ['bus', `  ${bus.line}`] : []),
  ];
  return out.join('\n');
}
