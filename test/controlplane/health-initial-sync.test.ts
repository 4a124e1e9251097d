/**
 * health - /healthz answers throughout a large initial sync. The kubelet
 * kills a pod whose liveness probe goes unanswered (1 s timeout by
 * default), so the control plane must answer from its first moments, while
 * it loads its modules, lists thousands of pods, computes every node and
 * writes every node's file. The CLI is polled from outside, as the kubelet
 * would; the worst gap between two answers is what is asserted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { request, Agent } from 'node:http';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CONTROLPLANE_CLI } from '../harness/controlplane.js';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, podFixture } from '../fakes/kube-apiserver.js';

const NODES = 250;
const MAX_GAP_MS = 1000;

const podOf = (i: number) => podFixture({ name: `app-${i}`, namespace: `ns-${i % 10}`, node: `node-${i % NODES}`, ip: `10.2.${i >> 8}.${i & 255}` });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Probe {
  status: number;
  body: string;
}

function get(agent: Agent, addr: string, path: string, timeoutMs: number): Promise<Probe | undefined> {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const req = request({ host, port, path, agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

function nodeFiles(dir: string): number {
  try {
    return readdirSync(dir).filter((f) => f.endsWith('.json') && !f.startsWith('.')).length;
  } catch {
    return 0;
  }
}

/**
 * Starts the CLI, polls /healthz (and /readyz) until every node's file is
 * written, and reports the worst gap between two answered probes.
 */
async function probeStartup(args: string[], out: string): Promise<{ worstGapMs: number; answers: number; notReadyWhileAlive: boolean; log: string; firstAnswerMs: number; doneMs: number }> {
  const started = performance.now();
  const p: ChildProcess = spawn(process.execPath, [CONTROLPLANE_CLI, '--metrics-addr', '127.0.0.1:0', '--out-dir', out, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  procs.push(p);
  let log = '';
  p.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  let addr: string | undefined;
  while (!addr) {
    if (p.exitCode !== null) throw new Error(`controlplane exited: ${log}`);
    if (performance.now() - started > 10_000) throw new Error(`no ops server after 10 s: ${log}`);
    addr = /"addr":"([^"]+)","msg":"ops server listening/.exec(log)?.[1];
    await sleep(5);
  }
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let last: number | undefined;
  let firstAnswerMs = NaN;
  let worstGapMs = 0;
  let answers = 0;
  let notReadyWhileAlive = false;
  let done = false;
  const poller = (async () => {
    while (!done) {
      const r = await get(agent, addr, '/healthz', 5000);
      const now = performance.now();
      if (r?.status === 200) {
        if (last === undefined) firstAnswerMs = now - started;
        else worstGapMs = Math.max(worstGapMs, now - last);
        last = now;
        answers++;
        if (answers % 10 === 1) {
          const ready = await get(agent, addr, '/readyz', 5000);
          if (ready?.status === 503 && ready.body.includes('sources not synced')) notReadyWhileAlive = true;
        }
      }
      await sleep(20);
    }
  })();
  const deadline = performance.now() + 90_000;
  while (nodeFiles(out) < NODES || !/"msg":"initial state computed"/.test(log)) {
    if (p.exitCode !== null) throw new Error(`controlplane exited: ${log}`);
    if (performance.now() > deadline) throw new Error(`states not written in 90 s: ${log.slice(-2000)}`);
    await sleep(100);
  }
  const doneMs = performance.now() - started;
  await sleep(500); // and a little after
  done = true;
  await poller;
  agent.destroy();
  return { worstGapMs, answers, notReadyWhileAlive, log, firstAnswerMs, doneMs };
}

const procs: ChildProcess[] = [];

describe('health - /healthz answers throughout the initial sync', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    procs.length = 0;
    for (const c of cleanup.reverse()) await c();
    cleanup.length = 0;
  });

  it('local mode, 8,000 pods in 8,000 files: the ops server answers before the scan and every second of it', async () => {
    const pods = 8000;
    const tmp = mkdtempSync(join(tmpdir(), 'meshlane-health-'));
    cleanup.push(() => rmSync(tmp, { recursive: true, force: true }));
    const dir = join(tmp, 'cluster');
    mkdirSync(dir);
    writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [...Array.from({ length: 10 }, (_, i) => namespaceFixture(`ns-${i}`)), ...Array.from({ length: NODES }, (_, n) => nodeFixture(`node-${n}`))] }));
    for (let i = 0; i < pods; i++) writeFileSync(join(dir, `pod-${i}.json`), JSON.stringify(podOf(i), null, 1));
    const r = await probeStartup(['--cluster-dir', dir], join(tmp, 'out'));
    const loaded = /"ms":(\d+),"msg":"manifests loaded"/.exec(r.log);
    process.stdout.write(`local mode, ${pods} pods: first /healthz ${Math.round(r.firstAnswerMs)} ms, all states ${Math.round(r.doneMs)} ms, manifests loaded in ${loaded?.[1]} ms, worst /healthz gap ${Math.round(r.worstGapMs)} ms over ${r.answers} answers\n`);
    expect(r.notReadyWhileAlive).toBe(true); // alive (and saying why not ready) before the sources synced
    expect(r.worstGapMs).toBeLessThan(MAX_GAP_MS);
  });

  it('against the apiserver, 6,000 pods: the ops server answers during the lists, the initial reconcile and the writes', async () => {
    const pods = 6000;
    const api = await FakeKubeApiServer.start({ bookmarkIntervalMs: 1000 });
    cleanup.push(() => api.close());
    for (let i = 0; i < 10; i++) api.create(namespaceFixture(`ns-${i}`));
    for (let n = 0; n < NODES; n++) api.create(nodeFixture(`node-${n}`));
    for (let i = 0; i < pods; i++) api.create(podOf(i));
    const tmp = mkdtempSync(join(tmpdir(), 'meshlane-health-kube-'));
    cleanup.push(() => rmSync(tmp, { recursive: true, force: true }));
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());
    const r = await probeStartup(['--kubeconfig', join(tmp, 'kubeconfig')], join(tmp, 'out'));
    process.stdout.write(`apiserver, ${pods} pods: first /healthz ${Math.round(r.firstAnswerMs)} ms, all states ${Math.round(r.doneMs)} ms, worst /healthz gap ${Math.round(r.worstGapMs)} ms over ${r.answers} answers\n`);
    expect(r.notReadyWhileAlive).toBe(true);
    expect(r.worstGapMs).toBeLessThan(MAX_GAP_MS);
  });
});
