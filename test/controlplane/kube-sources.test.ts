/**
 * KubeSources through the real @kubernetes/client-node informers against the protocol-faithful fake
 * apiserver: initial sync, live events, dropped watches, 410 Gone relists, stalled watches, errors.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { KubernetesObject } from '@kubernetes/client-node';
import { KubeSources, loadKubeConfig, type Change, type KubeSourcesOptions } from '../../controlplane/src/kube/sources.js';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, podFixture, type FakeApiServerOptions } from '../fakes/kube-apiserver.js';

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });

interface Seen {
  change: Change;
  key: string;
  rv: string | undefined;
  obj: KubernetesObject;
}

class Recorder {
  readonly events: Seen[] = [];
  readonly state = new Map<string, KubernetesObject>();
  readonly cb = (change: Change, obj: KubernetesObject): void => {
    const key = obj.metadata?.namespace ? `${obj.metadata.namespace}/${obj.metadata.name ?? ''}` : (obj.metadata?.name ?? '');
    this.events.push({ change, key, rv: obj.metadata?.resourceVersion, obj });
    if (change === 'upsert') this.state.set(key, obj);
    else this.state.delete(key);
  };
  keys(): string[] {
    return [...this.state.keys()].sort();
  }
  rvOf(key: string): string | undefined {
    return this.state.get(key)?.metadata?.resourceVersion;
  }
  has(change: Change, key: string): boolean {
    return this.events.some((e) => e.change === change && e.key === key);
  }
}

async function waitFor(what: string, pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let server: FakeKubeApiServer | undefined;
let sources: KubeSources | undefined;
let tmp: string | undefined;

afterEach(async () => {
  await sources?.stop();
  sources = undefined;
  await server?.close();
  server = undefined;
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
});

interface Rig {
  server: FakeKubeApiServer;
  sources: KubeSources;
  pods: Recorder;
  nodes: Recorder;
  namespaces: Recorder;
}

async function rig(
  seed: (s: FakeKubeApiServer) => void = () => {},
  opts: KubeSourcesOptions = {},
  serverOpts: FakeApiServerOptions = {},
  waitSync = true,
): Promise<Rig> {
  server = await FakeKubeApiServer.start({ bookmarkIntervalMs: 200, token: 'sekret', ...serverOpts });
  seed(server);
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-kube-'));
  const file = join(tmp, 'kubeconfig');
  writeFileSync(file, server.kubeconfig());
  sources = new KubeSources(loadKubeConfig(file), log, {
    inactivityTimeoutMs: 1000,
    backoffInitialMs: 50,
    backoffMaxMs: 400,
    listTimeoutMs: 3000,
    watchTimeoutSeconds: 60,
    ...opts,
  });
  const r: Rig = { server, sources, pods: new Recorder(), nodes: new Recorder(), namespaces: new Recorder() };
  sources.onPod(r.pods.cb);
  sources.onNode(r.nodes.cb);
  sources.onNamespace(r.namespaces.cb);
  sources.start();
  if (waitSync) await sources.waitForSync(5000);
  return r;
}

function seedCluster(s: FakeKubeApiServer): void {
  s.create(namespaceFixture('default'));
  s.create(namespaceFixture('shop', { 'istio-injection': 'enabled' }));
  s.create(nodeFixture('node-a', '172.18.0.2'));
  s.create(nodeFixture('node-b', '172.18.0.3'));
  s.create(podFixture({ namespace: 'shop', name: 'cart-1', node: 'node-a', ip: '10.244.0.5' }));
  s.create(podFixture({ namespace: 'shop', name: 'pay-1', node: 'node-b', ip: '10.244.1.7' }));
  s.create(podFixture({ namespace: 'default', name: 'plain-1', node: 'node-a', ip: '10.244.0.9', sidecar: false }));
}

describe('KubeSources against a fake kube-apiserver', () => {
  it('initial list delivers every existing pod, node and namespace, then reports synced', async () => {
    const r = await rig(seedCluster);
    expect(r.sources.synced()).toBe(true);
    expect(r.pods.keys()).toEqual(['default/plain-1', 'shop/cart-1', 'shop/pay-1']);
    expect(r.nodes.keys()).toEqual(['node-a', 'node-b']);
    expect(r.namespaces.keys()).toEqual(['default', 'shop']);
    expect(r.pods.events.every((e) => e.change === 'upsert')).toBe(true);
    const cart = r.pods.state.get('shop/cart-1') as import('@kubernetes/client-node').V1Pod;
    expect(cart.spec?.nodeName).toBe('node-a');
    expect(cart.status?.podIPs?.map((p) => p.ip)).toEqual(['10.244.0.5']);
    expect(cart.spec?.containers.map((c) => c.name)).toContain('istio-proxy');
    expect(cart.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(r.sources.pods()).toHaveLength(3);
    // Watches asked for bookmarks and a server-side timeout, from the list's resourceVersion.
    await waitFor('watches open', () => r.server.openWatches() === 3);
    const w = r.server.requests.find((q) => q.watch && q.path === '/api/v1/pods');
    expect(w?.resourceVersion).toBe(r.server.resourceVersion());
    expect(w?.query.allowWatchBookmarks).toBe('true');
    expect(Number(w?.query.timeoutSeconds)).toBeGreaterThanOrEqual(60);
  });

  it('rejects a wrong token (401) and keeps retrying with backoff, never syncing', async () => {
    server = await FakeKubeApiServer.start({ token: 'right' });
    sources = new KubeSources(
      loadKubeConfigFromString(server.kubeconfig().replace('token: "right"', 'token: "wrong"')),
      log,
      { backoffInitialMs: 20, backoffMaxMs: 100 },
    );
    sources.start();
    await waitFor('a few retries', () => (sources?.stats().pods.restarts ?? 0) >= 2);
    expect(sources.synced()).toBe(false);
    expect(server.requests.length).toBeGreaterThanOrEqual(3);
    expect(server.requests.every((q) => q.status === 401)).toBe(true);
  });

  it('delivers pod create, update and delete; watch objects have the same shape as listed ones', async () => {
    const r = await rig(seedCluster);
    const p = r.server.create(podFixture({ namespace: 'shop', name: 'new-1', node: 'node-b', phase: 'Pending' }));
    await waitFor('add', () => r.pods.has('upsert', 'shop/new-1'));
    expect((r.pods.state.get('shop/new-1')?.metadata?.creationTimestamp)).toBeInstanceOf(Date);

    const running = podFixture({ namespace: 'shop', name: 'new-1', node: 'node-b', ip: '10.244.1.9' });
    const u = r.server.update(running);
    expect(Number(u.metadata.resourceVersion)).toBeGreaterThan(Number(p.metadata.resourceVersion));
    await waitFor('update', () => r.pods.rvOf('shop/new-1') === u.metadata.resourceVersion);
    const pod = r.pods.state.get('shop/new-1') as import('@kubernetes/client-node').V1Pod;
    expect(pod.status?.podIP).toBe('10.244.1.9');

    r.server.remove('Pod', 'shop', 'new-1');
    await waitFor('delete', () => r.pods.has('delete', 'shop/new-1'));
    expect(r.pods.keys()).toEqual(['default/plain-1', 'shop/cart-1', 'shop/pay-1']);
    expect(r.sources.stats().pods.lists).toBe(1);
  });

  it('nodes and namespaces: create, update, delete', async () => {
    const r = await rig(seedCluster);
    r.server.create(nodeFixture('node-c', '172.18.0.4'));
    r.server.create(namespaceFixture('payments'));
    await waitFor('node + ns add', () => r.nodes.has('upsert', 'node-c') && r.namespaces.has('upsert', 'payments'));

    const n = r.server.update(nodeFixture('node-c', '172.18.0.4', { 'meshlane.io/enabled': 'true' }));
    const ns = r.server.update(namespaceFixture('payments', { 'istio-injection': 'enabled' }));
    await waitFor('node + ns update', () => r.nodes.rvOf('node-c') === n.metadata.resourceVersion && r.namespaces.rvOf('payments') === ns.metadata.resourceVersion);
    expect(r.nodes.state.get('node-c')?.metadata?.labels?.['meshlane.io/enabled']).toBe('true');

    r.server.remove('Node', undefined, 'node-a');
    r.server.remove('Namespace', undefined, 'payments');
    await waitFor('node + ns delete', () => r.nodes.has('delete', 'node-a') && r.namespaces.has('delete', 'payments'));
    expect(r.nodes.keys()).toEqual(['node-b', 'node-c']);
    expect(r.namespaces.keys()).toEqual(['default', 'shop']);
  });

  it('a dropped watch reconnects from its resourceVersion and catches up on what happened meanwhile', async () => {
    const r = await rig(seedCluster);
    await waitFor('watches open', () => r.server.openWatches() === 3);
    // In one tick: connections die, then changes land before any client can reconnect.
    r.server.dropWatches();
    r.server.create(podFixture({ namespace: 'shop', name: 'during-1', node: 'node-a', ip: '10.244.0.20' }));
    const upd = r.server.update(podFixture({ namespace: 'shop', name: 'cart-1', node: 'node-a', ip: '10.244.0.5', labels: { v: '2' } }));
    r.server.remove('Pod', 'default', 'plain-1');
    r.server.create(nodeFixture('node-z'));

    await waitFor('catch-up', () =>
      r.pods.has('upsert', 'shop/during-1') && r.pods.rvOf('shop/cart-1') === upd.metadata.resourceVersion && r.pods.has('delete', 'default/plain-1') && r.nodes.has('upsert', 'node-z'),
    );
    expect(r.pods.keys()).toEqual(['shop/cart-1', 'shop/during-1', 'shop/pay-1']);
    // Resumed, not relisted: one list each, and the re-watch started at the old resourceVersion.
    expect(r.sources.stats().pods.lists).toBe(1);
    const podWatches = r.server.requests.filter((q) => q.watch && q.path === '/api/v1/pods' && q.status === 200);
    expect(podWatches[1]?.resourceVersion).toBe(podWatches[0]?.resourceVersion);
    expect(r.sources.stats().pods.watches).toBeGreaterThanOrEqual(2);
    // Still live afterwards.
    r.server.create(podFixture({ namespace: 'shop', name: 'after-1' }));
    await waitFor('live after reconnect', () => r.pods.has('upsert', 'shop/after-1'));
  });

  it('410 Gone after history compaction: relists, reporting vanished objects as deletes and only real changes', async () => {
    const r = await rig(seedCluster);
    await waitFor('watches open', () => r.server.openWatches() === 3);
    const before = r.pods.events.length;
    r.server.dropWatches();
    r.server.remove('Pod', 'shop', 'pay-1');
    r.server.create(podFixture({ namespace: 'shop', name: 'during-1', node: 'node-a', ip: '10.244.0.21' }));
    r.server.remove('Namespace', undefined, 'default');
    r.server.compactHistory();

    await waitFor('relist', () => r.sources.stats().pods.lists === 2 && r.sources.stats().namespaces.lists === 2 && r.sources.stats().nodes.lists === 2);
    await waitFor('relisted state', () => r.pods.has('delete', 'shop/pay-1') && r.pods.has('upsert', 'shop/during-1') && r.namespaces.has('delete', 'default'));
    expect(r.pods.keys()).toEqual(['default/plain-1', 'shop/cart-1', 'shop/during-1']);
    expect(r.namespaces.keys()).toEqual(['shop']);
    // Unchanged objects are not re-reported by the relist.
    const after = r.pods.events.slice(before).map((e) => `${e.change} ${e.key}`);
    expect(after.sort()).toEqual(['delete shop/pay-1', 'upsert shop/during-1']);
    // The server really answered the stale re-watch with an ERROR 410 Expired event.
    expect(r.server.requests.filter((q) => q.watch && q.path === '/api/v1/pods' && q.expired)).toHaveLength(1);
    r.server.create(podFixture({ namespace: 'shop', name: 'after-1' }));
    await waitFor('live after relist', () => r.pods.has('upsert', 'shop/after-1'));
  });

  it('410 Gone as an HTTP status on the watch request also relists', async () => {
    const r = await rig(seedCluster);
    await waitFor('watches open', () => r.server.openWatches() === 3);
    r.server.dropWatches();
    r.server.failNextRequests(1, 410, { path: '/api/v1/pods', watch: true });
    r.server.remove('Pod', 'shop', 'cart-1');
    await waitFor('relist', () => r.sources.stats().pods.lists === 2 && r.pods.has('delete', 'shop/cart-1'));
    expect(r.pods.keys()).toEqual(['default/plain-1', 'shop/pay-1']);
    expect(r.server.requests.some((q) => q.watch && q.path === '/api/v1/pods' && q.status === 410)).toBe(true);
  });

  it('a stalled watch (open but silent) is restarted by the watchdog and catches up', async () => {
    const r = await rig(seedCluster);
    await waitFor('watches open', () => r.server.openWatches() === 3);
    r.server.pauseWatches();
    r.server.create(podFixture({ namespace: 'shop', name: 'while-stalled', node: 'node-b', ip: '10.244.1.30' }));
    r.server.create(namespaceFixture('late'));
    await sleep(300);
    expect(r.pods.has('upsert', 'shop/while-stalled')).toBe(false); // really stalled
    await waitFor('watchdog catch-up', () => r.pods.has('upsert', 'shop/while-stalled') && r.namespaces.has('upsert', 'late'), 4000);
    const st = r.sources.stats();
    expect(st.pods.watchdogRestarts).toBeGreaterThanOrEqual(1);
    expect(st.pods.lists).toBe(1); // resumed from the resourceVersion
    expect(r.sources.restarts()).toBeGreaterThanOrEqual(3);
  });

  it('bookmarks keep a quiet but healthy watch alive: the watchdog does not fire', async () => {
    const r = await rig(seedCluster, { inactivityTimeoutMs: 800 }, { bookmarkIntervalMs: 150 });
    await sleep(2000);
    const st = r.sources.stats();
    expect(st.pods.watchdogRestarts + st.nodes.watchdogRestarts + st.namespaces.watchdogRestarts).toBe(0);
    expect(st.pods.watches).toBe(1);
  });

  it('the watch timeoutSeconds is honoured and the informer simply re-watches', async () => {
    const r = await rig(seedCluster, { watchTimeoutSeconds: 1 });
    await waitFor('re-watches after server timeouts', () => r.sources.stats().pods.watches >= 3, 6000);
    expect(r.sources.stats().pods.errors).toBe(0);
    expect(r.sources.stats().pods.lists).toBe(1);
    r.server.create(podFixture({ namespace: 'shop', name: 'x-1' }));
    await waitFor('live', () => r.pods.has('upsert', 'shop/x-1'));
  });

  it('errors (failed list, failed watches) restart the informer with backoff until it recovers', async () => {
    const r = await rig(seedCluster, {}, {}, false);
    r.server.failNextRequests(4, 500);
    await r.sources.waitForSync(5000);
    expect(r.pods.keys()).toHaveLength(3);
    await waitFor('watches open', () => r.server.openWatches() === 3);

    r.server.dropWatches();
    r.server.failNextRequests(6, 503);
    r.server.create(podFixture({ namespace: 'shop', name: 'after-errors' }));
    await waitFor('recovered', () => r.pods.has('upsert', 'shop/after-errors'), 5000);
    const st = r.sources.stats();
    expect(st.pods.errors + st.nodes.errors + st.namespaces.errors).toBeGreaterThanOrEqual(4);
    expect(st.pods.restarts + st.nodes.restarts + st.namespaces.restarts).toBeGreaterThanOrEqual(4);
  });

  it('a list that never answers is abandoned after listTimeoutMs and retried', async () => {
    const r = await rig(seedCluster, { listTimeoutMs: 300 }, {}, false);
    r.server.hangNextRequests(3); // the three initial lists
    await r.sources.waitForSync(5000);
    expect(r.pods.keys()).toHaveLength(3);
    const st = r.sources.stats();
    expect(st.pods.errors + st.nodes.errors + st.namespaces.errors).toBe(3);
  });

  it('a consumer callback that throws does not break the informer', async () => {
    const r = await rig(seedCluster);
    r.sources.onPod((_c, pod) => {
      if (pod.metadata?.name === 'boom') throw new Error('consumer bug');
    });
    r.server.create(podFixture({ namespace: 'shop', name: 'boom' }));
    r.server.create(podFixture({ namespace: 'shop', name: 'next' }));
    await waitFor('both delivered', () => r.pods.has('upsert', 'shop/boom') && r.pods.has('upsert', 'shop/next'));
  });

  it('stop() closes every watch and no restart happens afterwards', async () => {
    const r = await rig(seedCluster);
    await waitFor('watches open', () => r.server.openWatches() === 3);
    await r.sources.stop();
    await waitFor('server sees watches closed', () => r.server.openWatches() === 0);
    const n = r.server.requests.length;
    r.server.create(podFixture({ namespace: 'shop', name: 'after-stop' }));
    await sleep(1500);
    expect(r.server.requests.length).toBe(n);
    expect(r.pods.has('upsert', 'shop/after-stop')).toBe(false);
  });
});

function loadKubeConfigFromString(yaml: string): import('@kubernetes/client-node').KubeConfig {
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-kube-'));
  const file = join(tmp, 'kubeconfig');
  writeFileSync(file, yaml);
  return loadKubeConfig(file);
}
