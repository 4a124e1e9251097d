/**
 * The fake kube-apiserver's list protocol, checked over raw HTTP against how the real apiserver's
 * etcd3 store serves it: limit/continue pages of one snapshot, the continue token's encoding,
 * remainingItemCount, 410 for compacted tokens (with the real message and the rv=-1 token), the
 * validation errors, resourceVersion semantics, streamed bodies and the injectable faults.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FakeKubeApiServer, podFixture, realisticPodFixture, type FakeApiServerOptions } from '../fakes/kube-apiserver.js';

let server: FakeKubeApiServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

interface ListBody {
  kind: string;
  metadata: { resourceVersion: string; continue?: string; remainingItemCount?: number };
  items: Array<{ metadata: { name: string; namespace?: string; resourceVersion: string; labels?: Record<string, string> } }>;
}

interface StatusBody {
  kind: string;
  code: number;
  reason: string;
  message: string;
  metadata: { continue?: string };
}

async function get(path: string): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(`${server?.url}${path}`);
  return { status: res.status, headers: res.headers, text: await res.text() };
}

async function list(path: string): Promise<ListBody> {
  const r = await get(path);
  expect(r.status, r.text).toBe(200);
  return JSON.parse(r.text) as ListBody;
}

/** An error answer: its HTTP status as `http`, and its Status body. */
async function failure(path: string): Promise<StatusBody & { http: number }> {
  const r = await get(path);
  return { ...(JSON.parse(r.text) as StatusBody), http: r.status };
}

const names = (l: ListBody): string[] => l.items.map((i) => i.metadata.name);
const decode = (token: string): unknown => JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));

async function seeded(n: number, opts: FakeApiServerOptions = {}): Promise<FakeKubeApiServer> {
  server = await FakeKubeApiServer.start({ bookmarkIntervalMs: 0, ...opts });
  // Created out of order: lists are in key order whatever the creation order.
  for (let i = n - 1; i >= 0; i--) server.create(podFixture({ namespace: i % 2 ? 'b' : 'a', name: `p-${String(i).padStart(2, '0')}` }));
  return server;
}

describe('fake kube-apiserver: paginated lists', () => {
  it('pages in key order, one snapshot, real continue tokens and remainingItemCount', async () => {
    const s = await seeded(7);
    const rv = s.resourceVersion();
    const p1 = await list('/api/v1/pods?limit=3');
    expect(names(p1)).toEqual(['p-00', 'p-02', 'p-04']);
    expect(p1.metadata.resourceVersion).toBe(rv);
    expect(p1.metadata.remainingItemCount).toBe(4);
    expect(decode(p1.metadata.continue ?? '')).toEqual({ v: 'meta.k8s.io/v1', rv: Number(rv), start: 'a/p-04\u0000' });

    // Changes after the first page: later pages still show the snapshot.
    const upd = s.update(podFixture({ namespace: 'b', name: 'p-03', labels: { v: '2' } }));
    s.remove('Pod', 'b', 'p-05');
    s.create(podFixture({ namespace: 'a', name: 'p-99' }));
    s.create(podFixture({ namespace: 'b', name: 'p-00' }));

    const p2 = await list(`/api/v1/pods?limit=3&continue=${p1.metadata.continue}`);
    expect(names(p2)).toEqual(['p-06', 'p-01', 'p-03']);
    expect(p2.metadata.resourceVersion).toBe(rv);
    expect(p2.metadata.remainingItemCount).toBe(1);
    expect(p2.items[2]?.metadata.labels?.v).toBeUndefined();
    const p3 = await list(`/api/v1/pods?limit=3&continue=${p2.metadata.continue}`);
    expect(names(p3)).toEqual(['p-05']);
    expect(p3.metadata.continue).toBeUndefined();
    expect(p3.metadata.remainingItemCount).toBeUndefined();

    // A new list sees the present.
    const now = await list('/api/v1/pods?limit=100');
    expect(now.items.map((i) => `${i.metadata.namespace}/${i.metadata.name}`)).toEqual(['a/p-00', 'a/p-02', 'a/p-04', 'a/p-06', 'a/p-99', 'b/p-00', 'b/p-01', 'b/p-03']);
    expect(now.items.find((i) => i.metadata.name === 'p-03' && i.metadata.namespace === 'b')?.metadata.resourceVersion).toBe(upd.metadata.resourceVersion);
    expect(now.metadata.resourceVersion).toBe(s.resourceVersion());
  });

  it('namespaced lists page within the namespace, with start keys relative to it', async () => {
    await seeded(6);
    const p1 = await list('/api/v1/namespaces/b/pods?limit=2');
    expect(names(p1)).toEqual(['p-01', 'p-03']);
    expect(decode(p1.metadata.continue ?? '')).toMatchObject({ start: 'p-03\u0000' });
    expect(p1.metadata.remainingItemCount).toBe(1);
    const p2 = await list(`/api/v1/namespaces/b/pods?limit=2&continue=${p1.metadata.continue}`);
    expect(names(p2)).toEqual(['p-05']);
    expect(p2.metadata.continue).toBeUndefined();
  });

  it('an expired continue token (etcd compacted) is 410 with the real message and an rv=-1 token', async () => {
    const s = await seeded(5);
    const p1 = await list('/api/v1/pods?limit=2');
    s.create(podFixture({ namespace: 'a', name: 'p-00a' }));
    s.compactStorage();
    const gone = await failure(`/api/v1/pods?limit=2&continue=${p1.metadata.continue}`);
    expect(gone).toMatchObject({ http: 410, kind: 'Status', status: 'Failure', code: 410, reason: 'Expired' });
    expect(gone.message).toMatch(/^The provided continue parameter is too old to display a consistent list result\. You can start a new list without the continue parameter, or use the continue token in this response/);
    expect(decode(gone.metadata.continue ?? '')).toEqual({ v: 'meta.k8s.io/v1', rv: -1, start: 'a/p-02\u0000' });
    // The offered token continues at the latest revision (an inconsistent list, as advertised).
    const rest = await list(`/api/v1/pods?limit=10&continue=${gone.metadata.continue}`);
    expect(names(rest)).toEqual(['p-04', 'p-01', 'p-03']);
    expect(rest.metadata.resourceVersion).toBe(s.resourceVersion());
  });

  it('tokens expire after the compaction interval once something was written since', async () => {
    const s = await seeded(4, { compactionIntervalMs: 100 });
    const p1 = await list('/api/v1/pods?limit=1');
    // Nothing written: the snapshot is the latest revision, which compaction keeps.
    await new Promise((r) => setTimeout(r, 150));
    expect((await get(`/api/v1/pods?limit=1&continue=${p1.metadata.continue}`)).status).toBe(200);
    s.create(podFixture({ namespace: 'c', name: 'late' }));
    await new Promise((r) => setTimeout(r, 150));
    expect((await failure(`/api/v1/pods?limit=1&continue=${p1.metadata.continue}`)).http).toBe(410);
  });

  it('validation: continue with a resourceVersion, bad tokens, resourceVersionMatch without resourceVersion', async () => {
    await seeded(3);
    const p1 = await list('/api/v1/pods?limit=1');
    const t = p1.metadata.continue ?? '';
    expect(await failure(`/api/v1/pods?limit=1&continue=${t}&resourceVersion=5`)).toMatchObject({ http: 400, reason: 'BadRequest', message: 'specifying resource version is not allowed when using continue' });
    expect((await get(`/api/v1/pods?limit=1&continue=${t}&resourceVersion=0`)).status).toBe(200);
    expect(await failure('/api/v1/pods?limit=1&continue=@@')).toMatchObject({ http: 400, message: expect.stringMatching(/^invalid continue token: continue key is not valid/) });
    const zero = Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv: 0, start: 'a\u0000' })).toString('base64url');
    expect((await failure(`/api/v1/pods?continue=${zero}`)).message).toMatch(/incorrect encoded start resourceVersion/);
    expect(await failure('/api/v1/pods?resourceVersionMatch=Exact')).toMatchObject({ http: 422, reason: 'Invalid' });
    expect(await failure('/api/v1/pods?limit=x')).toMatchObject({ http: 400 });
  });

  it('resourceVersion semantics: "0" is the watch cache (limit ignored), an exact revision is a snapshot, compacted is 410', async () => {
    const s = await seeded(4);
    const rv = s.resourceVersion();
    const cache = await list('/api/v1/pods?limit=1&resourceVersion=0');
    expect(cache.items).toHaveLength(4);
    expect(cache.metadata.continue).toBeUndefined();
    s.remove('Pod', 'a', 'p-00');
    const exact = await list(`/api/v1/pods?limit=10&resourceVersion=${rv}&resourceVersionMatch=Exact`);
    expect(names(exact)).toEqual(['p-00', 'p-02', 'p-01', 'p-03']);
    expect(exact.metadata.resourceVersion).toBe(rv);
    const legacy = await list(`/api/v1/pods?limit=2&resourceVersion=${rv}`);
    expect(names(legacy)).toEqual(['p-00', 'p-02']);
    s.compactStorage();
    expect(await failure(`/api/v1/pods?limit=2&resourceVersion=${rv}`)).toMatchObject({ http: 410, reason: 'Expired', message: 'The resourceVersion for the provided list is too old.' });
    expect((await failure(`/api/v1/pods?resourceVersion=${Number(s.resourceVersion()) + 10}`)).http).toBe(504);
  });

  it('streams list bodies (chunked, no Content-Length), whole when limit is absent', async () => {
    server = await FakeKubeApiServer.start({ bookmarkIntervalMs: 0 });
    for (let i = 0; i < 300; i++) server.create(realisticPodFixture({ name: `app-5d7b9c6f4-${String(i).padStart(5, '0')}`, node: 'n', ip: '10.0.0.1' }));
    const r = await get('/api/v1/pods');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-length')).toBeNull();
    expect(r.headers.get('transfer-encoding')).toBe('chunked');
    const body = JSON.parse(r.text) as ListBody;
    expect(body.items).toHaveLength(300);
    expect(r.text.length).toBeGreaterThan(300 * 12_000);
    expect(server.requests.at(-1)?.items).toBe(300);
  });

  it('faults: a server that ignores limit, HTML and truncated list responses', async () => {
    const s = await seeded(5, { ignoreLimit: true });
    const whole = await list('/api/v1/pods?limit=2');
    expect(whole.items).toHaveLength(5);
    expect(whole.metadata.continue).toBeUndefined();
    s.corruptNextLists(1, 'not-json');
    const html = await get('/api/v1/pods?limit=2');
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toBe('text/html');
    s.corruptNextLists(1, 'truncated');
    const cut = await get('/api/v1/pods');
    expect(() => JSON.parse(cut.text)).toThrow();
    expect(cut.text.startsWith('{"kind":"PodList"')).toBe(true);
    expect((await get('/api/v1/pods')).status).toBe(200);
  });
});
