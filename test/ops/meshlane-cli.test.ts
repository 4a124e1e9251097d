/**
 * ops - the `meshlane` operator CLI, built and run as a process against a
 * real nats-server with meshlane's authorization (the CLI connects as the
 * read-only auditor). The bus is set up and fed the way the real components
 * do it: setupBus, the Reconciler + BusPublisher for deltas and snapshots, a
 * NodeFollower (the worker's bus side) for applied/rejected audit events, and
 * WorkerStatus JSON published on the worker's own connection.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { jetstream } from '@nats-io/jetstream';
import {
  API_VERSION,
  busAccounts,
  renderAccounts,
  subjects,
  type ControlPlaneStatus,
  type NodeState,
  type Principal,
  type WorkerStatus,
} from '@meshlane/proto';
import { NodeFollower } from '@meshlane/node-worker';
import { BusPublisher } from '../../controlplane/src/bus/publisher.js';
import { DEFAULT_LIMITS, setupBus } from '../../controlplane/src/bus/setup.js';
import { ClusterModel } from '../../controlplane/src/model/model.js';
import { Reconciler } from '../../controlplane/src/reconcile/reconciler.js';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { podReport } from '../../controlplane/src/debug/pods.js';
import { serveOps } from '../../controlplane/src/ops-server.js';
import { NatsServer } from '../harness/nats.js';
import { podClass } from '../harness/podclass.js';
import { rawDelta } from '../harness/deltas.js';
import { waitFor as waitUntil } from '../harness/wait.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'controlplane', 'dist', 'meshlane.js');
const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });
const WAIT = 10_000;

const pw = () => randomBytes(12).toString('hex');
const cred = {
  controlplane: { user: 'controlplane', password: pw() },
  auditor: { user: 'auditor', password: pw() },
  nodeA: { user: 'node-node-a', password: pw() },
  nodeB: { user: 'node-node-b', password: pw() },
};

const pod = (name: string, node: string, i: number) => podClass(name, node, i);

function workerStatus(node: string, applied: number, extra: Partial<WorkerStatus> = {}): WorkerStatus {
  return {
    apiVersion: API_VERSION,
    kind: 'WorkerStatus',
    node,
    time: new Date().toISOString(),
    appliedGeneration: applied,
    desiredGeneration: applied,
    bus: 'connected',
    counters: { paired_outbound: 1, paired_mesh: 2, paired_inbound: 3, bytes_redirected: 2048, held: 4 },
    maps: {},
    kernel: {},
    ...extra,
  };
}


function leaderStatus(extra: Partial<ControlPlaneStatus> = {}): ControlPlaneStatus {
  return { apiVersion: API_VERSION, kind: 'ControlPlaneStatus', source: 'controlplane/test', time: new Date().toISOString(), epoch: 1, nodes: 2, refused: {}, retrying: [], repairs: 0, ...extra };
}

const waitFor = (what: string, pred: () => boolean, ms = WAIT) => waitUntil(what, pred, ms);

/** The CLI as a child process, its output collected. */
class Cli {
  out = '';
  err = '';
  code: number | null | undefined;
  private readonly done: Promise<number | null>;
  constructor(readonly proc: ChildProcess) {
    proc.stdout?.on('data', (d: Buffer) => (this.out += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (this.err += d.toString()));
    this.done = new Promise((r) => proc.once('exit', (code) => r((this.code = code))));
  }
  get lines(): string[] {
    return this.out.split('\n').filter((l) => l.trim());
  }
  async waitOut(re: RegExp, what = String(re)): Promise<string> {
    await waitFor(`${what} in stdout\n--- stdout:\n${this.out}\n--- stderr:\n${this.err}`, () => re.test(this.out));
    return this.out.match(re)?.[0] ?? '';
  }
  async waitErr(re: RegExp): Promise<void> {
    await waitFor(`${re} in stderr\n--- stdout:\n${this.out}\n--- stderr:\n${this.err}`, () => re.test(this.err));
  }
  /** The exit code, within WAIT. */
  async exit(): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`meshlane did not exit\n${this.out}\n${this.err}`)), WAIT)));
    try {
      return await Promise.race([this.done, late]);
    } finally {
      clearTimeout(timer);
    }
  }
  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

describe('meshlane CLI (real nats-server, auditor credentials)', () => {
  let nats: NatsServer;
  let cp: NatsConnection;
  let kv: KV;
  let model: ClusterModel;
  let rec: Reconciler;
  let pub: BusPublisher;
  let published: Array<Promise<void>>;
  const lastState = new Map<string, NodeState>();
  const conns: NatsConnection[] = [];
  const followers: NodeFollower[] = [];
  const clis: Cli[] = [];

  beforeAll(() => {
    execFileSync('npx', ['tsc', '-b'], { cwd: ROOT, stdio: 'pipe', timeout: 120_000 });
  }, 150_000);

  beforeEach(async () => {
    const accounts = busAccounts({
      controlplane: cred.controlplane,
      auditor: cred.auditor,
      nodes: [
        { node: 'node-a', credential: cred.nodeA },
        { node: 'node-b', credential: cred.nodeB },
      ],
    });
    nats = await NatsServer.start({ config: renderAccounts(accounts) });
    cp = await connectAs({ role: 'controlplane' });
    kv = await setupBus(cp, DEFAULT_LIMITS);
    model = new ClusterModel({ syncGate: false });
    rec = new Reconciler(model, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, autoFlush: false });
    // Snapshots are written only by flush(): deltas published after it stay after the snapshot.
    pub = new BusPublisher(cp, kv, { epoch: 1, source: 'controlplane/test', logger: log, snapshotIntervalMs: 600_000 });
    published = [];
    lastState.clear();
    rec.onUpdate((u) => {
      lastState.set(u.node, u.state());
      published.push(pub.publish(u));
    });
  });

  afterEach(async () => {
    for (const c of clis.splice(0)) c.kill();
    // Writes the snapshots a test left pending (and clears their timers).
    await pub?.flush().catch(() => {});
    for (const f of followers.splice(0)) await f.stop().catch(() => {});
    for (const nc of conns.splice(0)) await nc.close().catch(() => {});
    await nats?.stop();
  });

  async function connectAs(p: Principal): Promise<NatsConnection> {
    const c = p.role === 'controlplane' ? cred.controlplane : p.role === 'auditor' ? cred.auditor : p.node === 'node-a' ? cred.nodeA : cred.nodeB;
    const nc = await nats.connect({ user: c.user, pass: c.password, timeout: WAIT });
    conns.push(nc);
    return nc;
  }

  /** One reconcile round: deltas stored; with snapshot, the snapshots too. */
  async function step(nodes: string[], snapshot = true): Promise<void> {
    rec.touch(nodes);
    rec.flush();
    await Promise.all(published.splice(0));
    if (snapshot) await pub.flush();
  }

  async function follow(node: 'node-a' | 'node-b'): Promise<NodeFollower> {
    const p: Principal = { role: 'worker', node };
    const nc = await connectAs(p);
    const f = new NodeFollower({ nc, node, reconciler: { apply: () => ({ changed: {} }) }, logger: log, pollMs: 200 });
    followers.push(f);
    f.start();
    return f;
  }

  /** The leader's heartbeat, as BusLeadership publishes it. */
  async function publishLeader(st: ControlPlaneStatus): Promise<void> {
    cp.publish(subjects.controlplaneStatus, JSON.stringify(st));
    await cp.flush();
    await new Promise((r) => setTimeout(r, 50));
  }

  async function publishStatus(s: WorkerStatus): Promise<void> {
    const nc = await connectAs({ role: 'worker', node: s.node });
    nc.publish(subjects.status(s.node), JSON.stringify(s));
    await nc.flush();
  }

  function run(args: string[], env: Record<string, string> = {}): Cli {
    const proc = spawn(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MESHLANE_NATS_URL: nats.url, MESHLANE_NATS_USER: cred.auditor.user, MESHLANE_NATS_PASSWORD: cred.auditor.password, ...env },
    });
    const c = new Cli(proc);
    clis.push(c);
    return c;
  }

  it('audit tail shows deltas, statuses and rejections as they flow, and exits on SIGINT', async () => {
    const worker = await follow('node-a');
    const tail = run(['audit', 'tail']);
    await tail.waitErr(/following /);

    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await tail.waitOut(/node-a\s+delta\s+gen 0->1\s+endpoints \+1 -0/, 'the first delta');
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    await tail.waitOut(/node-a\s+delta\s+gen 1->2\s+endpoints \+1 -0/, 'the second delta');
    await tail.waitOut(/node-a\s+applied\s+gen 2\s+source worker\/node-a/, 'the worker applying it');
    await publishStatus(workerStatus('node-a', worker.state.generation));
    await tail.waitOut(/node-a\s+status\s+applied gen 2\s+desired gen 2\s+bus connected/, 'the status');

    // A malformed delta: shown as such, then the worker's rejection with the field.
    const bad = { ...rawDelta('node-a', 2, 3), upsertEndpoints: [{ pod: 'default/q', uid: '00000000-0000-4000-8000-000000000009', ips: ['10.0.0.300'] }] };
    await jetstream(cp).publish(subjects.delta('node-a', 2), JSON.stringify(bad));
    await tail.waitOut(/node-a\s+delta\s+gen 2->3\s+INVALID \$\.upsertEndpoints\[0\]/, 'the invalid delta');
    const rejection = await tail.waitOut(/.*node-a\s+rejected\s+.*/, 'the rejection');
    expect(rejection).toMatch(/^\d{4}-\d\d-\d\dT\S+Z\s+node-a\s+rejected\s+gen 2\s+source worker\/node-a\s+field \$\.upsertEndpoints\[0\]\.ips\[0\]\s+reason /);

    tail.proc.kill('SIGINT');
    expect(await tail.exit()).toBe(0);
    expect(tail.err).not.toMatch(/error|denied/i);
  });

  it('audit tail --all --json --node replays one node\'s history, then follows it live, each message once', async () => {
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    await step(model.upsertPod(pod('z', 'node-b', 3)));
    const tail = run(['audit', 'tail', '--all', '--json', '--node', 'node-a']);
    await tail.waitErr(/replayed 2 messages[\s\S]*following /);
    await step(model.upsertPod(pod('w', 'node-a', 4)));
    await tail.waitOut(/"toGeneration":3/, 'the live delta');
    await new Promise((r) => setTimeout(r, 300));
    const msgs = tail.lines.map((l) => JSON.parse(l) as { kind: string; node: string; toGeneration?: number });
    expect(msgs.map((m) => [m.kind, m.node, m.toGeneration])).toEqual([
      ['NodeStateDelta', 'node-a', 1],
      ['NodeStateDelta', 'node-a', 2],
      ['NodeStateDelta', 'node-a', 3],
    ]);
  });

  it('audit tail --since replays only what is newer', async () => {
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await new Promise((r) => setTimeout(r, 2500));
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    const tail = run(['audit', 'tail', '--since', '2s']);
    await tail.waitErr(/replayed 1 message from/);
    await tail.waitOut(/node-a\s+delta\s+gen 1->2/);
    expect(tail.out).not.toMatch(/gen 0->1/);
    tail.proc.kill('SIGINT');
    expect(await tail.exit()).toBe(0);
  });

  it('status tells converged from lagging and stale nodes, in its exit code too', async () => {
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    await step(model.upsertPod(pod('z', 'node-b', 3)));
    // A delta past node-a's snapshot: desired comes from the stream.
    await step(model.upsertPod(pod('v', 'node-a', 5)), false);
    await publishStatus(workerStatus('node-a', 3));
    await publishStatus(workerStatus('node-b', 0, { desiredGeneration: 1, lastError: 'map ml_endpoints is full' }));

    // No leader heartbeat on the bus: nobody is publishing, whatever the nodes say.
    let st = run(['status']);
    expect(await st.exit()).toBe(1);
    expect(st.lines[0]).toBe('control plane: no leader heartbeat');
    expect(st.out).toMatch(/PROBLEM: no leader heartbeat on the bus/);

    await publishLeader(leaderStatus());
    st = run(['status']);
    expect(await st.exit()).toBe(1);
    const rowA = st.lines.find((l) => l.startsWith('node-a')) ?? '';
    const rowB = st.lines.find((l) => l.startsWith('node-b')) ?? '';
    expect(st.lines[0]).toMatch(/^control plane: controlplane\/test leads with epoch 1, 2 node\(s\), heartbeat \d+s ago, 0 repair\(s\)$/);
    expect(st.lines[1]).toMatch(/^NODE\s+DESIRED\s+APPLIED\s+LAG\s+BUS\s+HEARTBEAT\s+STATE\s+PAIRED\s+BYTES_REDIRECTED\s+HELD\s+LAST_ERROR$/);
    expect(rowA).toMatch(/^node-a\s+3\s+3\s+0\s+connected\s+\d+s ago\s+converged\s+6\s+2\.0KiB\s+4\s+-$/);
    expect(rowB).toMatch(/^node-b\s+1\s+0\s+1\s+connected\s+\d+s ago\s+LAGGING\s+6\s+2\.0KiB\s+4\s+map ml_endpoints is full$/);
    expect(st.out).toMatch(/1 of 2 node\(s\) not converged/);

    await publishStatus(workerStatus('node-b', 1));
    st = run(['status', '--json']);
    expect(await st.exit()).toBe(0);
    const rep = JSON.parse(st.out) as { converged: boolean; nodes: Array<{ node: string; desiredGeneration: number; appliedGeneration: number; condition: string; desiredFrom: string }> };
    expect(rep.converged).toBe(true);
    expect(rep.nodes.map((n) => [n.node, n.desiredGeneration, n.desiredFrom, n.appliedGeneration, n.condition])).toEqual([
      ['node-a', 3, 'delta', 3, 'converged'],
      ['node-b', 1, 'snapshot', 1, 'converged'],
    ]);

    // Every node has applied what is on the bus, but the leader cannot publish one of them: not converged.
    await publishLeader(leaderStatus({ refused: { 'node-c': 'snapshot of 2000000 bytes is over the server\'s max_payload of 1048576' } }));
    st = run(['status']);
    expect(await st.exit()).toBe(1);
    expect(st.out).toMatch(/PROBLEM: node node-c cannot be published: snapshot of 2000000 bytes/);
    expect(st.out).toMatch(/the control plane has problems/);
    await publishLeader(leaderStatus({ fenced: 'fenced: node node-a: delta 7 written by leader epoch 2' }));
    st = run(['status', '--json']);
    expect(await st.exit()).toBe(1);
    expect((JSON.parse(st.out) as { controlplane: { problems: string[] } }).controlplane.problems).toEqual([expect.stringMatching(/is fenced and publishes nothing/)]);

    await new Promise((r) => setTimeout(r, 1500));
    st = run(['status', '--stale-after', '1s']);
    expect(await st.exit()).toBe(1);
    expect(st.lines.find((l) => l.startsWith('node-a'))).toMatch(/\ds ago STALE\s+STALE/);
  });

  it('pairs shows a node\'s endpoints and pairs from its snapshot plus later deltas', async () => {
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    await step(model.upsertPod(pod('z', 'node-b', 3)));
    // After the snapshot (generation 2): a third pod, then one removed.
    await step(model.upsertPod(pod('w', 'node-a', 4)), false);
    await step(model.deletePod('default/x'), false);
    const want = lastState.get('node-a');
    expect(want?.generation).toBe(4);

    const text = run(['pairs', '--node', 'node-a']);
    expect(await text.exit()).toBe(0);
    expect(text.out).toMatch(/^node node-a  generation 4 \(snapshot generation 2 \+ 2 delta\(s\)\)/);
    expect(text.out).toMatch(/default\/w\s+10\.0\.0\.4\s+yes\s+always/);
    expect(text.out).toMatch(/default\/y\s+10\.0\.0\.2\s+yes\s+always/);
    expect(text.out).not.toMatch(/default\/x/);
    expect(text.out).toMatch(/sidecar pairs: every two accelerated endpoints, 2 directed pair\(s\)/);

    const json = run(['pairs', '--node', 'node-a', '--json']);
    expect(await json.exit()).toBe(0);
    const got = JSON.parse(json.out) as { generation: number; endpoints: unknown[]; acceleratedPairs: number; deltasApplied: number };
    expect(got.generation).toBe(4);
    expect(got.deltasApplied).toBe(2);
    expect(got.endpoints).toEqual(want?.endpoints);
    expect(got.acceleratedPairs).toBe(2);

    const none = run(['pairs', '--node', 'node-zz']);
    expect(await none.exit()).toBe(2);
    expect(none.err).toMatch(/no snapshot for node node-zz/);
  });

  it('explain --bus cross-checks an endpoint against its node\'s state on the bus', async () => {
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    const ops = await serveOps('127.0.0.1:0', new Registry(), () => undefined, (ns, name) => podReport({ ready: () => true, model, reconciler: rec }, ns, name));
    try {
      const url = `http://127.0.0.1:${(ops.address() as AddressInfo).port}`;
      const ok = run(['explain', 'default/x', '--controlplane', url, '--bus']);
      expect(await ok.exit()).toBe(0);
      expect(ok.out).toMatch(/^bus\n {2}node node-a's state on the bus \(generation 2\): endpoint present, accelerate true, agrees$/m);
      expect(ok.out).toContain('default/x <-> default/y');
      // The model opts x out; its node is not reconciled yet, so the bus still says accelerate: a warning.
      model.upsertPod(podClass('x', 'node-a', 1, { optedOut: true, optOut: { on: 'pod', kind: 'label', name: 'meshlane.io/accelerate', value: 'false' } }));
      const lag = run(['explain', 'default/x', '--controlplane', url, '--bus', '--json']);
      expect(await lag.exit(), `${lag.out}\n${lag.err}`).toBe(1);
      expect(lag.err).toMatch(/accelerate true, the control plane decided false: not published yet/);
      expect((JSON.parse(lag.out) as { reason: string; bus: { agrees: boolean } })).toMatchObject({ reason: 'opted-out-pod', bus: { agrees: false } });
      const badNats = run(['explain', 'default/x', '--controlplane', url, '--bus', '--nats', 'nats://127.0.0.1:1']);
      expect(await badNats.exit()).toBe(2);
      expect(badNats.err).toMatch(/cannot reach NATS/);
    } finally {
      ops.close();
    }
  });

  it('names what went wrong: unreachable NATS, refused credentials', async () => {
    const down = run(['status', '--nats', 'nats://127.0.0.1:1']);
    expect(await down.exit()).toBe(2);
    expect(down.err).toMatch(/cannot reach NATS at nats:\/\/127\.0\.0\.1:1/);
    const wrong = run(['status'], { MESHLANE_NATS_PASSWORD: 'wrong' });
    expect(await wrong.exit()).toBe(2);
    expect(wrong.err).toMatch(/refused the credentials of user auditor/);
  });
});
