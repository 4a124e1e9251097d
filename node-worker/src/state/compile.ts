/**
 * NodeState -> the exact entries each worker-owned map must hold. Pure: the
 * same state always gives the same entries, which is what makes reconcile
 * idempotent and restarts harmless. Linear: each endpoint's entries come
 * from that endpoint alone (its IPs times its own rules).
 */
import { parseCidr, type Endpoint, type NodeState } from '@meshlane/proto';
import {
  CFG_APP_SOCKETS,
  CFG_ENABLED,
  DIR_INBOUND,
  DIR_OUTBOUND,
  EP_ACCELERATE,
  EP_INBOUND_ALL_PORTS,
  EP_OUTBOUND_ALL_IPS,
  EP_APP_ALWAYS,
  EP_APP_NEVER,
  CFG_APP_AUTO,
  ML_LAYOUT_VERSION,
  PORT_EXCLUDE,
  PORT_INCLUDE,
  cidrKey,
  configValue,
  endpointKey,
  endpointValue,
  portKey,
  u32Value,
} from '../bpf/layout.js';

/** Maps whose whole content the desired state decides. */
export const OWNED_MAPS = ['ml_endpoints', 'ml_port_rules', 'ml_cidr_exclude', 'ml_cidr_include'] as const;
export type OwnedMap = (typeof OWNED_MAPS)[number];

/** hex(key) -> value. Keys stay text until a diff needs their bytes. */
export type Entries = Map<string, Buffer>;
export type DesiredMaps = Record<OwnedMap, Entries>;

export interface Desired {
  maps: DesiredMaps;
  config: Buffer;
  /** Pods whose cgroup was not found: their entries match no socket. */
  unresolved: string[];
}

/** What the worker found out about its node, which the state cannot say. */
export interface NodeFacts {
  /** Pod uid -> its cgroup; a pod missing here has cgroup id 0 (nothing of it joins). */
  podCgroups: ReadonlyMap<string, { id: bigint; level: number }>;
  /** The behaviour probes allow "auto" app sockets on this kernel (non-blocking fds only). */
  appSocketsAuto: boolean;
}

export const NO_FACTS: NodeFacts = { podCgroups: new Map(), appSocketsAuto: false };

/** FNV-1a of the pod name: stable across restarts and workers, so it needs no allocation table. */
export function endpointId(pod: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < pod.length; i++) {
    h ^= pod.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function put(m: Entries, key: Buffer, value: Buffer): void {
  m.set(key.toString('hex'), value);
}

function compileEndpoint(e: Endpoint, maps: DesiredMaps, facts: NodeFacts): boolean {
  const flags =
    (e.accelerate ? EP_ACCELERATE : 0) |
    (e.inbound.includePorts === '*' ? EP_INBOUND_ALL_PORTS : 0) |
    (e.outbound.includeCidrs === '*' ? EP_OUTBOUND_ALL_IPS : 0) |
    (e.appSockets === 'always' ? EP_APP_ALWAYS : e.appSockets === 'never' ? EP_APP_NEVER : 0);
  const cg = facts.podCgroups.get(e.uid);
  const value = endpointValue({
    cgroupId: cg?.id ?? 0n,
    cgroupLevel: cg?.level ?? 0,
    endpointId: endpointId(e.pod),
    proxyUid: e.proxyUid,
    flags,
    outboundPort: e.outboundPort,
    inboundPort: e.inboundPort,
  });
  for (const ip of e.ips) {
    put(maps.ml_endpoints, endpointKey(ip), value);
    const excludedIn = new Set(e.inbound.excludePorts);
    if (e.inbound.includePorts !== '*') {
      for (const p of e.inbound.includePorts) {
        if (!excludedIn.has(p)) put(maps.ml_port_rules, portKey(ip, p, DIR_INBOUND), u32Value(PORT_INCLUDE));
      }
    }
    for (const p of excludedIn) put(maps.ml_port_rules, portKey(ip, p, DIR_INBOUND), u32Value(PORT_EXCLUDE));
    for (const p of e.outbound.excludePorts) put(maps.ml_port_rules, portKey(ip, p, DIR_OUTBOUND), u32Value(PORT_EXCLUDE));
    for (const c of e.outbound.excludeCidrs) {
      const { addr, bits } = parseCidr(c);
      put(maps.ml_cidr_exclude, cidrKey(ip, addr, bits), u32Value(1));
    }
    if (e.outbound.includeCidrs !== '*') {
      for (const c of e.outbound.includeCidrs) {
        const { addr, bits } = parseCidr(c);
        put(maps.ml_cidr_include, cidrKey(ip, addr, bits), u32Value(1));
      }
    }
  }
  return cg !== undefined;
}

export function compileNodeState(state: NodeState, facts: NodeFacts = NO_FACTS): Desired {
  const maps: DesiredMaps = {
    ml_endpoints: new Map(),
    ml_port_rules: new Map(),
    ml_cidr_exclude: new Map(),
    ml_cidr_include: new Map(),
  };
  const unresolved: string[] = [];
  for (const e of state.endpoints) if (!compileEndpoint(e, maps, facts)) unresolved.push(e.pod);
  const config = configValue({
    flags: (state.switches.enabled ? CFG_ENABLED : 0) | (state.switches.appSockets ? CFG_APP_SOCKETS : 0) | (facts.appSocketsAuto ? CFG_APP_AUTO : 0),
    layoutVersion: ML_LAYOUT_VERSION,
    maxQueued: state.switches.maxQueuedBytes,
    generation: BigInt(state.generation),
  });
  return { maps, config, unresolved };
}
