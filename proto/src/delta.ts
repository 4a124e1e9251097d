/**
 * A NodeStateDelta takes a worker from one generation of its node's state to
 * the next. Deltas are what flows on the bus; snapshots (whole NodeStates)
 * are what a worker resyncs from when it sees a gap.
 */
import type { Endpoint, NodeState, Pair, Switches } from './nodestate.js';

export const NODE_STATE_DELTA_KIND = 'NodeStateDelta';

export interface NodeStateDelta {
  apiVersion: NodeState['apiVersion'];
  kind: typeof NODE_STATE_DELTA_KIND;
  node: string;
  fromGeneration: number;
  toGeneration: number;
  /** Endpoints added or changed, whole. */
  upsertEndpoints: Endpoint[];
  /** Pod keys (namespace/name) of endpoints removed. */
  removeEndpoints: string[];
  addPairs: Pair[];
  removePairs: Pair[];
  /** Present only when a switch changed. */
  switches?: Switches;
}

const pairKey = (p: Pair) => `${p.client}>${p.server}`;

/** The canonical order of pairs in a NodeState: by client, then server. */
export function comparePairs(a: Pair, b: Pair): number {
  if (a.client !== b.client) return a.client < b.client ? -1 : 1;
  return a.server < b.server ? -1 : a.server > b.server ? 1 : 0;
}

function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The minimal delta from prev to next, or undefined when nothing changed. */
export function diffNodeState(prev: NodeState, next: NodeState): NodeStateDelta | undefined {
  const before = new Map(prev.endpoints.map((e) => [e.pod, e]));
  const after = new Map(next.endpoints.map((e) => [e.pod, e]));
  const upsertEndpoints = next.endpoints.filter((e) => {
    const old = before.get(e.pod);
    return !old || !sameEndpoint(old, e);
  });
  const removeEndpoints = prev.endpoints.filter((e) => !after.has(e.pod)).map((e) => e.pod);
  const prevPairs = new Set(prev.pairs.map(pairKey));
  const nextPairs = new Set(next.pairs.map(pairKey));
  const addPairs = next.pairs.filter((p) => !prevPairs.has(pairKey(p)));
  const removePairs = prev.pairs.filter((p) => !nextPairs.has(pairKey(p)));
  const switchesChanged = JSON.stringify(prev.switches) !== JSON.stringify(next.switches);
  if (!upsertEndpoints.length && !removeEndpoints.length && !addPairs.length && !removePairs.length && !switchesChanged) return undefined;
  return {
    apiVersion: next.apiVersion,
    kind: NODE_STATE_DELTA_KIND,
    node: next.node,
    fromGeneration: prev.generation,
    toGeneration: next.generation,
    upsertEndpoints,
    removeEndpoints,
    addPairs,
    removePairs,
    ...(switchesChanged ? { switches: next.switches } : {}),
  };
}

/**
 * A node state being advanced by many deltas in a row (a worker catching
 * up, a new leader replaying the stream): endpoints and pairs are kept in a
 * map and a set, so each delta costs its own size, not the state's, and the
 * sorted NodeState is built once at the end.
 */
export class NodeStateAccumulator {
  private readonly endpoints: Map<string, Endpoint>;
  private readonly pairs: Map<string, Pair>;
  private generation: number;
  private switches: Switches;

  constructor(private readonly base: NodeState) {
    this.endpoints = new Map(base.endpoints.map((e) => [e.pod, e]));
    this.pairs = new Map(base.pairs.map((p) => [pairKey(p), p]));
    this.generation = base.generation;
    this.switches = base.switches;
  }

  get currentGeneration(): number {
    return this.generation;
  }

  /** Throws on a node or generation mismatch, leaving the accumulator as it was. */
  apply(d: NodeStateDelta): void {
    if (d.node !== this.base.node) throw new Error(`delta for node ${d.node} applied to ${this.base.node}`);
    if (d.fromGeneration !== this.generation) throw new Error(`delta from generation ${d.fromGeneration} applied to generation ${this.generation}`);
    for (const k of d.removeEndpoints) this.endpoints.delete(k);
    for (const e of d.upsertEndpoints) this.endpoints.set(e.pod, e);
    for (const p of d.removePairs) this.pairs.delete(pairKey(p));
    for (const p of d.addPairs) this.pairs.set(pairKey(p), p);
    if (d.switches) this.switches = d.switches;
    this.generation = d.toGeneration;
  }

  toState(): NodeState {
    const endpoints = [...this.endpoints.values()].sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : 0));
    const pairs = [...this.pairs.values()].sort(comparePairs);
    return { ...this.base, generation: this.generation, switches: this.switches, endpoints, pairs };
  }
}

/** Applies a delta to the state it was computed from. Throws on a generation mismatch. */
export function applyNodeStateDelta(state: NodeState, d: NodeStateDelta): NodeState {
  const acc = new NodeStateAccumulator(state);
  acc.apply(d);
  return acc.toState();
}
