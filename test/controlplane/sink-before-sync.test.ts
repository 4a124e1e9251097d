/**
 * sinks - nothing is published before the sources are synced, in any sink.
 * Nodes list before pods (and pods list page by page), so a control plane
 * that publishes early writes every node an empty state, then partial ones:
 * states a worker would enforce. The first state any sink sees for a node
 * must already hold every pod of that node.
 *
 * In process: the real informers against the fake kube-apiserver, whose pod
 * list fails a few times and then comes in small pages, into the file sink
 * and a plain onUpdate listener. Through the CLI: the same from the outside
 * (every node's file at generation 1, so no state was ever emitted before
 * it), against the fake apiserver and in local mode (--cluster-dir).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { NodeState } from '@meshlane/proto';
import { ControlPlane } from '../../controlplane/src/controlplane.js';
import { KubeSources, loadKubeConfig } from '../../controlplane/src/kube/sources.js';
import { FileSink } from '../../controlplane/src/sinks/file-sink.js';
import { CONTROLPLANE_CLI } from '../harness/controlplane.js';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, podFixture } from '../fakes/kube-apiserver.js';
import { waitFor } from '../harness/wait.js';

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });
const NODES = 20;
const PODS_PER_NODE = 15;

const podOf = (i: number) => podFixture({ name: `app-${i}`, namespace: `ns-${i % 3}`, node: `node-${i % NODES}`, ip: `10.1.${i >> 8}.${i & 255}` });
/** Pod keys each node must hold, sorted as a NodeState lists them. */
const expected = (pods: number) => {
  const m = new Map<string, string[]>();
  for (let i = 0; i < pods; i++) {
    const n = `node-${i % NODES}`;
    if (!m.has(n)) m.set(n, []);
    m.get(n)!.push(`ns-${i % 3}/app-${i}`);
  }
  for (const l of m.values()) l.sort();
  return m;
};

async function clusterApi(pods: number): Promise<FakeKubeApiServer> {
  const api = await FakeKubeApiServer.start({ bookmarkIntervalMs: 200 });
  for (let i = 0; i < 3; i++) api.create(namespaceFixture(`ns-${i}`));
  for (let n = 0; n < NODES; n++) api.create(nodeFixture(`node-${n}`));
  for (let i = 0; i < pods; i++) api.create(podOf(i));
  return api;
}

function readStates(dir: string): Map<string, NodeState> {
  const out = new Map<string, NodeState>();
  for (const f of readdirSync(dir)) if (f.endsWith('.json') && !f.startsWith('.')) out.set(f.slice(0, -5), JSON.parse(readFileSync(join(dir, f), 'utf8')) as NodeState);
  return out;
}

describe('sinks - nothing before the sources are synced', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanup.reverse()) await c();
    cleanup.length = 0;
  });

  it('in process: a slow, paged pod list; the first state of every node in every sink holds all its pods', async () => {
    const pods = NODES * PODS_PER_NODE;
    const api = await clusterApi(pods);
    cleanup.push(() => api.close());
    // The pod list fails a few times (nodes and namespaces sync meanwhile), then arrives 25 pods a page.
    api.failNextRequests(4, 500, { path: '/api/v1/pods', watch: false });
    const tmp = mkdtempSync(join(tmpdir(), 'meshlane-sink-'));
    cleanup.push(() => rmSync(tmp, { recursive: true, force: true }));
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());
    const kube = new KubeSources(loadKubeConfig(join(tmp, 'kubeconfig')), log, { backoffInitialMs: 100, backoffMaxMs: 200, listPageSize: 25 });
    const cp = new ControlPlane({ kube, switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, logger: log });
    cleanup.push(() => cp.stop());

    const out = join(tmp, 'out');
    const firstWritten = new Map<string, NodeState>();
    const sink = new FileSink(out, {
      onWritten: (node) => {
        if (!firstWritten.has(node)) firstWritten.set(node, JSON.parse(readFileSync(join(out, `${node}.json`), 'utf8')) as NodeState);
      },
    });
    const firstSeen = new Map<string, NodeState>();
    const early: string[] = [];
    cp.onUpdate((u) => {
      if (!kube.synced()) early.push(u.node);
      if (!firstSeen.has(u.node)) firstSeen.set(u.node, u.state());
      sink.write(u);
    });
    let nodesSyncedAlone = false;
    const watchOrder = setInterval(() => {
      if (kube.stats().nodes.lists > 0 && kube.stats().pods.lists === 0) nodesSyncedAlone = true;
    }, 5);
    cleanup.push(() => clearInterval(watchOrder));
    cp.start();
    await waitFor('ready', () => cp.ready(), 20_000);
    await cp.settled();
    await sink.idle();

    expect(nodesSyncedAlone).toBe(true); // the window the bug lived in did occur
    expect(api.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch && r.status === 500).length).toBe(4);
    expect(early).toEqual([]);
    const want = expected(pods);
    for (const seen of [firstSeen, firstWritten]) {
      expect([...seen.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [node, state] of seen) {
        expect(state.endpoints.map((e) => e.pod), node).toEqual(want.get(node));
        expect(state.generation, node).toBe(1);
      }
    }
    // Written compactly, one line.
    expect(readFileSync(join(out, 'node-0.json'), 'utf8').trimEnd()).not.toContain('\n');
  });

  const procs: ChildProcess[] = [];
  afterEach(() => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    procs.length = 0;
  });

  async function runCli(args: string[], out: string, want: Map<string, string[]>): Promise<Map<string, NodeState>> {
    const p = spawn(process.execPath, [CONTROLPLANE_CLI, '--metrics-addr', '127.0.0.1:0', '--out-dir', out, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    procs.push(p);
    let stderr = '';
    p.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const total = [...want.values()].reduce((a, l) => a + l.length, 0);
    const count = () => {
      try {
        let n = 0;
        for (const s of readStates(out).values()) n += s.endpoints.length;
        return n;
      } catch {
        return -1;
      }
    };
    await waitFor('every node written with its pods', () => {
      if (p.exitCode !== null) throw new Error(`controlplane exited: ${stderr}`);
      return readdirSafe(out) >= want.size && count() === total;
    }, 60_000, 100);
    await new Promise((r) => setTimeout(r, 300)); // a late extra write would show as generation 2
    return readStates(out);
  }

  it('through the CLI against the apiserver: every node file is at generation 1 with all its pods', async () => {
    const pods = NODES * PODS_PER_NODE;
    const api = await clusterApi(pods);
    cleanup.push(() => api.close());
    api.failNextRequests(3, 500, { path: '/api/v1/pods', watch: false });
    const tmp = mkdtempSync(join(tmpdir(), 'meshlane-sink-cli-'));
    cleanup.push(() => rmSync(tmp, { recursive: true, force: true }));
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());
    const want = expected(pods);
    const states = await runCli(['--kubeconfig', join(tmp, 'kubeconfig')], join(tmp, 'out'), want);
    for (const [node, pods] of want) {
      expect(states.get(node)?.generation, node).toBe(1);
      expect(states.get(node)?.endpoints.map((e) => e.pod), node).toEqual(pods);
    }
  });

  it('through the CLI in local mode with thousands of pods: every node file is at generation 1 with all its pods', async () => {
    const pods = 3000;
    const tmp = mkdtempSync(join(tmpdir(), 'meshlane-sink-local-'));
    cleanup.push(() => rmSync(tmp, { recursive: true, force: true }));
    const dir = join(tmp, 'cluster');
    mkdirSync(dir);
    writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [0, 1, 2].map((i) => namespaceFixture(`ns-${i}`)).concat(Array.from({ length: NODES }, (_, n) => nodeFixture(`node-${n}`))) }));
    for (let i = 0; i < pods; i++) writeFileSync(join(dir, `pod-${i}.json`), JSON.stringify(podOf(i)));
    const want = expected(pods);
    const states = await runCli(['--cluster-dir', dir], join(tmp, 'out'), want);
    for (const [node, pods] of want) {
      expect(states.get(node)?.generation, node).toBe(1);
      expect(states.get(node)?.endpoints.map((e) => e.pod), node).toEqual(pods);
    }
  });
});

function readdirSafe(dir: string): number {
  try {
    return readdirSync(dir).filter((f) => f.endsWith('.json') && !f.startsWith('.')).length;
  } catch {
    return 0;
  }
}
