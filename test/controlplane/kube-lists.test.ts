/**
 * KubeSources' lists against the fake kube-apiserver: paginated, one snapshot whatever changes
 * between pages, restarted from the beginning when the continue token expired, resumed after a
 * failed page, pages shrunk when too large, clear errors with backoff for unreadable responses, and
 * small (memory, event-loop time) at thousands of realistic pods.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { V1Pod } from '@kubernetes/client-node';
import { KubeSources, loadKubeConfig, type Change, type KubeSourcesOptions } from '../../controlplane/src/kube/sources.js';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, podFixture, realisticPodFixture, type FakeApiServerOptions, type RequestRecord } from '../fakes/kube-apiserver.js';

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });

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

async function waitFor(what: string, pred: () => boolean, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface PodEvent {
  change: Change;
  key: string;
  rv: string | undefined;
  pod: V1Pod;
}

interface Rig {
  server: FakeKubeApiServer;
  sources: KubeSources;
  /** Every pod event, in order. */
  events: PodEvent[];
  /** Pods as the events left them. */
  state: Map<string, V1Pod>;
}

async function rig(seed: (s: FakeKubeApiServer) => void, opts: KubeSourcesOptions = {}, serverOpts: FakeApiServerOptions = {}, onPod?: (e: PodEvent) => void): Promise<Rig> {
  server = await FakeKubeApiServer.start({ bookmarkIntervalMs: 200, ...serverOpts });
  server.create(namespaceFixture('shop'));
  server.create(nodeFixture('node-a'));
  seed(server);
  tmp = mkdtempSync(join(tmpdir(), 'meshlane-kube-'));
  writeFileSync(join(tmp, 'kubeconfig'), server.kubeconfig());
  sources = new KubeSources(loadKubeConfig(join(tmp, 'kubeconfig')), log, {
    inactivityTimeoutMs: 2000,
    backoffInitialMs: 50,
    backoffMaxMs: 400,
    listTimeoutMs: 3000,
    watchTimeoutSeconds: 60,
    ...opts,
  });
  const r: Rig = { server, sources, events: [], state: new Map() };
  sources.onPod((change, pod) => {
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    const e: PodEvent = { change, key, rv: pod.metadata?.resourceVersion, pod };
    r.events.push(e);
    if (change === 'upsert') r.state.set(key, pod);
    else r.state.delete(key);
    onPod?.(e);
  });
  sources.start();
  return r;
}

const pod = (name: string, extra: Partial<Parameters<typeof podFixture>[0]> = {}) => podFixture({ namespace: 'shop', name, node: 'node-a', ip: '10.244.0.5', ...extra });
const podName = (i: number): string => `p-${String(i).padStart(2, '0')}`;
const seedPods = (n: number) => (s: FakeKubeApiServer) => {
  for (let i = 0; i < n; i++) s.create(pod(podName(i)));
};
const podLists = (s: FakeKubeApiServer): RequestRecord[] => s.requests.filter((q) => !q.watch && q.path === '/api/v1/pods');
const keys = (r: Rig): string[] => [...r.state.keys()].sort();

describe('KubeSources lists', () => {
  it('lists in pages of listPageSize, each continuing the last, then watches from the list resourceVersion', async () => {
    const r = await rig(seedPods(23), { listPageSize: 5 });
    const listRv = r.server.resourceVersion();
    await r.sources.waitForSync(5000);
    expect(r.state.size).toBe(23);
    expect(r.sources.pods()).toHaveLength(23);
    const lists = podLists(r.server);
    expect(lists.map((q) => q.query.limit)).toEqual(['5', '5', '5', '5', '5']);
    expect(lists.map((q) => q.items)).toEqual([5, 5, 5, 5, 3]);
    expect(lists[0]?.query.continue).toBeUndefined();
    expect(lists.slice(1).every((q) => (q.query.continue ?? '') !== '')).toBe(true);
    expect(r.sources.stats().pods).toMatchObject({ lists: 1, pages: 5, errors: 0, listRestarts: 0 });
    await waitFor('pod watch', () => r.server.requests.some((q) => q.watch && q.path === '/api/v1/pods'));
    expect(r.server.requests.find((q) => q.watch && q.path === '/api/v1/pods')?.resourceVersion).toBe(listRv);
  });

  it('is one snapshot whatever changes between pages; the watch then delivers those changes', async () => {
    let changed = false;
    const r = await rig(seedPods(10), { listPageSize: 2 }, {}, () => {
      if (changed || !server) return;
      changed = true;
      // While the first page is being delivered: change objects that later pages hold.
      server.update(pod(podName(8), { labels: { v: '2' } }));
      server.remove('Pod', 'shop', podName(9));
      server.create(pod('p-05a'));
    });
    await r.sources.waitForSync(5000);
    const listed = r.events.slice(0, 10);
    expect(listed.map((e) => `${e.change} ${e.key}`)).toEqual(Array.from({ length: 10 }, (_, i) => `upsert shop/${podName(i)}`));
    expect(listed.find((e) => e.key === 'shop/p-08')?.pod.metadata?.labels?.v).toBeUndefined();
    await waitFor('watched changes', () => r.state.get('shop/p-08')?.metadata?.labels?.v === '2' && !r.state.has('shop/p-09') && r.state.has('shop/p-05a'));
    expect(r.events.slice(10).map((e) => `${e.change} ${e.key}`)).toEqual(['upsert shop/p-08', 'delete shop/p-09', 'upsert shop/p-05a']);
    expect(r.sources.stats().pods).toMatchObject({ lists: 1, pages: 5, listRestarts: 0 });
  });

  it('an expired continue token (410) restarts the list from the beginning; vanished pods become deletes', async () => {
    let compacted = false;
    const r = await rig(seedPods(10), { listPageSize: 2 }, {}, () => {
      if (compacted || !server) return;
      compacted = true;
      server.remove('Pod', 'shop', podName(0));
      server.create(pod('p-99'));
      server.compactStorage();
    });
    await r.sources.waitForSync(5000);
    const lists = podLists(r.server);
    const expired = lists.findIndex((q) => q.status === 410);
    expect(expired).toBeGreaterThan(0);
    expect(lists[expired + 1]?.query.continue).toBeUndefined(); // from the beginning
    expect(lists.slice(expired + 1).every((q) => q.status === 200)).toBe(true);
    expect(keys(r)).toEqual([...Array.from({ length: 9 }, (_, i) => `shop/${podName(i + 1)}`), 'shop/p-99']);
    // Each pod delivered once: the second list does not repeat unchanged pods.
    const upserts = r.events.filter((e) => e.change === 'upsert').map((e) => e.key);
    expect(new Set(upserts).size).toBe(upserts.length);
    expect(r.events.filter((e) => e.change === 'delete').map((e) => e.key)).toEqual(['shop/p-00']);
    expect(r.sources.stats().pods).toMatchObject({ lists: 1, listRestarts: 1 });
  });

  it('a page that is not JSON is a clear error followed by a backoff, then the list recovers', async () => {
    const r = await rig(seedPods(4), { listPageSize: 2, backoffInitialMs: 200, backoffMaxMs: 400 }, {}, undefined);
    // (The fault is armed before the first request reaches the server: start() only schedules I/O.)
    r.server.corruptNextLists(1, 'not-json', { path: '/api/v1/pods' });
    await r.sources.waitForSync(5000);
    const st = r.sources.stats().pods;
    expect(st.errors).toBe(1);
    expect(st.restarts).toBe(1);
    const lists = podLists(r.server);
    expect(lists).toHaveLength(3); // the refused first page, then two good pages
    expect(r.state.size).toBe(4);
    expect(st.lastError).toBeUndefined();
  });

  it('reports why: the error names the list, the page and what came back', async () => {
    const r = await rig(seedPods(4), { listPageSize: 2, backoffInitialMs: 5000, backoffMaxMs: 5000 });
    r.server.corruptNextLists(1, 'not-json', { path: '/api/v1/pods' });
    await waitFor('the error', () => r.sources.stats().pods.errors === 1);
    expect(r.sources.stats().pods.lastError).toMatch(/^list \/api\/v1\/pods page 1 \(limit 2\): response is not JSON \(text\/html, \d+ bytes\): expected a value at byte 0/);
    // Backing off: no request for a while, not a tight relist loop.
    const n = podLists(r.server).length;
    await new Promise((res) => setTimeout(res, 500));
    expect(podLists(r.server).length).toBe(n);
    expect(r.sources.synced()).toBe(false);
  });

  it('a truncated page mid-list: after the backoff the list resumes from that page, not from the start', async () => {
    const r = await rig(seedPods(6), { listPageSize: 2 });
    r.server.corruptNextLists(1, 'truncated', { path: '/api/v1/pods', continued: true });
    await r.sources.waitForSync(5000);
    const lists = podLists(r.server);
    // Never from the start again; the failed (second) page asked for again. (The page after it
    // may have been asked for ahead too, then dropped with the failure.)
    expect(lists.filter((q) => q.query.continue === undefined)).toHaveLength(1);
    expect(lists.filter((q) => q.query.continue === lists[1]?.query.continue)).toHaveLength(2);
    expect(keys(r)).toHaveLength(6);
    expect(r.sources.stats().pods).toMatchObject({ lists: 1, errors: 1, pages: 3 });
    expect(r.events.filter((e) => e.change === 'upsert')).toHaveLength(6);
  });

  it('a page larger than maxListPageBytes is abandoned and asked for again with half the objects', async () => {
    const seed = (s: FakeKubeApiServer) => {
      for (let i = 0; i < 6; i++) s.create(realisticPodFixture({ namespace: 'shop', name: `app-5d7b9c6f4-${podName(i)}`, node: 'node-a', ip: `10.244.0.${i + 1}` }));
    };
    // A realistic pod is ~15 KB: 2 fit, 4 do not.
    const r = await rig(seed, { listPageSize: 8, maxListPageBytes: 40_000 });
    await r.sources.waitForSync(5000);
    const lists = podLists(r.server);
    // The first page with 8, then 4 objects is abandoned; with 2 it fits, and so does the rest.
    // (A page asked for ahead of one abandoned is dropped with it: continued requests may include one.)
    expect(lists.filter((q) => q.query.continue === undefined).map((q) => q.query.limit)).toEqual(['8', '4', '2']);
    expect(lists.slice(-2).map((q) => q.query.limit)).toEqual(['2', '2']);
    expect(r.state.size).toBe(6);
    expect(r.sources.stats().pods).toMatchObject({ lists: 1, errors: 0, pages: 3 });
    // What consumers get is the projection, never managedFields and the like.
    const p = r.state.get('shop/app-5d7b9c6f4-p-00');
    expect(p?.metadata?.managedFields).toBeUndefined();
    expect(p?.spec?.volumes).toBeUndefined();
    expect(p?.spec?.initContainers?.map((c) => c.name)).toEqual(['istio-init', 'istio-proxy']);
    expect(r.sources.pods()[0]).toEqual({ metadata: { name: expect.any(String), namespace: 'shop', uid: expect.any(String), resourceVersion: expect.any(String) } });
  });

  it('a server that ignores limit with an oversized list: a clear error and backoff, each try cut short', async () => {
    const seed = (s: FakeKubeApiServer) => {
      for (let i = 0; i < 10; i++) s.create(realisticPodFixture({ namespace: 'shop', name: `app-5d7b9c6f4-${podName(i)}`, node: 'node-a', ip: '10.244.0.9' }));
    };
    const r = await rig(seed, { listPageSize: 4, maxListPageBytes: 40_000, backoffInitialMs: 100, backoffMaxMs: 200 }, { ignoreLimit: true });
    const t0 = Date.now();
    await waitFor('three failed tries', () => r.sources.stats().pods.errors >= 3);
    const elapsed = Date.now() - t0;
    const st = r.sources.stats().pods;
    const lists = podLists(r.server);
    expect(r.sources.synced()).toBe(false);
    expect(st.lastError).toMatch(/page \d+ \(limit 1\): response larger than 40000 bytes; abandoned while downloading, even one object per page/);
    // 4, 2, 1 in the first try; then one request per backoff (>= 50 ms apart), not a loop.
    expect(lists.slice(0, 3).map((q) => q.query.limit)).toEqual(['4', '2', '1']);
    expect(lists.length).toBeLessThanOrEqual(3 + st.errors);
    expect(lists.length).toBeLessThan(3 + elapsed / 50 + 1);
  });
});

describe('KubeSources at scale', () => {
  it('thousands of realistic pods: small cache, short event-loop stalls', async () => {
    const N = 3000;
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const seed = (s: FakeKubeApiServer) => {
      for (let i = 0; i < N; i++) {
        s.create(realisticPodFixture({ namespace: `ns-${i % 20}`, name: `app-${i % 150}-5d7b9c6f4-${String(i).padStart(5, '0')}`, node: `node-${i % 150}`, ip: `10.1.${i >> 8}.${i & 255}`, workload: `app-${i % 150}` }));
      }
    };
    server = await FakeKubeApiServer.start({ bookmarkIntervalMs: 0 });
    seed(server);
    tmp = mkdtempSync(join(tmpdir(), 'meshlane-kube-'));
    writeFileSync(join(tmp, 'kubeconfig'), server.kubeconfig());
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    sources = new KubeSources(loadKubeConfig(join(tmp, 'kubeconfig')), log, { listPageSize: 500 });
    let upserts = 0;
    let bytes = 0;
    sources.onPod((change, p) => {
      if (change === 'upsert') upserts++;
      if (upserts === 1) bytes = JSON.stringify(p).length;
    });
    let maxGap = 0;
    let last = performance.now();
    const probe = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 5);
    const t0 = performance.now();
    sources.start();
    await sources.waitForSync(30_000);
    const ms = performance.now() - t0;
    clearInterval(probe);
    gc();
    const perPod = (process.memoryUsage().heapUsed - heapBefore) / N;
    log.info({ pods: N, ms, maxGapMs: maxGap, heapPerPodBytes: perPod, projectionJsonBytes: bytes }, 'scale');
    expect(upserts).toBe(N);
    expect(sources.stats().pods.pages).toBe(Math.ceil(N / 500));
    // The library's informer kept ~41 KB per such pod; the cache keeps an identity.
    expect(perPod).toBeLessThan(1024);
    expect(bytes).toBeLessThan(2500);
    // The event loop is given back between batches: never silent for a second (the /healthz goal;
    // here the fake shares the loop, and a loaded machine adds to it: typically well under 200 ms).
    expect(maxGap).toBeLessThan(1000);
  }, 120_000);
});
