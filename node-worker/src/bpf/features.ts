/**
 * What this kernel can do, probed once at start and reported in status.
 * The worker refuses to start where sockmap is missing rather than attach
 * programs that could never redirect.
 */
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { libbpf } from './libbpf.js';
import { MAP_TYPE_SOCKHASH } from './maps.js';

export interface KernelFeatures {
  kernel: string;
  btf: boolean;
  bpffs: boolean;
  cgroup2: boolean;
  sockhash: boolean;
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

export function probeKernel(): KernelFeatures {
  return {
    kernel: release(),
    btf: existsSync('/sys/kernel/btf/vmlinux'),
    bpffs: mounted('bpf', '/sys/fs/bpf'),
    cgroup2: mounted('cgroup2'),
    sockhash: probeMap(MAP_TYPE_SOCKHASH, 8, 8, 1),
  };
}

export function missingFeatures(f: KernelFeatures): string[] {
  const missing: string[] = [];
  if (!f.btf) missing.push('kernel BTF (/sys/kernel/btf/vmlinux): CONFIG_DEBUG_INFO_BTF=y');
  if (!f.bpffs) missing.push('bpffs mounted at /sys/fs/bpf');
  if (!f.cgroup2) missing.push('a cgroup v2 mount');
  if (!f.sockhash) missing.push('BPF_MAP_TYPE_SOCKHASH (CONFIG_BPF_STREAM_PARSER=y, kernel >= 4.18)');
  return missing;
}
