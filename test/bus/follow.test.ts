/**
 * bus - publisher and follower against a real nats-server: deltas in
 * generation order, duplicates skipped, gaps resynced from the snapshot,
 * malformed and foreign deltas rejected on the audit subject.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { jetstream } from '@nats-io/jetstream';
import { subjects, type AuditEvent, type NodeState } from '@meshlane/proto';
import { NodeFollower } from '@meshlane/node-worker';
import { BusPublisher } from '../../controlplane/src/bus/publisher.js';
import { DEFAULT_LIMITS, setupBus } from '../../controlplane/src/bus/setup.js';
import { ClusterModel } from '../../controlplane/src/model/model.js';
import { Reconciler } from '../../controlplane/src/reconcile/reconciler.js';
import { NatsServer } from '../harness/nats.js';
import { waitFor as waitUntil } from '../harness/wait.js';
import { podClass } from '../harness/podclass.js';
import { rawDelta } from '../harness/deltas.js';

const waitFor = (what: string, pred: () => boolean, ms = 5000) => waitUntil(what, pred, ms);

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });

const pod = podClass;

/** Records what a worker would apply, without BPF. */
class Applied {
  states: NodeState[] = [];
  apply(s: NodeState) {
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
    rec.onUpdate((u) => void pub.publish(u));
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

  async function follow(node: string) {
    const applied = new Applied();
    const wnc = await nats.connect();
    const f = new NodeFollower({ nc: wnc, node, reconciler: applied, logger: log });
    followers.push({ f, wnc });
    await f.start();
    return { f, applied };
  }

  it('a worker follows its node only, in generation order', async () => {
    const a = await follow('node-a');
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await step(model.upsertPod(pod('y', 'node-a', 2)));
    await step(model.upsertPod(pod('z', 'node-b', 3)));
    await waitFor('two pods on node-a', () => a.applied.last?.endpoints.length === 2);
    expect(a.applied.states.map((s) => s.generation)).toEqual([1, 2]);
    expect(a.applied.last!.pairs).toHaveLength(2);
    expect(a.applied.states.every((s) => s.node === 'node-a')).toBe(true);
  });

  it('a worker that starts late loads the snapshot and then the deltas after it', async () => {
    for (let i = 1; i <= 20; i++) await step(model.upsertPod(pod(`p${i}`, 'node-a', i)));
    const a = await follow('node-a');
    await a.f.caughtUp();
    expect(a.applied.last!.generation).toBe(20);
    expect(a.applied.last!.endpoints).toHaveLength(20);
    expect(a.f.stats.gaps).toBe(0);
  });

  it('a duplicate is skipped, a gap resyncs from the snapshot', async () => {
    const a = await follow('node-a');
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await waitFor('gen 1', () => a.applied.last?.generation === 1);
    const js = jetstream(nc);
    await js.publish(subjects.delta('node-a'), JSON.stringify(rawDelta('node-a', 0, 1)));
    await js.publish(subjects.delta('node-a'), JSON.stringify(rawDelta('node-a', 5, 6)));
    await waitFor('a duplicate and a gap', () => a.f.stats.gaps === 1 && a.f.stats.duplicates >= 1);
    await waitFor('resynced once, then the same gap rejected', () => a.f.stats.resyncs === 2 && a.f.stats.rejected === 1);
    // The rogue writes fenced the publisher (another writer on the subject);
    // a valid next delta still applies.
    await js.publish(subjects.delta('node-a'), JSON.stringify({ ...rawDelta('node-a', 1, 2), removeEndpoints: ['default/x'] }));
    await waitFor('gen 2', () => a.applied.last?.generation === 2);
    expect(a.applied.last!.endpoints).toHaveLength(0);
  });

  it('a malformed or foreign delta is rejected on the audit subject and applies nothing', async () => {
    const a = await follow('node-a');
    await step(model.upsertPod(pod('x', 'node-a', 1)));
    await waitFor('gen 1', () => a.applied.last?.generation === 1);
    const audits: AuditEvent[] = [];
    const sub = nc.subscribe(subjects.audit('node-a', 'rejected'));
    void (async () => {
      for await (const m of sub) audits.push(JSON.parse(m.string()) as AuditEvent);
    })();
    await nc.flush();
    const js = jetstream(nc);
    const bad = { ...rawDelta('node-a', 1, 2), upsertEndpoints: [{ pod: 'default/q', ips: ['10.0.0.300'] }] };
    await js.publish(subjects.delta('node-a'), JSON.stringify(bad));
    await js.publish(subjects.delta('node-a'), JSON.stringify(rawDelta('node-b', 1, 2)));
    await js.publish(subjects.delta('node-a'), 'not json');
    await waitFor('three rejections', () => audits.length === 3);
    expect(audits.map((e) => e.field)).toEqual(['$.upsertEndpoints[0].ips[0]', '$.node', '$']);
    expect(a.applied.states).toHaveLength(1);
    expect(a.f.state.generation).toBe(1);
    sub.unsubscribe();
  });
});
