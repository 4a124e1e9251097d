/**
 * controlplane - meshlane.io/accelerate is read by ONE function for pods and
 * namespaces (classify/pod.ts optOutOf): anything but "true", trimmed, any
 * case, opts out, as label or annotation. Through classifyPod, the
 * namespace path the control plane takes (namespaceOptOut -> model), the
 * node state and the verdict. Plus the kill switch's verdict.
 */
import { describe, expect, it } from 'vitest';
import { classifyPod } from '../../controlplane/src/classify/mod.js';
import { optOutOf } from '../../controlplane/src/classify/pod.js';
import { nodeEndpoints } from '../../controlplane/src/model/endpoints.js';
import { ClusterModel, namespaceOptOut, namespaceOptedOut } from '../../controlplane/src/model/model.js';
import { nodeVerdicts } from '../../controlplane/src/model/verdict.js';
import { injectedPod } from './fixtures/injected-pods.js';

const KEY = 'meshlane.io/accelerate';
const OPT_OUT = ['False', ' false ', 'FALSE', '0', 'no', 'false', 'flase', ''];
const KEEP = ['true', 'True', ' TRUE '];
const POD = 'default/hello-5d7b9c6f4-x2x7q';

/** The one pod on worker-1, its namespace carrying `ns`; its endpoint and verdict. */
function run(ns: { labels?: Record<string, string>; annotations?: Record<string, string> }, pod = injectedPod()) {
  const model = new ClusterModel({ syncGate: false });
  model.upsertNamespace('default', namespaceOptOut(ns.labels, ns.annotations));
  model.upsertPod(classifyPod(pod));
  return { endpoint: nodeEndpoints(model, 'worker-1')[0], verdict: nodeVerdicts(model, 'worker-1', true).get(POD) };
}

describe('meshlane.io/accelerate: the same reading on pods and namespaces', () => {
  for (const kind of ['label', 'annotation'] as const) {
    const meta = (v: string) => (kind === 'label' ? { labels: { [KEY]: v } } : { annotations: { [KEY]: v } });

    it.each(OPT_OUT)(`%j as a namespace ${kind} opts out, like on a pod`, (v) => {
      expect(namespaceOptedOut(meta(v).labels, meta(v).annotations)).toBe(true);
      const ns = run(meta(v));
      expect(ns.endpoint?.accelerate).toBe(false);
      expect(ns.verdict).toMatchObject({ reason: 'opted-out-namespace', setting: { on: 'namespace', kind, name: KEY, value: v } });
      const pod = run({}, injectedPod(kind === 'label' ? { labels: { [KEY]: v } } : { annotations: { [KEY]: v } }));
      expect(classifyPod(injectedPod(kind === 'label' ? { labels: { [KEY]: v } } : { annotations: { [KEY]: v } })).optedOut).toBe(true);
      expect(pod.endpoint?.accelerate).toBe(false);
      expect(pod.verdict).toMatchObject({ reason: 'opted-out-pod', setting: { on: 'pod', kind, name: KEY, value: v } });
    });

    it.each(KEEP)(`%j as a namespace ${kind} keeps it accelerated, like on a pod`, (v) => {
      expect(namespaceOptedOut(meta(v).labels, meta(v).annotations)).toBe(false);
      expect(run(meta(v)).verdict?.reason).toBe('accelerated');
      const pod = injectedPod(kind === 'label' ? { labels: { [KEY]: v } } : { annotations: { [KEY]: v } });
      expect(classifyPod(pod).optedOut).toBe(false);
      expect(run({}, pod).endpoint?.accelerate).toBe(true);
    });
  }

  it('one function decides both: pod and namespace metadata give the same answer for every value', () => {
    for (const v of [...OPT_OUT, ...KEEP]) {
      for (const m of [{ labels: { [KEY]: v } }, { annotations: { [KEY]: v } }]) {
        expect(optOutOf(m, 'namespace') !== undefined).toBe(optOutOf(m, 'pod') !== undefined);
        expect(namespaceOptedOut(m.labels, m.annotations)).toBe(classifyPod(injectedPod(m)).optedOut);
      }
    }
  });

  it('either place opting out wins; the label is named first', () => {
    expect(optOutOf({ labels: { [KEY]: 'true' }, annotations: { [KEY]: 'False' } }, 'namespace')).toEqual({ on: 'namespace', kind: 'annotation', name: KEY, value: 'False' });
    expect(optOutOf({ labels: { [KEY]: 'no' }, annotations: { [KEY]: 'False' } }, 'pod')).toEqual({ on: 'pod', kind: 'label', name: KEY, value: 'no' });
    expect(optOutOf({ labels: { other: 'false' } }, 'pod')).toBeUndefined();
  });

  it('a namespace whose opt-out moves from label to annotation touches its nodes (the verdict names the new one)', () => {
    const model = new ClusterModel({ syncGate: false });
    model.upsertPod(classifyPod(injectedPod()));
    expect(model.upsertNamespace('default', namespaceOptOut({ [KEY]: 'False' }))).toEqual(['worker-1']);
    expect(model.upsertNamespace('default', namespaceOptOut({ [KEY]: 'False' }))).toEqual([]);
    expect(model.upsertNamespace('default', namespaceOptOut(undefined, { [KEY]: 'no' }))).toEqual(['worker-1']);
    expect(nodeVerdicts(model, 'worker-1', true).get(POD)?.setting).toEqual({ on: 'namespace', kind: 'annotation', name: KEY, value: 'no' });
    expect(model.upsertNamespace('default', namespaceOptOut({ [KEY]: 'True' }))).toEqual(['worker-1']);
    expect(nodeVerdicts(model, 'worker-1', true).get(POD)?.reason).toBe('accelerated');
  });
});

describe('verdicts in the model', () => {
  it('the kill switch: an accelerated endpoint is "switched-off"', () => {
    const model = new ClusterModel({ syncGate: false });
    model.upsertPod(classifyPod(injectedPod()));
    expect(nodeVerdicts(model, 'worker-1', false).get(POD)).toMatchObject({ reason: 'switched-off', endpoint: true, accelerate: true });
  });

  it('refreshNode reports changes only, keeps counts per reason, and forgets deleted pods', () => {
    const model = new ClusterModel({ syncGate: true });
    model.upsertPod(classifyPod(injectedPod()));
    const first = model.refreshNode('worker-1', true);
    expect(first.map((c) => [c.pod, c.from, c.to.reason])).toEqual([[POD, undefined, 'not-synced']]);
    expect(model.refreshNode('worker-1', true)).toEqual([]);
    const since = model.verdict(POD)!.since;
    model.setProxies(new Map([['hello-5d7b9c6f4-x2x7q.default', { proxyId: 'hello-5d7b9c6f4-x2x7q.default', synced: true }]]));
    expect(model.refreshNode('worker-1', true).map((c) => [c.from?.reason, c.to.reason])).toEqual([['not-synced', 'accelerated']]);
    expect(model.verdict(POD)!.since.getTime()).toBeGreaterThanOrEqual(since.getTime());
    expect(model.verdictCounts().get('accelerated')).toBe(1);
    expect(model.verdictCounts().get('not-synced')).toBe(0);
    model.deletePod(POD);
    expect(model.verdict(POD)).toBeUndefined();
    expect(model.verdictCounts().get('accelerated')).toBe(0);
  });

  it('an unscheduled pod gets its verdict without a node pass', () => {
    const model = new ClusterModel({ syncGate: false });
    const pod = injectedPod();
    delete pod.spec!.nodeName;
    pod.status = { phase: 'Pending' };
    model.upsertPod(classifyPod(pod));
    expect(model.refreshPod(POD, true).map((c) => [c.node, c.to.reason])).toEqual([[undefined, 'not-running']]);
  });
});
