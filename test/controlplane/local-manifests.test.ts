/**
 * local mode - a folder of manifests as the cluster. Work must follow the
 * change: an edit of one file among many re-reads that file alone and emits
 * exactly its differences; deleting a file removes exactly its objects; a
 * file that does not parse changes nothing; the same object in two files
 * is not deleted while one still defines it.
 */
import { mkdtempSync, rmSync, unlinkSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { V1Pod } from '@kubernetes/client-node';
import { ManifestSource, sameJson } from '../../controlplane/src/local/manifests.js';
import type { Change } from '../../controlplane/src/source.js';
import { namespaceFixture, nodeFixture, podFixture } from '../fakes/kube-apiserver.js';
import { waitFor } from '../harness/wait.js';

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Seen {
  change: Change;
  kind: string;
  key: string;
  obj: V1Pod;
}

describe('local mode - manifests folder', () => {
  let dir: string;
  let src: ManifestSource;
  let seen: Seen[];
  const FILES = 300;

  const pod = (i: number, labels: Record<string, string> = {}) => podFixture({ name: `app-${i}`, node: `node-${i % 10}`, ip: `10.0.${i >> 8}.${i & 255}`, labels });
  const write = (name: string, body: unknown) => {
    // As editors and kubectl do: a temp file renamed over the old one.
    writeFileSync(join(dir, `.${name}.swp`), JSON.stringify(body, null, 1));
    renameSync(join(dir, `.${name}.swp`), join(dir, name));
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshlane-local-'));
    write('cluster.json', { apiVersion: 'v1', kind: 'List', items: [namespaceFixture('default'), ...Array.from({ length: 10 }, (_, n) => nodeFixture(`node-${n}`))] });
    for (let i = 0; i < FILES; i++) write(`pod-${i}.json`, pod(i));
    seen = [];
    src = new ManifestSource(dir, log, { debounceMs: 20, resyncMs: 0 });
    const record = (kind: string) => (change: Change, o: V1Pod) => seen.push({ change, kind, key: `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`, obj: o });
    src.onPod(record('Pod'));
    src.onNode(record('Node') as (c: Change, o: unknown) => void);
    src.onNamespace(record('Namespace') as (c: Change, o: unknown) => void);
    src.start();
    await waitFor('initial scan', () => src.synced());
  });

  afterEach(async () => {
    await src?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads every file once, asynchronously: start() returns before the scan is done', () => {
    expect(src.stats.reads).toBe(FILES + 1);
    expect(seen.filter((s) => s.kind === 'Pod')).toHaveLength(FILES);
    expect(seen.filter((s) => s.kind === 'Node')).toHaveLength(10);
    expect(seen.every((s) => s.change === 'upsert')).toBe(true);
    const other = new ManifestSource(dir, log, { resyncMs: 0 });
    other.start();
    try {
      expect(other.synced()).toBe(false);
    } finally {
      void other.stop();
    }
  });

  it('an edit of one file among many re-reads that file alone and emits only its change', async () => {
    const reads = src.stats.reads;
    seen.length = 0;
    write('pod-17.json', pod(17, { 'meshlane.io/accelerate': 'false' }));
    await waitFor('the edit', () => seen.length > 0);
    await sleep(150); // anything else would have arrived by now
    expect(src.stats.reads - reads).toBe(1);
    expect(seen.map((s) => [s.change, s.key])).toEqual([['upsert', 'default/app-17']]);
    expect(seen[0]!.obj.metadata?.labels?.['meshlane.io/accelerate']).toBe('false');
  });

  it('a file rewritten with the same content is read but emits nothing; an unchanged object in an edited List is not re-emitted', async () => {
    seen.length = 0;
    const reads = src.stats.reads;
    write('pod-3.json', pod(3));
    await waitFor('the read', () => src.stats.reads > reads);
    await sleep(100);
    expect(seen).toEqual([]);
    // cluster.json holds eleven objects: relabel one node, the other ten are the same.
    write('cluster.json', { apiVersion: 'v1', kind: 'List', items: [namespaceFixture('default'), ...Array.from({ length: 10 }, (_, n) => nodeFixture(`node-${n}`, '172.18.0.2', n === 4 ? { zone: 'b' } : {}))] });
    await waitFor('the node edit', () => seen.length > 0);
    await sleep(100);
    expect(seen.map((s) => [s.change, s.kind, s.key])).toEqual([['upsert', 'Node', '/node-4']]);
  });

  it('deleting a file removes exactly its objects', async () => {
    writeFileSync(join(dir, 'batch.yaml'), [pod(1000), pod(1001), pod(1002)].map((p) => `---\n${JSON.stringify(p)}\n`).join(''));
    await waitFor('the batch', () => seen.filter((s) => /^default\/app-100[0-2]$/.test(s.key)).length === 3);
    seen.length = 0;
    unlinkSync(join(dir, 'batch.yaml'));
    await waitFor('the deletes', () => seen.length >= 3);
    await sleep(100);
    expect(seen.map((s) => [s.change, s.key]).sort()).toEqual([
      ['delete', 'default/app-1000'],
      ['delete', 'default/app-1001'],
      ['delete', 'default/app-1002'],
    ]);
    // A delete carries the object as it was last seen, as an informer's does.
    expect(seen[0]!.obj.status?.podIP).toMatch(/^10\.0\.3\./);
  });

  it('an edit that drops one object of a file deletes that one only', async () => {
    write('pair.json', { apiVersion: 'v1', kind: 'List', items: [pod(2000), pod(2001)] });
    await waitFor('the pair', () => seen.filter((s) => /^default\/app-200[01]$/.test(s.key)).length === 2);
    seen.length = 0;
    write('pair.json', { apiVersion: 'v1', kind: 'List', items: [pod(2001)] });
    await waitFor('the delete', () => seen.length > 0);
    await sleep(100);
    expect(seen.map((s) => [s.change, s.key])).toEqual([['delete', 'default/app-2000']]);
  });

  it('a file that does not parse keeps what it held; fixing it emits the difference', async () => {
    seen.length = 0;
    writeFileSync(join(dir, 'pod-5.json'), '{"apiVersion": "v1", "kind": "Pod", "metad');
    await sleep(200);
    expect(seen).toEqual([]);
    expect(src.stats.errors).toBeGreaterThan(0);
    write('pod-5.json', pod(5, { tier: 'x' }));
    await waitFor('the fixed file', () => seen.length > 0);
    expect(seen.map((s) => [s.change, s.key])).toEqual([['upsert', 'default/app-5']]);
  });

  it('a pod moved from one file to another is never deleted on the way', async () => {
    seen.length = 0;
    write('moved.json', pod(9));
    await sleep(100);
    unlinkSync(join(dir, 'pod-9.json'));
    await sleep(200);
    expect(seen.filter((s) => s.change === 'delete')).toEqual([]);
    unlinkSync(join(dir, 'moved.json'));
    await waitFor('the delete once no file defines it', () => seen.some((s) => s.change === 'delete'));
    expect(seen.filter((s) => s.change === 'delete').map((s) => s.key)).toEqual(['default/app-9']);
  });

  it('files that are not manifests (hidden, other extensions) are ignored', async () => {
    const reads = src.stats.reads;
    writeFileSync(join(dir, '.pod-1.json.swp'), 'garbage');
    writeFileSync(join(dir, 'notes.txt'), 'garbage');
    await sleep(150);
    expect(src.stats.reads).toBe(reads);
    expect(src.stats.errors).toBe(0);
  });

  it('the resync picks up a change without reading unchanged files', async () => {
    await src.stop();
    // A second source, its watch disabled in effect by a debounce longer than the test: only the resync can see the change.
    const s2 = new ManifestSource(dir, log, { debounceMs: 60_000, maxDelayMs: 60_000, resyncMs: 100 });
    const got: string[] = [];
    s2.onPod((c, o) => got.push(`${c} ${o.metadata?.name}`));
    s2.start();
    try {
      await waitFor('s2 synced', () => s2.synced());
      const reads = s2.stats.reads;
      got.length = 0;
      await sleep(20); // a different mtime
      write('pod-8.json', pod(8, { edited: 'yes' }));
      await waitFor('the resync', () => got.length > 0, 5000);
      expect(got).toEqual(['upsert app-8']);
      expect(s2.stats.reads - reads).toBe(1);
    } finally {
      await s2.stop();
    }
  });
});

describe('sameJson', () => {
  it('compares parsed values field by field', () => {
    expect(sameJson({ a: [1, { b: 'x' }], c: null }, { c: null, a: [1, { b: 'x' }] })).toBe(true);
    expect(sameJson({ a: [1, 2] }, { a: [2, 1] })).toBe(false);
    expect(sameJson({ a: 1 }, { a: 1, b: undefined })).toBe(false);
    expect(sameJson({ a: 1, b: 2 }, { a: 1 })).toBe(false);
    expect(sameJson([], {})).toBe(false);
    expect(sameJson('1', 1)).toBe(false);
  });
});
