/**
 * npm run bench:controlplane
 *
 * First the real path (controlplane-real.bench.ts): the binary against the
 * fake apiserver at 500, 2,000 and 5,000 nodes. Then, labelled as such, a
 * synthetic cluster (realistic injected pods, 20 per node) through the
 * real classification, model and reconciler: time and memory of the initial
 * full computation, then per-event latency from a pod event to its per-node
 * diff under a churn of 1,000 pod events per second. Run at 500 and 5,000
 * nodes side by side to show that the work per event does not grow with the
 * cluster. Prints a table and writes bench-results/controlplane.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { classifyPod } from '../../controlplane/src/classify/mod.js';
import { ClusterModel } from '../../controlplane/src/model/model.js';
import { Reconciler } from '../../controlplane/src/reconcile/reconciler.js';
import type { ProxySync } from '../../controlplane/src/types.js';
import { podFixture } from '../fakes/kube-apiserver.js';
import { ROOT } from '../harness/cluster.js';
import { realPath, type RealRow } from './controlplane-real.bench.js';

const PODS_PER_NODE = 20;
const EVENTS_PER_SECOND = Number(process.env.BENCH_EVENTS_PER_SECOND ?? 1000);
const CHURN_SECONDS = Number(process.env.BENCH_CHURN_SECONDS ?? 5);
const SIZES = (process.env.BENCH_NODES ?? '500,5000').split(',').map(Number);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
}

function podAt(i: number, nodes: number, extra: { optOut?: boolean } = {}): V1Pod {
  const node = i % nodes;
  const p = podFixture({
    name: `app-${i}`,
    namespace: `ns-${i % 50}`,
    node: `node-${node}`,
    ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    ...(extra.optOut ? { labels: { app: `app-${i}`, 'meshlane.io/accelerate': 'false' } } : {}),
  });
  return p as unknown as V1Pod;
}

async function run(nodes: number) {
  const pods = nodes * PODS_PER_NODE;
  global.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const model = new ClusterModel({ syncGate: true });
  const rec = new Reconciler(model, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, autoFlush: false });
  let deltaEntries = 0;
  rec.onUpdate((u) => {
    deltaEntries += u.delta.upsertEndpoints.length + u.delta.removeEndpoints.length;
  });

  // Initial full computation: everything listed, every proxy synced, every node reconciled.
  const t0 = process.hrtime.bigint();
  for (let n = 0; n < nodes; n++) model.upsertNode(`node-${n}`);
  for (let i = 0; i < pods; i++) model.upsertPod(classifyPod(podAt(i, nodes)));
  const proxies = new Map<string, ProxySync>();
  for (let i = 0; i < pods; i++) proxies.set(`app-${i}.ns-${i % 50}`, { proxyId: `app-${i}.ns-${i % 50}`, synced: true });
  model.setProxies(proxies);
  rec.touch(model.knownNodes());
  const initial = rec.flush();
  const initialMs = Number(process.hrtime.bigint() - t0) / 1e6;
  global.gc?.();
  const heapMiB = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
  const rssMiB = process.memoryUsage().rss / 2 ** 20;

  // Churn: paced events, each timed from the informer callback to its diff.
  const latencies: number[] = [];
  const touched: number[] = [];
  let next = pods;
  const total = EVENTS_PER_SECOND * CHURN_SECONDS;
  const started = Date.now();
  for (let e = 0; e < total; e++) {
    const due = started + (e * 1000) / EVENTS_PER_SECOND;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const kind = e % 4;
    const t = process.hrtime.bigint();
    let nodesTouched: string[];
    if (kind === 0) {
      const i = next++;
      nodesTouched = model.upsertPod(classifyPod(podAt(i, nodes)));
    } else if (kind === 1) {
      nodesTouched = model.deletePod(`ns-${(e * 7919) % 50}/app-${(e * 7919) % pods}`);
    } else if (kind === 2) {
      const i = (e * 104729) % pods;
      nodesTouched = model.upsertPod(classifyPod(podAt(i, nodes, { optOut: e % 8 === 2 })));
    } else {
      // The sidecar of the pod created last becomes synced.
      const i = next - 1;
      nodesTouched = model.updateProxies([{ proxyId: `app-${i}.ns-${i % 50}`, synced: true }]);
    }
    rec.touch(nodesTouched);
    rec.flush();
    latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
    touched.push(nodesTouched.length);
  }
  const seconds = (Date.now() - started) / 1000;
  // One syncz answer lists every proxy: diffing it against the model is
  // O(proxies), once per poll (seconds apart), not per event.
  const ts = process.hrtime.bigint();
  model.setProxies(proxies);
  const synczMs = Number(process.hrtime.bigint() - ts) / 1e6;
  return {
    nodes,
    pods,
    initial_ms: initialMs,
    initial_updates: initial.length,
    heap_mib: heapMiB,
    rss_mib: rssMiB,
    events: total,
    achieved_events_per_s: total / seconds,
    p50_ms: pct(latencies, 0.5),
    p99_ms: pct(latencies, 0.99),
    max_ms: Math.max(...latencies),
    syncz_snapshot_diff_ms: synczMs,
    nodes_touched_per_event: touched.reduce((a, b) => a + b, 0) / touched.length,
    delta_entries: deltaEntries,
  };
}

const REAL_SIZES = (process.env.BENCH_REAL_NODES ?? '500,2000,5000').split(',').filter(Boolean).map(Number);
const REAL_RATES = (process.env.BENCH_REAL_RATES ?? '200,1000').split(',').map(Number);
const GOAL = { readyS: 20, rssMiB: 1024, healthzGapS: 1, p99Ms: 100 };

async function main(): Promise<void> {
  const real: RealRow[] = [];
  for (const n of REAL_SIZES) {
    process.stderr.write(`real path: the control plane binary against the fake apiserver, ${n} nodes, ${n * PODS_PER_NODE} realistic pods...\n`);
    real.push(await realPath(n, PODS_PER_NODE, REAL_RATES, CHURN_SECONDS));
  }
  const rows = [];
  for (const n of SIZES) {
    process.stderr.write(`synthetic, in-process: ${n} nodes, ${n * PODS_PER_NODE} pods...\n`);
    rows.push(await run(n));
  }
  const f = (v: number, d = 2) => v.toFixed(d);
  const ok = (pass: boolean) => (pass ? 'yes' : '**no**');
  const churnCell = (r: RealRow, rate: number) => {
    const c = r.churn.find((x) => x.rate === rate);
    return c ? `${f(c.p50_ms, 1)} / ${f(c.p99_ms, 1)}${c.resolved < c.events ? ` (${c.events - c.resolved} unresolved)` : ''}` : '-';
  };
  const lines = [
    '',
    `### real path: meshlane-controlplane against the fake apiserver, realistic injected pods with managedFields, ${PODS_PER_NODE} per node, file sink`,
    '',
    `| nodes | pods | all node states written (s) | goal < ${GOAL.readyS} s | peak RSS (MiB) | goal < ${GOAL.rssMiB} | CPU to ready (s) | /healthz worst gap (s) | goal < ${GOAL.healthzGapS} | ${REAL_RATES.map((r) => `${r}/s event -> state p50 / p99 (ms)`).join(' | ')} | p99 < ${GOAL.p99Ms} ms at ${Math.max(...REAL_RATES)}/s |`,
    `|---|---|---|---|---|---|---|---|---|${REAL_RATES.map(() => '---|').join('')}---|`,
    ...real.map((r) => {
      const top = r.churn.find((c) => c.rate === Math.max(...REAL_RATES));
      return `| ${r.nodes} | ${r.pods} | ${f(r.ready_s, 1)} | ${ok(r.ready_s < GOAL.readyS)} | ${f(r.peak_rss_mib, 0)} | ${ok(r.peak_rss_mib < GOAL.rssMiB)} | ${f(r.cpu_s, 1)} | ${f(r.healthz_worst_gap_s, 2)} | ${ok(r.healthz_worst_gap_s < GOAL.healthzGapS)} | ${REAL_RATES.map((rate) => churnCell(r, rate)).join(' | ')} | ${ok(!!top && top.resolved === top.events && top.p99_ms < GOAL.p99Ms)} |`;
    }),
    '',
    '### synthetic, in-process (classification, model and reconciler only: no informers, no sink)',
    '',
    '| nodes | pods | initial (ms) | heap (MiB) | rss (MiB) | events/s | p50 (ms) | p99 (ms) | max (ms) | nodes touched / event | full syncz diff (ms) |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.nodes} | ${r.pods} | ${f(r.initial_ms, 0)} | ${f(r.heap_mib, 0)} | ${f(r.rss_mib, 0)} | ${f(r.achieved_events_per_s, 0)} | ${f(r.p50_ms, 3)} | ${f(r.p99_ms, 3)} | ${f(r.max_ms, 1)} | ${f(r.nodes_touched_per_event)} | ${f(r.syncz_snapshot_diff_ms, 1)} |`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  mkdirSync(join(ROOT, 'bench-results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench-results/controlplane.json'), `${JSON.stringify({ when: new Date().toISOString(), podsPerNode: PODS_PER_NODE, eventsPerSecond: EVENTS_PER_SECOND, goals: GOAL, real, rows }, null, 2)}\n`);
  process.stdout.write('\nwritten to bench-results/controlplane.json\n');
}

main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
