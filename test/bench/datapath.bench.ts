/**
 * npm run bench:datapath
 *
 * Plain TCP vs meshlane side by side, in one run, on the same pods: each
 * measurement alternates the two (the node's kill switch flips between
 * them), so machine noise hits both alike. What users pay:
 *
 *  - each hop alone (the far end is an echo/sink standing in for the next
 *    hop) and the full request app -> sidecar -> sidecar -> app;
 *  - round-trip p50/p99 at 1 B, 1 KB, 16 KB and bulk throughput;
 *  - the node's CPU time per request (per MB for bulk): user + system +
 *    irq + softirq over all CPUs, from /proc/stat (see node-cpu.ts);
 *  - in the default configuration (endpoints exactly as the control plane
 *    emits them for pods without annotations) with apps that read
 *    non-blocking, as real servers and clients do (event loops: nginx,
 *    Envoy, Go, Node, Java NIO); the same with a blocking app ("blocking
 *    app"); and opted in (the meshlane.io/app-sockets annotation);
 *  - every process on one CPU, and client vs servers on two CPUs;
 *  - the goals beside each figure, pass or fail (GOALS below);
 *  - kernel TCP memory at peak during bulk, with and without flow control;
 *  - map reconcile time for 110 dual-stack endpoints, from empty and
 *    as a 1-pod diff.
 *
 * Knobs: BENCH_REPS (3), BENCH_RR_COUNT (2000), BENCH_BULK_SECONDS (2),
 * BENCH_CPU_SECONDS (1: a round-trip run lasts at least this long, for the
 * CPU figures; 0 for count only), BENCH_APP_SOCKETS_AUTO (unset: the
 * worker's probe decides "auto"; on/off: forced).
 * Prints tables and writes bench-results/datapath.json.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { NODE_STATE_API_VERSION, type Endpoint, type NodeState } from '@meshlane/proto';
import { Datapath, Reconciler, capacityForPods } from '@meshlane/node-worker';
import { ANN } from '../../controlplane/src/classify/constants.js';
import { appSocketsPolicy } from '../../controlplane/src/classify/pod.js';
import { PIN_ROOT, ROOT, TOOLS, TestCluster, waitForFile, type Pod, type Worker } from '../harness/cluster.js';
import { Tally, backgroundBusy, readCgroupCpu, type CgroupCpuWindow, type NodeCpuWindow } from './node-cpu.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const RR_COUNT = Number(process.env.BENCH_RR_COUNT ?? 2000);
const BULK_SECONDS = Number(process.env.BENCH_BULK_SECONDS ?? 2);
/**
 * A round-trip run goes on past BENCH_RR_COUNT until its window has lasted
 * this long, so that /proc/stat's 10 ms ticks add up to a CPU figure (0: off).
 */
const CPU_SECONDS = Number(process.env.BENCH_CPU_SECONDS ?? 1);
/**
 * BENCH_APP_SOCKETS_AUTO=on|off starts the worker with --app-sockets-auto
 * forced (default: the worker's own "probe"), to measure what "auto" would
 * give non-blocking apps on a kernel whose probes turn it down.
 */
const APP_SOCKETS_AUTO = process.env.BENCH_APP_SOCKETS_AUTO;
const SIZES = [1, 1024, 16384];
const BULK_CHUNK = 65536;

type Mode = 'plain' | 'accelerated';
/** The two configurations a pod can be in. */
type Config = 'default' | 'opted in';
/** How the app's own sockets read and write (sidecars never block). */
type AppKind = 'non-blocking' | 'blocking';

const PATHS = {
  outbound: 'outbound: app -> own sidecar',
  mesh: 'mesh: sidecar -> sidecar',
  inbound: 'inbound: sidecar -> app',
  full: 'full request: app -> sidecar -> sidecar -> app',
} as const;
type PathKey = keyof typeof PATHS;

interface Variant {
  /** The "config" column. */
  label: string;
  config: Config;
  app: AppKind;
  paths: PathKey[];
}

// sidecar -> sidecar has no app socket, so neither the configuration nor
// the app's kind changes it: it is measured once, in the default.
const VARIANTS: Variant[] = [
  { label: 'default', config: 'default', app: 'non-blocking', paths: ['outbound', 'mesh', 'inbound', 'full'] },
  { label: 'default, blocking app', config: 'default', app: 'blocking', paths: ['outbound', 'inbound', 'full'] },
  { label: 'opted in', config: 'opted in', app: 'non-blocking', paths: ['outbound', 'inbound', 'full'] },
];

/**
 * What meshlane must deliver, checked beside every figure it applies to.
 * "default" here is the default configuration with non-blocking apps, what
 * a user gets without doing anything.
 */
const GOALS = {
  fullRequest: { min: 2.0, scope: 'full request p50 speedup, default configuration, 1 KB, one CPU' },
  hop: { min: 1.7, scope: 'each hop p50 speedup, default configuration, 1 KB, one CPU' },
  bulk: { min: 1.0, scope: 'bulk throughput vs plain, every row' },
  cpu: { max: 0.7, scope: 'node CPU per request vs plain, default configuration, every size and CPU layout' },
} as const;

interface PingpongResult {
  p50_us?: number;
  p99_us?: number;
  count?: number;
  bytes?: number;
  gbit_per_s?: number;
  eagain_retries?: number;
  spurious_wakeups?: number;
  node_cpu?: NodeCpuWindow;
  cgroup_cpu?: CgroupCpuWindow;
}

interface GoalCheck {
  goal: keyof typeof GOALS;
  metric: 'speedup_p50' | 'speedup' | 'cpu_ratio';
  target: string;
  value: number;
  pass: boolean;
}

/**
 * The endpoint overrides of each configuration, the one place that knows
 * how a configuration reaches the NodeState. Pod.endpoint() (the harness)
 * opts every pod in ("always", what the datapath suites test), so the
 * bench sets appSockets itself, to what the control plane's own reading of
 * the pod gives: without any annotation for "default" ("auto" today), with
 * meshlane.io/app-sockets: "true" for "opted in" ("always").
 */
function endpointOverrides(config: Config): Partial<Endpoint> {
  const pod: V1Pod = { metadata: { name: 'app', namespace: 'default', annotations: config === 'opted in' ? { [ANN.appSockets]: 'true' } : {} } };
  return { appSockets: appSocketsPolicy(pod) };
}

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/** The simulated node's cgroup v2 cpu.stat (its pods' processes), when the kernel has it. */
let podsCpuStat: string | undefined;

/**
 * Runs pingpong in a pod. With podsCpuStat, pingpong stops at both edges of
 * its measured window (--edge-sync) while this process reads the pods'
 * cpu.stat, which pingpong cannot see from inside `ip netns exec`.
 */
function pingpong(pod: Pod, uid: number, args: string[]): Promise<PingpongResult> {
  const sync = podsCpuStat ? ['--edge-sync'] : [];
  const p = pod.spawn([join(TOOLS, 'pingpong'), '--json', '--node-cpu', ...sync, ...args], uid);
  let stdout = '';
  let stderr = '';
  let pending = '';
  const edges: CgroupCpuWindow[] = [];
  p.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr?.on('data', (d: Buffer) => {
    pending += d.toString();
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line === 'edge' && podsCpuStat) {
        edges.push(readCgroupCpu(podsCpuStat));
        p.stdin?.write('\n');
      } else {
        stderr += `${line}\n`;
      }
    }
  });
  const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
  return new Promise((res, rej) => {
    p.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return rej(new Error(`pingpong ${args.join(' ')} in ${pod.name}: exit ${code}: ${stderr}${pending}`));
      const r = JSON.parse(stdout) as PingpongResult;
      const [a, b] = edges;
      if (a && b) r.cgroup_cpu = { usage_usec: b.usage_usec - a.usage_usec, user_usec: b.user_usec - a.user_usec, system_usec: b.system_usec - a.system_usec };
      res(r);
    });
  });
}

/** Counters that say which hops a connection took through the fast lane. */
const HOP_COUNTERS = ['paired_outbound', 'paired_mesh', 'paired_inbound'] as const;
const HOP_SHORT: Record<(typeof HOP_COUNTERS)[number], string> = { paired_outbound: 'out', paired_mesh: 'mesh', paired_inbound: 'in' };

function counterDelta(before: Record<string, number>, after: Record<string, number>, into: Record<string, number>): void {
  for (const [k, v] of Object.entries(after)) {
    if (!/^paired_|^app_sockets|^msg_redirected$|^msg_tcp$/.test(k)) continue;
    const d = v - (before[k] ?? 0);
    if (d) into[k] = (into[k] ?? 0) + d;
  }
}

function hopsPaired(counters: Record<string, number>): string {
  const hops = HOP_COUNTERS.filter((c) => (counters[c] ?? 0) > 0).map((c) => HOP_SHORT[c]);
  return hops.length ? hops.join('+') : 'none';
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
    // The blocking app of "blocking app" rows: b's same echo and sink, with
    // blocking sockets, a process per connection.
    const BLOCKING_PORTS = { echo: 8081, sink: 8091 };
    for (const [mode, port] of Object.entries(BLOCKING_PORTS)) {
      const ready = join(c.tmp, `b.${port}.blocking.ready`);
      b.spawn([join(TOOLS, 'app-server'), '--port', String(port), '--mode', mode, '--blocking', '--ready-file', ready]);
      await waitForFile(ready);
    }
    const meshed = [a, b, oe, os, me, ms];
    podsCpuStat = existsSync(join(c.nodeCgroup('n1'), 'cpu.stat')) ? join(c.nodeCgroup('n1'), 'cpu.stat') : undefined;

    let gen = 1;
    const w: Worker = await c.startWorker('n1', c.state('n1', { enabled: true, generation: gen }), APP_SOCKETS_AUTO ? ['--app-sockets-auto', APP_SOCKETS_AUTO] : []);
    const apply = async (config: Config, mode: Mode, maxQueuedBytes = 16 << 20): Promise<void> => {
      const from = w.log.length;
      const endpoints = meshed.map((p) => p.endpoint(endpointOverrides(config)));
      await w.apply(c.state('n1', { enabled: mode === 'accelerated', maxQueuedBytes, generation: ++gen, endpoints }));
      if (/desired state refused/.test(w.log.slice(from))) throw new Error(`worker refused the ${config} state:\n${w.log.slice(from)}`);
    };
    const workerAuto = autoDecision(w.log);
    if (workerAuto) log(`worker: ${workerAuto.msg}${workerAuto.reason ? ` (${workerAuto.reason})` : ''}`);
    const configs = { default: endpointOverrides('default'), 'opted in': endpointOverrides('opted in') };
    const sameConfigs = configs.default.appSockets === configs['opted in'].appSockets;
    log(`configurations: default appSockets "${configs.default.appSockets}", opted in "${configs['opted in'].appSockets}"`);

    // Who plays which role: the app (uid 1000) blocks or not as the
    // variant says; a sidecar (uid 1337) is Envoy, an event loop.
    const nb = (role: 'app' | 'sidecar', app: AppKind) => (role === 'sidecar' || app === 'non-blocking' ? ['--nonblock'] : []);
    const nowhere = '10.77.0.250'; // captured by the outbound REDIRECT before routing
    const runPath = (path: PathKey, app: AppKind, args: string[], bulk: boolean): Promise<PingpongResult> => {
      const appPort = String(app === 'blocking' ? (bulk ? BLOCKING_PORTS.sink : BLOCKING_PORTS.echo) : bulk ? 8090 : 8080);
      switch (path) {
        case 'outbound':
          return pingpong(bulk ? os : oe, 1000, [...nb('app', app), '--host', nowhere, '--port', '80', ...args]);
        case 'mesh':
          return pingpong(a, 1337, [...nb('sidecar', app), '--host', (bulk ? ms : me).ip4, '--port', '8080', ...args]);
        case 'inbound':
          return pingpong(b, 1337, [...nb('sidecar', app), '--bind', '127.0.0.6', '--host', b.ip4, '--port', appPort, ...args]);
        case 'full':
          return pingpong(a, 1000, [...nb('app', app), '--host', b.ip4, '--port', appPort, ...args]);
      }
    };

    /** REPS runs of each mode, alternating which goes first. */
    const measure = async (v: Variant, path: PathKey, args: string[], bulk: boolean) => {
      const runs: Record<Mode, PingpongResult[]> = { plain: [], accelerated: [] };
      const cpu: Record<Mode, Tally> = { plain: new Tally(), accelerated: new Tally() };
      const counters: Record<string, number> = {};
      for (let rep = 0; rep < REPS; rep++) {
        for (const mode of rep % 2 ? (['accelerated', 'plain'] as const) : (['plain', 'accelerated'] as const)) {
          await apply(v.config, mode);
          const before = mode === 'accelerated' ? w.counters() : undefined;
          const r = await runPath(path, v.app, args, bulk);
          if (before) counterDelta(before, w.counters(), counters);
          runs[mode].push(r);
          cpu[mode].add(r.node_cpu, (bulk ? r.bytes : r.count) ?? 0, r.cgroup_cpu);
        }
      }
      for (const k of Object.keys(counters)) counters[k] = (counters[k] ?? 0) / REPS; // per connection
      for (const t of Object.values(cpu)) {
        nodeBusy.us += t.busyUs;
        nodeBusy.s += t.windowS;
      }
      return { runs, cpu, counters };
    };

    /** All CPU windows together: how busy the node was while we measured. */
    const nodeBusy = { us: 0, s: 0 };
    log('background CPU of the node (nothing of ours running)');
    const background = await backgroundBusy(1000);
    log(`background: ${(background.busy_us_per_s / 1000).toFixed(0)} ms CPU per second`);

    const ncpu = cpus().length;
    const cpuModes = ncpu >= 2 ? (['one CPU', 'two CPUs'] as const) : (['one CPU'] as const);
    const results: Array<Record<string, unknown>> = [];
    for (const cpuMode of cpuModes) {
      // one CPU: everything on CPU 0; two CPUs: client on 0, every server on 1.
      c.pinPods(cpuMode === 'one CPU' ? '0' : '1');
      const clientCpu = '0';
      for (const v of VARIANTS) {
        for (const path of v.paths) {
          for (const size of SIZES) {
            const rr = ['--mode', 'rr', '--size', String(size), '--count', String(RR_COUNT), '--min-seconds', String(CPU_SECONDS), '--warmup', '200', '--cpu', clientCpu];
            const m = await measure(v, path, rr, false);
            const row: Record<string, unknown> = {
              cpu: cpuMode,
              config: v.label,
              app: v.app,
              path: PATHS[path],
              kind: 'rr',
              size,
              plain_p50_us: median(m.runs.plain.map((r) => r.p50_us ?? NaN)),
              plain_p99_us: median(m.runs.plain.map((r) => r.p99_us ?? NaN)),
              accel_p50_us: median(m.runs.accelerated.map((r) => r.p50_us ?? NaN)),
              accel_p99_us: median(m.runs.accelerated.map((r) => r.p99_us ?? NaN)),
              plain_cpu_us_per_req: m.cpu.plain.perOp(),
              accel_cpu_us_per_req: m.cpu.accelerated.perOp(),
              plain_pods_cpu_us_per_req: m.cpu.plain.podsPerOp(),
              accel_pods_cpu_us_per_req: m.cpu.accelerated.podsPerOp(),
              plain_cpu: m.cpu.plain.json(),
              accel_cpu: m.cpu.accelerated.json(),
              eagain_retries: m.runs.accelerated.reduce((s, r) => s + (r.eagain_retries ?? 0), 0),
              spurious_wakeups: m.runs.accelerated.reduce((s, r) => s + (r.spurious_wakeups ?? 0), 0),
              counters_per_connection: m.counters,
              hops_paired: hopsPaired(m.counters),
            };
            row.speedup_p50 = (row.plain_p50_us as number) / (row.accel_p50_us as number);
            row.cpu_ratio = (row.accel_cpu_us_per_req as number) / (row.plain_cpu_us_per_req as number);
            row.pods_cpu_ratio = (row.accel_pods_cpu_us_per_req as number) / (row.plain_pods_cpu_us_per_req as number);
            row.goals = goalsFor(row, v, path);
            results.push(row);
            log(
              `${cpuMode} | ${v.label} | ${PATHS[path]} | ${size} B: p50 ${f(row.plain_p50_us)} -> ${f(row.accel_p50_us)} us, ` +
                `CPU ${f(row.plain_cpu_us_per_req)} -> ${f(row.accel_cpu_us_per_req)} us/req, paired ${row.hops_paired}`,
            );
          }
          const m = await measure(v, path, ['--mode', 'bulk', '--size', String(BULK_CHUNK), '--seconds', String(BULK_SECONDS), '--cpu', clientCpu], true);
          const row: Record<string, unknown> = {
            cpu: cpuMode,
            config: v.label,
            app: v.app,
            path: PATHS[path],
            kind: 'bulk',
            size: BULK_CHUNK,
            plain_gbit: median(m.runs.plain.map((r) => r.gbit_per_s ?? NaN)),
            accel_gbit: median(m.runs.accelerated.map((r) => r.gbit_per_s ?? NaN)),
            plain_cpu_us_per_mb: m.cpu.plain.perOp(1e6),
            accel_cpu_us_per_mb: m.cpu.accelerated.perOp(1e6),
            plain_pods_cpu_us_per_mb: m.cpu.plain.podsPerOp(1e6),
            accel_pods_cpu_us_per_mb: m.cpu.accelerated.podsPerOp(1e6),
            plain_cpu: m.cpu.plain.json(1e6),
            accel_cpu: m.cpu.accelerated.json(1e6),
            eagain_retries: m.runs.accelerated.reduce((s, r) => s + (r.eagain_retries ?? 0), 0),
            spurious_wakeups: m.runs.accelerated.reduce((s, r) => s + (r.spurious_wakeups ?? 0), 0),
            counters_per_connection: m.counters,
            hops_paired: hopsPaired(m.counters),
          };
          row.speedup = (row.accel_gbit as number) / (row.plain_gbit as number);
          row.cpu_ratio = (row.accel_cpu_us_per_mb as number) / (row.plain_cpu_us_per_mb as number);
          row.pods_cpu_ratio = (row.accel_pods_cpu_us_per_mb as number) / (row.plain_pods_cpu_us_per_mb as number);
          row.goals = goalsFor(row, v, path);
          results.push(row);
          log(
            `${cpuMode} | ${v.label} | ${PATHS[path]} | bulk: ${f(row.plain_gbit, 2)} -> ${f(row.accel_gbit, 2)} Gbit/s, ` +
              `CPU ${f(row.plain_cpu_us_per_mb, 0)} -> ${f(row.accel_cpu_us_per_mb, 0)} us/MB, paired ${row.hops_paired}`,
          );
        }
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
      await apply('default', mode, limit);
      const peak = { pages: 0 };
      const baseline = tcpMemPages();
      const timer = setInterval(() => (peak.pages = Math.max(peak.pages, tcpMemPages())), 5);
      const r = await runPath('full', 'non-blocking', ['--mode', 'bulk', '--size', String(BULK_CHUNK), '--seconds', String(BULK_SECONDS), '--cpu', '0', '--timeout', '60'], true);
      clearInterval(timer);
      memory.push({ mode: label, gbit_per_s: r.gbit_per_s, tcp_mem_peak_pages: peak.pages, tcp_mem_baseline_pages: baseline, peak_mib: (peak.pages * 4096) / 2 ** 20 });
      log(`${label}: ${r.gbit_per_s?.toFixed(2)} Gbit/s, TCP mem peak ${peak.pages} pages`);
    }
    await apply('default', 'accelerated');

    log('map reconcile');
    const reconcile = benchReconcile(c, a.endpoint(endpointOverrides('opted in')));

    const goals = results.flatMap((r) => (r.goals as GoalCheck[]).map((g) => ({ cpu: r.cpu, config: r.config, path: r.path, kind: r.kind, size: r.size, ...g })));
    const out = {
      when: new Date().toISOString(),
      kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      cpus: ncpu,
      reps: REPS,
      rr_count: RR_COUNT,
      rr_min_seconds: CPU_SECONDS,
      bulk_seconds: BULK_SECONDS,
      configs,
      configs_identical: sameConfigs,
      worker_auto_app_sockets: workerAuto ?? null,
      node_cpu: {
        source: '/proc/stat "cpu" line, all CPUs, busy = user + nice + system + irq + softirq, sampled by pingpong --node-cpu at the edges of its measured window',
        pods_source: podsCpuStat ? `${podsCpuStat} usage_usec at the same edges (pingpong --edge-sync)` : 'unavailable',
        background_busy_us_per_s: background.busy_us_per_s,
        busy_share_during_windows: nodeBusy.s > 0 ? nodeBusy.us / 1e6 / (nodeBusy.s * ncpu) : null,
      },
      goal_definitions: GOALS,
      goals_met: goals.filter((g) => g.pass).length,
      goals_total: goals.length,
      goals,
      latency: results,
      memory,
      reconcile,
    };
    mkdirSync(join(ROOT, 'bench-results'), { recursive: true });
    writeFileSync(join(ROOT, 'bench-results/datapath.json'), `${JSON.stringify(out, null, 2)}\n`);
    printTables(out.latency, memory, reconcile, goals, background.busy_us_per_s, out.node_cpu.busy_share_during_windows, sameConfigs, workerAuto);
    process.stdout.write(`\nwritten to bench-results/datapath.json in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  } finally {
    await c.cleanup();
  }
}

interface AutoDecision {
  msg: string;
  appSocketsAuto?: unknown;
  reason?: string;
}

/** What the worker decided at start for app sockets of "auto" pods (its log line), if it says. */
function autoDecision(log: string): AutoDecision | undefined {
  for (const line of log.split('\n')) {
    if (!line.includes('app sockets')) continue;
    try {
      const o = JSON.parse(line) as { msg?: string; appSocketsAuto?: unknown; reason?: unknown };
      if (o.msg?.includes('"auto" app sockets')) return { msg: o.msg, appSocketsAuto: o.appSocketsAuto, ...(typeof o.reason === 'string' ? { reason: o.reason } : {}) };
    } catch {
      // not a JSON log line
    }
  }
  return undefined;
}

function goalsFor(row: Record<string, unknown>, v: Variant, path: PathKey): GoalCheck[] {
  const out: GoalCheck[] = [];
  // Judged on the value as printed (2 decimals), so a "1.70x" never fails ">= 1.70x".
  const shown = (x: unknown) => Math.round((x as number) * 100) / 100;
  const isDefault = v.config === 'default' && v.app === 'non-blocking';
  if (row.kind === 'bulk') {
    const value = row.speedup as number;
    out.push({ goal: 'bulk', metric: 'speedup', target: `>= ${GOALS.bulk.min.toFixed(2)}x`, value, pass: shown(value) >= GOALS.bulk.min });
    return out;
  }
  if (isDefault && row.cpu === 'one CPU' && row.size === 1024) {
    const g = path === 'full' ? GOALS.fullRequest : GOALS.hop;
    const value = row.speedup_p50 as number;
    out.push({ goal: path === 'full' ? 'fullRequest' : 'hop', metric: 'speedup_p50', target: `>= ${g.min.toFixed(2)}x`, value, pass: shown(value) >= g.min });
  }
  if (isDefault) {
    const value = row.cpu_ratio as number;
    out.push({ goal: 'cpu', metric: 'cpu_ratio', target: `<= ${GOALS.cpu.max.toFixed(2)}`, value, pass: shown(value) <= GOALS.cpu.max });
  }
  return out;
}

function f(v: unknown, d = 1): string {
  return typeof v === 'number' ? (Number.isFinite(v) ? v.toFixed(d) : '-') : String(v);
}

/** Global kernel TCP memory in pages (/proc/net/sockstat "TCP: ... mem N"). */
function tcpMemPages(): number {
  const m = /TCP:.* mem (\d+)/.exec(readFileSync('/proc/net/sockstat', 'utf8'));
  return Number(m?.[1] ?? 0);
}

/** A metadata.uid-shaped id (RFC 4122 text) per bench endpoint. */
function benchUid(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

/**
 * 110 endpoints shaped like the template (an endpoint the harness made, so
 * the fields follow the proto as it evolves), each with its own name, IPs
 * and, where the proto has one, uid.
 */
function reconcileState(template: Endpoint, pods: number, replaced: number, generation: number): NodeState {
  const endpoints: Endpoint[] = [];
  for (let i = 0; i < pods; i++) {
    const n = i < replaced ? 1000 + i : i;
    const e: Endpoint = {
      ...template,
      pod: `bench/p${n}`,
      ips: [`10.${100 + (n >> 8)}.${n & 255}.1`, `fd99::${n.toString(16)}:1`],
      proxyUid: 1337,
      accelerate: true,
      inbound: { includePorts: '*', excludePorts: [15020, 15021, 15090] },
      outbound: { excludePorts: [], includeCidrs: '*', excludeCidrs: ['10.96.0.0/12'] },
    };
    endpoints.push(Object.assign(e, 'uid' in template ? { uid: benchUid(n) } : {}));
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

function benchReconcile(c: TestCluster, template: Endpoint): Record<string, number> {
  const node = c.nodeName('rec');
  const cg = c.nodeCgroup('n1'); // attach needs a cgroup; this one is ours
  const fromEmpty: number[] = [];
  const onePod: number[] = [];
  let entries = 0;
  for (let rep = 0; rep < 5; rep++) {
    const dp = Datapath.install({ node, cgroup: cg, objectDir: join(ROOT, 'bpf/out'), pinRoot: PIN_ROOT, capacity: capacityForPods(110, 65536) });
    try {
      const reconciler = new Reconciler(dp);
      const full = reconcileState(template, 110, 0, 1);
      let t = process.hrtime.bigint();
      const r = reconciler.apply(full);
      fromEmpty.push(Number(process.hrtime.bigint() - t) / 1e6);
      entries = Object.values(r.entries).reduce((a, b) => a + b, 0);
      t = process.hrtime.bigint();
      reconciler.apply(reconcileState(template, 110, 1, 2));
      onePod.push(Number(process.hrtime.bigint() - t) / 1e6);
    } finally {
      dp.close();
      Datapath.remove(PIN_ROOT, node);
    }
  }
  return { endpoints: 110, map_entries: entries, from_empty_ms: median(fromEmpty), one_pod_diff_ms: median(onePod) };
}

/** Node CPU figures resting on fewer /proc/stat ticks than this (per side) are marked "~". */
const FEW_TICKS = 100;

function cpuCell(r: Record<string, unknown>, plainKey: string, accelKey: string, d: number): string {
  const few = [r.plain_cpu, r.accel_cpu].some((t) => ((t as { busy_ticks?: number } | undefined)?.busy_ticks ?? 0) < FEW_TICKS);
  return `${few ? '~' : ''}${f(r[plainKey], d)} / ${f(r[accelKey], d)}`;
}

function hopsCell(r: Record<string, unknown>): string {
  const extra = [r.eagain_retries ? `${r.eagain_retries as number} EAGAIN` : '', r.spurious_wakeups ? `${r.spurious_wakeups as number} empty wake-ups` : ''].filter(Boolean);
  return [r.hops_paired as string, ...extra].join(', ');
}

function goalCell(goals: GoalCheck[], ...names: Array<keyof typeof GOALS>): string {
  const g = goals.filter((x) => names.includes(x.goal));
  return g.length ? g.map((x) => `${x.target} ${x.pass ? 'pass' : 'FAIL'}`).join(', ') : '';
}

function printTables(
  latency: Array<Record<string, unknown>>,
  memory: Array<Record<string, unknown>>,
  reconcile: Record<string, number>,
  goals: Array<GoalCheck & Record<string, unknown>>,
  backgroundUsPerS: number,
  busyShare: number | null,
  sameConfigs: boolean,
  workerAuto: AutoDecision | undefined,
): void {
  const lines = [
    '',
    'Round trips. Node CPU = the whole node (all CPUs: user + system + irq + softirq, /proc/stat) per request;',
    `pods' CPU = the simulated node's cgroup (its pods' processes, cpu.stat) per request. "~": fewer than ${FEW_TICKS} ticks behind a side.`,
    '',
    "| CPUs | config | path | size | plain p50 / p99 (us) | meshlane p50 / p99 (us) | p50 speedup | goal | node CPU us/request plain / meshlane | CPU ratio | goal | pods' CPU us/request plain / meshlane (ratio) | hops paired |",
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of latency.filter((x) => x.kind === 'rr')) {
    const g = r.goals as GoalCheck[];
    lines.push(
      `| ${r.cpu} | ${r.config} | ${r.path} | ${r.size} B | ${f(r.plain_p50_us)} / ${f(r.plain_p99_us)} | ${f(r.accel_p50_us)} / ${f(r.accel_p99_us)} | ${f(r.speedup_p50, 2)}x | ${goalCell(g, 'fullRequest', 'hop')} ` +
        `| ${cpuCell(r, 'plain_cpu_us_per_req', 'accel_cpu_us_per_req', 1)} | ${f(r.cpu_ratio, 2)} | ${goalCell(g, 'cpu')} ` +
        `| ${f(r.plain_pods_cpu_us_per_req)} / ${f(r.accel_pods_cpu_us_per_req)} (${f(r.pods_cpu_ratio, 2)}) | ${hopsCell(r)} |`,
    );
  }
  lines.push(
    '',
    'Bulk (64 KiB writes to a sink). CPU per MB (10^6 bytes) delivered.',
    '',
    "| CPUs | config | path | plain Gbit/s | meshlane Gbit/s | ratio | goal | node CPU us/MB plain / meshlane | CPU ratio | pods' CPU us/MB plain / meshlane (ratio) | hops paired |",
    '|---|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const r of latency.filter((x) => x.kind === 'bulk')) {
    lines.push(
      `| ${r.cpu} | ${r.config} | ${r.path} | ${f(r.plain_gbit, 2)} | ${f(r.accel_gbit, 2)} | ${f(r.speedup, 2)}x | ${goalCell(r.goals as GoalCheck[], 'bulk')} ` +
        `| ${cpuCell(r, 'plain_cpu_us_per_mb', 'accel_cpu_us_per_mb', 0)} | ${f(r.cpu_ratio, 2)} ` +
        `| ${f(r.plain_pods_cpu_us_per_mb, 0)} / ${f(r.accel_pods_cpu_us_per_mb, 0)} (${f(r.pods_cpu_ratio, 2)}) | ${hopsCell(r)} |`,
    );
  }
  lines.push('', '| full request, bulk | Gbit/s | kernel TCP memory peak (pages / MiB) |', '|---|---|---|');
  for (const m of memory) lines.push(`| ${m.mode} | ${f(m.gbit_per_s, 2)} | ${m.tcp_mem_peak_pages} / ${f(m.peak_mib, 0)} |`);
  lines.push('', '| reconcile, 110 endpoints | map entries | from empty (ms) | 1-pod diff (ms) |', '|---|---|---|---|');
  lines.push(`| ${reconcile.endpoints} pods, dual-stack | ${reconcile.map_entries} | ${f(reconcile.from_empty_ms)} | ${f(reconcile.one_pod_diff_ms)} |`);

  lines.push('', 'Goals ("default" = endpoints as the control plane emits them without annotations, apps non-blocking):');
  for (const [name, g] of Object.entries(GOALS)) {
    const mine = goals.filter((x) => x.goal === name);
    const met = mine.filter((x) => x.pass).length;
    const target = 'min' in g ? `>= ${g.min}x` : `<= ${g.max}`;
    lines.push(`  ${met === mine.length ? 'pass' : 'FAIL'}  ${g.scope} ${target}: ${met} of ${mine.length} met`);
    for (const x of mine.filter((y) => !y.pass)) lines.push(`          missed: ${x.cpu} | ${x.config} | ${x.path} | ${x.kind === 'bulk' ? 'bulk' : `${x.size} B`}: ${f(x.value, 2)}`);
  }
  const met = goals.filter((x) => x.pass).length;
  lines.push(`  ${met} of ${goals.length} goal checks met`);
  // The same CPU goal on the pods' own cgroup, which other tenants cannot reach.
  const podsRows = latency.filter((r) => (r.goals as GoalCheck[]).some((g) => g.goal === 'cpu'));
  const podsMet = podsRows.filter((r) => Math.round((r.pods_cpu_ratio as number) * 100) / 100 <= GOALS.cpu.max).length;
  lines.push(`  cross-check, pods' CPU per request <= ${GOALS.cpu.max} on the same rows: ${podsMet} of ${podsRows.length}`);
  lines.push(
    `  the node was ${busyShare === null ? '-' : `${f(busyShare * 100, 0)}%`} busy during the CPU windows; ` +
      `${f(backgroundUsPerS / 1000, 0)} ms CPU per second before the run with nothing of ours running (other tenants land in both columns alike)`,
  );
  if (workerAuto) lines.push(`  the worker on this kernel: ${workerAuto.msg}${workerAuto.reason ? ` (${workerAuto.reason})` : ''}`);
  if (sameConfigs) lines.push('  note: "default" and "opted in" were the same state (the control plane reads no annotation the same as app-sockets "true")');
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
