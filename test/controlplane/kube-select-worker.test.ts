/**
 * List pages selected on the worker thread (select-pool.ts + the compiled select-worker.js, which
 * `tsc -b` builds before the tests run): the same result as on this thread, buffers handed back,
 * malformed pages refused, and a worker that fails is given up for the main thread.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { selectSplitRaw, splitSelection } from '../../controlplane/src/kube/json-select.js';
import { LIST_SELECTIONS } from '../../controlplane/src/kube/projection.js';
import { SelectPool, builtWorkerUrl } from '../../controlplane/src/kube/select-pool.js';
import { realisticPodFixture } from '../fakes/kube-apiserver.js';

const WORKER = new URL('../../controlplane/dist/kube/select-worker.js', import.meta.url);

let pool: SelectPool | undefined;
afterEach(async () => {
  await pool?.close();
  pool = undefined;
});

function page(n: number): Buffer {
  const items = Array.from({ length: n }, (_, i) => {
    const { kind: _k, apiVersion: _a, ...item } = realisticPodFixture({ name: `app-5d7b9c6f4-${String(i).padStart(5, '0')}`, node: 'n', ip: '10.0.0.1' });
    return item;
  });
  return Buffer.from(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: '7', continue: 'tok' }, items }));
}

function copyInto(src: Buffer, p: SelectPool): Buffer {
  const b = p.alloc(src.length);
  src.copy(b);
  return b;
}

describe('list page selection on a worker thread', () => {
  it('the compiled worker is there (tsc -b), and not next to the TypeScript sources', () => {
    expect(existsSync(fileURLToPath(WORKER))).toBe(true);
    expect(builtWorkerUrl()).toBeUndefined();
  });

  it('selects a big page exactly as this thread does, and hands the buffers back', async () => {
    const body = page(200);
    const expected = selectSplitRaw(body, LIST_SELECTIONS.pods, 'items', Buffer.alloc(body.length));
    pool = new SelectPool(WORKER);
    expect(pool.usesWorker()).toBe(true);
    const src = copyInto(body, pool);
    const out = pool.alloc(body.length);
    const got = await pool.select(src, body.length, 'pods', out, 10_000);
    // The buffers went to the worker and came back as new objects over the same memory.
    expect(src.length).toBe(0);
    expect(got.src.length).toBe(body.length);
    expect(got.ranges).toEqual(expected);
    const view = splitSelection(got.out, got.ranges);
    expect(view.length).toBe(200);
    expect(view.rest).toEqual({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: '7', continue: 'tok' }, items: [] });
    expect(view.element(199)).toMatchObject({ metadata: { name: 'app-5d7b9c6f4-00199' } });
    // Again with the returned buffers, as the next page of a list does.
    body.copy(got.src);
    const again = await pool.select(got.src, body.length, 'pods', got.out, 10_000);
    expect(again.ranges).toEqual(expected);
  });

  it('refuses a malformed big page with the selection error', async () => {
    const body = page(50);
    body[body.length - 3] = 0x3c; // '<'
    pool = new SelectPool(WORKER);
    await expect(pool.select(copyInto(body, pool), body.length, 'pods', pool.alloc(body.length), 10_000)).rejects.toThrow(/at byte \d+/);
    expect(pool.usesWorker()).toBe(true); // a bad page is not a broken worker
  });

  it('small pages stay on this thread', async () => {
    const body = Buffer.from(JSON.stringify({ kind: 'PodList', metadata: { resourceVersion: '1' }, items: [{ metadata: { name: 'a' } }] }));
    pool = new SelectPool(WORKER);
    const src = copyInto(body, pool);
    const got = await pool.select(src, body.length, 'pods', pool.alloc(body.length), 10_000);
    expect(got.src).toBe(src);
    expect(splitSelection(got.out, got.ranges).element(0)).toEqual({ metadata: { name: 'a' } });
  });

  it('a worker that cannot run is given up: the page fails, later pages are selected here', async () => {
    const why: string[] = [];
    pool = new SelectPool(new URL('./no-such-worker.js', WORKER), (w) => why.push(w));
    const body = page(50);
    await expect(pool.select(copyInto(body, pool), body.length, 'pods', pool.alloc(body.length), 10_000)).rejects.toThrow(/list page selection worker (failed|exited)/);
    expect(pool.usesWorker()).toBe(false);
    expect(why).toHaveLength(1);
    const got = await pool.select(copyInto(body, pool), body.length, 'pods', pool.alloc(body.length), 10_000);
    expect(splitSelection(got.out, got.ranges).length).toBe(50);
  });
});
