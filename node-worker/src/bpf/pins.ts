/**
 * Where a node's pinned objects live: /sys/fs/bpf/meshlane/<node>/{maps,links,progs}.
 * links/ holds bpf_links; progs/ holds a program attached the classic way
 * (the sk_msg verdict before 6.10 has no link): pinned so that uninstall
 * can name it to detach it.
 */
import { join } from 'node:path';

export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/meshlane';

export interface PinPaths {
  dir: string;
  maps: string;
  links: string;
  progs: string;
  map(name: string): string;
  link(name: 'sockops' | 'sk_msg'): string;
  prog(name: 'sk_msg'): string;
}

export function pinPaths(root: string, node: string): PinPaths {
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node)) throw new Error(`node name ${JSON.stringify(node)} is not a DNS-1123 name`);
  const dir = join(root, node);
  const maps = join(dir, 'maps');
  const links = join(dir, 'links');
  const progs = join(dir, 'progs');
  return { dir, maps, links, progs, map: (n) => join(maps, n), link: (n) => join(links, n), prog: (n) => join(progs, n) };
}
