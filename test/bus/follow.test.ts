/**
 * bus - publisher and follower against a real nats-server: a worker reads
 * exactly delta.<G> after generation G, so deltas apply in order and none is
 * skipped; anything that does not validate is refused (audited once, with a
 * bounded reason) and the worker waits for a snapshot past it; every failure
 * is retried, never the end of the follower.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { jetstream } from '@nats-io/jetstream';
import { API_VERSION, MAX_REASON_LENGTH, subjects, type AuditEvent, type NodeState } from '@meshlane/proto';
import { NodeFollower } from '@meshlane/node-worker';
import { BusPublisher } from '../../controlplane/src/bus/publisher.js';
import { DEFAULT_LIMITS, setupBus } from '../../controlplane/src/bus/setup.js';
import { ClusterModel } from '../../controlplane/src/model/model.js';
import { Reconciler } from '../../controlplane/src/reconcile/reconciler.js';
import { NatsServer, freePort } from '../harness/nats.js';
import { waitFor as waitUntil } from '../harness/wait.js';
import { podClass } from '../harness/podclass.js';
import { rawDelta } from '../harness/deltas.js';

const waitFor = (what: string, pred: () => boolean, ms = 8000) => waitUntil(what, pred, ms);

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });

const pod = podClass;

/** Records what a worker would apply, without BPF; can be told to fail. */
class Applied {
  states: NodeState[] = [];
  failures = 0;
  apply(s: NodeState) {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('map ml_endpoints: no space left (injected)');
    }
    this.states.push(s);
    return { changed: {} };
  }
  get last(): NodeState | undefined {
    return this.states.at(-1);
  }
}

describe('bus - publisher and follower', () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let kv: KV;
  let model: ClusterModel;
  let rec: Reconciler;
  let pub: BusPublisher;
  const followers: Array<{ f: NodeFollower; wnc: NatsConnection }> = [];

  beforeEach(async () => {
    nats = await NatsServer.start();
    nc = await nats.connect();
    kv = await setupBus(nc, DEFAULT_LIMITS);
    model = new ClusterModel({ syncGate: false });
    rec = new Reconciler(model, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, autoFlush: false });
    pub = new BusPublisher(nc, kv, { epoch: 1, source: 'test', logger: log, snapshotIntervalMs: 20 });
    rec.onUpdate((u) => void pub.publish(u).catch(() => {}));
  });
  afterEach(async () => {
    for (const { f, wnc } of followers.splice(0)) {
      await f.stop();
      await wnc.close();
    }
    await nc?.close();
    await nats?.stop();
  });

  async function step(nodes: string[]) {
    rec.touch(nodes);
    rec.flush();
    await pub.flush();
  }

  async function follow(node: string, applied = new Applied(), server = nats) {
    const wnc = await server.connect({ maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    const f = new NodeFollower({ nc: wnc, node, reconciler: applied, logger: log, pollMs: 200, maxBackoffMs: 400, requestTimeoutMs: 500 });
    followers.push({ f, wnc });
    f.start();
    return { f, applied };
  }

  function audits(type: 'rejected' | 'resync' | 'applied', node = 'node-a'): AuditEvent[] {
    const out: AuditEvent[] = [];
    const sub = nc.subscribe(subjects.audit(node, type));
    void (async () => {
      for await (const m of sub) out.push(JSON.parse(m.string()) as AuditEvent);
    })();
    return out;
  }

  it('a worker follows its node only, in generation order', async () => {
    const a = await follow('node-a');
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    await step(model.upsertPod(pod('z', 'node-b', 3)));
    await waitFor('two pods on node-a', () => a.applied.last?.endpoints.length === 2);
    // Deltas found together are folded into one map write; the generations only ever rise.
    const gens = a.applied.states.map((s) => s.generation);
    expect(gens.at(-1)).toBe(2);
    expect(gens).toEqual([...new Set(gens)].sort((x, y) => x - y));
    expect(a.applied.states.every((s) => s.node === 'node-a')).toBe(true);
    expect(a.f.synced).toBe(true);
  });

  it('a worker that starts late loads the snapshot and then the deltas after it', async () => {
    for (let i = 1; i <= 20; i++) await step(model.upsertPod(pod(`p${i}`, 'node-a', i)));
    // Snapshots are coalesced: make the next two changes land as deltas after the snapshot.
    pub = new BusPublisher(nc, kv, { epoch: 1, source: 'test', logger: log, snapshotIntervalMs: 60_000 });
    pub.adopt([['node-a', { deltaSeq: 0, revision: (await kv.get('node-a'))!.revision }]]);
    rec.onUpdate((u) => void pub.publish(u).catch(() => {}));
    await step(model.upsertPod(pod('p21', 'node-a', 21)));
    const a = await follow('node-a');
    await a.f.caughtUp();
    expect(a.applied.last!.generation).toBe(21);
    expect(a.applied.last!.endpoints).toHaveLength(21);
    expect(a.f.stats.resyncs).toBe(1);
  });

  it('a delta that does not validate is refused once, with its field; the worker stays put and the desired generation does not move', async () => {
    const rejected = audits('rejected');
    const a = await follow('node-a');
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await waitFor('gen 1', () => a.applied.last?.generation === 1);
    await nc.flush();
    const js = jetstream(nc);
    // Stored as the delta from generation 1, but it does not follow the contract.
    const huge = 'x'.repeat(800_000);
    await js.publish(subjects.delta('node-a', 1), JSON.stringify({ ...rawDelta('node-a', 1, 2), upsertEndpoints: [{ pod: 'default/q', uid: '00000000-0000-4000-8000-000000000009', ips: [huge] }] }));
    await waitFor('a rejection', () => rejected.length >= 1);
    await new Promise((r) => setTimeout(r, 600)); // several polls: still audited once
    expect(rejected).toHaveLength(1);
    expect(rejected[0]!.field).toBe('$.upsertEndpoints[0].ips[0]');
    expect(rejected[0]!.reason).toMatch(/longer than 64 characters/);
    expect(a.f.state.generation).toBe(1);
    expect(a.f.desiredGeneration).toBe(1);
    expect(a.f.lastError).toMatch(/refused delta from generation 1/);
    expect(a.f.lastError!.length).toBeLessThanOrEqual(MAX_REASON_LENGTH);
    expect(a.applied.states).toHaveLength(1);
  });

  it('a reason of any size is bounded in the audit event and in lastError', async () => {
    const rejected = audits('rejected');
    const a = await follow('node-a');
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await waitFor('gen 1', () => a.applied.last?.generation === 1);
    await nc.flush();
    // A pod name the validator quotes back at full length would be an unbounded reason.
    const longNode = `n${'a'.repeat(900_000)}`;
    await jetstream(nc).publish(subjects.delta('node-a', 1), JSON.stringify({ ...rawDelta('node-a', 1, 2), node: longNode }));
    await waitFor('a rejection', () => rejected.length === 1);
    expect(JSON.stringify(rejected[0]).length).toBeLessThan(4 * MAX_REASON_LENGTH);
    expect(a.f.lastError!.length).toBeLessThanOrEqual(MAX_REASON_LENGTH);
  });

  it('a delta stored under the wrong generation or node is refused: nothing can be skipped or jumped', async () => {
    const rejected = audits('rejected');
    const a = await follow('node-a');
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await waitFor('gen 1', () => a.applied.last?.generation === 1);
    await nc.flush();
    const js = jetstream(nc);
    // A delta from another generation, stored as the one from 1: it would skip 1 -> 5.
    await js.publish(subjects.delta('node-a', 1), JSON.stringify(rawDelta('node-a', 5, 6)));
    await waitFor('first rejection', () => rejected.length === 1);
    expect(rejected[0]!.field).toBe('$.fromGeneration');
    // A jump over generations in one delta.
    await js.publish(subjects.delta('node-b', 0), JSON.stringify(rawDelta('node-b', 0, 3)));
    const b = await follow('node-b');
    await waitFor('node-b refused the jump', () => b.f.stats.rejected === 1);
    expect(b.f.lastError).toMatch(/\$\.toGeneration: must be fromGeneration \+ 1/);
    // Another node's delta under node-a's next subject.
    expect(a.f.state.generation).toBe(1);
    expect(a.f.desiredGeneration).toBe(1);
  });

  it('the worker jumps past a refused delta once the snapshot moves past it', async () => {
    const a = await follow('node-a');
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await waitFor('gen 1', () => a.applied.last?.generation === 1);
    await jetstream(nc).publish(subjects.delta('node-a', 1), 'not json');
    await waitFor('refused', () => a.f.stats.rejected === 1);
    // The control plane's next write finds delta.1 taken and repairs through the snapshot.
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    await waitFor('both pods applied', () => a.applied.last?.endpoints.length === 2);
    expect(a.applied.last!.generation).toBeGreaterThan(2);
    expect(pub.stats.repairs).toBe(1);
    // And deltas continue from the repaired generation.
    await step(model.upsertPod(pod('z', 'node-a', 3)));
    await waitFor('third pod', () => a.applied.last?.endpoints.length === 3);
    expect(a.f.stats.rejected).toBe(1);
  });

  it('a map write that fails is retried with backoff; the generation moves only once it lands', async () => {
    const applied = new Applied();
    applied.failures = 3;
    const a = await follow('node-a', applied);
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await waitFor('applied after three failures', () => applied.last?.generation === 1, 10_000);
    expect(a.f.stats.retries).toBeGreaterThanOrEqual(3);
    expect(a.f.lastError).toBeUndefined();
  });

  it('a snapshot that does not validate is refused and retried; the worker recovers when a good one is written', async () => {
    const rejected = audits('rejected');
    await kv.put('node-a', JSON.stringify({ apiVersion: API_VERSION, kind: 'Snapshot', deltaSeq: 0, epoch: 1, state: { bogus: true } }));
    const a = await follow('node-a');
    await waitFor('snapshot refused', () => rejected.length === 1);
    expect(rejected[0]!.field).toMatch(/^\$\.state/);
    await new Promise((r) => setTimeout(r, 500));
    expect(a.f.stats.retries).toBeGreaterThanOrEqual(2);
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await waitFor('recovered', () => a.applied.last?.endpoints.length === 1);
  });

  it('a worker started before NATS is reachable keeps retrying and follows once it is', async () => {
    const port = await freePort();
    const late = new Promise<NatsServer>((resolve, reject) => setTimeout(() => NatsServer.start({ port }).then(resolve, reject), 800));
    const { connect } = await import('@nats-io/transport-node');
    const wnc = await Promise.race([
      connect({ servers: `nats://127.0.0.1:${port}`, waitOnFirstConnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 100 }),
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no connection in 10 s')), 10_000)),
    ]);
    const server = await late;
    try {
      const applied = new Applied();
      const f = new NodeFollower({ nc: wnc, node: 'node-a', reconciler: applied, logger: log, pollMs: 200, maxBackoffMs: 400, requestTimeoutMs: 500 });
      followers.push({ f, wnc });
      f.start();
      await new Promise((r) => setTimeout(r, 600)); // the bus is not created yet: retried
      expect(f.stats.retries).toBeGreaterThan(0);
      const cnc = await server.connect();
      const ckv = await setupBus(cnc, DEFAULT_LIMITS);
      const cpub = new BusPublisher(cnc, ckv, { epoch: 1, source: 'test', logger: log });
      const m2 = new ClusterModel({ syncGate: false });
      const r2 = new Reconciler(m2, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 }, autoFlush: false });
      r2.onUpdate((u) => void cpub.publish(u));
      r2.touch(m2.upsertPod(pod('x', 'node-a', 1)));
      r2.flush();
      await cpub.flush();
      await waitFor('followed', () => applied.last?.endpoints.length === 1);
      await cnc.close();
    } finally {
      for (const { f, wnc: w } of followers.splice(0)) {
        await f.stop();
        await w.close();
      }
      await server.stop();
    }
  });
});
