/**
 * The NodeState contract as code. Hand-written rather than a schema library
 * because every refusal must name the JSON path of the bad field and the
 * rule it broke (`$.endpoints[3].ips[0]: ...`), the bounds are part of the
 * contract, and the same checks run in the worker on every message: small,
 * dependency-free and exact is what matters here.
 */
import { ValidationError } from './errors.js';
import { canonicalIp, parseCidr } from './ip.js';
import {
  APP_SOCKETS_POLICIES,
  LIMITS,
  NODE_STATE_API_VERSION,
  NODE_STATE_KIND,
  type AppSocketsPolicy,
  type CidrSelector,
  type Endpoint,
  type NodeState,
  type PortSelector,
  type Switches,
} from './nodestate.js';

type Json = Record<string, unknown>;

export function obj(v: unknown, field: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ValidationError(field, 'must be an object');
  return v as Json;
}

export function noUnknown(o: Json, field: string, known: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) throw new ValidationError(`${field}.${k}`, 'unknown field');
  }
}

function str(v: unknown, field: string, maxLength: number): string {
  if (typeof v !== 'string' || v === '') throw new ValidationError(field, 'must be a non-empty string');
  if (v.length > maxLength) throw new ValidationError(field, `longer than ${maxLength} characters`);
  return v;
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw new ValidationError(field, 'must be true or false');
  return v;
}

export function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ValidationError(field, `must be an integer from ${min} to ${max}`);
  }
  return v;
}

export function arr(v: unknown, field: string, max: number): unknown[] {
  if (!Array.isArray(v)) throw new ValidationError(field, 'must be an array');
  if (v.length > max) throw new ValidationError(field, `more than ${max} entries`);
  return v;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A Kubernetes node name (DNS-1123 subdomain). */
export function nodeName(v: unknown, field: string): string {
  const s = str(v, field, LIMITS.nameLength);
  if (!DNS_SUBDOMAIN.test(s)) throw new ValidationError(field, 'must be a DNS-1123 subdomain');
  return s;
}

/** namespace/name of a pod. */
export function podKey(v: unknown, field: string): string {
  const s = str(v, field, LIMITS.namespaceLength + 1 + LIMITS.nameLength);
  const slash = s.indexOf('/');
  const ns = s.slice(0, slash);
  const name = s.slice(slash + 1);
  if (slash < 0 || !DNS_LABEL.test(ns) || ns.length > LIMITS.namespaceLength || !DNS_SUBDOMAIN.test(name) || name.length > LIMITS.nameLength) {
    throw new ValidationError(field, 'must be namespace/name');
  }
  return s;
}

function port(v: unknown, field: string): number {
  return int(v, field, 1, 65535);
}

function ports(v: unknown, field: string): number[] {
  return arr(v, field, LIMITS.portsPerList).map((p, i) => port(p, `${field}[${i}]`));
}

function portSelector(v: unknown, field: string): PortSelector {
  return v === '*' ? '*' : ports(v, field);
}

function cidrs(v: unknown, field: string): string[] {
  return arr(v, field, LIMITS.cidrsPerList).map((c, i) => {
    const text = str(c, `${field}[${i}]`, 64);
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

function ipList(v: unknown, field: string): string[] {
  const ips = arr(v, field, LIMITS.ipsPerEndpoint).map((ip, i) => {
    const text = str(ip, `${field}[${i}]`, 64);
    try {
      // Canonical text only: two spellings of one address would slip past
      // the duplicate-IP check and overwrite each other's map entry.
      canonicalIp(text);
    } catch (err) {
      throw new ValidationError(`${field}[${i}]`, (err as Error).message);
    }
    return text;
  });
  if (ips.length === 0) throw new ValidationError(field, 'must list at least one IP');
  if (ips.length === 2 && ips[0]!.includes(':') === ips[1]!.includes(':')) throw new ValidationError(`${field}[1]`, 'a pod has at most one IP per family');
  return ips;
}

/**
 * Kubernetes uids are RFC 4122 text; kubelet puts them in cgroup names, so
 * anything else (a path separator, a glob) is refused rather than looked up.
 * The control plane applies the same rule before a pod becomes an endpoint.
 */
export function isPodUid(text: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(text);
}

function podUid(v: unknown, field: string): string {
  const text = str(v, field, 36);
  if (!isPodUid(text)) throw new ValidationError(field, 'must be a lower-case RFC 4122 uid, as metadata.uid');
  return text;
}

function appSocketsPolicy(v: unknown, field: string): AppSocketsPolicy {
  if (typeof v !== 'string' || !(APP_SOCKETS_POLICIES as readonly string[]).includes(v)) throw new ValidationError(field, `must be one of ${APP_SOCKETS_POLICIES.join(', ')}`);
  return v as AppSocketsPolicy;
}

export function checkEndpoint(v: unknown, field: string): Endpoint {
  const o = obj(v, field);
  noUnknown(o, field, ['pod', 'uid', 'ips', 'proxyUid', 'accelerate', 'appSockets', 'outboundPort', 'inboundPort', 'inbound', 'outbound']);
  // In the order of the fields, so the first bad one is the one named.
  const pod = podKey(o.pod, `${field}.pod`);
  const uid = podUid(o.uid, `${field}.uid`);
  const ips = ipList(o.ips, `${field}.ips`);
  const inbound = obj(o.inbound, `${field}.inbound`);
  noUnknown(inbound, `${field}.inbound`, ['includePorts', 'excludePorts']);
  const outbound = obj(o.outbound, `${field}.outbound`);
  noUnknown(outbound, `${field}.outbound`, ['excludePorts', 'includeCidrs', 'excludeCidrs']);
  return {
    pod,
    uid,
    ips,
    proxyUid: int(o.proxyUid, `${field}.proxyUid`, 0, 0xfffffffe),
    accelerate: bool(o.accelerate, `${field}.accelerate`),
    appSockets: appSocketsPolicy(o.appSockets, `${field}.appSockets`),
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

export function checkSwitches(v: unknown, field: string): Switches {
  const sw = obj(v, field);
  noUnknown(sw, field, ['enabled', 'appSockets', 'maxQueuedBytes']);
  return {
    enabled: bool(sw.enabled, `${field}.enabled`),
    appSockets: bool(sw.appSockets, `${field}.appSockets`),
    maxQueuedBytes: int(sw.maxQueuedBytes, `${field}.maxQueuedBytes`, 0, 0xffffffff),
  };
}

/** Throws naming the second claimant when two endpoints share a pod key or an IP. */
export function checkUnique(endpoints: readonly Endpoint[], field: string): void {
  const pods = new Set<string>();
  const ips = new Map<string, string>();
  endpoints.forEach((e, i) => {
    if (pods.has(e.pod)) throw new ValidationError(`${field}[${i}].pod`, `duplicate pod ${e.pod}`);
    pods.add(e.pod);
    e.ips.forEach((ip, j) => {
      const owner = ips.get(ip);
      if (owner) throw new ValidationError(`${field}[${i}].ips[${j}]`, `${ip} is also the IP of ${owner}`);
      ips.set(ip, e.pod);
    });
  });
}

/**
 * Checks a decoded JSON value against the NodeState contract and returns a
 * typed copy. Throws a ValidationError naming the first bad field; nothing of
 * a refused value is ever applied.
 */
export function parseNodeState(v: unknown, expectNode?: string): NodeState {
  const o = obj(v, '$');
  noUnknown(o, '$', ['apiVersion', 'kind', 'node', 'generation', 'switches', 'endpoints']);
  if (o.apiVersion !== NODE_STATE_API_VERSION) {
    throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}, want ${NODE_STATE_API_VERSION}`);
  }
  if (o.kind !== NODE_STATE_KIND) throw new ValidationError('$.kind', `must be ${NODE_STATE_KIND}`);
  const node = nodeName(o.node, '$.node');
  if (expectNode !== undefined && node !== expectNode) {
    throw new ValidationError('$.node', `state is for node ${node}, this is ${expectNode}`);
  }
  const switches = checkSwitches(o.switches, '$.switches');
  const endpoints = arr(o.endpoints, '$.endpoints', LIMITS.endpoints).map((e, i) => checkEndpoint(e, `$.endpoints[${i}]`));
  checkUnique(endpoints, '$.endpoints');
  return {
    apiVersion: NODE_STATE_API_VERSION,
    kind: NODE_STATE_KIND,
    node,
    generation: int(o.generation, '$.generation', 0, Number.MAX_SAFE_INTEGER),
    switches,
    endpoints,
  };
}
