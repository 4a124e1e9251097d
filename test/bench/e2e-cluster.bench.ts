/**
 * npm run bench:e2e (second part)
 *
 * The bus end to end as on a cluster: the real meshlane-controlplane binary
 * (informers against the fake kube-apiserver, which serves this process's
 * pods), a real nats-server with one account per node, and the workers'
 * followers in separate processes (NodeFollower, no BPF), each node with
 * its own credentials. A pod event is a label flip at the apiserver (opt
 * out / back in); it is resolved when the worker of the pod's node applies
 * a state with the pod's new accelerate flag. Times are CLOCK_MONOTONIC in
 * every process (process.hrtime), so they compare across processes.
 *
 * Prints a table with the goal beside each figure; returns the rows for e2e.bench.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { busAccounts, renderAccounts, userName } from '@meshlane/proto';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, podFixture } from '../fakes/kube-apiserver.js';
import { ROOT } from '../harness/cluster.js';
import { CONTROLPLANE_CLI } from '../harness/controlplane.js';
import { NatsServer } from '../harness/nats.js';

const mono = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
}

interface Report {
  node: string;
  generation: number;
  endpoints: number;
  t: number;
  changed: Array<[string, boolean]>;
}

export interface ClusterRow {
  rate: number;
  events: number;
  resolved: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

export async function clusterBench(o: { nodes: number; podsPerNode: number; rates: number[]; seconds: number; workerProcesses: number }): Promise<ClusterRow[]> {
  const tmp = mkdtempSync(join(tmpdir(), 'mlt-bench-e2e-'));
  const procs: ChildProcess[] = [];
  let nats: NatsServer | undefined;
  let api: FakeKubeApiServer | undefined;
  try {
    const nodes = Array.from({ length: o.nodes }, (_, n) => `node-${n}`);
    const pw = (n: string) => `bench-${n}`;
    nats = await NatsServer.start({
      config: renderAccounts(
        busAccounts({
          controlplane: { user: 'controlplane', password: pw('cp') },
          auditor: { user: 'auditor', password: pw('auditor') },
          nodes: nodes.map((node) => ({ node, credential: { user: userName({ role: 'worker', node }), password: pw(node) } })),
        }),
      ),
    });
    api = await FakeKubeApiServer.start({ bookmarkIntervalMs: 1000 });
    api.create(namespaceFixture('bench'));
    for (const n of nodes) api.create(nodeFixture(n));
    const pods: Array<{ name: string; node: string; ip: string; optedOut: boolean }> = [];
    for (let i = 0; i < o.nodes * o.podsPerNode; i++) {
      const p = { name: `app-${i}`, node: nodes[i % o.nodes]!, ip: `10.${60 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}`, optedOut: false };
      pods.push(p);
      api.create(podFixture({ name: p.name, namespace: 'bench', node: p.node, ip: p.ip }));
    }
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());

    // The control plane, as deployed (one replica, no election).
    const cp = spawn(process.execPath, [CONTROLPLANE_CLI, '--kubeconfig', join(tmp, 'kubeconfig'), '--nats', nats.url, '--nats-user', 'controlplane', '--nats-password', pw('cp'), '--no-leader-elect', '--pod-name', 'bench-cp', '--metrics-addr', '127.0.0.1:0', '--log-level', 'warn'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    procs.push(cp);
    let cpErr = '';
    cp.stderr?.on('data', (d: Buffer) => (cpErr = (cpErr + d.toString()).slice(-4000)));

    // Workers: nodes spread over a few processes (on a cluster each is its own).
    const waiting = new Map<string, Array<{ want: boolean; t: number; resolve: (ms: number) => void }>>();
    const applied = new Map<string, number>();
    let ready = 0;
    const per = Math.ceil(o.nodes / o.workerProcesses);
    for (let w = 0; w < o.workerProcesses; w++) {
      const mine = nodes.slice(w * per, (w + 1) * per);
      if (!mine.length) continue;
      const p = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/bench/follower-proc.ts'), nats.url, ...mine.map((n) => `${n}:${userName({ role: 'worker', node: n })}:${pw(n)}`)], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      procs.push(p);
      createInterface({ input: p.stdout! }).on('line', (line) => {
        const m = JSON.parse(line) as Report | { ready: number };
        if ('ready' in m) {
          ready += m.ready;
          return;
        }
        applied.set(m.node, m.endpoints);
        for (const [pod, acc] of m.changed) {
          const q = waiting.get(pod);
          if (!q) continue;
          for (let i = 0; i < q.length; i++) {
            const e = q[i]!;
            if (e.want === acc && m.t >= e.t) {
              q.splice(i, 1);
              e.resolve(m.t - e.t);
              break;
            }
          }
        }
      });
    }
    for (const end = Date.now() + 120_000; ready < o.nodes || [...applied.values()].filter((n) => n === o.podsPerNode).length < o.nodes; await sleep(50)) {
      if (Date.now() > end) throw new Error(`not every node converged in 120 s (${ready} followers, ${[...applied.values()].filter((n) => n === o.podsPerNode).length} nodes with all pods)\n${cpErr}`);
      if (cp.exitCode !== null) throw new Error(`the control plane exited ${cp.exitCode}\n${cpErr}`);
    }

    const rows: ClusterRow[] = [];
    let next = 0;
    for (const rate of o.rates) {
      const latencies: number[] = [];
      const pending: Array<Promise<void>> = [];
      const total = Math.round(rate * o.seconds);
      const start = mono();
      for (let e = 0; e < total; e++) {
        const due = start + (e * 1000) / rate;
        const wait = due - mono();
        if (wait > 1) await sleep(wait);
        const p = pods[next++ % pods.length]!;
        p.optedOut = !p.optedOut;
        const key = `bench/${p.name}`;
        let q = waiting.get(key);
        if (!q) waiting.set(key, (q = []));
        const t = mono();
        pending.push(
          new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, 10_000); // unresolved after 10 s: counted as such
            q.push({
              want: !p.optedOut,
              t,
              resolve: (ms) => {
                clearTimeout(timer);
                latencies.push(ms);
                resolve();
              },
            });
          }),
        );
        api.update(podFixture({ name: p.name, namespace: 'bench', node: p.node, ip: p.ip, ...(p.optedOut ? { labels: { app: p.name, 'meshlane.io/accelerate': 'false' } } : {}) }));
      }
      await Promise.all(pending);
      waiting.clear();
      rows.push({ rate, events: total, resolved: latencies.length, p50_ms: pct(latencies, 0.5), p99_ms: pct(latencies, 0.99), max_ms: Math.max(...latencies) });
      process.stderr.write(`cluster churn at ${rate}/s: p50 ${pct(latencies, 0.5).toFixed(1)} ms, p99 ${pct(latencies, 0.99).toFixed(1)} ms\n`);
    }
    return rows;
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await api?.close();
    await nats?.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}
