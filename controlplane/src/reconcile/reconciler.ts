/**
 * Level-triggered reconciliation: model mutations name the nodes they
 * touched; those nodes are marked dirty and recomputed from the model alone,
 * and each recomputation that changes anything yields a new generation and
 * the minimal delta from the previous one. A node is never reconciled twice
 * at once, and a burst of events for one node collapses into one pass.
 *
 * The work is proportional to the change: a pass costs the pods of the
 * nodes it reconciles, never the cluster's. Automatic passes run in slices
 * of at most `sliceMs` and yield to the event loop in between, so that a
 * pass over every node (the first after the sources are synced, a switch
 * flip) does not starve /healthz or the sources. While held, nothing is
 * reconciled and nothing emitted: the dirty nodes wait for release().
 */
import {
  NODE_STATE_API_VERSION,
  NODE_STATE_DELTA_KIND,
  sameEndpoint,
  sameSwitches,
  type Endpoint,
  type NodeState,
  type NodeStateDelta,
  type Switches,
} from '@meshlane/proto';
import { nodeEndpoints } from '../model/endpoints.js';
import type { ClusterModel } from '../model/model.js';

export interface NodeUpdate {
  node: string;
  generation: number;
  delta: NodeStateDelta;
  /** The whole state after the delta, built on demand. */
  state: () => NodeState;
}

interface NodeDesired {
  generation: number;
  switches: Switches;
  endpoints: Map<string, Endpoint>;
}

export interface ReconcilerOptions {
  switches: Switches;
  /** Where a node's generations continue from (e.g. the last published snapshot). */
  initialGeneration?: (node: string) => number;
  /** Flush on the next tick after an event (default), or only when flush() is called. */
  autoFlush?: boolean;
  /**
   * Start held: touches only mark nodes dirty until release(). What keeps a
   * partial model (sources still listing) from ever reaching a listener.
   */
  held?: boolean;
  /** Longest an automatic pass runs before yielding to the event loop (ms). Default 10. */
  sliceMs?: number;
}

/** A node was reconciled: `update` when its state changed, undefined when nothing did. */
export type ReconciledListener = (node: string, update: NodeUpdate | undefined) => void;

export class Reconciler {
  private readonly nodes = new Map<string, NodeDesired>();
  private readonly dirty = new Set<string>();
  private scheduled = false;
  private isHeld: boolean;
  private readonly listeners: Array<(u: NodeUpdate) => void> = [];
  private readonly reconciledListeners: ReconciledListener[] = [];
  private readonly seedListeners: Array<(node: string) => void> = [];
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly model: ClusterModel,
    private options: ReconcilerOptions,
  ) {
    this.isHeld = options.held ?? false;
  }

  onUpdate(cb: (u: NodeUpdate) => void): void {
    this.listeners.push(cb);
  }

  /** Every node reconciled, changed or not (before the update listeners). */
  onReconciled(cb: ReconciledListener): void {
    this.reconciledListeners.push(cb);
  }

  /** A node's previous state was replaced by seed(). */
  onSeed(cb: (node: string) => void): void {
    this.seedListeners.push(cb);
  }

  /** Ends the hold: every node touched meanwhile is reconciled (automatic passes resume). */
  release(): void {
    if (!this.isHeld) return;
    this.isHeld = false;
    this.schedule();
    this.settleIdle();
  }

  /**
   * Takes a node's state as the previous one (what the bus says its worker
   * has), so that the next reconcile emits the delta from there.
   */
  seed(state: NodeState): void {
    const endpoints = new Map(state.endpoints.map((e) => [e.pod, e]));
    this.nodes.set(state.node, { generation: state.generation, switches: state.switches, endpoints });
    for (const l of this.seedListeners) l(state.node);
  }

  /** Marks nodes for recomputation. */
  touch(nodes: Iterable<string>): void {
    for (const n of nodes) this.dirty.add(n);
    this.schedule();
  }

  /** Nodes waiting to be reconciled. */
  pending(): number {
    return this.dirty.size;
  }

  /**
   * Resolves once no node is waiting (at once when none is). While held it
   * waits for the release and the passes after it.
   */
  whenIdle(): Promise<void> {
    if (!this.isHeld && this.dirty.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled || this.isHeld || this.options.autoFlush === false || this.dirty.size === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pass(this.options.sliceMs ?? 10);
    });
  }

  /** One automatic slice: reconciles dirty nodes until the budget is spent, then yields. */
  private pass(sliceMs: number): void {
    if (this.isHeld) return;
    const deadline = performance.now() + sliceMs;
    for (const node of this.dirty) {
      // Deleting the entry being visited is safe: a Set iterator moves on to the next one.
      this.dirty.delete(node);
      this.emit(node, this.reconcileNode(node));
      if (performance.now() >= deadline) break;
    }
    if (this.dirty.size) this.schedule();
    else this.settleIdle();
  }

  private settleIdle(): void {
    if (this.isHeld || this.dirty.size || !this.idleWaiters.length) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private emit(node: string, u: NodeUpdate | undefined): void {
    for (const l of this.reconciledListeners) l(node, u);
    if (u) for (const l of this.listeners) l(u);
  }

  /** The switches every node gets. */
  switches(): Switches {
    return this.options.switches;
  }

  /** Changes the node-wide switches of every node. */
  setSwitches(switches: Switches): void {
    this.options = { ...this.options, switches };
    this.touch(this.nodes.keys());
  }

  /** Reconciles every dirty node at once; returns the updates emitted. Nothing while held. */
  flush(): NodeUpdate[] {
    const out: NodeUpdate[] = [];
    if (this.isHeld) return out;
    const batch = [...this.dirty];
    this.dirty.clear();
    for (const node of batch) {
      const u = this.reconcileNode(node);
      if (u) out.push(u);
      this.emit(node, u);
    }
    this.settleIdle();
    return out;
  }

  /** Last generation computed for a node (0 if none). */
  generation(node: string): number {
    return this.nodes.get(node)?.generation ?? 0;
  }

  nodeNames(): string[] {
    return [...this.nodes.keys()];
  }

  /** How many nodes have a desired state (nodeNames().length without the copy). */
  nodeCount(): number {
    return this.nodes.size;
  }

  /** The current desired state of a node, if it has one. */
  state(node: string): NodeState | undefined {
    const d = this.nodes.get(node);
    return d ? this.materialize(node, d) : undefined;
  }

  private materialize(node: string, d: NodeDesired): NodeState {
    return {
      apiVersion: NODE_STATE_API_VERSION,
      kind: 'NodeState',
      node,
      generation: d.generation,
      switches: d.switches,
      endpoints: [...d.endpoints.values()].sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : 0)),
    };
  }

  private reconcileNode(node: string): NodeUpdate | undefined {
    const known = this.model.hasNode(node) || this.model.podsOnNode(node).length > 0;
    const existing = this.nodes.get(node);
    if (!existing && !known) return undefined;
    // A node seen for the first time always gets a first state, even empty.
    const fresh = !existing;
    const prev: NodeDesired = existing ?? {
      generation: this.options.initialGeneration?.(node) ?? 0,
      switches: this.options.switches,
      endpoints: new Map(),
    };
    const endpoints = new Map(nodeEndpoints(this.model, node).map((e) => [e.pod, e]));
    const upsertEndpoints: Endpoint[] = [];
    for (const [k, e] of endpoints) {
      const old = prev.endpoints.get(k);
      if (!old || !sameEndpoint(old, e)) upsertEndpoints.push(e);
    }
    const removeEndpoints = [...prev.endpoints.keys()].filter((k) => !endpoints.has(k));
    const switchesChanged = !sameSwitches(prev.switches, this.options.switches);
    const nothing = !upsertEndpoints.length && !removeEndpoints.length && !switchesChanged;
    if (nothing && !fresh) return undefined;

    const next: NodeDesired = { generation: prev.generation + 1, switches: this.options.switches, endpoints };
    this.nodes.set(node, next);
    if (!known && endpoints.size === 0) this.nodes.delete(node); // node gone: this empty state is its last
    const delta: NodeStateDelta = {
      apiVersion: NODE_STATE_API_VERSION,
      kind: NODE_STATE_DELTA_KIND,
      node,
      fromGeneration: prev.generation,
      toGeneration: next.generation,
      upsertEndpoints,
      removeEndpoints,
      ...(switchesChanged || fresh ? { switches: next.switches } : {}),
    };
    return { node, generation: next.generation, delta, state: () => this.materialize(node, next) };
  }
}
