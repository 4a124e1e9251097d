/**
 * ops - the latency histograms tell the truth. meshlane_event_to_diff_seconds
 * measures each event from its own arrival to the diff it caused: an event
 * that changes nothing is not observed and leaves nothing behind for the
 * next one to be measured from. meshlane_event_to_publish_seconds measures
 * to the moment a sink reports the generation as published. Buckets reach
 * tens of seconds. Nothing is emitted, and nothing measured, before the
 * sources are synced.
 */
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { V1Namespace, V1Node, V1Pod } from '@kubernetes/client-node';
import { ControlPlane, LATENCY_BUCKETS } from '../../controlplane/src/controlplane.js';
import type { Change, ClusterSource } from '../../controlplane/src/source.js';
import type { NodeUpdate } from '../../controlplane/src/reconcile/reconciler.js';
import { nodeFixture, podFixture } from '../fakes/kube-apiserver.js';

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A cluster driven by the test: events when it says, synced when it says. */
class ScriptedSource implements ClusterSource {
  private pods: Array<(c: Change, o: V1Pod) => void> = [];
  private nodes: Array<(c: Change, o: V1Node) => void> = [];
  isSynced = false;
  onPod(cb: (c: Change, o: V1Pod) => void): void {
    this.pods.push(cb);
  }
  onNode(cb: (c: Change, o: V1Node) => void): void {
    this.nodes.push(cb);
  }
  onNamespace(_cb: (c: Change, o: V1Namespace) => void): void {}
  synced(): boolean {
    return this.isSynced;
  }
  start(): void {}
  async stop(): Promise<void> {}
  pod(p: ReturnType<typeof podFixture>, change: Change = 'upsert'): void {
    for (const cb of this.pods) cb(change, p as unknown as V1Pod);
  }
  node(name: string): void {
    for (const cb of this.nodes) cb('upsert', nodeFixture(name) as unknown as V1Node);
  }
}

interface Hist {
  count: number;
  sum: number;
  buckets: Map<number, number>;
}

async function histogram(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<Hist> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const values = (m as { values?: Array<{ metricName?: string; value: number; labels: Record<string, string | number> }> } | undefined)?.values ?? [];
  const mine = values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want));
  const pick = (suffix: string) => mine.find((v) => v.metricName === `${name}${suffix}`)?.value ?? 0;
  const buckets = new Map<number, number>();
  for (const v of mine) if (v.metricName === `${name}_bucket` && v.labels.le !== '+Inf') buckets.set(Number(v.labels.le), v.value);
  return { count: pick('_count'), sum: pick('_sum'), buckets };
}

function setup() {
  const registry = new Registry();
  const kube = new ScriptedSource();
  const cp = new ControlPlane({ kube, switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, logger: log, registry });
  const updates: NodeUpdate[] = [];
  cp.onUpdate((u) => updates.push(u));
  return { registry, kube, cp, updates };
}

const ips = new Map<string, string>();
/** A pod on n1; each name keeps its own IP (an IP claimed twice would drop both endpoints). */
const pod = (name: string, labels: Record<string, string> = {}) => {
  if (!ips.has(name)) ips.set(name, `10.3.0.${ips.size + 1}`);
  return podFixture({ name, node: 'n1', ip: ips.get(name)!, labels });
};

describe('ops - latency histograms', () => {
  it('buckets run from half a millisecond to tens of seconds', async () => {
    const { registry, cp, kube } = setup();
    kube.isSynced = true;
    cp.start();
    await cp.settled();
    expect(LATENCY_BUCKETS[0]).toBeLessThanOrEqual(0.0005);
    expect(LATENCY_BUCKETS.at(-1)).toBeGreaterThanOrEqual(30);
    const text = await registry.getSingleMetricAsString('meshlane_event_to_diff_seconds');
    expect(text).toContain('le="0.0005"');
    expect(text).toContain('le="30"');
    await cp.stop();
  });

  it('nothing is emitted before the sources are synced; the initial list is not observed as latency', async () => {
    const { registry, cp, kube, updates } = setup();
    cp.start();
    kube.node('n1');
    kube.pod(pod('a'));
    kube.pod(pod('bb'));
    await sleep(150);
    expect(updates).toEqual([]);
    expect(cp.ready()).toBe(false);
    kube.isSynced = true;
    await cp.settled();
    expect(cp.ready()).toBe(true);
    // One update for the node, with everything in it.
    expect(updates.map((u) => [u.node, u.generation, u.state().endpoints.map((e) => e.pod)])).toEqual([['n1', 1, ['default/a', 'default/bb']]]);
    expect((await histogram(registry, 'meshlane_event_to_diff_seconds')).count).toBe(0);
    await cp.stop();
  });

  it('an event that changes nothing, then a real change much later: the change is measured from its own arrival', async () => {
    const { registry, cp, kube, updates } = setup();
    kube.isSynced = true;
    cp.start();
    kube.node('n1');
    kube.pod(pod('a'));
    await cp.settled();
    const before = await histogram(registry, 'meshlane_event_to_diff_seconds');
    expect(before.count).toBe(2); // the node and the pod, both after the sync, in the node's first diff

    kube.pod(pod('a')); // the same pod again: changes nothing
    await cp.settled();
    const afterNoop = await histogram(registry, 'meshlane_event_to_diff_seconds');
    expect(afterNoop.count).toBe(before.count);
    const n = updates.length;

    await sleep(600);
    kube.pod(pod('a', { 'meshlane.io/accelerate': 'false' }));
    await cp.settled();
    expect(updates.length).toBe(n + 1);
    const after = await histogram(registry, 'meshlane_event_to_diff_seconds');
    expect(after.count).toBe(before.count + 1);
    const observed = after.sum - afterNoop.sum;
    // Its own few milliseconds, not the 600 ms since the no-op.
    expect(observed).toBeLessThan(0.1);
    expect((after.buckets.get(0.25) ?? 0) - (afterNoop.buckets.get(0.25) ?? 0)).toBe(1);
    await cp.stop();
  });

  it('a burst of events folded into one generation observes each event once, from its own arrival', async () => {
    const { registry, cp, kube } = setup();
    kube.isSynced = true;
    cp.start();
    kube.node('n1');
    await cp.settled();
    const base = await histogram(registry, 'meshlane_event_to_diff_seconds');
    for (let i = 0; i < 5; i++) kube.pod(pod(`p${i}xx`));
    await cp.settled();
    expect((await histogram(registry, 'meshlane_event_to_diff_seconds')).count - base.count).toBe(5);
    await cp.stop();
  });

  it('event to publish: measured to the sink report of the generation, per sink', async () => {
    const { registry, cp, kube, updates } = setup();
    kube.isSynced = true;
    cp.start();
    kube.node('n1');
    kube.pod(pod('a'));
    await cp.settled();
    // A sink is tracked from its first report on.
    cp.published('n1', updates.at(-1)!.generation, 'file');
    kube.pod(pod('a', { 'meshlane.io/accelerate': 'false' }));
    await cp.settled();
    const gen = updates.at(-1)!.generation;
    await sleep(300); // the sink is slow
    cp.published('n1', gen, 'file');
    const h = await histogram(registry, 'meshlane_event_to_publish_seconds', { sink: 'file' });
    expect(h.count).toBe(1);
    expect(h.sum).toBeGreaterThanOrEqual(0.3);
    expect(h.sum).toBeLessThan(1);
    // Reported twice, observed once; another sink has its own series.
    cp.published('n1', gen, 'file');
    expect((await histogram(registry, 'meshlane_event_to_publish_seconds', { sink: 'file' })).count).toBe(1);
    expect((await histogram(registry, 'meshlane_event_to_publish_seconds', { sink: 'bus' })).count).toBe(0);
    await cp.stop();
  });
});
