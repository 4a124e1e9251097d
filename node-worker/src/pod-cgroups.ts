/**
 * Pod uid -> the pod's own cgroup (its id and depth), which the kernel side
 * checks every socket against: an endpoint entry governs a socket only if
 * the socket lives in that cgroup, so an IP a new pod inherits is never
 * governed by the old pod's entry (see ml_endpoint_value).
 *
 * kubelet names the pod cgroup after the uid: `pod<uid>` with the cgroupfs
 * driver, `kubepods[-<qos>]-pod<uid with _>.slice` with systemd, one or two
 * levels below the kubepods cgroup the worker attaches to. A cgroup's id is
 * its kernfs node id, which cgroup2 shows as the directory's inode number.
 */
import { readdirSync, readFileSync, statSync, type Dirent } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';

export interface PodCgroupId {
  id: bigint;
  /** Depth below the root of the cgroup v2 hierarchy (the root is 0). */
  level: number;
  path: string;
}

/** How deep below the attach point a pod cgroup may sit (kubepods/<qos>/pod<uid>). */
const MAX_DEPTH = 3;

/**
 * Depth of the attach cgroup in the v2 hierarchy: the mount's own root
 * within the hierarchy (not "/" inside a cgroup namespace, or for a bind
 * of a subtree) plus the components below the mount point.
 */
export function cgroupLevel(path: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): number {
  const abs = resolve(path);
  let best: { mountPoint: string; root: string } | undefined;
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post || !post.startsWith('cgroup2 ')) continue;
    const f = pre.split(' ');
    const root = unescapeMount(f[3] ?? '/');
    const mountPoint = unescapeMount(f[4] ?? '');
    if ((abs === mountPoint || abs.startsWith(mountPoint.endsWith('/') ? mountPoint : `${mountPoint}/`)) && (!best || mountPoint.length > best.mountPoint.length)) best = { mountPoint, root };
  }
  if (!best) throw new Error(`${path} is not on a cgroup v2 mount`);
  const below = relative(best.mountPoint, abs);
  const parts = (s: string) => s.split(sep).filter((x) => x !== '' && x !== '.').length;
  return parts(best.root) + parts(below);
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The names kubelet gives the cgroup of the pod with this uid. */
export function podCgroupNames(uid: string): { cgroupfs: string; systemdSuffix: string } {
  return { cgroupfs: `pod${uid}`, systemdSuffix: `-pod${uid.replace(/-/g, '_')}.slice` };
}

export class PodCgroups {
  private readonly rootLevel: number;

  constructor(
    /** The kubepods cgroup (the attach point). */
    readonly root: string,
    mountinfo?: string,
  ) {
    this.rootLevel = cgroupLevel(root, mountinfo);
  }

  /**
   * One scan of the tree for every uid asked: pods come and go together
   * with a state change, and a scan of a node's few hundred directories is
   * cheaper than a lookup per pod.
   */
  resolve(uids: Iterable<string>): Map<string, PodCgroupId> {
    const want = new Map<string, string>();
    for (const uid of uids) {
      const n = podCgroupNames(uid);
      want.set(n.cgroupfs, uid);
      want.set(n.systemdSuffix, uid);
    }
    const found = new Map<string, PodCgroupId>();
    if (want.size === 0) return found;
    const walk = (dir: string, depth: number): void => {
      let entries: Dirent[];
      try {
        entries = readdirSync(dir, { withFileTypes: true });
      } catch {
        return; // a pod cgroup removed while we looked
      }
      for (const e of entries) {
        if (!e.isDirectory()) continue;
        const uid = want.get(e.name) ?? systemdUid(e.name, want);
        const path = join(dir, e.name);
        if (uid !== undefined && !found.has(uid)) {
          try {
            found.set(uid, { id: statSync(path, { bigint: true }).ino, level: this.rootLevel + depth, path });
          } catch {
            // gone meanwhile: unresolved, tried again later
          }
          continue;
        }
        if (depth < MAX_DEPTH) walk(path, depth + 1);
      }
    };
    walk(this.root, 1);
    return found;
  }
}

function systemdUid(name: string, want: Map<string, string>): string | undefined {
  const i = name.lastIndexOf('-pod');
  return i >= 0 && name.endsWith('.slice') ? want.get(name.slice(i)) : undefined;
}
