/**
 * Loads, pins and attaches the meshlane programs for one node, or re-adopts
 * what an earlier worker pinned, and detaches it all on uninstall.
 *
 * Everything that must outlive the worker is pinned: the maps (so a restart
 * sees the same state and live sockets stay in the sockhash) and the
 * bpf_links (so the programs stay attached while no worker runs; that is the
 * fail-static half of the design). On kernels before 6.10 the sk_msg
 * program is attached to the sockhash itself (no link exists for it); the
 * pinned map keeps it attached just the same, and its program is pinned so
 * that uninstall can detach it.
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap } from './maps.js';
import { BPF_CGROUP_SOCK_OPS, BPF_SK_MSG_VERDICT, BpfError, libbpf, type ObjectPtr } from './libbpf.js';
import { LAYOUTS, MAP_NAMES, MAP_SPECS, ML_LAYOUT_VERSION, configValue, decodeConfig, type MapName } from './layout.js';
import { pinPaths, type PinPaths } from './pins.js';
import type { SkMsgAttach } from './features.js';

export interface Capacity {
  /** Local endpoint IPs (pods x families). */
  endpoints: number;
  /** Sockets that may be accelerated at once. */
  sockets: number;
}

export function capacityForPods(maxPods: number, maxConnections: number): Capacity {
  return { endpoints: Math.max(64, maxPods * 2), sockets: maxConnections };
}

export interface DatapathOptions {
  node: string;
  /** cgroup v2 directory whose sockets the programs see. Needed to attach. */
  cgroup?: string;
  /** Folder with sockops.bpf.o and redirect.bpf.o. */
  objectDir: string;
  pinRoot: string;
  capacity: Capacity;
  /**
   * How the sk_msg program is attached (the worker passes the feature
   * probe's decision). Default: a bpf_link where the kernel has sockmap
   * links, else the classic attach to the map.
   */
  skMsgAttach?: Exclude<SkMsgAttach, 'none'>;
}

export class IncompatiblePinError extends Error {
  override name = 'IncompatiblePinError';
  constructor(readonly differences: string[]) {
    super(`pinned maps do not match this worker's layout: ${differences.join('; ')}`);
  }
}

type Maps = Record<MapName, BpfMap>;

function maxEntriesFor(name: MapName, cap: Capacity): number | undefined {
  switch (name) {
    case 'ml_endpoints':
      return cap.endpoints;
    case 'ml_port_rules':
      return cap.endpoints * 32;
    case 'ml_cidr_exclude':
    case 'ml_cidr_include':
      return cap.endpoints * 8;
    case 'ml_socks':
      return cap.sockets;
    case 'ml_pending':
    case 'ml_links':
      return Math.max(1024, cap.sockets / 2);
    default:
      return undefined;
  }
}

/** Checks pinned maps against what this build expects; names every difference. */
function compatibility(maps: Maps): string[] {
  const diffs: string[] = [];
  for (const [name, spec] of Object.entries(MAP_SPECS) as Array<[keyof typeof MAP_SPECS, (typeof MAP_SPECS)[keyof typeof MAP_SPECS]]>) {
    const m = maps[name];
    const wantKey = spec.key ? LAYOUTS[spec.key]?.size : m.keySize;
    const wantValue = LAYOUTS[spec.value]?.size;
    if (wantKey !== undefined && m.keySize !== wantKey) diffs.push(`${name} KeySize: ${m.keySize} changed to ${wantKey}`);
    if (wantValue !== undefined && m.valueSize !== wantValue) diffs.push(`${name} ValueSize: ${m.valueSize} changed to ${wantValue}`);
  }
  const cfg = maps.ml_config.lookup(Buffer.alloc(4));
  if (cfg) {
    const v = decodeConfig(cfg).layoutVersion;
    if (v !== 0 && v !== ML_LAYOUT_VERSION) diffs.push(`layout version: ${v} changed to ${ML_LAYOUT_VERSION}`);
  }
  return diffs;
}

export class Datapath {
  private constructor(
    readonly node: string,
    readonly pins: PinPaths,
    readonly maps: Maps,
    /** true when an earlier worker's pins were re-used. */
    readonly adopted: boolean,
    /** Attachments a half-finished earlier install lacked, made now. */
    readonly repaired: string[] = [],
    /** Programs replaced in place by this build's (an upgrade). */
    readonly upgraded: string[] = [],
    /** Why the pinned maps were re-created (another layout), if they were. */
    readonly recreated: string[] = [],
  ) {}

  /** Both programs attached (by an earlier worker, or this one). */
  static installed(pinRoot: string, node: string): boolean {
    const p = pinPaths(pinRoot, node);
    return existsSync(p.link('sockops')) && skMsgAttached(p);
  }

  /** Opens the pinned maps of an installed node without touching anything. */
  static openPinned(pinRoot: string, node: string): Datapath {
    const pins = pinPaths(pinRoot, node);
    const maps = {} as Maps;
    try {
      for (const name of MAP_NAMES) maps[name] = BpfMap.openPinned(name, pins.map(name));
    } catch (err) {
      for (const m of Object.values(maps)) m.close();
      throw err;
    }
    const diffs = compatibility(maps);
    if (diffs.length) {
      for (const m of Object.values(maps)) m.close();
      throw new IncompatiblePinError(diffs);
    }
    return new Datapath(node, pins, maps, true);
  }

  /**
   * Brings the node's datapath to this build, whatever an earlier worker
   * left:
   *  - nothing: load, attach, pin;
   *  - both programs attached, the same code (kernel program tags match):
   *    re-adopted, nothing in the kernel changes;
   *  - attached, other code (an upgrade): the new programs replace the old
   *    in place (BPF_LINK_UPDATE; a classic sk_msg attach is replaced on the
   *    map), on the same pinned maps, so no connection notices; sockets
   *    already in the sockhash keep the sk_msg program they joined with
   *    until they close;
   *  - one program attached and not the other (a worker killed in between):
   *    the missing one is attached, never doubled;
   *  - pinned maps of another layout: switched off (every further byte goes
   *    over TCP, behind what is queued), detached and unpinned, then
   *    installed afresh; live connections finish over TCP. Never a refusal
   *    that would crash-loop the DaemonSet.
   */
  static install(opts: DatapathOptions): Datapath {
    if (!opts.cgroup) throw new Error('attaching: no cgroup given');
    const pins = pinPaths(opts.pinRoot, opts.node);
    let recreated: string[] = [];
    if (existsSync(pins.map('ml_config'))) {
      try {
        Datapath.openPinned(opts.pinRoot, opts.node).close();
      } catch (err) {
        if (!(err instanceof IncompatiblePinError)) throw err;
        recreated = err.differences;
        Datapath.switchOff(opts.pinRoot, opts.node);
        Datapath.remove(opts.pinRoot, opts.node);
      }
    }
    mkdirSync(pins.maps, { recursive: true });
    mkdirSync(pins.links, { recursive: true });
    const haveSockops = existsSync(pins.link('sockops'));
    const haveSkMsg = skMsgAttached(pins);

    const objects: ObjectPtr[] = [];
    try {
      const sockops = loadObject(join(opts.objectDir, 'sockops.bpf.o'), pins, opts.capacity);
      objects.push(sockops);
      const redirect = loadObject(join(opts.objectDir, 'redirect.bpf.o'), pins, opts.capacity);
      objects.push(redirect);

      const dp = Datapath.openPinned(opts.pinRoot, opts.node);
      const cfg = dp.maps.ml_config.lookup(Buffer.alloc(4));
      if (!cfg || decodeConfig(cfg).layoutVersion === 0) {
        // New maps: everything off until the first desired state lands.
        dp.maps.ml_config.update(Buffer.alloc(4), configValue({ flags: 0, layoutVersion: ML_LAYOUT_VERSION, maxQueued: 0, generation: 0n }));
      }
      const skMsgProg = libbpf.programFd(redirect, 'ml_redirect');
      const sockopsProg = libbpf.programFd(sockops, 'ml_sockops');
      const repaired: string[] = [];
      const upgraded: string[] = [];
      // sk_msg first: a socket that sockops puts in the map must find its verdict program there.
      if (!haveSkMsg) {
        attachSkMsg(skMsgProg, dp.maps.ml_socks.fd, pins, opts.skMsgAttach ?? 'auto');
        if (haveSockops) repaired.push('sk_msg');
      } else if (replaceSkMsg(skMsgProg, dp.maps.ml_socks.fd, pins)) {
        upgraded.push('sk_msg');
      }
      if (!haveSockops) {
        attachSockops(sockopsProg, opts.cgroup, pins.link('sockops'));
        if (haveSkMsg) repaired.push('sockops');
      } else if (replaceLink(pins.link('sockops'), sockopsProg)) {
        upgraded.push('sockops');
      }
      return new Datapath(opts.node, pins, dp.maps, haveSockops && haveSkMsg, repaired, upgraded, recreated);
    } finally {
      // Pinned maps and links keep everything alive without these.
      for (const o of objects) libbpf.closeObject(o);
    }
  }

  /** Clears the kill switch in the pinned config, whatever its layout (flags are its first word in every version). */
  static switchOff(pinRoot: string, node: string): void {
    const pins = pinPaths(pinRoot, node);
    if (!existsSync(pins.map('ml_config'))) return;
    const m = BpfMap.openPinned('ml_config', pins.map('ml_config'));
    try {
      const key = Buffer.alloc(4);
      const cfg = m.lookup(key);
      if (cfg) {
        cfg.writeUInt32LE(0, 0);
        m.update(key, cfg);
      }
    } finally {
      m.close();
    }
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
  }

  /**
   * Detaches both programs and removes every pin of this node. Live sockets
   * leave the sockhash when the map goes and continue over TCP. Callers
   * switch redirects off and let queues drain first (see uninstall.ts).
   */
  static remove(pinRoot: string, node: string): string[] {
    const pins = pinPaths(pinRoot, node);
    const removed: string[] = [];
    const prog = pins.prog('sk_msg');
    if (existsSync(prog)) {
      const pfd = libbpf.objGet(prog);
      const mfd = libbpf.objGet(pins.map('ml_socks'));
      try {
        libbpf.progDetach(pfd, mfd, BPF_SK_MSG_VERDICT);
      } finally {
        libbpf.closeFd(pfd);
        libbpf.closeFd(mfd);
      }
      unlinkSync(prog);
      removed.push(prog);
    }
    for (const link of ['sockops', 'sk_msg'] as const) {
      const path = pins.link(link);
      if (!existsSync(path)) continue;
      const fd = libbpf.objGet(path);
      try {
        libbpf.linkDetach(fd);
      } finally {
        libbpf.closeFd(fd);
      }
      unlinkSync(path);
      removed.push(path);
    }
    for (const dir of [pins.maps, pins.links, pins.progs]) {
      if (!existsSync(dir)) continue;
      for (const f of readdirSync(dir)) {
        unlinkSync(join(dir, f));
        removed.push(join(dir, f));
      }
      rmdirSync(dir);
    }
    if (existsSync(pins.dir)) rmdirSync(pins.dir);
    return removed;
  }
}

function loadObject(path: string, pins: PinPaths, cap: Capacity): ObjectPtr {
  const obj = libbpf.openObject(path);
  try {
    for (const m of libbpf.maps(obj)) {
      const name = libbpf.mapName(m) as MapName;
      if (!MAP_NAMES.includes(name)) continue; // .bss/.rodata and the like
      libbpf.setPinPath(m, pins.map(name));
      const max = maxEntriesFor(name, cap);
      if (max !== undefined) libbpf.setMaxEntries(m, max);
    }
    libbpf.loadObject(obj);
    return obj;
  } catch (err) {
    libbpf.closeObject(obj);
    if (err instanceof BpfError) throw new BpfError(`loading ${path}: ${err.op}`, err.errno);
    throw err;
  }
}

function attachSockops(progFd: number, cgroup: string, pin: string): void {
  const cg = openSync(cgroup, 'r');
  try {
    // A bpf_link, not a legacy attach: it coexists with other sockops
    // programs on the same cgroup (Cilium, Calico) and detaches by itself
    // if its pin and every fd go away.
    const link = libbpf.linkCreate(progFd, cg, BPF_CGROUP_SOCK_OPS);
    try {
      libbpf.pin(link, pin);
    } finally {
      libbpf.closeFd(link);
    }
  } finally {
    closeSync(cg);
  }
}

/** The kernel's tag of a program: a hash of its instructions as loaded (map fds left out), equal for equal code. */
function progTag(fd: number): string {
  return libbpf.objInfo(fd, 256).subarray(8, 16).toString('hex');
}

/** Points a pinned link at newProg if it runs other code; true when it did. */
function replaceLink(pin: string, newProg: number): boolean {
  const link = libbpf.objGet(pin);
  try {
    const old = libbpf.progFdById(libbpf.objInfo(link, 64).readUInt32LE(8));
    try {
      if (progTag(old) === progTag(newProg)) return false;
    } finally {
      libbpf.closeFd(old);
    }
    libbpf.linkUpdate(link, newProg);
    return true;
  } finally {
    libbpf.closeFd(link);
  }
}

/** The sk_msg verdict of this build, in place of another one; true when it replaced one. */
function replaceSkMsg(newProg: number, sockhashFd: number, pins: PinPaths): boolean {
  if (existsSync(pins.link('sk_msg'))) return replaceLink(pins.link('sk_msg'), newProg);
  const pin = pins.prog('sk_msg');
  const old = libbpf.objGet(pin);
  try {
    if (progTag(old) === progTag(newProg)) return false;
  } finally {
    libbpf.closeFd(old);
  }
  // A classic attach of another program to the same map replaces it.
  libbpf.progAttach(newProg, sockhashFd, BPF_SK_MSG_VERDICT);
  unlinkSync(pin);
  libbpf.pin(newProg, pin);
  return true;
}

function skMsgAttached(pins: PinPaths): boolean {
  return existsSync(pins.link('sk_msg')) || existsSync(pins.prog('sk_msg'));
}

function attachSkMsg(progFd: number, sockhashFd: number, pins: PinPaths, how: Exclude<SkMsgAttach, 'none'> | 'auto'): void {
  if (how === 'map') {
    // Before 6.10: the program is attached to the (pinned) map itself.
    mkdirSync(pins.progs, { recursive: true });
    libbpf.progAttach(progFd, sockhashFd, BPF_SK_MSG_VERDICT);
    libbpf.pin(progFd, pins.prog('sk_msg'));
    return;
  }
  // auto: the link if the kernel has sockmap links (6.10+), else the map.
  const link = how === 'auto' ? libbpf.tryLinkCreate(progFd, sockhashFd, BPF_SK_MSG_VERDICT) : libbpf.linkCreate(progFd, sockhashFd, BPF_SK_MSG_VERDICT);
  if (link < 0) return attachSkMsg(progFd, sockhashFd, pins, 'map');
  try {
    libbpf.pin(link, pins.link('sk_msg'));
  } finally {
    libbpf.closeFd(link);
  }
}
