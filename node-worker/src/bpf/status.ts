/** A read-only view of a node's datapath: links, map occupancy, counters. */
import { existsSync } from 'node:fs';
import { libbpf } from './libbpf.js';
import { COUNTERS, MAP_NAMES, decodeConfig, type CounterName, type MapName } from './layout.js';
import type { Datapath } from './datapath.js';
import { MAP_TYPE_SK_STORAGE } from './maps.js';

export interface LinkStatus {
  name: 'sockops' | 'sk_msg';
  /** A bpf_link, or the classic attach of the program to the sockhash (kernels before 6.10). */
  attach: 'link' | 'map';
  pinned: string;
  /** 0 for a classic attach. */
  linkId: number;
  progId: number;
}

export interface MapStatus {
  entries: number | null; // null: not countable from user space (sk_storage)
  max: number;
}

export interface DatapathStatus {
  node: string;
  links: LinkStatus[];
  maps: Record<MapName, MapStatus>;
  counters: Record<CounterName, number>;
  config: { enabled: boolean; appSockets: boolean; maxQueuedBytes: number; generation: number; layoutVersion: number };
}

export function readCounters(dp: Datapath): Record<CounterName, number> {
  const cpus = libbpf.possibleCpus();
  const out = {} as Record<CounterName, number>;
  COUNTERS.forEach((name, i) => {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(i, 0);
    const v = dp.maps.ml_counters.lookup(key, 8 * cpus);
    let sum = 0n;
    for (let c = 0; v && c < cpus; c++) sum += v.readBigUInt64LE(c * 8);
    out[name] = Number(sum);
  });
  return out;
}

function links(dp: Datapath): LinkStatus[] {
  const out: LinkStatus[] = [];
  for (const name of ['sockops', 'sk_msg'] as const) {
    const path = dp.pins.link(name);
    if (!existsSync(path)) continue;
    const fd = libbpf.objGet(path);
    try {
      // struct bpf_link_info: type, id, prog_id.
      const info = libbpf.objInfo(fd, 64);
      out.push({ name, attach: 'link', pinned: path, linkId: info.readUInt32LE(4), progId: info.readUInt32LE(8) });
    } finally {
      libbpf.closeFd(fd);
    }
  }
  const prog = dp.pins.prog('sk_msg');
  if (existsSync(prog)) {
    const fd = libbpf.objGet(prog);
    try {
      // struct bpf_prog_info: type, id.
      out.push({ name: 'sk_msg', attach: 'map', pinned: prog, linkId: 0, progId: libbpf.objInfo(fd, 256).readUInt32LE(4) });
    } finally {
      libbpf.closeFd(fd);
    }
  }
  return out;
}

export function readStatus(dp: Datapath): DatapathStatus {
  const maps = {} as Record<MapName, MapStatus>;
  for (const name of MAP_NAMES) {
    const m = dp.maps[name];
    const countable = m.info.type !== MAP_TYPE_SK_STORAGE && name !== 'ml_config' && name !== 'ml_counters';
    maps[name] = { entries: countable ? m.keys().length : null, max: m.info.maxEntries };
  }
  const cfgRaw = dp.maps.ml_config.lookup(Buffer.alloc(4));
  const cfg = cfgRaw ? decodeConfig(cfgRaw) : { flags: 0, layoutVersion: 0, maxQueued: 0, generation: 0n };
  return {
    node: dp.node,
    links: links(dp),
    maps,
    counters: readCounters(dp),
    config: {
      enabled: (cfg.flags & 1) !== 0,
      appSockets: (cfg.flags & 2) !== 0,
      maxQueuedBytes: cfg.maxQueued,
      generation: Number(cfg.generation),
      layoutVersion: cfg.layoutVersion,
    },
  };
}

export function formatStatus(s: DatapathStatus): string {
  const lines: string[] = [];
  lines.push(`node ${s.node}  generation ${s.config.generation}  enabled ${s.config.enabled}  appSockets ${s.config.appSockets}  maxQueuedBytes ${s.config.maxQueuedBytes}`);
  lines.push('programs:');
  for (const l of s.links) lines.push(`  ${l.name.padEnd(8)} ${l.attach === 'link' ? `link ${l.linkId}` : 'attached to ml_socks'} prog ${l.progId}  ${l.pinned}`);
  if (s.links.length === 0) lines.push('  (none attached)');
  lines.push('maps:');
  for (const [name, m] of Object.entries(s.maps)) {
    const pct = m.entries === null ? '' : `  ${((100 * m.entries) / Math.max(1, m.max)).toFixed(1)}%`;
    lines.push(`  ${name.padEnd(16)} ${String(m.entries ?? '-').padStart(7)} / ${m.max}${pct}`);
  }
  lines.push('counters:');
  for (const [name, v] of Object.entries(s.counters)) lines.push(`  ${name.padEnd(16)} ${v}`);
  return lines.join('\n');
}
