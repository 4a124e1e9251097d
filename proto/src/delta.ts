/**
 * A NodeStateDelta takes a worker from one generation of its node's state to
 * the next. Deltas are what flows on the bus; snapshots (whole NodeStates)
 * are what a worker resyncs from when it sees a gap.
 */
import type { Endpoint, NodeState, Switches } from './nodestate.js';

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
  /** Present only when a switch changed. */
  switches?: Switches;
}

function sameList<T>(a: '*' | readonly T[], b: '*' | readonly T[]): boolean {
  if (a === '*' || b === '*') return a === b;
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Field by field, in linear time (no serialization). */
export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return (
    a.pod === b.pod &&
    a.uid === b.uid &&
    a.proxyUid === b.proxyUid &&
    a.accelerate === b.accelerate &&
    a.appSockets === b.appSockets &&
    a.outboundPort === b.outboundPort &&
    a.inboundPort === b.inboundPort &&
    sameList(a.ips, b.ips) &&
    sameList(a.inbound.includePorts, b.inbound.includePorts) &&
    sameList(a.inbound.excludePorts, b.inbound.excludePorts) &&
    sameList(a.outbound.excludePorts, b.outbound.excludePorts) &&
    sameList(a.outbound.includeCidrs, b.outbound.includeCidrs) &&
    sameList(a.outbound.excludeCidrs, b.outbound.excludeCidrs)
  );
}

export function sameSwitches(a: Switches, b: Switches): boolean {
  return a.enabled === b.enabled && a.appSockets === b.appSockets && a.maxQueuedBytes === b.maxQueuedBytes;
}

const byPod = (a: Endpoint, b: Endpoint) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : 0);

/** The minimal delta from prev to next, or undefined when nothing changed. */
export function diffNodeState(prev: NodeState, next: NodeState): NodeStateDelta | undefined {
  const before = new Map(prev.endpoints.map((e) => [e.pod, e]));
  const after = new Set(next.endpoints.map((e) => e.pod));
  const upsertEndpoints = next.endpoints.filter((e) => {
    const old = before.get(e.pod);
    return !old || !sameEndpoint(old, e);
  });
  const removeEndpoints = prev.endpoints.filter((e) => !after.has(e.pod)).map((e) => e.pod);
  const switchesChanged = !sameSwitches(prev.switches, next.switches);
  if (!upsertEndpoints.length && !removeEndpoints.length && !switchesChanged) return undefined;
  return {
    apiVersion: next.apiVersion,
    kind: NODE_STATE_DELTA_KIND,
    node: next.node,
    fromGeneration: prev.generation,
    toGeneration: next.generation,
    upsertEndpoints,
    removeEndpoints,
    ...(switchesChanged ? { switches: next.switches } : {}),
  };
}

/**
 * A node state being advanced by many deltas in a row (a worker catching
 * up, a new leader replaying the stream): endpoints are kept in a map, so
 * each delta costs its own size, not the state's, and the sorted NodeState
 * is built once at the end.
 */
export class NodeStateAccumulator {
  private readonly endpoints: Map<string, Endpoint>;
  private generation: number;
  private switches: Switches;

  constructor(private readonly base: NodeState) {
    this.endpoints = new Map(base.endpoints.map((e) => [e.pod, e]));
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
    if (d.switches) this.switches = d.switches;
    this.generation = d.toGeneration;
  }

  toState(): NodeState {
    return { ...this.base, generation: this.generation, switches: this.switches, endpoints: [...this.endpoints.values()].sort(byPod) };
  }
}

/** Applies a delta to the state it was computed from. Throws on a generation mismatch. */
export function applyNodeStateDelta(state: NodeState, d: NodeStateDelta): NodeState {
  const acc = new NodeStateAccumulator(state);
  acc.apply(d);
  return acc.toState();
}
