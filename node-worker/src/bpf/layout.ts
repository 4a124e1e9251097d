/**
 * TypeScript mirror of bpf/include/meshlane_layout.h. Must be in sync with it:
 * test/datapath/layout.test.ts compares every size and offset here with the
 * BTF of the compiled objects, and ML_LAYOUT_VERSION with the C constant.
 */
import { ipToBytes, bytesToIp } from '@meshlane/proto';

export const ML_LAYOUT_VERSION = 3;

export interface FieldLayout {
  name: string;
  offset: number;
  size: number;
}

export interface StructLayout {
  /** The C struct this mirrors. */
  cName: string;
  size: number;
  fields: FieldLayout[];
}

export const LAYOUTS: Record<string, StructLayout> = {
  ml_addr: { cName: 'ml_addr', size: 16, fields: [{ name: 'w', offset: 0, size: 16 }] },
  ml_endpoint_key: { cName: 'ml_endpoint_key', size: 16, fields: [{ name: 'ip', offset: 0, size: 16 }] },
  ml_endpoint_value: {
    cName: 'ml_endpoint_value',
    size: 32,
    fields: [
      { name: 'cgroup_id', offset: 0, size: 8 },
      { name: 'cgroup_level', offset: 8, size: 4 },
      { name: 'endpoint_id', offset: 12, size: 4 },
      { name: 'proxy_uid', offset: 16, size: 4 },
      { name: 'flags', offset: 20, size: 4 },
      { name: 'outbound_port', offset: 24, size: 2 },
      { name: 'inbound_port', offset: 26, size: 2 },
      { name: 'pad', offset: 28, size: 4 },
    ],
  },
  ml_port_key: {
    cName: 'ml_port_key',
    size: 20,
    fields: [
      { name: 'ip', offset: 0, size: 16 },
      { name: 'port', offset: 16, size: 2 },
      { name: 'direction', offset: 18, size: 1 },
      { name: 'pad', offset: 19, size: 1 },
    ],
  },
  ml_port_value: { cName: 'ml_port_value', size: 4, fields: [{ name: 'action', offset: 0, size: 4 }] },
  ml_cidr_key: {
    cName: 'ml_cidr_key',
    size: 36,
    fields: [
      { name: 'prefixlen', offset: 0, size: 4 },
      { name: 'pod', offset: 4, size: 16 },
      { name: 'dst', offset: 20, size: 16 },
    ],
  },
  ml_cidr_value: { cName: 'ml_cidr_value', size: 4, fields: [{ name: 'action', offset: 0, size: 4 }] },
  ml_config: {
    cName: 'ml_config',
    size: 24,
    fields: [
      { name: 'flags', offset: 0, size: 4 },
      { name: 'layout_version', offset: 4, size: 4 },
      { name: 'max_queued', offset: 8, size: 4 },
      { name: 'pad', offset: 12, size: 4 },
      { name: 'generation', offset: 16, size: 8 },
    ],
  },
  ml_pending_key: {
    cName: 'ml_pending_key',
    size: 8,
    fields: [
      { name: 'client_nxt', offset: 0, size: 4 },
      { name: 'server_nxt', offset: 4, size: 4 },
    ],
  },
  ml_pending_value: {
    cName: 'ml_pending_value',
    size: 64,
    fields: [
      { name: 'cookie', offset: 0, size: 8 },
      { name: 'netns', offset: 8, size: 8 },
      { name: 'local', offset: 16, size: 16 },
      { name: 'remote', offset: 32, size: 16 },
      { name: 'local_port', offset: 48, size: 2 },
      { name: 'remote_port', offset: 50, size: 2 },
      { name: 'uid', offset: 52, size: 4 },
      { name: 'sk', offset: 56, size: 8 },
    ],
  },
  ml_governors: {
    cName: 'ml_governors',
    size: 48,
    fields: [
      { name: 'ip', offset: 0, size: 32 },
      { name: 'cgroup_id', offset: 32, size: 16 },
    ],
  },
  ml_link_value: {
    cName: 'ml_link_value',
    size: 72,
    fields: [
      { name: 'peer', offset: 0, size: 8 },
      { name: 'peer_sk', offset: 8, size: 8 },
      { name: 'hop', offset: 16, size: 4 },
      { name: 'flags', offset: 20, size: 4 },
      { name: 'gov', offset: 24, size: 48 },
    ],
  },
  ml_sock_state: {
    cName: 'ml_sock_state',
    size: 96,
    fields: [
      { name: 'cookie', offset: 0, size: 8 },
      { name: 'peer', offset: 8, size: 8 },
      { name: 'peer_sk', offset: 16, size: 8 },
      { name: 'policy_generation', offset: 24, size: 8 },
      { name: 'pending', offset: 32, size: 8 },
      { name: 'flags', offset: 40, size: 4 },
      { name: 'hop', offset: 44, size: 4 },
      { name: 'gov', offset: 48, size: 48 },
    ],
  },
};

export const EP_ACCELERATE = 1 << 0;
export const EP_INBOUND_ALL_PORTS = 1 << 1;
export const EP_OUTBOUND_ALL_IPS = 1 << 2;
export const EP_APP_ALWAYS = 1 << 3;
export const EP_APP_NEVER = 1 << 4;

export const DIR_INBOUND = 1;
export const DIR_OUTBOUND = 2;
export const PORT_EXCLUDE = 1;
export const PORT_INCLUDE = 2;

export const CFG_ENABLED = 1 << 0;
export const CFG_APP_SOCKETS = 1 << 1;
export const CFG_APP_AUTO = 1 << 2;

/** enum ml_counter, in order. */
export const COUNTERS = [
  'established',
  'not_endpoint',
  'not_candidate',
  'switch_off',
  'opted_out',
  'app_sockets_off',
  'candidate',
  'map_full',
  'ambiguous',
  'no_client',
  'paired_outbound',
  'paired_mesh',
  'paired_inbound',
  'refused_port',
  'refused_cidr',
  'refused_shape',
  'refused_tuple',
  'msg_redirected',
  'bytes_redirected',
  'msg_tcp',
  'bytes_tcp',
  'peer_missing',
  'peer_gone',
  'peer_half_closed',
  'held',
  'resumed',
  'pressure',
  'closed',
  'not_pod',
  'app_blocking',
  'app_probation',
  'evicted',
  'reconnected',
  'not_established',
  'peer_closed',
  'policy_off',
  'peer_blocking',
] as const;
export type CounterName = (typeof COUNTERS)[number];

/** The C enum value names, for the layout test. */
export const COUNTER_ENUM_NAMES = COUNTERS.map((c) => `ML_C_${c.toUpperCase()}`);

/** Maps the worker writes, with the struct of each key and value. */
export const MAP_SPECS = {
  ml_endpoints: { key: 'ml_endpoint_key', value: 'ml_endpoint_value' },
  ml_port_rules: { key: 'ml_port_key', value: 'ml_port_value' },
  ml_cidr_exclude: { key: 'ml_cidr_key', value: 'ml_cidr_value' },
  ml_cidr_include: { key: 'ml_cidr_key', value: 'ml_cidr_value' },
  ml_config: { key: null, value: 'ml_config' },
  ml_pending: { key: 'ml_pending_key', value: 'ml_pending_value' },
  ml_links: { key: null, value: 'ml_link_value' },
} as const;

export type MapName =
  | keyof typeof MAP_SPECS
  | 'ml_counters'
  | 'ml_socks'
  | 'ml_sock_state';

export const MAP_NAMES: readonly MapName[] = [
  'ml_endpoints',
  'ml_port_rules',
  'ml_cidr_exclude',
  'ml_cidr_include',
  'ml_config',
  'ml_counters',
  'ml_pending',
  'ml_links',
  'ml_socks',
  'ml_sock_state',
];

// Encoders: one Buffer per key/value, little-endian host order for integers
// (x86_64 and arm64), network order for addresses.

export const addr = (ip: string): Buffer => ipToBytes(ip);
export const addrText = (b: Buffer): string => bytesToIp(b);

export function endpointKey(ip: string): Buffer {
  return addr(ip);
}

export interface EndpointValue {
  /** The pod cgroup's id (its inode on cgroup2), 0 when not found: then nothing of the pod joins. */
  cgroupId: bigint;
  /** Its depth below the cgroup v2 root. */
  cgroupLevel: number;
  endpointId: number;
  proxyUid: number;
  flags: number;
  outboundPort: number;
  inboundPort: number;
}

export function endpointValue(v: EndpointValue): Buffer {
  const b = Buffer.alloc(32);
  b.writeBigUInt64LE(v.cgroupId, 0);
  b.writeUInt32LE(v.cgroupLevel, 8);
  b.writeUInt32LE(v.endpointId, 12);
  b.writeUInt32LE(v.proxyUid, 16);
  b.writeUInt32LE(v.flags, 20);
  b.writeUInt16LE(v.outboundPort, 24);
  b.writeUInt16LE(v.inboundPort, 26);
  return b;
}

export function decodeEndpointValue(b: Buffer): EndpointValue {
  return {
    cgroupId: b.readBigUInt64LE(0),
    cgroupLevel: b.readUInt32LE(8),
    endpointId: b.readUInt32LE(12),
    proxyUid: b.readUInt32LE(16),
    flags: b.readUInt32LE(20),
    outboundPort: b.readUInt16LE(24),
    inboundPort: b.readUInt16LE(26),
  };
}

export function portKey(ip: string, port: number, direction: number): Buffer {
  const b = Buffer.alloc(20);
  addr(ip).copy(b, 0);
  b.writeUInt16LE(port, 16);
  b.writeUInt8(direction, 18);
  return b;
}

export function u32Value(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v, 0);
  return b;
}

/** prefixBits counts over the 128-bit form of dst; the pod's 128 bits come first. */
export function cidrKey(podIp: string, dst: Buffer, prefixBits: number): Buffer {
  const b = Buffer.alloc(36);
  b.writeUInt32LE(128 + prefixBits, 0);
  addr(podIp).copy(b, 4);
  dst.copy(b, 20);
  return b;
}

export interface ConfigValue {
  flags: number;
  layoutVersion: number;
  maxQueued: number;
  generation: bigint;
}

export function configValue(v: ConfigValue): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(v.flags, 0);
  b.writeUInt32LE(v.layoutVersion, 4);
  b.writeUInt32LE(v.maxQueued, 8);
  b.writeBigUInt64LE(v.generation, 16);
  return b;
}

export function decodeConfig(b: Buffer): ConfigValue {
  return {
    flags: b.readUInt32LE(0),
    layoutVersion: b.readUInt32LE(4),
    maxQueued: b.readUInt32LE(8),
    generation: b.readBigUInt64LE(16),
  };
}
