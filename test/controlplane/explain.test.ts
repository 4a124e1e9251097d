/**
 * controlplane - `meshlane explain`: the real CLI binary against the
 * control plane's ops server (/debug/pods/NS/NAME), the control plane fed
 * by the real informers from the fake kube-apiserver and by the real xDS
 * client from the fake istiod. Every reason a pod can be refused for, on
 * the project's own fixtures (the kube-inject CronJob pod among them), plus
 * the meshlane_controlplane_pods metric and the one-line-per-change log.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { V1Pod } from '@kubernetes/client-node';
import { ControlPlane } from '../../controlplane/src/controlplane.js';
import { podReport, type PodReport } from '../../controlplane/src/debug/pods.js';
import { KubeSources, loadKubeConfig } from '../../controlplane/src/kube/sources.js';
import { serveOps } from '../../controlplane/src/ops-server.js';
import { IstiodXdsSource } from '../../controlplane/src/xds/index.js';
import type { Reason } from '../../controlplane/src/types.js';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, type FakeObject } from '../fakes/kube-apiserver.js';
import { FakeIstiod } from '../fakes/istiod.js';
import { waitFor as waitUntil } from '../harness/wait.js';
import { hostNetworkPod, injectedPod, kubeInjectCronJobPod, plainPod } from './fixtures/injected-pods.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'controlplane', 'dist', 'meshlane.js');
const waitFor = (what: string, pred: () => boolean, ms = 10_000) => waitUntil(what, pred, ms);

interface Run {
  code: number;
  out: string;
  err: string;
}

/** The CLI as a child process (async: the control plane it asks runs in this process). */
function meshlane(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 }, (err, out, errOut) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, out, err: errOut });
    });
  });
}

let uidN = 0;
/** A fixture pod under another name (and IP, and its own uid). */
function named(pod: V1Pod, name: string, o: { ns?: string; ip?: string | null; node?: string; labels?: Record<string, string>; annotations?: Record<string, string> } = {}): V1Pod {
  const p = structuredClone(pod);
  p.metadata!.name = name;
  p.metadata!.namespace = o.ns ?? 'default';
  p.metadata!.uid = `7a000000-0000-4000-8000-${(++uidN).toString(16).padStart(12, '0')}`;
  p.metadata!.labels = { ...p.metadata!.labels, ...o.labels };
  p.metadata!.annotations = { ...p.metadata!.annotations, ...o.annotations };
  if (o.node) p.spec!.nodeName = o.node;
  if (o.ip === null) {
    delete p.status!.podIP;
    p.status!.podIPs = [];
  } else if (o.ip !== undefined) {
    p.status!.podIP = o.ip;
    p.status!.podIPs = [{ ip: o.ip }];
  }
  return p;
}

const fake = (p: V1Pod): FakeObject => JSON.parse(JSON.stringify(p)) as FakeObject;

interface Case {
  pod: string;
  reason: Reason;
  /** In the text output. */
  text: RegExp;
  setting?: { on: string; kind: string; name: string; value: string };
}

describe('meshlane explain (real CLI, ops server, informers on the fake kube-apiserver, fake istiod)', () => {
  let api: FakeKubeApiServer;
  let istiod: FakeIstiod;
  let cp: ControlPlane;
  let server: Server;
  let url: string;
  let tmp: string;
  const logs: Array<Record<string, unknown>> = [];
  const verdictLines = (pod: string) => logs.filter((l) => l.msg === 'pod verdict' && l.pod === pod);

  const cron = kubeInjectCronJobPod({ node: 'node-1', ip: '10.244.1.9' });
  const pods: V1Pod[] = [
    named(injectedPod(), 'hello-a', { node: 'node-1', ip: '10.244.1.11' }),
    cron,
    named(injectedPod({ labels: { 'meshlane.io/accelerate': 'False' } }), 'hello-opted', { node: 'node-1', ip: '10.244.1.12' }),
    named(injectedPod(), 'hello-shop', { ns: 'shop', node: 'node-1', ip: '10.244.1.13' }),
    named(injectedPod(), 'hello-annex', { ns: 'annex', node: 'node-1', ip: '10.244.1.14' }),
    named(injectedPod(), 'hello-unsynced', { node: 'node-1', ip: '10.244.1.15' }),
    named(injectedPod({ mode: 'TPROXY' }), 'hello-tproxy', { node: 'node-1', ip: '10.244.1.16' }),
    named(injectedPod(), 'hello-badann', { node: 'node-1', ip: '10.244.1.17', annotations: { 'traffic.sidecar.istio.io/excludeInboundPorts': '80,abc' } }),
    named(hostNetworkPod(), 'hello-host', { node: 'node-1' }),
    named(plainPod(), 'hello-ambient', { node: 'node-1', ip: '10.244.1.18', annotations: { 'ambient.istio.io/redirection': 'enabled' } }),
    named(plainPod(), 'hello-plain', { node: 'node-1', ip: '10.244.1.19' }),
    (() => {
      const p = named(injectedPod(), 'hello-pending', { node: 'node-1', ip: null });
      p.status!.phase = 'Pending';
      return p;
    })(),
    named(injectedPod(), 'hello-noip', { node: 'node-1', ip: null }),
    (() => {
      const p = named(injectedPod(), 'hello-nouid', { node: 'node-1', ip: '10.244.1.20' });
      p.metadata!.uid = 'not-a-uuid';
      return p;
    })(),
    named(injectedPod(), 'dup-1', { node: 'node-2', ip: '10.244.2.5' }),
    named(injectedPod(), 'dup-2', { node: 'node-2', ip: '10.244.2.5' }),
    named(injectedPod(), 'hello-ztunnel', { node: 'node-2', ip: '10.244.2.6' }),
  ];
  const synced = ['hello-a.default', `${cron.metadata!.name}.default`, 'hello-opted.default', 'hello-shop.shop', 'hello-annex.annex', 'dup-1.default', 'dup-2.default', 'hello-ztunnel.default'];

  beforeAll(async () => {
    execFileSync('npx', ['tsc', '-b', 'controlplane'], { cwd: ROOT, stdio: 'pipe', timeout: 120_000 });
    api = await FakeKubeApiServer.start({ bookmarkIntervalMs: 200 });
    istiod = await FakeIstiod.start({ pushSynczOnChange: true });
    api.create(namespaceFixture('default'));
    api.create(namespaceFixture('shop', { 'meshlane.io/accelerate': 'False' }));
    api.create({ ...namespaceFixture('annex'), metadata: { ...namespaceFixture('annex').metadata, annotations: { 'meshlane.io/accelerate': ' false ' } } });
    for (const n of ['node-1', 'node-2']) api.create(nodeFixture(n));
    for (const p of pods) api.create(fake(p));
    for (const id of synced) istiod.setProxy(id, { acked: true });
    istiod.setWorkload({ namespace: 'default', name: 'hello-ztunnel', ip: '10.244.2.6', ambient: true, node: 'node-2' });
    tmp = mkdtempSync(join(tmpdir(), 'meshlane-explain-'));
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());
    const log = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
    const kube = new KubeSources(loadKubeConfig(join(tmp, 'kubeconfig')), log, { inactivityTimeoutMs: 1500, backoffInitialMs: 50, backoffMaxMs: 300 });
    const source = new IstiodXdsSource({
      address: istiod.address,
      plaintext: true,
      node: { namespace: 'istio-system', name: 'meshlane-controlplane-0', ip: '10.1.2.3' },
      logger: log,
      synczPollMs: 50,
      backoff: { initialMs: 20, maxMs: 100 },
    });
    const registry = new Registry();
    cp = new ControlPlane({ kube, istiod: source, switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, logger: log, registry });
    const plane = cp;
    server = await serveOps('127.0.0.1:0', registry, () => (plane.ready() ? undefined : 'sources not synced'), (ns, name) => podReport(plane, ns, name));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    cp.start();
    await waitFor('ready', () => cp.ready());
    await cp.settled();
    await waitFor('every verdict in', () => cp.model.verdict('default/hello-ztunnel')?.reason === 'ambient' && cp.model.verdict('default/hello-a')?.reason === 'accelerated' && cp.model.verdict(`default/${cron.metadata!.name}`)?.reason === 'accelerated');
  }, 150_000);

  afterAll(async () => {
    server?.close();
    server?.closeAllConnections();
    await cp?.stop();
    await istiod?.close();
    await api?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  const cronKey = `default/${cron.metadata!.name}`;
  const cases: Case[] = [
    { pod: 'default/hello-opted', reason: 'opted-out-pod', text: /pod's label meshlane\.io\/accelerate: "False" opts it out/, setting: { on: 'pod', kind: 'label', name: 'meshlane.io/accelerate', value: 'False' } },
    { pod: 'shop/hello-shop', reason: 'opted-out-namespace', text: /namespace shop's label meshlane\.io\/accelerate: "False"/, setting: { on: 'namespace', kind: 'label', name: 'meshlane.io/accelerate', value: 'False' } },
    { pod: 'annex/hello-annex', reason: 'opted-out-namespace', text: /namespace annex's annotation meshlane\.io\/accelerate: " false "/, setting: { on: 'namespace', kind: 'annotation', name: 'meshlane.io/accelerate', value: ' false ' } },
    { pod: 'default/hello-unsynced', reason: 'not-synced', text: /istiod does not report sidecar hello-unsynced\.default/ },
    { pod: 'default/hello-tproxy', reason: 'interception-mode', text: /interception mode TPROXY/ },
    { pod: 'default/hello-badann', reason: 'capture-unreadable', text: /traffic\.sidecar\.istio\.io\/excludeInboundPorts: "80,abc": item "abc": not a port number/, setting: { on: 'pod', kind: 'annotation', name: 'traffic.sidecar.istio.io/excludeInboundPorts', value: '80,abc' } },
    { pod: 'default/hello-host', reason: 'host-network', text: /spec\.hostNetwork: true/ },
    { pod: 'default/hello-ambient', reason: 'ambient', text: /ambient\.istio\.io\/redirection: "enabled"/ },
    { pod: 'default/hello-ztunnel', reason: 'ambient', text: /istiod serves it as an ambient workload/ },
    { pod: 'default/hello-plain', reason: 'not-meshed', text: /no istio-proxy sidecar/ },
    { pod: 'default/hello-pending', reason: 'not-running', text: /phase Pending, not Running/ },
    { pod: 'default/hello-noip', reason: 'no-ip', text: /no usable pod IP/ },
    { pod: 'default/hello-nouid', reason: 'no-uid', text: /metadata\.uid "not-a-uuid" is not a UUID/ },
    { pod: 'default/dup-1', reason: 'ip-conflict', text: /IP 10\.244\.2\.5 is also claimed by default\/dup-2/ },
  ];

  it.each(cases)('$pod: $reason (exit 1, text and --json)', async (c) => {
    const text = await meshlane(['explain', c.pod, '--controlplane', url]);
    expect(text.code, text.err).toBe(1);
    expect(text.out).toMatch(new RegExp(`verdict\\s+NOT ACCELERATED: ${c.reason}\\n`));
    expect(text.out).toMatch(c.text);
    const json = await meshlane(['explain', c.pod, '--json'], { MESHLANE_CONTROLPLANE_URL: url });
    expect(json.code, json.err).toBe(1);
    const r = JSON.parse(json.out) as PodReport;
    expect(r).toMatchObject({ pod: c.pod, reason: c.reason, accelerated: false });
    expect(r.detail).toMatch(c.text);
    if (c.setting) expect(r.setting).toEqual(c.setting);
    // Opted-out and unsynced pods stay endpoints (accelerate: false) so the kernel counts them; the rest are not.
    const endpoint = ['opted-out-pod', 'opted-out-namespace', 'not-synced'].includes(c.reason);
    expect(r.endpoint).toBe(endpoint);
    expect(r.state?.present ?? false).toBe(endpoint);
    if (endpoint) expect(r.state?.accelerate).toBe(false);
    expect(r.pairs.envoy).toEqual([]);
    expect(r.pairs.app.every((h) => h.accelerated === 'no')).toBe(true);
  });

  it('an accelerated pod: exit 0, its node, capture, and its pairs with every other accelerated endpoint', async () => {
    const text = await meshlane(['explain', 'default/hello-a', '--controlplane', url]);
    expect(text.code, text.err).toBe(0);
    expect(text.out).toMatch(/^node\s+node-1$/m);
    expect(text.out).toMatch(/verdict\s+ACCELERATED\n/);
    expect(text.out).toMatch(/inbound\s+include ports \*; exclude ports 15008,15020,15021,15090/);
    expect(text.out).toMatch(/outbound\s+exclude ports 53; include CIDRs \*; exclude CIDRs \(none\)/);
    expect(text.out).toContain(`default/hello-a <-> ${cronKey}`);
    expect(text.out).toMatch(/app -> own sidecar\s+outbound capture :15001\s+per-socket/);
    expect(text.out).toMatch(/own sidecar -> app\s+after inbound capture :15006\s+per-socket/);
    const r = JSON.parse((await meshlane(['explain', 'default/hello-a', '--controlplane', url, '--json'])).out) as PodReport;
    expect(r).toMatchObject({ node: 'node-1', reason: 'accelerated', accelerated: true, endpoint: true, appSockets: 'auto', proxyUid: 1337, syncGate: true });
    expect(r.state).toMatchObject({ present: true, accelerate: true });
    expect(r.capture).toEqual({
      outboundPort: 15001,
      inboundPort: 15006,
      inbound: { includePorts: '*', excludePorts: [15008, 15020, 15021, 15090] },
      outbound: { excludePorts: [53], includeCidrs: '*', excludeCidrs: [] },
    });
    // Opted-out, unsynced, and namespace-opted-out endpoints of node-1 are no pair of it.
    expect(r.pairs.envoy).toEqual([cronKey]);
  });

  it('the kube-inject CronJob pod (no sidecar.istio.io/status) is accelerated, paired with hello-a', async () => {
    const run = await meshlane(['explain', cronKey, '--controlplane', url, '--json']);
    expect(run.code, run.err).toBe(0);
    const r = JSON.parse(run.out) as PodReport;
    expect(r).toMatchObject({ reason: 'accelerated', node: 'node-1', ips: ['10.244.1.9'] });
    expect(r.pairs.envoy).toEqual(['default/hello-a']);
  });

  it('lookup and usage errors exit 2 and say what is wrong', async () => {
    const unknown = await meshlane(['explain', 'default/nope', '--controlplane', url]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/no pod default\/nope in the control plane's model/);
    const closed = await serveOps('127.0.0.1:0', new Registry(), () => undefined);
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const unreachable = await meshlane(['explain', 'default/hello-a', '--controlplane', `http://127.0.0.1:${port}`]);
    expect(unreachable.code).toBe(2);
    expect(unreachable.err).toMatch(/cannot reach the control plane at http:\/\/127\.0\.0\.1:\d+.*port-forward/);
    for (const args of [['explain'], ['explain', 'hello-a'], ['explain', 'Default/x'], ['explain', 'a/b', 'c/d'], ['explain', 'a/b', '--nope']]) {
      const r = await meshlane(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err).toMatch(/^meshlane: /);
    }
  });

  it('--help tells the exit codes and where the facts come from', async () => {
    const help = await meshlane(['explain', '--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/Exit code: 0 when the pod is accelerated, 1 when it is not/);
    expect(help.out).toMatch(/2 on a usage error, an unknown pod/);
    expect(help.out).toMatch(/\/debug\/pods\/NAMESPACE\/POD/);
    expect(help.out).toMatch(/MESHLANE_CONTROLPLANE_URL/);
    for (const reason of ['host-network', 'ambient', 'not-meshed', 'interception-mode', 'capture-unreadable', 'not-running', 'no-ip', 'no-uid', 'ip-conflict', 'opted-out-pod', 'opted-out-namespace', 'not-synced', 'switched-off']) {
      expect(help.out).toContain(reason);
    }
    const top = await meshlane(['--help']);
    expect(top.out).toMatch(/meshlane explain NAMESPACE\/POD/);
  });

  it('the ops server: read-only JSON, 400 on a bad path, 405 on writes', async () => {
    const ok = await fetch(`${url}/debug/pods/default/hello-a`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toBe('application/json');
    expect((await fetch(`${url}/debug/pods/default`)).status).toBe(400);
    expect((await fetch(`${url}/debug/pods/default/hello-a`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${url}/debug/pods/default/nope`)).status).toBe(404);
  });

  it('meshlane_controlplane_pods counts current pods per reason', async () => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const gauge = (reason: string) => Number(new RegExp(`^meshlane_controlplane_pods\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    expect(gauge('accelerated')).toBe(2);
    expect(gauge('opted-out-namespace')).toBe(2);
    expect(gauge('ip-conflict')).toBe(2);
    expect(gauge('ambient')).toBe(2);
    for (const r of ['opted-out-pod', 'not-synced', 'interception-mode', 'capture-unreadable', 'host-network', 'not-meshed', 'not-running', 'no-ip', 'no-uid']) expect(gauge(r), r).toBe(1);
    expect(gauge('switched-off')).toBe(0);
    expect(text).toMatch(/^meshlane_controlplane_verdict_changes_total\{reason="accelerated"\} [1-9]/m);
    expect(text).toMatch(/^meshlane_controlplane_verdict_changes_total\{reason="switched-off"\} 0$/m);
  });

  it('logs one debug line when a pod\'s verdict changes, none for events that change nothing', async () => {
    expect(verdictLines('default/hello-a').length).toBe(1);
    expect(verdictLines('default/hello-a')[0]).toMatchObject({ node: 'node-1', reason: 'accelerated' });
    // An unrelated label: an event, a reconcile, no verdict change.
    const a = api.get('Pod', 'default', 'hello-a')!;
    api.update({ ...a, metadata: { ...a.metadata, labels: { ...a.metadata.labels, team: 'blue' } } });
    await waitFor('label seen', () => cp.model.pods.get('default/hello-a') !== undefined && api.get('Pod', 'default', 'hello-a')?.metadata.labels?.team === 'blue');
    await new Promise((r) => setTimeout(r, 300));
    await cp.settled();
    expect(verdictLines('default/hello-a').length).toBe(1);
    // Opting out: one line, with pod, node, reason and detail; the CronJob pod loses its pair, not its verdict.
    const b = api.get('Pod', 'default', 'hello-a')!;
    api.update({ ...b, metadata: { ...b.metadata, labels: { ...b.metadata.labels, 'meshlane.io/accelerate': 'no' } } });
    await waitFor('opt-out logged', () => verdictLines('default/hello-a').length === 2);
    await cp.settled();
    expect(verdictLines('default/hello-a')[1]).toMatchObject({
      pod: 'default/hello-a',
      node: 'node-1',
      reason: 'opted-out-pod',
      was: 'accelerated',
      detail: 'the pod\'s label meshlane.io/accelerate: "no" opts it out',
    });
    expect(verdictLines(cronKey).length).toBe(1);
    const r = JSON.parse((await meshlane(['explain', cronKey, '--controlplane', url, '--json'])).out) as PodReport;
    expect(r.pairs.envoy).toEqual([]);
    // istiod loses the CronJob pod's sidecar: one line, not-synced.
    istiod.removeProxy(`${cron.metadata!.name}.default`);
    await waitFor('unsynced logged', () => verdictLines(cronKey).length === 2);
    expect(verdictLines(cronKey)[1]).toMatchObject({ reason: 'not-synced', node: 'node-1', was: 'accelerated' });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/^meshlane_controlplane_pods\{reason="accelerated"\} 0$/m);
    expect(metrics).toMatch(/^meshlane_controlplane_verdict_changes_total\{reason="opted-out-pod"\} 2$/m);
  });

  it('before the sources are synced the ops server says so (503), and explain exits 2', async () => {
    const fresh = new ControlPlane({ kube: { onPod: () => {}, onNode: () => {}, onNamespace: () => {}, synced: () => false, start: () => {}, stop: async () => {} }, switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 }, logger: pino({ level: 'silent' }) });
    const s = await serveOps('127.0.0.1:0', new Registry(), () => 'not synced', (ns, name) => podReport(fresh, ns, name));
    try {
      const run = await meshlane(['explain', 'default/hello-a', '--controlplane', `http://127.0.0.1:${(s.address() as AddressInfo).port}`]);
      expect(run.code).toBe(2);
      expect(run.err).toMatch(/has not synced its sources yet/);
    } finally {
      s.close();
    }
  });
});
