/**
 * controlplane - end to end through the real client libraries: the real
 * @kubernetes/client-node informers against the fake kube-apiserver, the
 * real xDS client against the fake istiod, into the model and reconciler.
 * Each Kubernetes or istiod event must end in the right per-node delta, and
 * in nothing for the nodes it does not concern.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { applyNodeStateDelta, type NodeState } from '@meshlane/proto';
import { ControlPlane } from '../../controlplane/src/controlplane.js';
import { KubeSources, loadKubeConfig } from '../../controlplane/src/kube/sources.js';
import { IstiodXdsSource } from '../../controlplane/src/xds/index.js';
import type { NodeUpdate } from '../../controlplane/src/reconcile/reconciler.js';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, podFixture } from '../fakes/kube-apiserver.js';
import { FakeIstiod } from '../fakes/istiod.js';
import { waitFor as waitUntil } from '../harness/wait.js';

const waitFor = (what: string, pred: () => boolean, ms = 8000) => waitUntil(what, pred, ms);

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });


describe('controlplane - Kubernetes and istiod to per-node deltas', () => {
  let api: FakeKubeApiServer;
  let istiod: FakeIstiod;
  let cp: ControlPlane;
  let tmp: string;
  let updates: NodeUpdate[];
  const states = new Map<string, NodeState>();

  beforeEach(async () => {
    api = await FakeKubeApiServer.start({ bookmarkIntervalMs: 200 });
    istiod = await FakeIstiod.start({ pushSynczOnChange: true });
    api.create(namespaceFixture('default'));
    api.create(namespaceFixture('shop'));
    for (const n of ['node-1', 'node-2', 'node-3']) api.create(nodeFixture(n));
    tmp = mkdtempSync(join(tmpdir(), 'meshlane-cp-'));
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());
    const kube = new KubeSources(loadKubeConfig(join(tmp, 'kubeconfig')), log, { inactivityTimeoutMs: 1500, backoffInitialMs: 50, backoffMaxMs: 300 });
    const source = new IstiodXdsSource({
      address: istiod.address,
      plaintext: true,
      node: { namespace: 'istio-system', name: 'meshlane-controlplane-0', ip: '10.1.2.3' },
      logger: log,
      synczPollMs: 50,
      backoff: { initialMs: 20, maxMs: 100 },
    });
    cp = new ControlPlane({ kube, istiod: source, switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, logger: log });
    updates = [];
    states.clear();
    cp.onUpdate((u) => {
      const prev = states.get(u.node);
      const next = u.state();
      // Every delta must take the previous state exactly to the next.
      if (prev) expect(applyNodeStateDelta(prev, u.delta)).toEqual(next);
      states.set(u.node, next);
      updates.push(u);
    });
    cp.start();
    await waitFor('ready', () => cp.ready());
    await waitFor('a first state for every node', () => states.size === 3);
  });

  afterEach(async () => {
    await cp?.stop();
    await istiod?.close();
    await api?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  const since = (n: number) => updates.slice(n);
  const pods = (node: string) => states.get(node)?.endpoints.map((e) => e.pod) ?? [];
  /** Directed sidecar pairs the node accelerates: every two endpoints that both accelerate. */
  const pairs = (node: string) => {
    const n = states.get(node)?.endpoints.filter((e) => e.accelerate).length ?? 0;
    return n * (n - 1);
  };

  async function syncedPod(name: string, node: string, ip: string, ns = 'default', extra: Partial<Parameters<typeof podFixture>[0]> = {}) {
    api.create(podFixture({ name, namespace: ns, node, ip, ...extra }));
    istiod.setProxy(`${name}.${ns}`, { acked: true });
  }

  it('a pod created and synced ends in its node only; its pairs wait for both sidecars', async () => {
    await syncedPod('a', 'node-1', '10.0.1.1');
    await waitFor('a on node-1', () => pods('node-1').includes('default/a'));
    const mark = updates.length;
    api.create(podFixture({ name: 'b', node: 'node-1', ip: '10.0.1.2' }));
    await waitFor('b on node-1', () => pods('node-1').includes('default/b'));
    expect(states.get('node-1')!.endpoints.find((e) => e.pod === 'default/b')?.accelerate).toBe(false);
    expect(pairs('node-1')).toBe(0);
    istiod.setProxy('b.default', { acked: true });
    await waitFor('pairs', () => pairs('node-1') === 2);
    expect(new Set(since(mark).map((u) => u.node))).toEqual(new Set(['node-1']));
  });

  it('a pod deleted and recreated on another node moves its endpoint', async () => {
    await syncedPod('a', 'node-1', '10.0.1.1');
    await syncedPod('b', 'node-1', '10.0.1.2');
    await syncedPod('c', 'node-2', '10.0.2.1');
    await waitFor('pairs on node-1', () => pairs('node-1') === 2);
    const mark = updates.length;
    api.remove('Pod', 'default', 'b');
    api.create(podFixture({ name: 'b', node: 'node-2', ip: '10.0.2.2' }));
    await waitFor('b on node-2', () => pods('node-2').includes('default/b') && pairs('node-2') === 2);
    expect(pods('node-1')).toEqual(['default/a']);
    expect(pairs('node-1')).toBe(0);
    expect(since(mark).some((u) => u.node === 'node-3')).toBe(false);
  });

  it('relabelling a pod to opt out, then a namespace opting out', async () => {
    await syncedPod('a', 'node-1', '10.0.1.1');
    await syncedPod('b', 'node-1', '10.0.1.2');
    await syncedPod('s', 'node-2', '10.0.2.1', 'shop');
    await syncedPod('t', 'node-2', '10.0.2.2', 'shop');
    await waitFor('pairs', () => pairs('node-1') === 2 && pairs('node-2') === 2);
    const pod = api.get('Pod', 'default', 'a')!;
    api.update({ ...pod, metadata: { ...pod.metadata, labels: { ...(pod.metadata?.labels ?? {}), 'meshlane.io/accelerate': 'false' } } } as typeof pod);
    await waitFor('a opted out', () => pairs('node-1') === 0);
    expect(states.get('node-1')!.endpoints.find((e) => e.pod === 'default/a')?.accelerate).toBe(false);
    const mark = updates.length;
    api.update(namespaceFixture('shop', { 'meshlane.io/accelerate': 'false' }));
    await waitFor('shop opted out', () => pairs('node-2') === 0);
    expect(new Set(since(mark).map((u) => u.node))).toEqual(new Set(['node-2']));
  });

  it('a dropped watch, and an expired one (410 Gone), still end in the right state', async () => {
    await syncedPod('a', 'node-1', '10.0.1.1');
    await syncedPod('b', 'node-1', '10.0.1.2');
    await waitFor('pairs', () => pairs('node-1') === 2);
    api.dropWatches();
    api.create(podFixture({ name: 'c', node: 'node-3', ip: '10.0.3.1' }));
    await waitFor('c after a dropped watch', () => pods('node-3').includes('default/c'));
    // Expire: compact history and drop; a delete happens while nobody watches.
    api.compactHistory();
    api.dropWatches();
    api.remove('Pod', 'default', 'a');
    await waitFor('a gone after relist', () => !pods('node-1').includes('default/a'));
    expect(pairs('node-1')).toBe(0);
  });

  it('a sidecar that disconnects from istiod loses its pairs', async () => {
    await syncedPod('a', 'node-1', '10.0.1.1');
    await syncedPod('b', 'node-1', '10.0.1.2');
    await waitFor('pairs', () => pairs('node-1') === 2);
    istiod.removeProxy('b.default');
    await waitFor('pairs gone', () => pairs('node-1') === 0);
  });
});
