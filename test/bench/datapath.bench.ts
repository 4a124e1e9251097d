/**
 * npm run bench:datapath
 *
 * Plain TCP vs meshlane side by side, in one run, on the same pods: each
 * measurement alternates the two (the node's kill switch flips between
 * them), so machine noise hits both alike.
 *
 *  - each hop alone (the far end is an echo/sink standing in for the next
 *    hop) and the full request app -> sidecar -> sidecar -> app;
 *  - round-trip p50/p99 at 1 B, 1 KB, 16 KB and bulk throughput;
 *  - every process on one CPU, and client vs servers on two CPUs;
 *  - kernel TCP memory at peak during bulk, with and without flow control;
 *  - map reconcile time for 110 dual-stack endpoints, from empty and
 *    as a 1-pod diff.
 *
 * Prints a table and writes bench-results/datapath.json.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { NODE_STATE_API_VERSION, type Endpoint, type NodeState } from '@meshlane/proto';
import { Datapath, Reconciler, capacityForPods } from '@meshlane/node-worker';
import { PIN_ROOT, ROOT, TOOLS, TestCluster, type Pod } from '../harness/cluster.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const RR_COUNT = Number(process.env.BENCH_RR_COUNT ?? 2000);
const BULK_SECONDS = Number(process.env.BENCH_BULK_SECONDS ?? 2);
const SIZES = [1, 1024, 16384];

interface Scenario {
  name: string;
  /** Runs pingpong from the right pod, as the right uid, to the right place. */
  run(args: string[], bulk: boolean): Promise<Record<string, number>>;
}

type Mode = 'plain' | 'accelerated';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function pingpong(pod: Pod, uid: number, args: string[]): Promise<Record<string, number>> {
  const r = await pod.run([join(TOOLS, 'pingpong'), '--json', ...args], uid, 120_000);
  if (r.code !== 0) throw new Error(`pingpong ${args.join(' ')} in ${pod.name}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, number>;
}

async function main(): Promise<void> {
  const started = Date.now();
  const c = new TestCluster(['n1']);
  const log = (msg: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`);
  try {
    log('creating pods');
    const a = await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    const b = await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo', 8090: 'sink' } });
    const oe = await c.addPod({ name: 'oe', node: 'n1', index: 3, meshed: true, sidecar: 'echo' });
    const os = await c.addPod({ name: 'os', node: 'n1', index: 4, meshed: true, sidecar: 'sink' });
    const me = await c.addPod({ name: 'me', node: 'n1', index: 5, meshed: true, sidecar: 'echo' });
    const ms = await c.addPod({ name: 'ms', node: 'n1', index: 6, meshed: true, sidecar: 'sink' });
    const state = (enabled: boolean, maxQueuedBytes = 16 << 20, generation = 1) => c.state('n1', { enabled, maxQueuedBytes, generation });
    let gen = 1;
    const w = await c.startWorker('n1', state(true));
    const setMode = async (mode: Mode, maxQueuedBytes = 16 << 20) => w.apply(state(mode === 'accelerated', maxQueuedBytes, ++gen));

    const nowhere = '10.77.0.250'; // captured by the outbound REDIRECT before routing
    const scenarios: Scenario[] = [
      { name: 'outbound: app -> own sidecar', run: (args, bulk) => pingpong(bulk ? os : oe, 1000, ['--host', nowhere, '--port', '80', ...args]) },
      { name: 'mesh: sidecar -> sidecar', run: (args, bulk) => pingpong(a, 1337, ['--host', (bulk ? ms : me).ip4, '--port', '8080', ...args]) },
      { name: 'inbound: sidecar -> app', run: (args, bulk) => pingpong(b, 1337, ['--bind', '127.0.0.6', '--host', b.ip4, '--port', bulk ? '8090' : '8080', ...args]) },
      { name: 'full request: app -> sidecar -> sidecar -> app', run: (args, bulk) => pingpong(a, 1000, ['--host', b.ip4, '--port', bulk ? '8090' : '8080', ...args]) },
    ];

    const ncpu = cpus().length;
    const cpuModes = ncpu >= 2 ? (['one CPU', 'two CPUs'] as const) : (['one CPU'] as const);
    const results: Array<Record<string, unknown>> = [];
    for (const cpuMode of cpuModes) {
      // one CPU: everything on CPU 0; two CPUs: client on 0, every server on 1.
      c.pinPods(cpuMode === 'one CPU' ? '0' : '1');
      const clientCpu = '0';
      for (const sc of scenarios) {
        for (const size of SIZES) {
          const runs: Record<Mode, Array<Record<string, number>>> = { plain: [], accelerated: [] };
          for (let rep = 0; rep < REPS; rep++) {
            for (const mode of rep % 2 ? (['accelerated', 'plain'] as const) : (['plain', 'accelerated'] as const)) {
              await setMode(mode);
              runs[mode].push(await sc.run(['--mode', 'rr', '--size', String(size), '--count', String(RR_COUNT), '--warmup', '200', '--cpu', clientCpu], false));
            }
          }
          const row = {
            cpu: cpuMode,
            path: sc.name,
            kind: 'rr',
            size,
            plain_p50_us: median(runs.plain.map((r) => r.p50_us ?? NaN)),
            plain_p99_us: median(runs.plain.map((r) => r.p99_us ?? NaN)),
            accel_p50_us: median(runs.accelerated.map((r) => r.p50_us ?? NaN)),
            accel_p99_us: median(runs.accelerated.map((r) => r.p99_us ?? NaN)),
            eagain_retries: runs.accelerated.reduce((s, r) => s + (r.eagain_retries ?? 0), 0),
          };
          results.push({ ...row, speedup_p50: row.plain_p50_us / row.accel_p50_us });
          log(`${cpuMode} | ${sc.name} | ${size} B: p50 ${row.plain_p50_us.toFixed(1)} -> ${row.accel_p50_us.toFixed(1)} us`);
        }
        const bulk: Record<Mode, number[]> = { plain: [], accelerated: [] };
        for (let rep = 0; rep < REPS; rep++) {
          for (const mode of rep % 2 ? (['accelerated', 'plain'] as const) : (['plain', 'accelerated'] as const)) {
            await setMode(mode);
            const r = await sc.run(['--mode', 'bulk', '--size', '65536', '--seconds', String(BULK_SECONDS), '--cpu', clientCpu], true);
            bulk[mode].push(r.gbit_per_s ?? NaN);
          }
        }
        const row = { cpu: cpuMode, path: sc.name, kind: 'bulk', size: 65536, plain_gbit: median(bulk.plain), accel_gbit: median(bulk.accelerated) };
        results.push({ ...row, speedup: row.accel_gbit / row.plain_gbit });
        log(`${cpuMode} | ${sc.name} | bulk: ${row.plain_gbit.toFixed(2)} -> ${row.accel_gbit.toFixed(2)} Gbit/s`);
      }
    }

    log('kernel TCP memory during bulk');
    c.pinPods(ncpu >= 2 ? '1' : '0');
    const memory: Array<Record<string, unknown>> = [];
    for (const [label, mode, limit] of [
      ['plain', 'plain', 16 << 20],
      ['accelerated, flow control 16 MiB', 'accelerated', 16 << 20],
      ['accelerated, flow control 4 MiB', 'accelerated', 4 << 20],
      ['accelerated, no flow control', 'accelerated', 0],
    ] as const) {
      await setMode(mode, limit);
      const peak = { pages: 0 };
      const baseline = tcpMemPages();
      const timer = setInterval(() => (peak.pages = Math.max(peak.pages, tcpMemPages())), 5);
      const r = await scenarios[3]!.run(['--mode', 'bulk', '--size', '65536', '--seconds', String(BULK_SECONDS), '--cpu', '0', '--timeout', '60'], true);
      clearInterval(timer);
      memory.push({ mode: label, gbit_per_s: r.gbit_per_s, tcp_mem_peak_pages: peak.pages, tcp_mem_baseline_pages: baseline, peak_mib: (peak.pages * 4096) / 2 ** 20 });
      log(`${label}: ${r.gbit_per_s?.toFixed(2)} Gbit/s, TCP mem peak ${peak.pages} pages`);
    }
    await setMode('accelerated');

    log('map reconcile');
    const reconcile = benchReconcile(c);

    const out = { when: new Date().toISOString(), kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(), cpus: ncpu, reps: REPS, rr_count: RR_COUNT, latency: results, memory, reconcile };
    mkdirSync(join(ROOT, 'bench-results'), { recursive: true });
    writeFileSync(join(ROOT, 'bench-results/datapath.json'), `${JSON.stringify(out, null, 2)}\n`);
    printTables(out.latency, memory, reconcile);
    process.stdout.write(`\nwritten to bench-results/datapath.json in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  } finally {
    await c.cleanup();
  }
}

/** Global kernel TCP memory in pages (/proc/net/sockstat "TCP: ... mem N"). */
function tcpMemPages(): number {
  const m = /TCP:.* mem (\d+)/.exec(readFileSync('/proc/net/sockstat', 'utf8'));
  return Number(m?.[1] ?? 0);
}

function reconcileState(pods: number, replaced: number, generation: number): NodeState {
  const endpoints: Endpoint[] = [];
  for (let i = 0; i < pods; i++) {
    const n = i < replaced ? 1000 + i : i;
    endpoints.push({
      pod: `bench/p${n}`,
      uid: `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`,
      ips: [`10.${100 + (n >> 8)}.${n & 255}.1`, `fd99::${n.toString(16)}:1`],
      proxyUid: 1337,
      accelerate: true,
      appSockets: 'always',
      outboundPort: 15001,
      inboundPort: 15006,
      inbound: { includePorts: '*', excludePorts: [15020, 15021, 15090] },
      outbound: { excludePorts: [], includeCidrs: '*', excludeCidrs: ['10.96.0.0/12'] },
    });
  }
  return {
    apiVersion: NODE_STATE_API_VERSION,
    kind: 'NodeState',
    node: 'bench',
    generation,
    switches: { enabled: true, appSockets: true, maxQueuedBytes: 16 << 20 },
    endpoints,
  };
}

function benchReconcile(c: TestCluster): Record<string, number> {
  const node = c.nodeName('rec');
  const cg = c.nodeCgroup('n1'); // attach needs a cgroup; this one is ours
  const fromEmpty: number[] = [];
  const onePod: number[] = [];
  let entries = 0;
  for (let rep = 0; rep < 5; rep++) {
    const dp = Datapath.install({ node, cgroup: cg, objectDir: join(ROOT, 'bpf/out'), pinRoot: PIN_ROOT, capacity: capacityForPods(110, 65536) });
    try {
      const reconciler = new Reconciler(dp);
      const full = reconcileState(110, 0, 1);
      let t = process.hrtime.bigint();
      const r = reconciler.apply(full);
      fromEmpty.push(Number(process.hrtime.bigint() - t) / 1e6);
      entries = Object.values(r.entries).reduce((a, b) => a + b, 0);
      t = process.hrtime.bigint();
      reconciler.apply(reconcileState(110, 1, 2));
      onePod.push(Number(process.hrtime.bigint() - t) / 1e6);
    } finally {
      dp.close();
      Datapath.remove(PIN_ROOT, node);
    }
  }
  return { endpoints: 110, map_entries: entries, from_empty_ms: median(fromEmpty), one_pod_diff_ms: median(onePod) };
}

function printTables(latency: Array<Record<string, unknown>>, memory: Array<Record<string, unknown>>, reconcile: Record<string, number>): void {
  const f = (v: unknown, d = 1) => (typeof v === 'number' ? v.toFixed(d) : String(v));
  const lines = ['', '| CPUs | path | size | plain p50 / p99 (us) | meshlane p50 / p99 (us) | p50 speedup |', '|---|---|---|---|---|---|'];
  for (const r of latency.filter((x) => x.kind === 'rr')) {
    lines.push(`| ${r.cpu} | ${r.path} | ${r.size} B | ${f(r.plain_p50_us)} / ${f(r.plain_p99_us)} | ${f(r.accel_p50_us)} / ${f(r.accel_p99_us)} | ${f(r.speedup_p50, 2)}x |`);
  }
  lines.push('', '| CPUs | path | plain Gbit/s | meshlane Gbit/s | ratio |', '|---|---|---|---|---|');
  for (const r of latency.filter((x) => x.kind === 'bulk')) lines.push(`| ${r.cpu} | ${r.path} | ${f(r.plain_gbit, 2)} | ${f(r.accel_gbit, 2)} | ${f(r.speedup, 2)}x |`);
  lines.push('', '| full request, bulk | Gbit/s | kernel TCP memory peak (pages / MiB) |', '|---|---|---|');
  for (const m of memory) lines.push(`| ${m.mode} | ${f(m.gbit_per_s, 2)} | ${m.tcp_mem_peak_pages} / ${f(m.peak_mib, 0)} |`);
  lines.push('', '| reconcile, 110 endpoints | map entries | from empty (ms) | 1-pod diff (ms) |', '|---|---|---|---|');
  lines.push(`| ${reconcile.endpoints} pods, dual-stack | ${reconcile.map_entries} | ${f(reconcile.from_empty_ms)} | ${f(reconcile.one_pod_diff_ms)} |`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
