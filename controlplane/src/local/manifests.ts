/**
 * A cluster from a folder of Kubernetes manifests (*.yaml, *.yml, *.json;
 * multi-document YAML and `kind: List` allowed): Pods, Nodes and Namespaces,
 * watched for changes. A real mode of the control plane for local runs,
 * demos and clusters without an API server to watch; the rest of the control
 * plane cannot tell it from the informers.
 *
 * A file that does not parse is skipped whole (logged with its path) and
 * what it held before stays, so a half-saved edit deletes nothing.
 */
import { readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { extname, join } from 'node:path';
import type { V1Namespace, V1Node, V1Pod } from '@kubernetes/client-node';
import { loadAll } from 'js-yaml';
import type { Logger } from 'pino';
import type { Change, ClusterSource } from '../source.js';

type Kind = 'Pod' | 'Node' | 'Namespace';
type Obj = V1Pod | V1Node | V1Namespace;

interface Entry {
  kind: Kind;
  obj: Obj;
  text: string;
}

const KINDS: readonly Kind[] = ['Pod', 'Node', 'Namespace'];

function keyOf(kind: Kind, o: Obj): string {
  const ns = kind === 'Pod' ? `${o.metadata?.namespace ?? 'default'}/` : '';
  return `${kind}/${ns}${o.metadata?.name ?? ''}`;
}

function isManifest(v: unknown): v is Obj & { kind: string } {
  return typeof v === 'object' && v !== null && typeof (v as { kind?: unknown }).kind === 'string';
}

/** Parses one file into its Pods, Nodes and Namespaces; throws naming the file. */
export function parseManifestFile(path: string, text: string): Array<{ kind: Kind; obj: Obj }> {
  let docs: unknown[];
  try {
    docs = extname(path) === '.json' ? [JSON.parse(text)] : loadAll(text);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message.split('\n')[0]}`);
  }
  const out: Array<{ kind: Kind; obj: Obj }> = [];
  const add = (d: unknown, where: string) => {
    if (d === null || d === undefined) return;
    if (!isManifest(d)) throw new Error(`${where}: not a Kubernetes object (no kind)`);
    if (d.kind === 'List') {
      const items = (d as { items?: unknown[] }).items ?? [];
      items.forEach((item, i) => add(item, `${where}.items[${i}]`));
      return;
    }
    if (!KINDS.includes(d.kind as Kind)) return; // Services, Deployments...: not ours
    if (!d.metadata?.name) throw new Error(`${where}: ${d.kind} without metadata.name`);
    out.push({ kind: d.kind as Kind, obj: d });
  };
  docs.forEach((d, i) => add(d, `${path}[${i}]`));
  return out;
}

export class ManifestSource implements ClusterSource {
  private readonly byFile = new Map<string, Map<string, Entry>>();
  private readonly listeners: Record<Kind, Array<(c: Change, o: Obj) => void>> = { Pod: [], Node: [], Namespace: [] };
  private watcher: FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private done = false;
  private readonly mtimes = new Map<string, number>();

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  onPod(cb: (change: Change, pod: V1Pod) => void): void {
    this.listeners.Pod.push(cb as (c: Change, o: Obj) => void);
  }

  onNode(cb: (change: Change, node: V1Node) => void): void {
    this.listeners.Node.push(cb as (c: Change, o: Obj) => void);
  }

  onNamespace(cb: (change: Change, ns: V1Namespace) => void): void {
    this.listeners.Namespace.push(cb as (c: Change, o: Obj) => void);
  }

  synced(): boolean {
    return this.done;
  }

  start(): void {
    this.scan();
    this.done = true;
    this.log.info({ dir: this.dir, objects: [...this.byFile.values()].reduce((n, m) => n + m.size, 0) }, 'manifests loaded');
    // fs.watch for promptness, a slow poll because watch events can be missed.
    this.watcher = watch(this.dir, () => this.scan());
    this.poll = setInterval(() => this.scan(), 1000);
    this.poll.unref();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
  }

  private files(): string[] {
    return readdirSync(this.dir)
      .filter((f) => ['.yaml', '.yml', '.json'].includes(extname(f)) && !f.startsWith('.'))
      .map((f) => join(this.dir, f));
  }

  private emit(kind: Kind, change: Change, obj: Obj): void {
    for (const cb of this.listeners[kind]) cb(change, obj);
  }

  /** Re-reads changed files and emits the differences, level-triggered. */
  private scan(): void {
    const present = new Set(this.files());
    const before = this.merged();
    for (const f of present) {
      let mtime: number;
      try {
        mtime = statSync(f).mtimeMs;
      } catch {
        continue; // removed between readdir and stat
      }
      if (this.mtimes.get(f) === mtime) continue;
      this.mtimes.set(f, mtime);
      try {
        const entries = new Map<string, Entry>();
        for (const { kind, obj } of parseManifestFile(f, readFileSync(f, 'utf8'))) {
          entries.set(keyOf(kind, obj), { kind, obj, text: JSON.stringify(obj) });
        }
        this.byFile.set(f, entries);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'manifest skipped; keeping what it held before');
      }
    }
    for (const f of [...this.byFile.keys()]) {
      if (!present.has(f)) {
        this.byFile.delete(f);
        this.mtimes.delete(f);
      }
    }
    const after = this.merged();
    for (const [k, e] of after) {
      const old = before.get(k);
      if (!old || old.text !== e.text) this.emit(e.kind, 'upsert', e.obj);
    }
    for (const [k, e] of before) if (!after.has(k)) this.emit(e.kind, 'delete', e.obj);
  }

  private merged(): Map<string, Entry> {
    const out = new Map<string, Entry>();
    for (const m of this.byFile.values()) for (const [k, e] of m) out.set(k, e);
    return out;
  }
}
