/**
 * bench:controlplane, the real path: the meshlane-controlplane binary (its
 * real informers and file sink) against the fake kube-apiserver serving
 * realistic injected pods (the shape kube-inject writes, with the
 * managedFields a real apiserver returns, about 14 KB each), 20 per node.
 * Measured from outside, as a user would: time until every node's state
 * file is written, peak RSS and CPU seconds of the process, the worst
 * silence of /healthz (polled every 50 ms), and event -> state file under a
 * churn of pod label flips (opt-out and back).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, realisticPodFixture, type FakeObject } from '../fakes/kube-apiserver.js';
import { CONTROLPLANE_CLI } from '../harness/controlplane.js';
import { freePort } from '../harness/nats.js';

const mono = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
}

/** Polls /healthz every 50 ms; on SIGTERM prints the longest time between two answers after the first. */
const POLLER = `
const http = require('node:http');
const port = Number(process.argv[1]);
let last = 0, worst = 0;
const mono = () => Number(process.hrtime.bigint()) / 1e6;
function poll() {
  const at = mono();
  const req = http.request({ host: '127.0.0.1', port, path: '/healthz', timeout: 5000 }, (res) => {
    res.resume();
    res.on('end', () => {
      if (res.statusCode === 200) { const t = mono(); if (last) worst = Math.max(worst, t - last); last = t; }
      setTimeout(poll, Math.max(0, 50 - (mono() - at)));
    });
  });
  req.on('timeout', () => req.destroy());
  req.on('error', () => setTimeout(poll, 50));
  req.end();
}
poll();
process.on('SIGTERM', () => { process.stdout.write('worst ' + worst + '\\n'); process.exit(0); });
`;

function procStat(pid: number): { rssMiB: number; hwmMiB: number; cpuS: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const ticks = Number(stat[11]) + Number(stat[12]);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024, cpuS: ticks / 100 };
}

export interface RealRow {
  nodes: number;
  pods: number;
  ready_s: number;
  peak_rss_mib: number;
  cpu_s: number;
  healthz_worst_gap_s: number;
  churn: Array<{ rate: number; events: number; resolved: number; p50_ms: number; p99_ms: number; cp_cpu_share: number; wall_s: number }>;
}

export async function realPath(nodes: number, podsPerNode: number, rates: number[], seconds: number): Promise<RealRow> {
  const tmp = mkdtempSync(join(tmpdir(), 'mlt-bench-cp-'));
  const out = join(tmp, 'out');
  const api = await FakeKubeApiServer.start({ bookmarkIntervalMs: 5000 });
  let cp: ReturnType<typeof spawn> | undefined;
  try {
    api.create(namespaceFixture('bench'));
    const names = Array.from({ length: nodes }, (_, n) => `node-${n}`);
    for (const n of names) api.create(nodeFixture(n));
    // The pods the churn flips keep their objects (made before it starts: the
    // bench must not spend the time it measures building fixtures); the
    // others live in the fake apiserver only, as bytes.
    const churned = Math.min(nodes * podsPerNode, Math.max(...rates, 1) * 2);
    const pods: Array<{ name: string; node: string; optedOut: boolean; back: FakeObject; out: FakeObject }> = [];
    for (let i = 0; i < nodes * podsPerNode; i++) {
      const name = `svc-${i % 997}-5d7b9c6f4-${i.toString(36).padStart(5, 'x')}`;
      const node = names[i % nodes]!;
      const back = realisticPodFixture({ name, namespace: 'bench', node, ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` });
      api.create(back);
      if (i >= churned) continue;
      const out = structuredClone(back);
      const meta = out.metadata as { labels?: Record<string, string> };
      meta.labels = { ...meta.labels, 'meshlane.io/accelerate': 'false' };
      pods.push({ name, node, optedOut: false, back, out });
    }
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());
    const port = await freePort();
    const t0 = mono();
    cp = spawn(process.execPath, [CONTROLPLANE_CLI, '--kubeconfig', join(tmp, 'kubeconfig'), '--out-dir', out, '--metrics-addr', `127.0.0.1:${port}`, '--log-level', 'warn', '--pod-name', 'bench-cp'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    cp.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    const pid = cp.pid!;

    // /healthz: the longest time without an answer, from the first one on,
    // measured by a process of its own (this one is busy serving the lists).
    const poller = spawn(process.execPath, ['-e', POLLER, String(port)], { stdio: ['ignore', 'pipe', 'ignore'] });
    let pollerOut = '';
    poller.stdout?.on('data', (d: Buffer) => (pollerOut += d.toString()));
    const worstGapMs = async (): Promise<number> => {
      const done = new Promise((r) => poller.once('exit', r));
      poller.kill('SIGTERM');
      await done;
      return Number(/worst (\d+(\.\d+)?)/.exec(pollerOut)?.[1] ?? NaN);
    };
    let peak = 0;
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, procStat(pid).rssMiB);
      } catch {
        // exited
      }
    }, 100);

    const files = () => {
      try {
        return readdirSync(out).filter((f) => f.endsWith('.json') && !f.startsWith('.')).length;
      } catch {
        return 0;
      }
    };
    for (const end = Date.now() + 300_000; files() < nodes; await sleep(100)) {
      if (Date.now() > end) throw new Error(`${files()} of ${nodes} node states after 300 s\n${err}`);
      if (cp.exitCode !== null) throw new Error(`the control plane exited ${cp.exitCode}\n${err}`);
    }
    const readyS = (mono() - t0) / 1000;
    const cpuS = procStat(pid).cpuS;
    // Every first state is whole (nothing is written before the sources are synced).
    for (const n of names) {
      const st = JSON.parse(readFileSync(join(out, `${n}.json`), 'utf8')) as { endpoints: unknown[] };
      if (st.endpoints.length !== podsPerNode) throw new Error(`${n}: ${st.endpoints.length} endpoints in its first state, want ${podsPerNode}`);
    }

    // Churn: a label flip per event; resolved when the node's file shows the pod's new flag.
    const waiting = new Map<string, Array<{ want: boolean; t: number; done: () => void }>>();
    const byNode = new Map<string, Set<string>>();
    const watcher = watch(out, (_ev, file) => {
      if (!file || !file.endsWith('.json') || file.startsWith('.')) return;
      const node = file.slice(0, -5);
      const keys = byNode.get(node);
      if (!keys?.size) return;
      let st: { endpoints: Array<{ pod: string; accelerate: boolean }> };
      try {
        st = JSON.parse(readFileSync(join(out, file), 'utf8')) as typeof st;
      } catch {
        return; // replaced meanwhile: the next event reads it
      }
      const t = mono();
      for (const e of st.endpoints) {
        const q = waiting.get(e.pod);
        if (!q) continue;
        for (let i = 0; i < q.length; i++) {
          if (q[i]!.want === e.accelerate && t >= q[i]!.t) {
            q.splice(i, 1)[0]!.done();
            break;
          }
        }
      }
    });
    const churn: RealRow['churn'] = [];
    let next = 0;
    await sleep(1000); // let the initial writes settle
    for (const rate of rates) {
      const lat: number[] = [];
      const pending: Array<Promise<void>> = [];
      const total = Math.round(rate * seconds);
      const start = mono();
      const cpu0 = procStat(pid).cpuS;
      for (let e = 0; e < total; e++) {
        const wait = start + (e * 1000) / rate - mono();
        if (wait > 1) await sleep(wait);
        const p = pods[next++ % churned]!;
        p.optedOut = !p.optedOut;
        const key = `bench/${p.name}`;
        let set = byNode.get(p.node);
        if (!set) byNode.set(p.node, (set = new Set()));
        set.add(key);
        let q = waiting.get(key);
        if (!q) waiting.set(key, (q = []));
        const t = mono();
        pending.push(
          new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, 30_000);
            q.push({
              want: !p.optedOut,
              t,
              done: () => {
                clearTimeout(timer);
                lat.push(mono() - t);
                resolve();
              },
            });
          }),
        );
        api.update(structuredClone(p.optedOut ? p.out : p.back));
      }
      await Promise.all(pending);
      const wall = (mono() - start) / 1000;
      const cpuShare = (procStat(pid).cpuS - cpu0) / wall;
      waiting.clear();
      byNode.clear();
      churn.push({ rate, events: total, resolved: lat.length, p50_ms: pct(lat, 0.5), p99_ms: pct(lat, 0.99), cp_cpu_share: cpuShare, wall_s: wall });
      process.stderr.write(`  ${nodes} nodes, ${rate} events/s: p50 ${pct(lat, 0.5).toFixed(1)} ms, p99 ${pct(lat, 0.99).toFixed(1)} ms, ${lat.length}/${total}\n`);
    }
    watcher.close();
    clearInterval(sampler);
    const worstGap = await worstGapMs();
    peak = Math.max(peak, procStat(pid).hwmMiB);
    return { nodes, pods: nodes * podsPerNode, ready_s: readyS, peak_rss_mib: peak, cpu_s: cpuS, healthz_worst_gap_s: worstGap / 1000, churn };
  } finally {
    cp?.kill('SIGKILL');
    await api.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}
