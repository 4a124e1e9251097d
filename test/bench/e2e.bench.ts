/**
 * npm run bench:e2e
 *
 * The bus end to end against a real nats-server (JetStream): the real pod
 * classification, model, reconciler (autoFlush) and BusPublisher (epoch 1)
 * on one side, 50 simulated workers on the other, each a real NodeFollower
 * with its own NATS connection and a StateApplier stand-in (no BPF) that
 * records when each generation is applied. Everything runs in this one
 * process (publisher and the 50 followers share one event loop), the server
 * in another.
 *
 *  1. Event-to-map latency at 100 and 1,000 pod events/s (creates, deletes,
 *     relabels over 50 nodes, 20 pods per node baseline): from the event
 *     handed to the model until the worker of its node applied the
 *     generation containing it.
 *  2. NATS bytes per event: delta and snapshot payloads the control plane
 *     wrote, and wire bytes from the server's monitoring endpoint (/connz
 *     per connection, /varz for the server).
 *  3. Catch-up of a worker that missed 10,000 deltas of its node: from its
 *     snapshot (normal) and by replaying the deltas (snapshot older than
 *     all of them).
 *
 * Prints a table and writes bench-results/e2e.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { V1Pod } from '@kubernetes/client-node';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { pino } from 'pino';
import type { NodeState } from '@meshlane/proto';
import { NodeFollower, compileNodeState, type StateApplier } from '@meshlane/node-worker';
import { classifyPod } from '../../controlplane/src/classify/mod.js';
import { BusPublisher, DEFAULT_SNAPSHOT_INTERVAL_MS } from '../../controlplane/src/bus/publisher.js';
import { DEFAULT_LIMITS, setupBus } from '../../controlplane/src/bus/setup.js';
import { ClusterModel } from '../../controlplane/src/model/model.js';
import { Reconciler } from '../../controlplane/src/reconcile/reconciler.js';
import { podFixture } from '../fakes/kube-apiserver.js';
import { ROOT } from '../harness/cluster.js';
import { NatsServer, freePort } from '../harness/nats.js';
import { clusterBench } from './e2e-cluster.bench.js';

const NODES = Number(process.env.BENCH_E2E_NODES ?? 50);
const PODS_PER_NODE = 20;
const RATES = (process.env.BENCH_E2E_RATES ?? '100,1000').split(',').map(Number);
const SECONDS = Number(process.env.BENCH_E2E_SECONDS ?? 5);
const MISSED = Number(process.env.BENCH_E2E_MISSED ?? 10_000);
const SNAPSHOT_INTERVAL_MS = DEFAULT_SNAPSHOT_INTERVAL_MS;
const GOAL_P99_MS = 50;
const GOAL_CATCHUP_MS = 1000;
/** "Far under max_payload" (1 MiB) for a 250-pod node: a quarter of it. */
const GOAL_SNAPSHOT_BYTES = 256 << 10;

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });
const nodeName = (n: number) => `node-${n}`;
const now = () => performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms)));
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

async function waitFor(what: string, pred: () => boolean, ms = 30_000, every = 1): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

// ---------------------------------------------------------------- pods

interface SimPod {
  i: number;
  node: number;
  appSockets: boolean;
  optOut: boolean;
}

function v1pod(p: SimPod): V1Pod {
  const i = p.i;
  return podFixture({
    name: `app-${i}`,
    namespace: `ns-${i % 10}`,
    node: nodeName(p.node),
    ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    ...(p.optOut ? { labels: { app: `app-${i}`, 'meshlane.io/accelerate': 'false' } } : {}),
    ...(p.appSockets ? { annotations: { 'meshlane.io/app-sockets': 'true' } } : {}),
  }) as unknown as V1Pod;
}

// ---------------------------------------------------------------- monitoring

interface ConnBytes {
  name?: string;
  in_bytes: number;
  out_bytes: number;
  in_msgs: number;
  out_msgs: number;
}

class Monitor {
  constructor(private readonly port: number) {}

  private async get<T>(path: string): Promise<T> {
    const r = await fetch(`http://127.0.0.1:${this.port}${path}`);
    if (!r.ok) throw new Error(`monitoring ${path}: HTTP ${r.status}`);
    return (await r.json()) as T;
  }

  async sample(): Promise<{ varz: { in_bytes: number; out_bytes: number; in_msgs: number; out_msgs: number }; cp: ConnBytes; workers: ConnBytes }> {
    const varz = await this.get<{ in_bytes: number; out_bytes: number; in_msgs: number; out_msgs: number }>('/varz');
    const connz = await this.get<{ connections: ConnBytes[] }>('/connz?limit=10000');
    const sum = (cs: ConnBytes[]): ConnBytes => cs.reduce((a, c) => ({ in_bytes: a.in_bytes + c.in_bytes, out_bytes: a.out_bytes + c.out_bytes, in_msgs: a.in_msgs + c.in_msgs, out_msgs: a.out_msgs + c.out_msgs }), { in_bytes: 0, out_bytes: 0, in_msgs: 0, out_msgs: 0 });
    return {
      varz: { in_bytes: varz.in_bytes, out_bytes: varz.out_bytes, in_msgs: varz.in_msgs, out_msgs: varz.out_msgs },
      cp: sum(connz.connections.filter((c) => c.name === 'bench-controlplane')),
      workers: sum(connz.connections.filter((c) => c.name?.startsWith('bench-worker-'))),
    };
  }
}

// ---------------------------------------------------------------- the rig

/** The worker's map-applier stand-in: resolves the events waiting on each generation it applies. */
class Applier implements StateApplier {
  generation = 0;
  applies = 0;
  constructor(
    private readonly node: string,
    private readonly rig: Rig,
  ) {}
  apply(state: NodeState) {
    this.generation = state.generation;
    this.applies++;
    this.rig.applied(this.node, state.generation, now());
    return { changed: {} };
  }
}

interface Worker {
  node: string;
  nc: NatsConnection;
  f: NodeFollower;
  applier: Applier;
}

class Rig {
  nats!: NatsServer;
  monitor!: Monitor;
  nc!: NatsConnection;
  kv!: KV;
  model = new ClusterModel({ syncGate: false });
  rec = new Reconciler(this.model, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 } }); // autoFlush on
  pub!: BusPublisher;
  readonly workers = new Map<string, Worker>();
  snapshotBytes = 0;
  snapshotWrites = 0;
  publishErrors: string[] = [];

  // Simulated cluster.
  pods = new Map<number, SimPod>();
  podsOnNode: number[][] = [];
  nextPod = 0;

  // Latency bookkeeping: events stamped, not yet in a generation; then per generation.
  private unassigned = new Map<string, number[]>();
  private waiting = new Map<string, Array<{ gen: number; times: number[]; storedAt?: number }>>();
  latencies: number[] = [];
  storeLatencies: number[] = [];
  /** Events that took over 500 ms: which node, how long, how long until stored. */
  slow: Array<{ node: string; ms: number; storedMs?: number }> = [];
  recording = false;
  private lastPublish = new Map<string, Promise<void>>();

  constructor(private readonly snapshotIntervalMs: number) {}

  async start(): Promise<void> {
    const httpPort = await freePort();
    this.nats = await NatsServer.start({ config: `http: 127.0.0.1:${httpPort}` });
    this.monitor = new Monitor(httpPort);
    this.nc = await this.nats.connect({ name: 'bench-controlplane' });
    const kv = await setupBus(this.nc, DEFAULT_LIMITS);
    this.kv = kv;
    // Counts the snapshot payloads the publisher writes (it counts only deltas).
    const counted = new Proxy(kv, {
      get: (t, p) => {
        const v = Reflect.get(t, p, t) as unknown;
        if (p === 'create' || p === 'update') {
          const fn = v as (key: string, data: string, ...rest: unknown[]) => Promise<number>;
          return (key: string, data: string, ...rest: unknown[]) => {
            this.snapshotBytes += Buffer.byteLength(data);
            this.snapshotWrites++;
            return fn.call(t, key, data, ...rest);
          };
        }
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
    this.pub = new BusPublisher(this.nc, counted, { epoch: 1, source: 'controlplane/bench', logger: log, snapshotIntervalMs: this.snapshotIntervalMs });
    this.rec.onUpdate((u) => {
      const times = this.unassigned.get(u.node) ?? [];
      this.unassigned.delete(u.node);
      const entry: { gen: number; times: number[]; storedAt?: number } = { gen: u.generation, times };
      let q = this.waiting.get(u.node);
      if (!q) this.waiting.set(u.node, (q = []));
      q.push(entry);
      const p = this.pub.publish(u).then(
        () => void (entry.storedAt = now()),
        (err: Error) => void this.publishErrors.push(`${u.node} gen ${u.generation}: ${err.message}`),
      );
      this.lastPublish.set(u.node, p);
    });
    for (let n = 0; n < NODES; n++) this.podsOnNode.push([]);
  }

  applied(node: string, generation: number, at: number): void {
    const q = this.waiting.get(node);
    while (q?.length && q[0]!.gen <= generation) {
      const e = q.shift()!;
      if (this.recording) {
        for (const t of e.times) {
          this.latencies.push(at - t);
          if (e.storedAt !== undefined) this.storeLatencies.push(e.storedAt - t);
          if (at - t > 500) this.slow.push({ node, ms: Math.round(at - t), ...(e.storedAt !== undefined ? { storedMs: Math.round(e.storedAt - t) } : {}) });
        }
      }
    }
  }

  async addWorker(node: string): Promise<Worker> {
    const nc = await this.nats.connect({ name: `bench-worker-${node}` });
    const applier = new Applier(node, this);
    const f = new NodeFollower({ nc, node, reconciler: applier, logger: log });
    const w = { node, nc, f, applier };
    this.workers.set(node, w);
    f.start();
    return w;
  }

  async removeWorker(node: string): Promise<void> {
    const w = this.workers.get(node);
    if (!w) return;
    this.workers.delete(node);
    await withDeadline(w.f.stop(), 5000, `stopping follower ${node}`).catch(() => {});
    await withDeadline(w.nc.close(), 5000, `closing ${node}`).catch(() => {});
  }

  /** Events for a node: stamped now, resolved when its worker applies the generation holding them. */
  private stamp(node: number): void {
    const name = nodeName(node);
    let l = this.unassigned.get(name);
    if (!l) this.unassigned.set(name, (l = []));
    l.push(now());
  }

  private upsert(p: SimPod, stamp: boolean): void {
    if (stamp) this.stamp(p.node);
    this.rec.touch(this.model.upsertPod(classifyPod(v1pod(p))));
  }

  create(node: number, stamp = true): void {
    const p: SimPod = { i: this.nextPod++, node, appSockets: false, optOut: false };
    this.pods.set(p.i, p);
    this.podsOnNode[node]!.push(p.i);
    this.upsert(p, stamp);
  }

  delete(node: number, pick: number): void {
    const list = this.podsOnNode[node]!;
    const [i] = list.splice(pick % list.length, 1);
    const p = this.pods.get(i!)!;
    this.pods.delete(p.i);
    this.stamp(node);
    this.rec.touch(this.model.deletePod(`ns-${p.i % 10}/app-${p.i}`));
  }

  /** A relabel that changes the endpoint: the app-sockets annotation, or (when `optOut`) the opt-out label. */
  relabel(node: number, pick: number, optOut: boolean): void {
    const list = this.podsOnNode[node]!;
    const p = this.pods.get(list[pick % list.length]!)!;
    if (optOut) p.optOut = !p.optOut;
    else p.appSockets = !p.appSockets;
    this.upsert(p, true);
  }

  /** Waits until every worker applied the latest generation of its node. */
  async settled(ms = 60_000): Promise<void> {
    await waitFor('every worker on the latest generation', () => [...this.workers.values()].every((w) => w.applier.generation >= this.rec.generation(w.node)), ms, 5);
  }

  async published(): Promise<void> {
    await Promise.all(this.lastPublish.values());
  }

  unresolved(): number {
    let n = 0;
    for (const l of this.unassigned.values()) n += l.length;
    for (const q of this.waiting.values()) for (const e of q) n += e.times.length;
    return n;
  }

  resetLatencies(): void {
    this.latencies = [];
    this.storeLatencies = [];
    this.slow = [];
  }

  async stop(): Promise<void> {
    for (const node of [...this.workers.keys()]) await this.removeWorker(node);
    // Clears the publisher's snapshot timers (and writes what is pending).
    if (this.pub) await withDeadline(this.pub.flush(), 5000, 'publisher flush').catch(() => {});
    if (this.nc) await withDeadline(this.nc.close(), 5000, 'closing the control plane connection').catch(() => {});
    if (this.nats) await this.nats.stop();
  }

  async baseline(): Promise<void> {
    for (let n = 0; n < NODES; n++) this.rec.touch(this.model.upsertNode(nodeName(n)));
    for (let k = 0; k < PODS_PER_NODE; k++) for (let n = 0; n < NODES; n++) this.create(n, false);
    this.rec.flush();
    await this.published();
    await this.settled();
    await this.pub.flush();
  }
}

// ---------------------------------------------------------------- the phases

async function churn(rig: Rig, rate: number) {
  const total = Math.round(rate * SECONDS);
  rig.resetLatencies();
  const pubBefore = { ...rig.pub.stats };
  const snapBefore = rig.snapshotBytes;
  const snapWritesBefore = rig.snapshotWrites;
  const wireBefore = await rig.monitor.sample();
  rig.recording = true;
  let sent = 0;
  const kinds = { create: 0, delete: 0, relabel: 0 };
  const started = now();
  while (sent < total) {
    const due = Math.min(total, Math.floor(((now() - started) * rate) / 1000) + 1);
    for (; sent < due; sent++) {
      const e = sent;
      const node = (e * 7) % NODES;
      const k = e % 3;
      const count = rig.podsOnNode[node]!.length;
      if (k === 0 || (k === 1 && count <= PODS_PER_NODE / 2)) {
        rig.create(node);
        kinds.create++;
      } else if (k === 1) {
        rig.delete(node, e * 7919);
        kinds.delete++;
      } else {
        rig.relabel(node, e * 104729, e % 2 === 0);
        kinds.relabel++;
      }
    }
    await sleep(1);
  }
  const seconds = (now() - started) / 1000;
  await rig.published();
  await rig.settled();
  rig.recording = false;
  await rig.pub.flush(); // the snapshot writes these events caused
  const wireAfter = await rig.monitor.sample();
  const d = (a: number, b: number) => (a - b) / total;
  return {
    rate,
    events: total,
    kinds,
    achieved_events_per_s: total / seconds,
    generations: rig.pub.stats.deltas - pubBefore.deltas,
    measured: rig.latencies.length,
    unresolved: rig.unresolved(),
    p50_ms: pct(rig.latencies, 0.5),
    p99_ms: pct(rig.latencies, 0.99),
    max_ms: Math.max(...rig.latencies),
    over_500ms: rig.slow.length,
    slowest: [...rig.slow].sort((x, y) => y.ms - x.ms).slice(0, 10),
    stored_p50_ms: pct(rig.storeLatencies, 0.5),
    stored_p99_ms: pct(rig.storeLatencies, 0.99),
    delta_bytes_per_event: d(rig.pub.stats.deltaBytes, pubBefore.deltaBytes),
    snapshot_bytes_per_event: d(rig.snapshotBytes, snapBefore),
    snapshot_writes: rig.snapshotWrites - snapWritesBefore,
    cp_wire_in_bytes_per_event: d(wireAfter.cp.in_bytes, wireBefore.cp.in_bytes),
    workers_wire_out_bytes_per_event: d(wireAfter.workers.out_bytes, wireBefore.workers.out_bytes),
    workers_wire_in_bytes_per_event: d(wireAfter.workers.in_bytes, wireBefore.workers.in_bytes),
    server_in_bytes_per_event: d(wireAfter.varz.in_bytes, wireBefore.varz.in_bytes),
    server_out_bytes_per_event: d(wireAfter.varz.out_bytes, wireBefore.varz.out_bytes),
  };
}

/**
 * A realistically named node of `pods` pods (Deployment pods: 30-45
 * character names in 20-character namespaces, dual-stack, Istio's default
 * exclusions plus one excluded outbound range): the size of its snapshot,
 * of its first delta and of a one-pod change, the time to publish them, and
 * the time a fresh worker takes to read and compile (compileNodeState, the
 * map writes are bench:datapath's) the whole state.
 */
async function stateSize(rig: Rig, pods: number) {
  const node = `big-${pods}.example.internal`;
  const name = (i: number) => `${['reviews', 'productpage', 'ratings-backend', 'details-frontend-canary'][i % 4]}-v${i % 3}-${(0x5b64f47978 + i * 7919).toString(16)}-${(i * 104729).toString(36).padStart(5, 'x').slice(-5)}`;
  const objs = Array.from({ length: pods }, (_, i) =>
    podFixture({
      name: name(i),
      namespace: `team-${['payments', 'search', 'checkout'][i % 3]}-production`.slice(0, 20),
      node,
      ip: `10.${100 + (pods % 50)}.${Math.floor(i / 250)}.${(i % 250) + 1}`,
      annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '169.254.169.254/32', 'traffic.sidecar.istio.io/excludeInboundPorts': '9090,9091' },
    }) as unknown as V1Pod,
  );
  for (const [i, o] of objs.entries()) {
    o.status = { ...o.status, podIPs: [{ ip: o.status?.podIP ?? '' }, { ip: `fd00:${100 + (pods % 50)}::${(i + 1).toString(16)}` }] };
  }
  const before = { deltaBytes: rig.pub.stats.deltaBytes, snapshots: rig.snapshotBytes };
  let t0 = now();
  const touched = new Set<string>();
  for (const o of objs) for (const n of rig.model.upsertPod(classifyPod(o))) touched.add(n);
  rig.rec.touch(touched);
  rig.rec.flush();
  await rig.published();
  await rig.pub.flush();
  const publishFirstMs = now() - t0;
  const firstDelta = rig.pub.stats.deltaBytes - before.deltaBytes;
  const state = rig.rec.state(node)!;
  const snapshotBytes = Buffer.byteLength(JSON.stringify({ apiVersion: 'meshlane.io/v1alpha2', kind: 'Snapshot', deltaSeq: 1, epoch: 1, state }));
  // A one-pod change (an opt-out relabel): one endpoint in the delta.
  const one = objs[0]!;
  one.metadata = { ...one.metadata, labels: { ...one.metadata?.labels, 'meshlane.io/accelerate': 'false' } };
  const mid = rig.pub.stats.deltaBytes;
  t0 = now();
  rig.rec.touch(rig.model.upsertPod(classifyPod(one)));
  rig.rec.flush();
  await rig.published();
  const publishOneMs = now() - t0;
  const oneDelta = rig.pub.stats.deltaBytes - mid;
  await rig.pub.flush();
  // A fresh worker: reads the snapshot, compiles the whole state.
  let compileMs = 0;
  let entries = 0;
  const applier: StateApplier = {
    apply(st) {
      const c0 = now();
      const d = compileNodeState(st);
      compileMs = now() - c0;
      entries = Object.values(d.maps).reduce((n, m) => n + m.size, 0);
      return { changed: {} };
    },
  };
  const wnc = await rig.nats.connect({ name: `bench-${node}` });
  const f = new NodeFollower({ nc: wnc, node, reconciler: applier, logger: log });
  t0 = now();
  f.start();
  await waitFor(`${node} applied`, () => f.state.generation === rig.rec.generation(node), 30_000);
  const applyMs = now() - t0;
  await f.stop();
  await wnc.close();
  return { pods, snapshot_bytes: snapshotBytes, first_delta_bytes: firstDelta, one_pod_delta_bytes: oneDelta, publish_first_ms: publishFirstMs, publish_one_pod_ms: publishOneMs, worker_read_apply_ms: applyMs, compile_ms: compileMs, map_entries: entries, snapshot_writes_bytes: rig.snapshotBytes - before.snapshots };
}

/** Stops the target's worker, publishes MISSED one-relabel deltas of its node, and times a fresh worker's catch-up. */
async function catchUp(rig: Rig, node: number, mode: 'snapshot' | 'replay') {
  const name = nodeName(node);
  await rig.removeWorker(name);
  const genBefore = rig.rec.generation(name);
  const pubStart = now();
  for (let e = 0; e < MISSED; e++) {
    rig.relabel(node, e, false);
    rig.rec.flush(); // one generation, one delta per event
  }
  await rig.published();
  const publishS = (now() - pubStart) / 1000;
  const target = rig.rec.generation(name);
  if (target - genBefore !== MISSED) throw new Error(`expected ${MISSED} generations, got ${target - genBefore}`);
  const snapshotGen = await rig.kv.get(name).then((e) => (e ? (JSON.parse(e.string()) as { state: NodeState }).state.generation : 0));
  const t0 = now();
  const w = await rig.addWorker(name);
  const startedMs = now() - t0;
  await waitFor(`${name} on generation ${target}`, () => w.applier.generation >= target, 120_000);
  const ms = now() - t0;
  return {
    mode,
    missed_deltas: MISSED,
    publish_deltas_per_s: MISSED / publishS,
    snapshot_generation: snapshotGen,
    target_generation: target,
    deltas_applied: w.applier.applies - 1,
    resyncs: w.f.stats.resyncs,
    rejected: w.f.stats.rejected,
    start_ms: startedMs,
    catch_up_ms: ms,
  };
}

async function main(): Promise<void> {
  const rigs: Rig[] = [];
  const cleanup = async () => {
    for (const r of rigs.splice(0)) await r.stop().catch((err: Error) => process.stderr.write(`cleanup: ${err.message}\n`));
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`${sig}: cleaning up\n`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  try {
    // Rig A: the publisher as deployed (snapshots coalesced per 200 ms).
    const a = new Rig(SNAPSHOT_INTERVAL_MS);
    rigs.push(a);
    await a.start();
    process.stderr.write(`nats-server on ${a.nats.url}; ${NODES} workers...\n`);
    await Promise.all(Array.from({ length: NODES }, (_, n) => a.addWorker(nodeName(n))));
    await a.baseline();
    process.stderr.write(`baseline: ${NODES * PODS_PER_NODE} pods on ${NODES} nodes applied\n`);
    const churnRows = [];
    for (const rate of RATES) {
      process.stderr.write(`churn at ${rate} events/s for ${SECONDS} s...\n`);
      churnRows.push(await churn(a, rate));
    }
    const workerStats = [...a.workers.values()].reduce((s, w) => ({ resyncs: s.resyncs + w.f.stats.resyncs, rejected: s.rejected + w.f.stats.rejected, retries: s.retries + w.f.stats.retries }), { resyncs: 0, rejected: 0, retries: 0 });
    process.stderr.write('node state size at 110 and 250 pods...\n');
    const sizeRows = [await stateSize(a, 110), await stateSize(a, 250)];
    process.stderr.write(`catch-up from the snapshot after ${MISSED} missed deltas...\n`);
    const catchRows = [await catchUp(a, 0, 'snapshot')];
    await a.stop();
    rigs.splice(rigs.indexOf(a), 1);

    // Rig B: the snapshot is older than every missed delta (no snapshot
    // written after the baseline), so the worker replays all of them.
    const b = new Rig(1e9);
    rigs.push(b);
    await b.start();
    await b.addWorker(nodeName(0));
    await b.baseline();
    process.stderr.write(`catch-up by replaying ${MISSED} deltas...\n`);
    catchRows.push(await catchUp(b, 0, 'replay'));
    const publishErrors = [...a.publishErrors, ...b.publishErrors];
    await cleanup();
    process.stderr.write('as on a cluster: the control plane binary and the followers in separate processes...\n');
    const clusterRows = await clusterBench({ nodes: NODES, podsPerNode: PODS_PER_NODE, rates: RATES, seconds: SECONDS, workerProcesses: Number(process.env.BENCH_E2E_WORKER_PROCS ?? 5) });

    const f = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : String(v));
    const ok = (pass: boolean) => (pass ? 'yes' : '**no**');
    const lines = [
      '',
      `### event to map, everything in one process (${NODES} workers, ${PODS_PER_NODE} pods/node, real nats-server; the publisher and the followers share one event loop)`,
      '',
      '| events/s (asked) | achieved | events | generations | p50 (ms) | p99 (ms) | max (ms) | p99 < 50 ms | stored p50 / p99 (ms) | unresolved |',
      '|---|---|---|---|---|---|---|---|---|---|',
      ...churnRows.map((r) => `| ${r.rate} | ${f(r.achieved_events_per_s, 0)} | ${r.events} | ${r.generations} | ${f(r.p50_ms, 2)} | ${f(r.p99_ms, 2)} | ${f(r.max_ms, 1)} | ${ok(r.p99_ms < GOAL_P99_MS)} | ${f(r.stored_p50_ms, 2)} / ${f(r.stored_p99_ms, 2)} | ${r.unresolved} |`),
      '',
      `### event to worker applied, as on a cluster (control plane binary + ${NODES} nodes' followers in separate processes, informers on the fake apiserver)`,
      '',
      '| events/s | events | resolved | p50 (ms) | p99 (ms) | max (ms) | p99 < 50 ms |',
      '|---|---|---|---|---|---|---|',
      ...clusterRows.map((r) => `| ${r.rate} | ${r.events} | ${r.resolved} | ${f(r.p50_ms, 2)} | ${f(r.p99_ms, 2)} | ${f(r.max_ms, 1)} | ${ok(r.p99_ms < GOAL_P99_MS)} |`),
      '',
      '### NATS bytes per pod event',
      '',
      '| events/s | delta payload | snapshot payload (writes) | control plane -> server (wire) | server -> workers (wire) | workers -> server (wire) | server in total | server out total |',
      '|---|---|---|---|---|---|---|---|',
      ...churnRows.map((r) => `| ${r.rate} | ${f(r.delta_bytes_per_event, 0)} | ${f(r.snapshot_bytes_per_event, 0)} (${r.snapshot_writes}) | ${f(r.cp_wire_in_bytes_per_event, 0)} | ${f(r.workers_wire_out_bytes_per_event, 0)} | ${f(r.workers_wire_in_bytes_per_event, 0)} | ${f(r.server_in_bytes_per_event, 0)} | ${f(r.server_out_bytes_per_event, 0)} |`),
      '',
      '### one node\'s state on the bus (realistic names, dual-stack; NATS max_payload 1 MiB)',
      '',
      '| pods | snapshot | first delta | one-pod delta | snapshot < 256 KiB | publish first state (ms) | publish one-pod change (ms) | fresh worker read + compile (ms) | compile alone (ms) | map entries |',
      '|---|---|---|---|---|---|---|---|---|---|',
      ...sizeRows.map((r) => `| ${r.pods} | ${(r.snapshot_bytes / 1024).toFixed(1)} KiB | ${(r.first_delta_bytes / 1024).toFixed(1)} KiB | ${r.one_pod_delta_bytes} B | ${ok(r.snapshot_bytes < GOAL_SNAPSHOT_BYTES)} | ${f(r.publish_first_ms)} | ${f(r.publish_one_pod_ms, 2)} | ${f(r.worker_read_apply_ms)} | ${f(r.compile_ms, 2)} | ${r.map_entries} |`),
      '',
      `### catch-up after ${MISSED} missed deltas`,
      '',
      '| mode | snapshot gen | target gen | deltas applied | follower start (ms) | catch-up (ms) | < 1 s | resyncs / rejected |',
      '|---|---|---|---|---|---|---|---|',
      ...catchRows.map((r) => `| ${r.mode} | ${r.snapshot_generation} | ${r.target_generation} | ${r.deltas_applied} | ${f(r.start_ms)} | ${f(r.catch_up_ms)} | ${ok(r.catch_up_ms < GOAL_CATCHUP_MS)} | ${r.resyncs} / ${r.rejected} |`),
      '',
      ...churnRows.map((r) => `${r.rate} events/s: ${r.over_500ms} events over 500 ms; slowest ${JSON.stringify(r.slowest.slice(0, 5))}`),
      `worker totals during churn: ${JSON.stringify(workerStats)}; publish errors: ${publishErrors.length}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    mkdirSync(join(ROOT, 'bench-results'), { recursive: true });
    writeFileSync(
      join(ROOT, 'bench-results/e2e.json'),
      `${JSON.stringify({ when: new Date().toISOString(), nodes: NODES, podsPerNode: PODS_PER_NODE, seconds: SECONDS, snapshotIntervalMs: SNAPSHOT_INTERVAL_MS, goals: { p99_ms: GOAL_P99_MS, catch_up_ms: GOAL_CATCHUP_MS, snapshot_bytes_250_pods: GOAL_SNAPSHOT_BYTES }, stateSize: sizeRows, cluster: clusterRows, churn: churnRows, catchUp: catchRows, workerStats, publishErrors: publishErrors.slice(0, 20) }, null, 2)}\n`,
    );
    process.stdout.write('\nwritten to bench-results/e2e.json\n');
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
