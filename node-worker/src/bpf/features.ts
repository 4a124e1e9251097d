/**
 * What this kernel can do, probed once at start by doing it: a tiny sk_msg
 * program (bpf/src/probe.bpf.c) is loaded, attached to a throwaway sockmap
 * the way the datapath will attach its own, and made to redirect a message
 * between the two ends of a loopback connection; then the receiving socket
 * is asked what the kernel accounted. Nothing is guessed from the version
 * string, because distributions backport (Debian's 6.1 has fixes from 6.13).
 *
 * The decisions are reported in `meshlane-worker status`, the status
 * subject and /metrics; the worker refuses to start, naming the feature,
 * where a required one is missing.
 */
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { BPF_ANY, BPF_SK_MSG_VERDICT, libbpf, type ObjectPtr } from './libbpf.js';
import { fionread, loopbackPair, MSG_DONTWAIT, recvBytes, rmemAlloc, sendBytes } from './loopback.js';
import { MAP_TYPE_SOCKHASH } from './maps.js';

/**
 * How the sk_msg program is attached to the sockhash: a bpf_link (6.10+;
 * pinned, detached by itself when the pin goes) or the classic attach to
 * the map (before 6.10; the program lives as long as the pinned map).
 */
export type SkMsgAttach = 'link' | 'map' | 'none';

/**
 * How flow control sees a peer's unread redirected bytes: sk_rmem_alloc,
 * which counts them since "tcp_bpf: Add sk_rmem_alloc related logic for
 * tcp_bpf ingress redirection" (6.13; 6.1.122 and 5.10 backports), or not
 * at all (older kernels: the hold would never trigger).
 */
export type PeerQueue = 'sk_rmem_alloc' | 'unaccounted' | 'unknown';

export interface KernelFeatures {
  kernel: string;
  btf: boolean;
  bpffs: boolean;
  cgroup2: boolean;
  sockhash: boolean;
  skMsgAttach: SkMsgAttach;
  /** A message written on one end reached the other end's receive queue through the sk_msg redirect. */
  redirect: boolean;
  peerQueue: PeerQueue;
  /**
   * What ioctl(FIONREAD) reports for redirected bytes on a socket with an
   * sk_msg program and no verdict program (apps poll it before reading).
   */
  fionread: 'counts-redirected' | 'misses-redirected' | 'unknown';
  /** Why a probe could not run, if one could not. */
  probeError?: string;
}

function probeMap(type: number, keySize: number, valueSize: number, max: number): boolean {
  const fd = libbpf.tryMapCreate(type, keySize, valueSize, max);
  if (fd < 0) return false;
  libbpf.closeFd(fd);
  return true;
}

function mounted(fstype: string, at?: string): boolean {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => {
      const [, mnt, type] = l.split(' ');
      return type === fstype && (at === undefined || mnt === at);
    });
}

const PROBE_BYTES = 4096;

interface RedirectProbe {
  skMsgAttach: SkMsgAttach;
  redirect: boolean;
  peerQueue: PeerQueue;
  fionread: KernelFeatures['fionread'];
}

/** Loads probe.bpf.o, attaches it, redirects PROBE_BYTES over loopback, measures, and removes every trace. */
function probeRedirect(objectDir: string): RedirectProbe {
  const path = join(objectDir, 'probe.bpf.o');
  let obj: ObjectPtr | undefined;
  let detach: (() => void) | undefined;
  const pair = { close: () => {} };
  try {
    obj = libbpf.openObject(path);
    libbpf.loadObject(obj);
    const prog = libbpf.programFd(obj, 'probe_redirect');
    const byName = new Map(libbpf.maps(obj).map((m) => [libbpf.mapName(m), libbpf.mapFd(m)]));
    const socks = byName.get('probe_socks');
    const counter = byName.get('probe_redirected');
    if (socks === undefined || counter === undefined) throw new Error(`${path}: probe maps missing`);
    let skMsgAttach: SkMsgAttach = 'none';
    const link = libbpf.tryLinkCreate(prog, socks, BPF_SK_MSG_VERDICT);
    if (link >= 0) {
      skMsgAttach = 'link';
      detach = () => libbpf.closeFd(link); // an unpinned link goes with its last fd
    } else {
      libbpf.progAttach(prog, socks, BPF_SK_MSG_VERDICT);
      skMsgAttach = 'map';
      detach = () => libbpf.progDetach(prog, socks, BPF_SK_MSG_VERDICT);
    }
    const lp = loopbackPair();
    pair.close = lp.close;
    const key = Buffer.alloc(4);
    const value = Buffer.alloc(8);
    for (const [i, fd] of [lp.client, lp.server].entries()) {
      key.writeUInt32LE(i, 0);
      value.writeBigUInt64LE(BigInt(fd), 0);
      if (libbpf.update(socks, key, value, BPF_ANY) < 0) throw new Error('cannot add a loopback socket to a sockmap');
    }
    sendBytes(lp.client, PROBE_BYTES);
    const rmem = rmemAlloc(lp.server);
    const readable = fionread(lp.server);
    const got = recvBytes(lp.server, PROBE_BYTES * 2, MSG_DONTWAIT);
    const n = Buffer.alloc(8);
    libbpf.lookup(counter, Buffer.alloc(4), n);
    const redirected = n.readBigUInt64LE(0) >= BigInt(PROBE_BYTES) && got === PROBE_BYTES;
    return {
      skMsgAttach,
      redirect: redirected,
      peerQueue: !redirected ? 'unknown' : rmem >= PROBE_BYTES ? 'sk_rmem_alloc' : 'unaccounted',
      fionread: !redirected ? 'unknown' : readable >= PROBE_BYTES ? 'counts-redirected' : 'misses-redirected',
    };
  } finally {
    pair.close();
    try {
      detach?.();
    } finally {
      if (obj) libbpf.closeObject(obj);
    }
  }
}

export function probeKernel(objectDir?: string): KernelFeatures {
  const base = {
    kernel: release(),
    btf: existsSync('/sys/kernel/btf/vmlinux'),
    bpffs: mounted('bpf', '/sys/fs/bpf'),
    cgroup2: mounted('cgroup2'),
    sockhash: probeMap(MAP_TYPE_SOCKHASH, 8, 8, 1),
  };
  const unknown: RedirectProbe = { skMsgAttach: 'none', redirect: false, peerQueue: 'unknown', fionread: 'unknown' };
  if (objectDir === undefined || !base.sockhash) return { ...base, ...unknown };
  try {
    return { ...base, ...probeRedirect(objectDir) };
  } catch (err) {
    return { ...base, ...unknown, probeError: (err as Error).message };
  }
}

export interface FeatureRequirements {
  /** Flow control is wanted (a queue limit); without accounting it would never hold. */
  flowControl: boolean;
}

/** What this kernel lacks for the datapath, each item naming the feature. */
export function missingFeatures(f: KernelFeatures, req: FeatureRequirements = { flowControl: true }): string[] {
  const missing: string[] = [];
  if (!f.btf) missing.push('kernel BTF (/sys/kernel/btf/vmlinux): CONFIG_DEBUG_INFO_BTF=y');
  if (!f.bpffs) missing.push('bpffs mounted at /sys/fs/bpf');
  if (!f.cgroup2) missing.push('a cgroup v2 mount');
  if (!f.sockhash) missing.push('BPF_MAP_TYPE_SOCKHASH (CONFIG_BPF_STREAM_PARSER=y, kernel >= 4.18)');
  if (f.sockhash && f.skMsgAttach === 'none') missing.push(`attaching an sk_msg program to a sockmap (neither a bpf_link nor BPF_SK_MSG_VERDICT${f.probeError ? `: ${f.probeError}` : ''})`);
  if (f.skMsgAttach !== 'none' && !f.redirect) missing.push('sk_msg redirect into a peer socket (bpf_msg_redirect_map with BPF_F_INGRESS did not deliver)');
  if (req.flowControl && f.peerQueue === 'unaccounted') {
    missing.push(
      'redirected bytes counted in sk_rmem_alloc (tcp_bpf ingress accounting: 6.13, backported to 6.1.122 and 5.10.y); without it flow control cannot see a slow reader. Run with --allow-unbounded-queues to accelerate anyway',
    );
  }
  return missing;
}

/** One line per decision, for logs and `meshlane-worker status`. */
export function formatFeatures(f: KernelFeatures): string {
  return [
    `kernel ${f.kernel}: BTF ${f.btf ? 'yes' : 'no'}, sockhash ${f.sockhash ? 'yes' : 'no'}`,
    `  sk_msg attach: ${f.skMsgAttach === 'link' ? 'bpf_link (6.10+)' : f.skMsgAttach === 'map' ? 'classic attach to the sockhash (no sockmap links before 6.10)' : 'NONE'}`,
    `  redirect: ${f.redirect ? 'works' : 'DOES NOT WORK'}`,
    `  peer queue (flow control): ${f.peerQueue === 'sk_rmem_alloc' ? 'sk_rmem_alloc counts redirected bytes' : f.peerQueue === 'unaccounted' ? 'NOT COUNTED: flow control cannot hold a slow reader' : 'unknown'}`,
    `  FIONREAD on redirected bytes: ${f.fionread}`,
    ...(f.probeError ? [`  probe error: ${f.probeError}`] : []),
  ].join('\n');
}
