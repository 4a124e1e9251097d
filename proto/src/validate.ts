import { isIP } from 'node:net';
import { ValidationError } from './errors.js';
import { parseCidr } from './ip.js';
import {
  NODE_STATE_API_VERSION,
  NODE_STATE_KIND,
  type CidrSelector,
  type Endpoint,
  type NodeState,
  type Pair,
  type PortSelector,
} from './nodestate.js';

type Json = Record<string, unknown>;

function obj(v: unknown, field: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ValidationError(field, 'must be an object');
  return v as Json;
}

function noUnknown(o: Json, field: string, known: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) throw new ValidationError(`${field}.${k}`, 'unknown field');
  }
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') throw new ValidationError(field, 'must be a non-empty string');
  return v;
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw new ValidationError(field, 'must be true or false');
  return v;
}

function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ValidationError(field, `must be an integer from ${min} to ${max}`);
  }
  return v;
}

function arr(v: unknown, field: string): unknown[] {
  if (!Array.isArray(v)) throw new ValidationError(field, 'must be an array');
  return v;
}

function port(v: unknown, field: string): number {
  return int(v, field, 1, 65535);
}

function ports(v: unknown, field: string): number[] {
  return arr(v, field).map((p, i) => port(p, `${field}[${i}]`));
}

function portSelector(v: unknown, field: string): PortSelector {
  return v === '*' ? '*' : ports(v, field);
}

function cidrs(v: unknown, field: string): string[] {
  return arr(v, field).map((c, i) => {
    const text = str(c, `${field}[${i}]`);
    try {
      parseCidr(text);
    } catch (err) {
      throw new ValidationError(`${field}[${i}]`, (err as Error).message);
    }
    return text;
  });
}

function cidrSelector(v: unknown, field: string): CidrSelector {
  return v === '*' ? '*' : cidrs(v, field);
}

export function checkEndpoint(v: unknown, field: string): Endpoint {
  const o = obj(v, field);
  noUnknown(o, field, ['pod', 'ips', 'proxyUid', 'accelerate', 'appSockets', 'outboundPort', 'inboundPort', 'inbound', 'outbound']);
  const pod = str(o.pod, `${field}.pod`);
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(pod)) {
    throw new ValidationError(`${field}.pod`, 'must be namespace/name');
  }
  const ips = arr(o.ips, `${field}.ips`).map((ip, i) => {
    const text = str(ip, `${field}.ips[${i}]`);
    if (!isIP(text)) throw new ValidationError(`${field}.ips[${i}]`, `not an IP address: ${text}`);
    return text;
  });
  if (ips.length === 0) throw new ValidationError(`${field}.ips`, 'must list at least one IP');
  const inbound = obj(o.inbound, `${field}.inbound`);
  noUnknown(inbound, `${field}.inbound`, ['includePorts', 'excludePorts']);
  const outbound = obj(o.outbound, `${field}.outbound`);
  noUnknown(outbound, `${field}.outbound`, ['excludePorts', 'includeCidrs', 'excludeCidrs']);
  return {
    pod,
    ips,
    proxyUid: int(o.proxyUid, `${field}.proxyUid`, 0, 0xfffffffe),
    accelerate: bool(o.accelerate, `${field}.accelerate`),
    appSockets: bool(o.appSockets, `${field}.appSockets`),
    outboundPort: port(o.outboundPort, `${field}.outboundPort`),
    inboundPort: port(o.inboundPort, `${field}.inboundPort`),
    inbound: {
      includePorts: portSelector(inbound.includePorts, `${field}.inbound.includePorts`),
      excludePorts: ports(inbound.excludePorts, `${field}.inbound.excludePorts`),
    },
    outbound: {
      excludePorts: ports(outbound.excludePorts, `${field}.outbound.excludePorts`),
      includeCidrs: cidrSelector(outbound.includeCidrs, `${field}.outbound.includeCidrs`),
      excludeCidrs: cidrs(outbound.excludeCidrs, `${field}.outbound.excludeCidrs`),
    },
  };
}

/** A pair's shape alone; parseNodeState also checks that both ends exist. */
export function checkPair(v: unknown, field: string): Pair {
  const o = obj(v, field);
  noUnknown(o, field, ['client', 'server']);
  return { client: str(o.client, `${field}.client`), server: str(o.server, `${field}.server`) };
}

function pair(v: unknown, field: string, pods: Set<string>): Pair {
  const { client, server } = checkPair(v, field);
  if (!pods.has(client)) throw new ValidationError(`${field}.client`, `no endpoint ${client} on this node`);
  if (!pods.has(server)) throw new ValidationError(`${field}.server`, `no endpoint ${server} on this node`);
  return { client, server };
}

/**
 * Checks a decoded JSON value against the NodeState contract and returns a
 * typed copy. Throws a ValidationError naming the first bad field; nothing of
 * a refused value is ever applied.
 */
export function parseNodeState(v: unknown, expectNode?: string): NodeState {
  const o = obj(v, '$');
  noUnknown(o, '$', ['apiVersion', 'kind', 'node', 'generation', 'switches', 'endpoints', 'pairs']);
  if (o.apiVersion !== NODE_STATE_API_VERSION) {
    throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}, want ${NODE_STATE_API_VERSION}`);
  }
  if (o.kind !== NODE_STATE_KIND) throw new ValidationError('$.kind', `must be ${NODE_STATE_KIND}`);
  const node = str(o.node, '$.node');
  if (expectNode !== undefined && node !== expectNode) {
    throw new ValidationError('$.node', `state is for node ${node}, this is ${expectNode}`);
  }
  const sw = obj(o.switches, '$.switches');
  noUnknown(sw, '$.switches', ['enabled', 'appSockets', 'maxQueuedBytes']);
  const endpoints = arr(o.endpoints, '$.endpoints').map((e, i) => checkEndpoint(e, `$.endpoints[${i}]`));
  const pods = new Set<string>();
  const ips = new Map<string, string>();
  endpoints.forEach((e, i) => {
    if (pods.has(e.pod)) throw new ValidationError(`$.endpoints[${i}].pod`, `duplicate pod ${e.pod}`);
    pods.add(e.pod);
    e.ips.forEach((ip, j) => {
      const owner = ips.get(ip);
      if (owner) throw new ValidationError(`$.endpoints[${i}].ips[${j}]`, `${ip} is also the IP of ${owner}`);
      ips.set(ip, e.pod);
    });
  });
  const pairs = arr(o.pairs, '$.pairs').map((p, i) => pair(p, `$.pairs[${i}]`, pods));
  return {
    apiVersion: NODE_STATE_API_VERSION,
    kind: NODE_STATE_KIND,
    node,
    generation: int(o.generation, '$.generation', 0, Number.MAX_SAFE_INTEGER),
    switches: {
      enabled: bool(sw.enabled, '$.switches.enabled'),
      appSockets: bool(sw.appSockets, '$.switches.appSockets'),
      maxQueuedBytes: int(sw.maxQueuedBytes, '$.switches.maxQueuedBytes', 0, 0xffffffff),
    },
    endpoints,
    pairs,
  };
}
