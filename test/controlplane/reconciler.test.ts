/**
 * controlplane - model and reconciler, pure: each event ends in the right
 * per-node delta and nothing for the nodes it does not concern; deltas
 * always take the previous state exactly to the next one.
 */
import { describe, expect, it } from 'vitest';
import { applyNodeStateDelta, type NodeState } from '@meshlane/proto';
import { ClusterModel } from '../../controlplane/src/model/model.js';
import { Reconciler, type NodeUpdate } from '../../controlplane/src/reconcile/reconciler.js';
import { podClass } from '../harness/podclass.js';

const pod = podClass;

/** Pods of a node that sidecar pairs may be accelerated between (every two of them). */
const accelerated = (s: NodeState | undefined) => (s?.endpoints ?? []).filter((e) => e.accelerate).map((e) => e.pod);

function setup(syncGate = false) {
  const model = new ClusterModel({ syncGate });
  const rec = new Reconciler(model, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, autoFlush: false });
  const states = new Map<string, NodeState>();
  // Every update must take the previous state exactly to the new one.
  rec.onUpdate((u: NodeUpdate) => {
    const prev = states.get(u.node);
    const next = u.state();
    if (prev) expect(applyNodeStateDelta(prev, u.delta)).toEqual(next);
    states.set(u.node, next);
  });
  const step = (nodes: string[]) => {
    rec.touch(nodes);
    return rec.flush();
  };
  return { model, rec, states, step };
}

describe('controlplane - reconciler', () => {
  it('a new pod yields its node a delta with the endpoint alone, other nodes nothing', () => {
    const { model, step } = setup();
    step([...model.upsertNode('n1'), ...model.upsertNode('n2')]);
    step(model.upsertPod(pod('a', 'n1', 1)));
    const out = step(model.upsertPod(pod('b', 'n1', 2)));
    expect(out.map((u) => u.node)).toEqual(['n1']);
    const d = out[0]!.delta;
    expect(d.upsertEndpoints.map((e) => e.pod)).toEqual(['default/b']);
    expect(d.removeEndpoints).toEqual([]);
    expect(d.fromGeneration + 1).toBe(d.toGeneration);
  });

  it('a pod moved to another node leaves one and joins the other', () => {
    const { model, step, states } = setup();
    step(model.upsertPod(pod('a', 'n1', 1)));
    step(model.upsertPod(pod('b', 'n1', 2)));
    step(model.upsertPod(pod('c', 'n2', 3)));
    const out = step(model.upsertPod(pod('b', 'n2', 2)));
    expect(out.map((u) => u.node).sort()).toEqual(['n1', 'n2']);
    expect(states.get('n1')!.endpoints.map((e) => e.pod)).toEqual(['default/a']);
    expect(accelerated(states.get('n2'))).toEqual(['default/b', 'default/c']);
  });

  it('a deleted pod removes its endpoint', () => {
    const { model, step, states } = setup();
    step(model.upsertPod(pod('a', 'n1', 1)));
    step(model.upsertPod(pod('b', 'n1', 2)));
    const out = step(model.deletePod('default/a'));
    expect(out[0]!.delta.removeEndpoints).toEqual(['default/a']);
    expect(out[0]!.delta.upsertEndpoints).toEqual([]);
    expect(states.get('n1')!.endpoints).toHaveLength(1);
  });

  it('relabelling a pod to opt out flips accelerate, keeping the endpoint', () => {
    const { model, step, states } = setup();
    step(model.upsertPod(pod('a', 'n1', 1)));
    step(model.upsertPod(pod('b', 'n1', 2)));
    const out = step(model.upsertPod(pod('a', 'n1', 1, { optedOut: true })));
    expect(out[0]!.delta.upsertEndpoints).toMatchObject([{ pod: 'default/a', accelerate: false }]);
    expect(accelerated(states.get('n1'))).toEqual(['default/b']);
    expect(states.get('n1')!.endpoints).toHaveLength(2);
  });

  it('a namespace opting out touches exactly the nodes of its pods', () => {
    const { model, step } = setup();
    step(model.upsertPod(pod('a', 'n1', 1)));
    step(model.upsertPod(pod('b', 'n2', 2)));
    step(model.upsertPod({ ...pod('c', 'n3', 3), key: 'other/c', namespace: 'other', proxyId: 'c.other' }));
    const out = step(model.upsertNamespace('default', true));
    expect(out.map((u) => u.node).sort()).toEqual(['n1', 'n2']);
    expect(out.every((u) => u.delta.upsertEndpoints.every((e) => !e.accelerate))).toBe(true);
    expect(step(model.upsertNamespace('default', true))).toEqual([]);
  });

  it('with the sync gate, a pair appears only once both sidecars are synced', () => {
    const { model, step, states } = setup(true);
    step(model.upsertPod(pod('a', 'n1', 1)));
    step(model.upsertPod(pod('b', 'n1', 2)));
    expect(accelerated(states.get('n1'))).toEqual([]);
    step(model.setProxies(new Map([['a.default', { proxyId: 'a.default', synced: true }]])));
    expect(accelerated(states.get('n1'))).toEqual(['default/a']);
    const out = step(
      model.setProxies(
        new Map([
          ['a.default', { proxyId: 'a.default', synced: true }],
          ['b.default', { proxyId: 'b.default', synced: true }],
        ]),
      ),
    );
    expect(accelerated(states.get('n1'))).toEqual(['default/a', 'default/b']);
    expect(out[0]!.delta.upsertEndpoints.map((e) => e.pod)).toEqual(['default/b']);
    step(model.setProxies(new Map([['b.default', { proxyId: 'b.default', synced: true }]])));
    expect(accelerated(states.get('n1'))).toEqual(['default/b']);
  });

  it('ineligible and ambient pods are not endpoints; an IP claimed twice identifies neither', () => {
    const { model, step, states } = setup();
    step(model.upsertPod(pod('a', 'n1', 1)));
    step(model.upsertPod(pod('host', 'n1', 2, { ineligible: 'host-network' })));
    step(model.upsertPod(pod('amb', 'n1', 3)));
    step(model.setAmbient(new Set(['default/amb'])));
    expect(states.get('n1')!.endpoints.map((e) => e.pod)).toEqual(['default/a']);
    step(model.upsertPod(pod('dup', 'n1', 1)));
    expect(states.get('n1')!.endpoints).toEqual([]);
  });

  it('an event that changes nothing emits nothing', () => {
    const { model, step } = setup();
    step(model.upsertPod(pod('a', 'n1', 1)));
    expect(step(model.upsertPod(pod('a', 'n1', 1)))).toEqual([]);
  });

  it('switches reach every node', () => {
    const { model, rec, step } = setup();
    step(model.upsertPod(pod('a', 'n1', 1)));
    step(model.upsertPod(pod('b', 'n2', 2)));
    rec.setSwitches({ enabled: false, appSockets: true, maxQueuedBytes: 1 << 24 });
    const out = rec.flush();
    expect(out.map((u) => u.node).sort()).toEqual(['n1', 'n2']);
    expect(out.every((u) => u.delta.switches?.enabled === false)).toBe(true);
  });

  it('held: touches only mark nodes dirty; release() then emits each node once, with its whole state', () => {
    const model = new ClusterModel({ syncGate: false });
    const rec = new Reconciler(model, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, autoFlush: false, held: true });
    const seen: NodeUpdate[] = [];
    rec.onUpdate((u) => seen.push(u));
    rec.touch(model.upsertNode('n1'));
    expect(rec.flush()).toEqual([]); // an early flush is no way around the hold
    for (let i = 1; i <= 5; i++) rec.touch(model.upsertPod(pod(`p${i}`, 'n1', i)));
    expect(seen).toEqual([]);
    rec.release();
    const out = rec.flush();
    expect(out.map((u) => [u.node, u.generation, u.delta.fromGeneration])).toEqual([['n1', 1, 0]]);
    expect(out[0]!.state().endpoints.map((e) => e.pod)).toEqual(['default/p1', 'default/p2', 'default/p3', 'default/p4', 'default/p5']);
  });

  it('onReconciled reports every node reconciled, changed or not', () => {
    const { model, rec, step } = setup();
    const reconciled: Array<[string, boolean]> = [];
    rec.onReconciled((node, u) => reconciled.push([node, u !== undefined]));
    step(model.upsertPod(pod('a', 'n1', 1)));
    step(model.upsertPod(pod('a', 'n1', 1)));
    expect(reconciled).toEqual([
      ['n1', true],
      ['n1', false],
    ]);
  });

  it('an automatic pass over many nodes yields to the event loop between slices', async () => {
    const model = new ClusterModel({ syncGate: false });
    const rec = new Reconciler(model, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, held: true, sliceMs: 1 });
    let n = 0;
    for (let node = 0; node < 2000; node++) for (let i = 0; i < 10; i++) rec.touch(model.upsertPod(pod(`p${n++}`, `n${node}`, n % 250)));
    let emitted = 0;
    rec.onUpdate(() => emitted++);
    const progressAtTimers: number[] = [];
    const timer = setInterval(() => progressAtTimers.push(emitted), 0);
    rec.release();
    await rec.whenIdle();
    clearInterval(timer);
    expect(emitted).toBe(2000);
    // Timers ran while the pass was under way: it did not hold the loop from start to end.
    expect(progressAtTimers.some((x) => x > 0 && x < 2000)).toBe(true);
    expect(rec.pending()).toBe(0);
  });
});
