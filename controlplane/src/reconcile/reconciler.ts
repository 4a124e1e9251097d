/**
 * Level-triggered reconciliation: model mutations name the nodes they
 * touched; those nodes are marked dirty and recomputed from the model alone,
 * and each recomputation that changes anything yields a new generation and
 * the minimal delta from the previous one. A node is never reconciled twice
 * at once, and a burst of events for one node collapses into one pass.
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
}

export class Reconciler {
  private readonly nodes = new Map<string, NodeDesired>();
  private readonly dirty = new Set<string>();
  private scheduled = false;
  private readonly listeners: Array<(u: NodeUpdate) => void> = [];

  constructor(
    private readonly model: ClusterModel,
    private options: ReconcilerOptions,
  ) {}

  onUpdate(cb: (u: NodeUpdate) => void): void {
    this.listeners.push(cb);
  }

  /**
   * Takes a node's state as the previous one (what the bus says its worker
   * has), so that the next reconcile emits the delta from there.
   */
  seed(state: NodeState): void {
    const endpoints = new Map(state.endpoints.map((e) => [e.pod, e]));
    this.nodes.set(state.node, { generation: state.generation, switches: state.switches, endpoints });
  }

  /** Marks nodes for recomputation. */
  touch(nodes: Iterable<string>): void {
    for (const n of nodes) this.dirty.add(n);
    if (this.dirty.size && this.options.autoFlush !== false && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
  }

  /** Changes the node-wide switches of every node. */
  setSwitches(switches: Switches): void {
    this.options = { ...this.options, switches };
    this.touch(this.nodes.keys());
  }

  /** Reconciles every dirty node; returns the updates emitted. */
  flush(): NodeUpdate[] {
    const out: NodeUpdate[] = [];
    const batch = [...this.dirty];
    this.dirty.clear();
    for (const node of batch) {
      const u = this.reconcileNode(node);
      if (u) {
        out.push(u);
        for (const l of this.listeners) l(u);
      }
    }
    return out;
  }

  /** Last generation computed for a node (0 if none). */
  generation(node: string): number {
    return this.nodes.get(node)?.generation ?? 0;
  }

  nodeNames(): string[] {
    return [...this.nodes.keys()];
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
