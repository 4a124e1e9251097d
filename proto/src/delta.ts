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

/** Applies a delta to the state it was computed from. Throws on a generation mismatch. */
export function applyNodeStateDelta(state: NodeState, d: NodeStateDelta): NodeState {
  if (d.node !== state.node) throw new Error(`delta for node ${d.node} applied to ${state.node}`);
  if (d.fromGeneration !== state.generation) {
    throw new Error(`delta from generation ${d.fromGeneration} applied to generation ${state.generation}`);
  }
  const removed = new Set(d.removeEndpoints);
  const upserted = new Map(d.upsertEndpoints.map((e) => [e.pod, e]));
  const endpoints = state.endpoints.filter((e) => !removed.has(e.pod) && !upserted.has(e.pod)).concat(d.upsertEndpoints);
  endpoints.sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : 0));
  const gone = new Set(d.removePairs.map(pairKey));
  const pairs = state.pairs.filter((p) => !gone.has(pairKey(p))).concat(d.addPairs);
  pairs.sort(comparePairs);
  return { ...state, generation: d.toGeneration, switches: d.switches ?? state.switches, endpoints, pairs };
}
