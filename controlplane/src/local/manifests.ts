/**
 * A cluster from a folder of Kubernetes manifests (*.yaml, *.yml, *.json;
 * multi-document YAML and `kind: List` allowed): Pods, Nodes and Namespaces,
 * watched for changes. A real mode of the control plane for local runs,
 * demos and clusters without an API server to watch; the rest of the control
 * plane cannot tell it from the informers.
 *
 * A file that does not parse is skipped whole (logged with its path) and
 * what it held before stays, so a half-saved edit deletes nothing.
 *
 * Work is proportional to the change: fs.watch names the file, which is
 * re-read alone once it has been quiet for `debounceMs`, and diffed against
 * what that file held before (each file's objects are kept), so an edit
 * costs that file and a delete removes exactly its objects. The initial scan
 * reads in slices that yield to the event loop, so the ops server answers
 * while a large folder loads, and the source is synced only once every file
 * listed at start has been read. Because watch events can be lost (an
 * inotify queue overflow), a slow resync compares every file's stat
 * signature, and reads only files whose signature moved.
 *
 * An object defined in two files is ambiguous: the file that defined it
 * first wins (logged), and the other takes over when the first drops it.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readdirSync, statSync, watch, type FSWatcher } from 'node:fs';
import { readdir } from 'node:fs/promises';
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
}

interface FileState {
  /** dev:ino:size:mtime when last read: what the resync compares. */
  signature: string;
  /** Of the text last read, so that an event without a change costs no parse. */
  digest: string;
  entries: Map<string, Entry>;
}

const KINDS: readonly Kind[] = ['Pod', 'Node', 'Namespace'];
const EXTENSIONS: readonly string[] = ['.yaml', '.yml', '.json'];

export interface ManifestSourceOptions {
  /** A file is re-read once it has been quiet this long after a change (ms). Default 20. */
  debounceMs?: number;
  /** ...but no later than this after its first change, even if it keeps changing (ms). Default 200. */
  maxDelayMs?: number;
  /** Period of the signature check for changes fs.watch missed (ms; 0: never). Default 30 s. */
  resyncMs?: number;
  /** Longest a scan reads and parses before yielding to the event loop (ms). Default 10. */
  sliceMs?: number;
}

export interface ManifestStats {
  /** Files read (initial scan included). */
  reads: number;
  /** Reads whose text had changed, so were parsed. */
  parses: number;
  /** Files skipped because they did not parse. */
  errors: number;
  /** Signature checks run (periodic, or after a watch event without a file name). */
  resyncs: number;
}

function keyOf(kind: Kind, o: Obj): string {
  const ns = kind === 'Pod' ? `${o.metadata?.namespace ?? 'default'}/` : '';
  return `${kind}/${ns}${o.metadata?.name ?? ''}`;
}

function isManifest(v: unknown): v is Obj & { kind: string } {
  return typeof v === 'object' && v !== null && typeof (v as { kind?: unknown }).kind === 'string';
}

function isManifestFile(name: string): boolean {
  return EXTENSIONS.includes(extname(name)) && !name.startsWith('.');
}

/**
 * Equality of parsed JSON/YAML values, field by field: linear, stops at the
 * first difference, and allocates nothing (unlike comparing serializations).
 */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i], b[i])) return false;
    return true;
  }
  if (a instanceof Date || b instanceof Date) return a instanceof Date && b instanceof Date && a.getTime() === b.getTime();
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let n = 0;
  for (const k in x) {
    if (!Object.prototype.hasOwnProperty.call(x, k)) continue;
    if (!Object.prototype.hasOwnProperty.call(y, k) || !sameJson(x[k], y[k])) return false;
    n++;
  }
  for (const k in y) if (Object.prototype.hasOwnProperty.call(y, k)) n--;
  return n === 0;
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

type ReadResult = { gone: true } | { gone: false; signature: string; text: string };

export class ManifestSource implements ClusterSource {
  private readonly files = new Map<string, FileState>();
  /** Object key -> files defining it, the effective one first. */
  private readonly claims = new Map<string, string[]>();
  private readonly listeners: Record<Kind, Array<(c: Change, o: Obj) => void>> = { Pod: [], Node: [], Namespace: [] };
  private watcher: FSWatcher | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private resyncing = false;
  /** Files changed, waiting for their quiet time: first change and the timer. */
  private readonly due = new Map<string, { first: number; timer: NodeJS.Timeout }>();
  /** Files to read, in order. */
  private readonly toRead = new Set<string>();
  private pumping = false;
  /** Files of the initial scan not read yet: synced once empty. */
  private initial: Set<string> | undefined;
  private done = false;
  private stopped = false;
  private startedAt = 0;
  readonly stats: ManifestStats = { reads: 0, parses: 0, errors: 0, resyncs: 0 };

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
    private readonly o: ManifestSourceOptions = {},
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
    this.startedAt = performance.now();
    // Watching before listing: a file written between the two is seen by one or the other (or both, harmlessly).
    this.watcher = watch(this.dir, (_event, name) => {
      if (name === null) this.resync();
      else if (isManifestFile(name)) this.changed(join(this.dir, name));
    });
    this.watcher.on('error', (err) => this.log.error({ dir: this.dir, err: err.message }, 'watching the manifest folder failed; relying on the resync'));
    this.listInitial();
    const every = this.o.resyncMs ?? 30_000;
    if (every > 0) {
      this.resyncTimer = setInterval(() => this.resync(), every);
      this.resyncTimer.unref();
    }
  }

  /** Like an informer's first list: not synced until it succeeds, retried until then. */
  private listInitial(): void {
    void this.list().then(
      (files) => {
        if (this.stopped) return;
        this.initial = new Set(files);
        for (const f of files) this.toRead.add(f);
        this.pumpSoon();
        this.checkInitial();
      },
      (err: Error) => {
        if (this.stopped) return;
        this.log.error({ dir: this.dir, err: err.message }, 'manifest folder not readable; retrying');
        setTimeout(() => this.listInitial(), 1000).unref();
      },
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    for (const d of this.due.values()) clearTimeout(d.timer);
    this.due.clear();
    this.toRead.clear();
  }

  private async list(): Promise<string[]> {
    return (await readdir(this.dir)).filter(isManifestFile).map((f) => join(this.dir, f));
  }

  private emit(kind: Kind, change: Change, obj: Obj): void {
    for (const cb of this.listeners[kind]) cb(change, obj);
  }

  /** A watch event for one file: read it once it has been quiet for a moment. */
  private changed(path: string): void {
    if (this.stopped) return;
    const now = performance.now();
    const d = this.due.get(path);
    if (d) clearTimeout(d.timer);
    const first = d?.first ?? now;
    // An editor writes in several steps; a file written continuously is still read every maxDelayMs.
    const wait = Math.max(0, Math.min(this.o.debounceMs ?? 20, first + (this.o.maxDelayMs ?? 200) - now));
    const timer = setTimeout(() => {
      this.due.delete(path);
      this.toRead.add(path);
      this.pumpSoon();
    }, wait);
    this.due.set(path, { first, timer });
  }

  private pumpSoon(): void {
    if (this.pumping || this.stopped || this.toRead.size === 0) return;
    this.pumping = true;
    setImmediate(() => {
      this.pumping = false;
      this.pump();
    });
  }

  /**
   * Reads queued files for one slice, then yields. Synchronous reads: a
   * manifest is a few KB on a local disk, where one read costs microseconds
   * and the promise API's file handles cost ten times as much; the slice
   * bounds how long the loop is held.
   */
  private pump(): void {
    const deadline = performance.now() + (this.o.sliceMs ?? 10);
    for (const f of this.toRead) {
      if (this.stopped) return;
      this.toRead.delete(f);
      try {
        this.applyRead(f, this.read(f));
      } catch (err) {
        this.log.error({ path: f, err: (err as Error).message }, 'manifest not readable; keeping what it held before');
      }
      this.initial?.delete(f);
      if (performance.now() >= deadline) break;
    }
    this.checkInitial();
    this.pumpSoon();
  }

  private read(path: string): ReadResult {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { gone: true };
      throw err;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) return { gone: true };
      const text = readFileSync(fd, 'utf8');
      this.stats.reads++;
      return { gone: false, signature: `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`, text };
    } finally {
      closeSync(fd);
    }
  }

  private applyRead(path: string, r: ReadResult): void {
    if (this.stopped) return;
    if (r.gone) {
      const was = this.files.get(path);
      if (was) {
        this.files.delete(path);
        this.replace(path, new Map(), was.entries);
      }
      return;
    }
    const prev = this.files.get(path);
    const digest = createHash('sha1').update(r.text).digest('base64');
    if (prev && prev.digest === digest) {
      prev.signature = r.signature;
      return;
    }
    let next: Map<string, Entry>;
    try {
      this.stats.parses++;
      next = new Map();
      for (const { kind, obj } of parseManifestFile(path, r.text)) next.set(keyOf(kind, obj), { kind, obj });
    } catch (err) {
      this.stats.errors++;
      this.log.error({ err: (err as Error).message }, 'manifest skipped; keeping what it held before');
      // Not remembered as read: the next change (the end of the save) is parsed again.
      return;
    }
    const old = prev?.entries ?? new Map<string, Entry>();
    this.files.set(path, { signature: r.signature, digest, entries: next });
    this.replace(path, next, old);
  }

  /** What one file holds went from `old` to `next`: emit exactly the differences. */
  private replace(path: string, next: Map<string, Entry>, old: Map<string, Entry>): void {
    for (const [k, was] of old) {
      if (next.has(k)) continue;
      const owners = this.claims.get(k);
      if (!owners) continue;
      const i = owners.indexOf(path);
      if (i < 0) continue;
      owners.splice(i, 1);
      if (owners.length === 0) {
        this.claims.delete(k);
        this.emit(was.kind, 'delete', was.obj);
      } else if (i === 0) {
        const heir = this.files.get(owners[0]!)?.entries.get(k);
        if (heir && !sameJson(heir.obj, was.obj)) this.emit(heir.kind, 'upsert', heir.obj);
      }
    }
    for (const [k, e] of next) {
      const owners = this.claims.get(k);
      if (!owners) {
        this.claims.set(k, [path]);
        this.emit(e.kind, 'upsert', e.obj);
        continue;
      }
      const i = owners.indexOf(path);
      if (i < 0) {
        owners.push(path);
        this.log.warn({ object: k, files: owners }, 'object defined in more than one manifest; the first file wins');
        continue;
      }
      if (i !== 0) continue; // another file's definition is the effective one
      const was = old.get(k);
      if (!was || was.kind !== e.kind || !sameJson(was.obj, e.obj)) this.emit(e.kind, 'upsert', e.obj);
    }
  }

  private checkInitial(): void {
    if (this.done || this.stopped || !this.initial || this.initial.size > 0) return;
    this.done = true;
    this.initial = undefined;
    let objects = 0;
    for (const f of this.files.values()) objects += f.entries.size;
    this.log.info({ dir: this.dir, files: this.files.size, objects, ms: Math.round(performance.now() - this.startedAt) }, 'manifests loaded');
  }

  /**
   * The net under fs.watch: files added, removed or changed without an
   * event. Costs a readdir and a stat per file, no reads, unless something
   * did change.
   */
  private resync(): void {
    if (this.resyncing || this.stopped) return;
    this.resyncing = true;
    this.stats.resyncs++;
    let present: string[];
    try {
      present = readdirSync(this.dir).filter(isManifestFile).map((f) => join(this.dir, f));
    } catch (err) {
      this.log.error({ dir: this.dir, err: (err as Error).message }, 'manifest resync failed');
      this.resyncing = false;
      return;
    }
    const there = new Set(present);
    for (const f of this.files.keys()) if (!there.has(f)) this.toRead.add(f); // reads as gone
    let i = 0;
    const step = (): void => {
      const deadline = performance.now() + (this.o.sliceMs ?? 10);
      for (; i < present.length; i++) {
        if (this.stopped) return;
        const f = present[i]!;
        const known = this.files.get(f);
        if (!known) {
          if (!this.due.has(f)) this.toRead.add(f);
        } else {
          try {
            const st = statSync(f);
            if (`${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}` !== known.signature) this.toRead.add(f);
          } catch {
            this.toRead.add(f); // gone meanwhile: the read says so
          }
        }
        if (performance.now() >= deadline) {
          i++;
          setImmediate(step);
          return;
        }
      }
      this.resyncing = false;
      this.pumpSoon();
    };
    step();
  }
}
