/**
 * Wires the sources to the model and the model to the reconciler. Source
 * handlers only translate an event into a model mutation and hand the
 * touched nodes to the reconciler; all computing happens there.
 */
import type { V1Namespace, V1Node, V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Histogram, Registry, Counter, Gauge } from 'prom-client';
import type { Switches } from '@meshlane/proto';
import { classifyPod } from './classify/mod.js';
import type { ClusterSource } from './source.js';
import { ClusterModel, namespaceOptedOut } from './model/model.js';
import { Reconciler, type NodeUpdate } from './reconcile/reconciler.js';
import type { IstiodSource } from './types.js';

export interface ControlPlaneOptions {
  kube: ClusterSource;
  /** Without istiod the sync gate is off: pods pair as soon as Kubernetes says they run. */
  istiod?: IstiodSource;
  switches: Switches;
  logger: Logger;
  registry?: Registry;
}

export class ControlPlane {
  readonly model: ClusterModel;
  readonly reconciler: Reconciler;
  private readonly log: Logger;
  private readonly latency: Histogram;
  private readonly updates: Counter;
  private readonly nodesGauge: Gauge;
  /** When each dirty node was first touched, for event-to-diff latency. */
  private readonly touchedAt = new Map<string, bigint>();

  constructor(private readonly o: ControlPlaneOptions) {
    this.log = o.logger.child({ component: 'controlplane' });
    this.model = new ClusterModel({ syncGate: o.istiod !== undefined });
    this.reconciler = new Reconciler(this.model, { switches: o.switches });
    const registers = o.registry ? [o.registry] : [];
    this.latency = new Histogram({
      name: 'meshlane_event_to_diff_seconds',
      help: 'From a source event to the per-node diff it caused',
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25],
      registers,
    });
    this.updates = new Counter({ name: 'meshlane_node_updates_total', help: 'Per-node desired-state updates emitted', registers });
    this.nodesGauge = new Gauge({ name: 'meshlane_nodes', help: 'Nodes with a desired state', registers, collect: () => this.nodesGauge.set(this.reconciler.nodeNames().length) });
    this.reconciler.onUpdate((u) => {
      const t = this.touchedAt.get(u.node);
      if (t !== undefined) {
        this.latency.observe(Number(process.hrtime.bigint() - t) / 1e9);
        this.touchedAt.delete(u.node);
      }
      this.updates.inc();
    });
  }

  onUpdate(cb: (u: NodeUpdate) => void): void {
    this.reconciler.onUpdate(cb);
  }

  private touch(nodes: string[]): void {
    const now = process.hrtime.bigint();
    for (const n of nodes) if (!this.touchedAt.has(n)) this.touchedAt.set(n, now);
    this.reconciler.touch(nodes);
  }

  start(): void {
    const { kube, istiod } = this.o;
    kube.onPod((change, pod: V1Pod) => {
      const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
      this.touch(change === 'delete' ? this.model.deletePod(key) : this.model.upsertPod(classifyPod(pod)));
    });
    kube.onNode((change, node: V1Node) => {
      const name = node.metadata?.name ?? '';
      this.touch(change === 'delete' ? this.model.deleteNode(name) : this.model.upsertNode(name));
    });
    kube.onNamespace((change, ns: V1Namespace) => {
      const name = ns.metadata?.name ?? '';
      this.touch(change === 'delete' ? this.model.deleteNamespace(name) : this.model.upsertNamespace(name, namespaceOptedOut(ns.metadata?.labels, ns.metadata?.annotations)));
    });
    if (istiod) {
      istiod.onProxies((proxies) => this.touch(this.model.setProxies(proxies)));
      istiod.onAmbient((pods) => this.touch(this.model.setAmbient(pods)));
      istiod.start();
    }
    kube.start();
    this.log.info({ syncGate: istiod !== undefined }, 'control plane started');
  }

  /** Kubernetes listed once and, when the sync gate is on, istiod answered. */
  ready(): boolean {
    return this.o.kube.synced() && (!this.o.istiod || this.o.istiod.connected());
  }

  async stop(): Promise<void> {
    await Promise.all([this.o.kube.stop(), this.o.istiod?.stop()]);
  }
}
