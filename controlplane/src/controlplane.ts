/**
 * Wires the sources to the model and the model to the reconciler. Source
 * handlers only queue the event, stamped with its arrival; the queue is
 * applied to the model in slices that yield to the event loop, and the
 * touched nodes go to the reconciler, where all computing happens.
 *
 * Nothing leaves before the sources are synced: the reconciler is held
 * until every event up to the moment Kubernetes has listed everything (and
 * istiod answered, with the sync gate on) is in the model. A partial model
 * would publish empty or partial states (nodes list before their pods), and
 * a state a worker applies is a state it enforces. Every consumer of
 * onUpdate (the bus, the file sink, logs) is behind that one gate, and the
 * first updates after it carry each node's whole state.
 */
import type { V1Namespace, V1Node, V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Histogram, Registry, Counter, Gauge } from 'prom-client';
import type { Switches } from '@meshlane/proto';
import { classifyPod } from './classify/mod.js';
import type { Change, ClusterSource } from './source.js';
import { ClusterModel, namespaceOptOut, type VerdictChange } from './model/model.js';
import { Reconciler, type NodeUpdate } from './reconcile/reconciler.js';
import { REASONS, type IstiodSource, type ProxySync } from './types.js';

export interface ControlPlaneOptions {
  kube: ClusterSource;
  /** Without istiod the sync gate is off: pods pair as soon as Kubernetes says they run. */
  istiod?: IstiodSource;
  switches: Switches;
  logger: Logger;
  registry?: Registry;
  /** Longest the event queue is applied before yielding to the event loop (ms). Default 10. */
  sliceMs?: number;
}

/**
 * Latency buckets (s): sub-millisecond for a quiet cluster, up to tens of
 * seconds so that a backlog shows as what it is instead of piling into +Inf.
 */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * Generations per node and sink awaiting their publish. A sink that stops
 * reporting (a standby replica, NATS away) must not grow memory without
 * bound; what falls off is simply not observed.
 */
const MAX_UNPUBLISHED = 64;

type QueuedEvent =
  | { kind: 'pod'; change: Change; pod: V1Pod; at: number | undefined }
  | { kind: 'node'; change: Change; node: V1Node; at: number | undefined }
  | { kind: 'namespace'; change: Change; ns: V1Namespace; at: number | undefined }
  | { kind: 'proxies'; proxies: ReadonlyMap<string, ProxySync>; at: number | undefined }
  | { kind: 'ambient'; pods: ReadonlySet<string>; at: number | undefined }
  | { kind: 'synced' };

interface Unpublished {
  generation: number;
  /** Arrival times (performance.now(), ms) of the events folded into this generation. */
  stamps: number[];
}

export class ControlPlane {
  readonly model: ClusterModel;
  readonly reconciler: Reconciler;
  private readonly log: Logger;
  private readonly toDiff: Histogram;
  private readonly toPublish: Histogram<'sink'>;
  private readonly initialSync: Gauge;
  private readonly updates: Counter;
  private readonly nodesGauge: Gauge;
  private readonly queueGauge: Gauge;
  private readonly podsGauge: Gauge<'reason'>;
  private readonly verdictChanges: Counter<'reason'>;
  /** FIFO of every source event; entries before `head` are applied (and cleared). */
  private readonly queue: Array<QueuedEvent | undefined> = [];
  private head = 0;
  private draining = false;
  private stopped = false;
  /** The sync marker is queued: events from now on are measured. */
  private syncSeen = false;
  /** The model holds everything up to the sync point: the reconciler is released. */
  private applied = false;
  private startedAt = 0;
  private syncPoll: NodeJS.Timeout | undefined;
  /** Arrival times of the events each node has not yet been reconciled for. */
  private readonly stamps = new Map<string, number[]>();
  /** Per sink that reports publishes: node -> generations not yet published, oldest first. */
  private readonly unpublished = new Map<string, Map<string, Unpublished[]>>();

  constructor(private readonly o: ControlPlaneOptions) {
    this.log = o.logger.child({ component: 'controlplane' });
    this.model = new ClusterModel({ syncGate: o.istiod !== undefined });
    this.reconciler = new Reconciler(this.model, { switches: o.switches, held: true });
    const registers = o.registry ? [o.registry] : [];
    this.toDiff = new Histogram({
      name: 'meshlane_event_to_diff_seconds',
      help: 'From a source event to the per-node diff it caused (events that change nothing are not observed; nor is the initial list, see meshlane_initial_sync_seconds)',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.toPublish = new Histogram({
      name: 'meshlane_event_to_publish_seconds',
      help: 'From a source event to the publish of the node generation it is in, per sink',
      labelNames: ['sink'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.initialSync = new Gauge({ name: 'meshlane_initial_sync_seconds', help: 'From start to every node reconciled after the sources synced (0 until then)', registers });
    this.updates = new Counter({ name: 'meshlane_node_updates_total', help: 'Per-node desired-state updates emitted', registers });
    this.nodesGauge = new Gauge({ name: 'meshlane_nodes', help: 'Nodes with a desired state', registers, collect: () => this.nodesGauge.set(this.reconciler.nodeCount()) });
    this.queueGauge = new Gauge({ name: 'meshlane_queued_events', help: 'Source events received, not yet applied to the model', registers, collect: () => this.queueGauge.set(this.queue.length - this.head) });
    this.podsGauge = new Gauge({
      name: 'meshlane_controlplane_pods',
      help: 'Pods in the model per verdict reason ("accelerated", or why not: see meshlane explain); counted once their node (or, unscheduled, the pod) was reconciled',
      labelNames: ['reason'],
      registers,
      collect: () => {
        for (const [reason, n] of this.model.verdictCounts()) this.podsGauge.labels(reason).set(n);
      },
    });
    this.verdictChanges = new Counter({ name: 'meshlane_controlplane_verdict_changes_total', help: 'Pod verdicts that changed (a first verdict counts), by the new reason', labelNames: ['reason'], registers });
    for (const r of REASONS) this.verdictChanges.labels(r).inc(0);
    this.reconciler.onReconciled((node, u) => this.reconciled(node, u));
    this.reconciler.onSeed((node) => {
      // Generations before a takeover's seed were never this replica's to publish.
      for (const perNode of this.unpublished.values()) perNode.delete(node);
    });
  }

  /** Every node's updates, from the first after the sources are synced on. */
  onUpdate(cb: (u: NodeUpdate) => void): void {
    this.reconciler.onUpdate(cb);
  }

  /**
   * A sink reports that a node's generation reached it (the bus: deltas
   * acknowledged; the file sink: file renamed). Observes
   * meshlane_event_to_publish_seconds{sink} for every event folded into that
   * generation or an earlier one. A sink is tracked from its first report
   * on, so that one that never reports (the bus, until BusLeadership calls
   * this) keeps nothing.
   */
  published(node: string, generation: number, sink = 'bus'): void {
    let perNode = this.unpublished.get(sink);
    if (!perNode) {
      this.unpublished.set(sink, (perNode = new Map()));
      return;
    }
    const q = perNode.get(node);
    if (!q) return;
    const now = performance.now();
    const h = this.toPublish.labels(sink);
    let i = 0;
    for (; i < q.length && q[i]!.generation <= generation; i++) for (const t of q[i]!.stamps) h.observe((now - t) / 1000);
    if (i === q.length) perNode.delete(node);
    else q.splice(0, i);
  }

  /** The kill switch as the reconciler holds it. */
  private enabled(): boolean {
    return this.reconciler.switches().enabled;
  }

  /** One debug line per pod whose verdict changed, and the counter. */
  private verdictsChanged(changes: readonly VerdictChange[]): void {
    const debug = this.log.isLevelEnabled('debug');
    for (const c of changes) {
      this.verdictChanges.labels(c.to.reason).inc();
      if (debug) {
        this.log.debug(
          { pod: c.pod, node: c.node ?? null, reason: c.to.reason, detail: c.to.detail, ...(c.to.setting ? { setting: c.to.setting } : {}), was: c.from?.reason ?? null },
          'pod verdict',
        );
      }
    }
  }

  private reconciled(node: string, u: NodeUpdate | undefined): void {
    // The verdicts of the node's pods, from the model its state was just computed from.
    this.verdictsChanged(this.model.refreshNode(node, this.enabled()));
    const stamps = this.stamps.get(node);
    // An event that changed nothing leaves nothing behind: the next change is measured from its own arrival.
    this.stamps.delete(node);
    if (!u) return;
    this.updates.inc();
    if (!stamps) return;
    const now = performance.now();
    for (const t of stamps) this.toDiff.observe((now - t) / 1000);
    for (const perNode of this.unpublished.values()) {
      let q = perNode.get(node);
      if (!q) perNode.set(node, (q = []));
      q.push({ generation: u.generation, stamps });
      if (q.length > MAX_UNPUBLISHED) q.shift();
    }
  }

  private enqueue(e: QueuedEvent): void {
    this.queue.push(e);
    this.drainSoon();
  }

  private drainSoon(): void {
    if (this.draining || this.stopped) return;
    this.draining = true;
    setImmediate(() => this.drain());
  }

  /** Applies queued events for one slice, then yields; the informers' list loops only ever push. */
  private drain(): void {
    this.draining = false;
    if (this.stopped) return;
    const deadline = performance.now() + (this.o.sliceMs ?? 10);
    while (this.head < this.queue.length) {
      const e = this.queue[this.head];
      this.queue[this.head++] = undefined;
      if (e) this.apply(e);
      if (performance.now() >= deadline) break;
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else {
      if (this.head > 4096 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      this.drainSoon();
    }
  }

  private apply(e: QueuedEvent): void {
    if (e.kind === 'synced') {
      if (!this.applied && this.syncSeen) this.open();
      return;
    }
    let nodes: string[];
    try {
      nodes = this.mutate(e);
    } catch (err) {
      // One malformed object must not stop the queue (the informers shielded their loop the same way).
      this.log.error({ kind: e.kind, err: (err as Error).message }, 'event not applied');
      return;
    }
    if (e.at !== undefined) {
      for (const n of nodes) {
        const s = this.stamps.get(n);
        if (s) s.push(e.at);
        else this.stamps.set(n, [e.at]);
      }
    }
    this.reconciler.touch(nodes);
  }

  private mutate(e: Exclude<QueuedEvent, { kind: 'synced' }>): string[] {
    switch (e.kind) {
      case 'pod': {
        if (e.change === 'upsert') {
          const cls = classifyPod(e.pod);
          const nodes = this.model.upsertPod(cls);
          // A pod on no node has no node pass to refresh its verdict.
          if (cls.node === undefined) this.verdictsChanged(this.model.refreshPod(cls.key, this.enabled()));
          return nodes;
        }
        // The same default classifyPod keys the pod with.
        return this.model.deletePod(`${e.pod.metadata?.namespace ?? 'default'}/${e.pod.metadata?.name ?? ''}`);
      }
      case 'node': {
        const name = e.node.metadata?.name ?? '';
        return e.change === 'delete' ? this.model.deleteNode(name) : this.model.upsertNode(name);
      }
      case 'namespace': {
        const name = e.ns.metadata?.name ?? '';
        return e.change === 'delete' ? this.model.deleteNamespace(name) : this.model.upsertNamespace(name, namespaceOptOut(e.ns.metadata?.labels, e.ns.metadata?.annotations));
      }
      case 'proxies':
        return this.model.setProxies(e.proxies);
      case 'ambient':
        return this.model.setAmbient(e.pods);
    }
  }

  /** The time of arrival, once events are measured (the initial list is not: it waits for the sync by design). */
  private arrival(): number | undefined {
    return this.syncSeen ? performance.now() : undefined;
  }

  start(): void {
    const { kube, istiod } = this.o;
    this.startedAt = performance.now();
    kube.onPod((change, pod) => this.enqueue({ kind: 'pod', change, pod, at: this.arrival() }));
    kube.onNode((change, node) => this.enqueue({ kind: 'node', change, node, at: this.arrival() }));
    kube.onNamespace((change, ns) => this.enqueue({ kind: 'namespace', change, ns, at: this.arrival() }));
    if (istiod) {
      istiod.onProxies((proxies) => this.enqueue({ kind: 'proxies', proxies, at: this.arrival() }));
      istiod.onAmbient((pods) => this.enqueue({ kind: 'ambient', pods, at: this.arrival() }));
      istiod.start();
    }
    kube.start();
    // The sources have no common "synced" callback: a cheap poll, only until they are.
    this.syncPoll = setInterval(() => this.checkSynced(), 20);
    this.syncPoll.unref();
    this.checkSynced();
    this.log.info({ syncGate: istiod !== undefined }, 'control plane started');
  }

  private sourcesSynced(): boolean {
    return this.o.kube.synced() && (!this.o.istiod || this.o.istiod.connected());
  }

  private checkSynced(): void {
    if (this.syncSeen || !this.sourcesSynced()) return;
    this.syncSeen = true;
    if (this.syncPoll) clearInterval(this.syncPoll);
    this.syncPoll = undefined;
    // Behind every event the sources delivered up to now: the model is complete once it is reached.
    this.enqueue({ kind: 'synced' });
  }

  private open(): void {
    this.applied = true;
    const nodes = this.reconciler.pending();
    this.log.info({ nodes, pods: this.model.pods.size, ms: Math.round(performance.now() - this.startedAt) }, 'sources synced: computing every node');
    this.reconciler.release();
    void this.reconciler.whenIdle().then(() => {
      const seconds = (performance.now() - this.startedAt) / 1000;
      this.initialSync.set(seconds);
      this.log.info({ nodes: this.reconciler.nodeCount(), seconds: Number(seconds.toFixed(3)) }, 'initial state computed');
    });
  }

  /**
   * Kubernetes listed once, the lists are in the model, and, when the sync
   * gate is on, istiod answered (since its last reconnect).
   */
  ready(): boolean {
    return this.applied && this.sourcesSynced();
  }

  /** Resolves when the queue is applied and every touched node reconciled (tests, shutdown). */
  async settled(): Promise<void> {
    while (!this.stopped) {
      if (this.applied && this.head === this.queue.length) {
        if (this.reconciler.pending() === 0) return;
        await this.reconciler.whenIdle();
        continue;
      }
      await new Promise((r) => setTimeout(r, this.applied ? 1 : 10));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.syncPoll) clearInterval(this.syncPoll);
    await Promise.all([this.o.kube.stop(), this.o.istiod?.stop()]);
  }
}
