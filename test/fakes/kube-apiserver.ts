/**
 * A protocol-faithful fake kube-apiserver for core/v1 Pods, Nodes and Namespaces.
 *
 * It speaks the list/watch protocol the way the real apiserver (etcd3 store + watch cache) does, so
 * that real clients run against it unmodified:
 *  - lists carry `kind: PodList`, `apiVersion: v1`, `metadata.resourceVersion`; items carry their own
 *    resourceVersion (and, like the real server, no kind/apiVersion);
 *  - paginated lists (`limit`, `continue`) as the etcd3 store serves them: items in key order
 *    (namespace/name), every page of one list read at the first page's revision (a consistent
 *    snapshot, whatever changed since), `metadata.continue` = base64url of
 *    {"v":"meta.k8s.io/v1","rv":<list RV>,"start":"<last key>\u0000"} and `metadata.remainingItemCount`
 *    while more items follow; a continue token whose revision was compacted away answers
 *    410 Expired "The provided continue parameter is too old ..." (with the real message and the
 *    rv=-1 "inconsistent continuation" token in its metadata); `continue` with a resourceVersion
 *    other than "0" is 400; resourceVersion "0" (or a NotOlderThan match) is served from the "watch
 *    cache": the current state, `limit` ignored; resourceVersionMatch=Exact (or a resourceVersion
 *    with a limit) reads that revision, 410 when compacted;
 *  - etcd compaction: revisions older than `compactionIntervalMs` are compacted (the latest revision
 *    written before that stays readable, as with kube-apiserver's periodic compactor);
 *  - list bodies are streamed: items are written as the socket drains, never built as one string
 *    (so a list of any size can be served, and a client that cannot take it fails on its own side);
 *  - `?watch=true&resourceVersion=N` streams newline-delimited `{"type","object"}` events with
 *    resourceVersion > N; RV "" or "0" first replays the current state as synthetic ADDED events;
 *  - one global, monotonically increasing resourceVersion (like etcd's revision);
 *  - a bounded event history (the watch cache): a watch from an RV older than the history gets HTTP
 *    200 followed by an ERROR event carrying a Status `code: 410, reason: Expired`, then the stream ends;
 *  - BOOKMARK events (only kind/apiVersion/metadata.resourceVersion) every `bookmarkIntervalMs`
 *    when `allowWatchBookmarks=true`;
 *  - `timeoutSeconds` ends the stream cleanly;
 *  - optional bearer-token authentication (401 Status otherwise).
 *
 * Each object is kept as its serialized JSON bytes (written once, on create/update), which keeps the
 * fake cheap at 100,000 realistic pods: lists and watches write bytes instead of re-serializing.
 *
 * Fault injection: compactHistory(), compactStorage(), dropWatches(), pauseWatches(),
 * failNextRequests(), hangNextRequests(), corruptNextLists(); option ignoreLimit.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, randomUUID } from 'node:crypto';
import { FakeLeases } from './leases.js';
import { injectedPod } from '../controlplane/fixtures/injected-pods.js';

export type FakeKind = 'Pod' | 'Node' | 'Namespace';

export interface FakeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  [k: string]: unknown;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** One version of one object, immutable once written. */
interface Stored {
  kind: FakeKind;
  key: string;
  namespace: string | undefined;
  rv: number;
  uid: string;
  creationTimestamp: string;
  /**
   * "," then the object as a list item (UTF-8 JSON starting with `{"metadata":`, no kind/apiVersion):
   * a list writes these bytes as they are, the first item without its comma.
   */
  bytes: Buffer;
}

function encodeItem(o: unknown): Buffer {
  return Buffer.from(`,${JSON.stringify(o)}`, 'utf8');
}

/** The item's JSON text. */
function itemJson(s: Stored): string {
  return s.bytes.toString('utf8', 1);
}

interface HistoryEntry {
  rv: number;
  type: WatchEventType;
  object: Stored;
}

/** One write, for reading older revisions (what etcd's MVCC keeps until compaction). */
interface Change {
  rv: number;
  kind: FakeKind;
  key: string;
  /** The object before this write; undefined when the write created it. */
  prev: Stored | undefined;
  at: number;
}

interface Watcher {
  kind: FakeKind;
  namespace: string | undefined;
  bookmarks: boolean;
  paused: boolean;
  req: IncomingMessage;
  res: ServerResponse;
  timeout: NodeJS.Timeout | undefined;
}

export interface RequestRecord {
  watch: boolean;
  path: string;
  resourceVersion: string | undefined;
  query: Record<string, string>;
  /** HTTP status. */
  status: number;
  /** A watch answered with an ERROR event 410 Expired (HTTP status stays 200, like the real server). */
  expired: boolean;
  /** A list: the items it returned. */
  items?: number;
}

/** Restricts an injected fault to some requests. */
export interface RequestMatch {
  path?: string;
  watch?: boolean;
  /** Only list requests carrying a continue token (true) or only first pages (false). */
  continued?: boolean;
}

export type ListCorruption = 'not-json' | 'truncated';

export interface FakeApiServerOptions {
  /** Events kept for watch resumption (the watch cache); older RVs get 410 Gone. Default 1000. */
  historySize?: number;
  /** Period of BOOKMARK events to watchers that allow them. Default 1000 ms; 0 disables. */
  bookmarkIntervalMs?: number;
  /** When set, every request must carry `Authorization: Bearer <token>`. */
  token?: string;
  /** First resourceVersion handed out. Default 1000. */
  initialResourceVersion?: number;
  /**
   * etcd compaction: revisions older than this are compacted, so continue tokens (and exact-RV
   * lists) from before get 410. Default 5 minutes (kube-apiserver's --etcd-compaction-interval).
   */
  compactionIntervalMs?: number;
  /** Serve every list whole, whatever `limit` says (a server or proxy without chunking). */
  ignoreLimit?: boolean;
}

const NAMESPACED: Record<FakeKind, boolean> = { Pod: true, Node: false, Namespace: false };

/** The etcd3 store's messages (staging/src/k8s.io/apiserver/pkg/storage/etcd3/errors.go). */
const CONTINUE_EXPIRED_INCONSISTENT =
  'The provided continue parameter is too old to display a consistent list result. You can start a new list without ' +
  'the continue parameter, or use the continue token in this response to retrieve the remainder of the results. ' +
  'Continuing with the provided token results in an inconsistent list - objects that were created, modified, or ' +
  'deleted between the time the first chunk was returned and now may show up in the list.';
const LIST_EXPIRED = 'The resourceVersion for the provided list is too old.';

function status(code: number, reason: string, message: string, metadata: Record<string, unknown> = {}): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata, status: 'Failure', message, reason, code };
}

function keyOf(kind: FakeKind, ns: string | undefined, name: string): string {
  return NAMESPACED[kind] ? `${ns ?? ''}/${name}` : name;
}

/** Key order as etcd has it: bytes (keys are ASCII, so UTF-16 code unit order is the same). */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** First index in sorted `keys` whose key is >= k. */
function lowerBound(keys: readonly string[], k: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((keys[mid] ?? '') < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function encodeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64url');
}

/** A continue token as the etcd3 store decodes it (storage.DecodeContinue); throws with its messages. */
function decodeContinue(token: string): { rv: number; start: string } {
  if (!/^[A-Za-z0-9_-]*$/.test(token)) throw new Error('continue key is not valid: illegal base64 data');
  let c: unknown;
  try {
    c = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch (err) {
    throw new Error(`continue key is not valid: ${(err as Error).message}`);
  }
  const t = (typeof c === 'object' && c !== null ? c : {}) as { v?: unknown; rv?: unknown; start?: unknown };
  if (t.v !== 'meta.k8s.io/v1') throw new Error(`continue key is not valid: server does not recognize this encoded version ${String(t.v)}`);
  if (typeof t.rv !== 'number' || !Number.isInteger(t.rv) || t.rv === 0) {
    throw new Error('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
  }
  if (typeof t.start !== 'string' || t.start === '') throw new Error('continue key is not valid: encoded start key empty (version meta.k8s.io/v1)');
  // As path.Clean would: a start key cannot climb out of the listed prefix.
  if (t.start.split('/').some((seg) => seg === '..' || seg === '.')) throw new Error(`continue key is not valid: ${t.start}`);
  return { rv: t.rv, start: t.start };
}

/** The object with kind and apiVersion first, as single GETs and watch events carry it. */
function withKind(s: Stored): string {
  return `{"kind":"${s.kind}","apiVersion":"v1",${s.bytes.toString('utf8', 2)}`;
}

export class FakeKubeApiServer {
  /** coordination.k8s.io/v1 Leases, for leader election. */
  readonly leases = new FakeLeases();
  private readonly server: Server;
  private readonly objects = new Map<FakeKind, Map<string, Stored>>([
    ['Pod', new Map()],
    ['Node', new Map()],
    ['Namespace', new Map()],
  ]);
  /** Keys per kind in etcd order, rebuilt lazily (appends and removals only mark it unsorted). */
  private readonly keyIndex = new Map<FakeKind, { keys: string[]; sorted: boolean; removed: boolean }>([
    ['Pod', { keys: [], sorted: true, removed: false }],
    ['Node', { keys: [], sorted: true, removed: false }],
    ['Namespace', { keys: [], sorted: true, removed: false }],
  ]);
  private readonly history: HistoryEntry[] = [];
  /** Watches from an RV strictly below this are answered 410 Gone. */
  private oldestWatchableRv: number;
  /** Writes since the compaction point, oldest first, from index changesHead on. */
  private changes: Change[] = [];
  private changesHead = 0;
  /** Revisions strictly below this are compacted (etcd). */
  private compactedRv: number;
  private rv: number;
  private readonly watchers = new Set<Watcher>();
  private readonly historySize: number;
  private readonly compactionIntervalMs: number;
  private readonly token: string | undefined;
  private readonly ignoreLimit: boolean;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  private failures: { count: number; code: number; match: RequestMatch } = { count: 0, code: 500, match: {} };
  private corruptions: { count: number; mode: ListCorruption; match: RequestMatch } = { count: 0, mode: 'not-json', match: {} };
  private hangs = 0;
  private port = 0;
  /** Every API request served, in order. */
  readonly requests: RequestRecord[] = [];

  private constructor(opts: FakeApiServerOptions) {
    this.historySize = opts.historySize ?? 1000;
    this.compactionIntervalMs = opts.compactionIntervalMs ?? 5 * 60_000;
    this.token = opts.token;
    this.ignoreLimit = opts.ignoreLimit ?? false;
    this.rv = opts.initialResourceVersion ?? 1000;
    this.oldestWatchableRv = this.rv;
    this.compactedRv = this.rv;
    this.server = createServer((req, res) => this.handle(req, res));
    const every = opts.bookmarkIntervalMs ?? 1000;
    if (every > 0) {
      this.bookmarkTimer = setInterval(() => this.sendBookmarks(), every);
      this.bookmarkTimer.unref();
    }
  }

  static async start(opts: FakeApiServerOptions = {}): Promise<FakeKubeApiServer> {
    const s = new FakeKubeApiServer(opts);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', reject);
      s.server.listen(0, '127.0.0.1', () => resolve());
    });
    s.port = (s.server.address() as AddressInfo).port;
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The current global resourceVersion. */
  resourceVersion(): string {
    return String(this.rv);
  }

  /** Open (including paused) watch connections. */
  openWatches(kind?: FakeKind): number {
    let n = 0;
    for (const w of this.watchers) if (!kind || w.kind === kind) n++;
    return n;
  }

  /** Objects of a kind currently stored. */
  count(kind: FakeKind): number {
    return this.store(kind).size;
  }

  /** Kubeconfig YAML pointing at this server (bearer token if the server requires one). */
  kubeconfig(): string {
    const user = this.token ? `{ token: "${this.token}" }` : '{}';
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: fake',
      '  cluster:',
      `    server: ${this.url}`,
      // The client refuses plain http unless TLS verification is explicitly skipped.
      '    insecure-skip-tls-verify: true',
      'contexts:',
      '- name: fake',
      '  context: { cluster: fake, user: fake }',
      'current-context: fake',
      'users:',
      '- name: fake',
      `  user: ${user}`,
      '',
    ].join('\n');
  }

  // ---------------------------------------------------------------- test API: objects

  create(obj: FakeObject): FakeObject {
    const kind = this.kindOf(obj);
    const ns = NAMESPACED[kind] ? (obj.metadata.namespace ?? 'default') : undefined;
    const key = keyOf(kind, ns, obj.metadata.name);
    if (this.store(kind).has(key)) throw new Error(`${kind} ${key} already exists`);
    const uid = obj.metadata.uid ?? randomUUID();
    const creationTimestamp = obj.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    return this.write('ADDED', kind, key, ns, uid, creationTimestamp, obj);
  }

  update(obj: FakeObject): FakeObject {
    const kind = this.kindOf(obj);
    const key = keyOf(kind, obj.metadata.namespace ?? (NAMESPACED[kind] ? 'default' : undefined), obj.metadata.name);
    const old = this.store(kind).get(key);
    if (!old) throw new Error(`${kind} ${key} not found`);
    return this.write('MODIFIED', kind, key, old.namespace, old.uid, old.creationTimestamp, obj);
  }

  remove(kind: FakeKind, ns: string | undefined, name: string): void {
    const key = keyOf(kind, ns, name);
    const store = this.store(kind);
    const old = store.get(key);
    if (!old) throw new Error(`${kind} ${key} not found`);
    store.delete(key);
    const idx = this.index(kind);
    idx.removed = true;
    // The DELETED event carries the object's last state at the deletion's revision.
    const rv = ++this.rv;
    const last = JSON.parse(itemJson(old)) as FakeObject;
    last.metadata.resourceVersion = String(rv);
    const gone: Stored = { ...old, rv, bytes: encodeItem(last) };
    this.record(kind, key, old);
    this.emit('DELETED', gone);
  }

  get(kind: FakeKind, ns: string | undefined, name: string): FakeObject | undefined {
    const o = this.store(kind).get(keyOf(kind, ns, name));
    return o ? this.materialize(o) : undefined;
  }

  // ---------------------------------------------------------------- test API: faults

  /** Forget the whole watch event history: any watch from an RV below the current one gets 410 Gone. */
  compactHistory(): void {
    this.history.length = 0;
    this.oldestWatchableRv = this.rv;
  }

  /** Compact storage (etcd) to the current revision: every outstanding continue token expires. */
  compactStorage(): void {
    this.compactedRv = this.rv;
    this.changes = [];
    this.changesHead = 0;
  }

  /** Abruptly destroy every open watch connection (no clean end of stream). */
  dropWatches(): void {
    for (const w of [...this.watchers]) {
      this.forget(w);
      w.req.socket.destroy();
    }
  }

  /** Keep every currently open watch connection open but silent forever (no events, no bookmarks, no timeout). */
  pauseWatches(): void {
    for (const w of this.watchers) {
      w.paused = true;
      if (w.timeout) clearTimeout(w.timeout);
      w.timeout = undefined;
    }
  }

  /** The next `count` API requests (lists or watches, or only those matching `match`) fail with HTTP `code`. */
  failNextRequests(count: number, code = 500, match: RequestMatch = {}): void {
    this.failures = { count, code, match };
  }

  /** The next `count` API requests never get an answer (the connection stays open). */
  hangNextRequests(count: number): void {
    this.hangs = count;
  }

  /**
   * The next `count` list responses (matching `match`) are broken: 'not-json' answers 200 with an
   * HTML page (what a misbehaving proxy sends), 'truncated' ends the body cleanly halfway through.
   */
  corruptNextLists(count: number, mode: ListCorruption = 'not-json', match: RequestMatch = {}): void {
    this.corruptions = { count, mode, match };
  }

  async close(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    for (const w of [...this.watchers]) this.forget(w);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---------------------------------------------------------------- internals: storage

  private kindOf(obj: FakeObject): FakeKind {
    const k = obj.kind;
    if (k === 'Pod' || k === 'Node' || k === 'Namespace') return k;
    throw new Error(`unsupported kind ${String(k)}`);
  }

  private store(kind: FakeKind): Map<string, Stored> {
    const s = this.objects.get(kind);
    if (!s) throw new Error(`no store for ${kind}`);
    return s;
  }

  private index(kind: FakeKind): { keys: string[]; sorted: boolean; removed: boolean } {
    const i = this.keyIndex.get(kind);
    if (!i) throw new Error(`no index for ${kind}`);
    return i;
  }

  /** Current keys of a kind, sorted. */
  private sortedKeys(kind: FakeKind): readonly string[] {
    const idx = this.index(kind);
    if (idx.removed) {
      const store = this.store(kind);
      idx.keys = idx.keys.filter((k) => store.has(k));
      idx.removed = false;
    }
    if (!idx.sorted) {
      // Mostly sorted with a tail of appended keys: cheap for the engine's merge sort.
      idx.keys.sort(cmp);
      // A key removed and created again before a sort was appended twice.
      let w = 0;
      for (let r = 0; r < idx.keys.length; r++) {
        const k = idx.keys[r] as string;
        if (w === 0 || idx.keys[w - 1] !== k) idx.keys[w++] = k;
      }
      idx.keys.length = w;
      idx.sorted = true;
    }
    return idx.keys;
  }

  private write(type: WatchEventType, kind: FakeKind, key: string, ns: string | undefined, uid: string, creationTimestamp: string, obj: FakeObject): FakeObject {
    const rv = ++this.rv;
    const { kind: _k, apiVersion: _a, metadata: inMeta, ...rest } = obj;
    const metadata: FakeObject['metadata'] = { ...inMeta, uid, creationTimestamp, resourceVersion: String(rv) };
    if (ns !== undefined) metadata.namespace = ns;
    else delete metadata.namespace;
    const stored: Stored = { kind, key, namespace: ns, rv, uid, creationTimestamp, bytes: encodeItem({ metadata, ...rest }) };
    const store = this.store(kind);
    const prev = store.get(key);
    store.set(key, stored);
    if (!prev) {
      const idx = this.index(kind);
      const last = idx.keys[idx.keys.length - 1];
      if (last !== undefined && last >= key) idx.sorted = false;
      idx.keys.push(key);
    }
    this.record(kind, key, prev);
    this.emit(type, stored);
    // A copy that shares nothing with what is stored (that is a string) and little with the input.
    return { ...rest, apiVersion: 'v1', kind, metadata: { ...metadata } };
  }

  private materialize(s: Stored): FakeObject {
    const o = JSON.parse(itemJson(s)) as FakeObject;
    return { apiVersion: 'v1', kind: s.kind, ...o };
  }

  /** Remember a write for reads at older revisions; compact what is older than the window. */
  private record(kind: FakeKind, key: string, prev: Stored | undefined): void {
    const now = Date.now();
    this.changes.push({ rv: this.rv, kind, key, prev, at: now });
    this.compactOld(now);
  }

  private compactOld(now = Date.now()): void {
    const horizon = now - this.compactionIntervalMs;
    while (this.changesHead < this.changes.length) {
      const c = this.changes[this.changesHead] as Change;
      if (c.at > horizon) break;
      // The state after this write stays readable; everything before it is gone.
      this.compactedRv = c.rv;
      this.changesHead++;
    }
    if (this.changesHead > 4096 && this.changesHead * 2 > this.changes.length) {
      this.changes = this.changes.slice(this.changesHead);
      this.changesHead = 0;
    }
  }

  /** For keys of `kind` written after revision `rv`: their state at `rv` (undefined = absent). */
  private changedSince(kind: FakeKind, rv: number): Map<string, Stored | undefined> {
    const out = new Map<string, Stored | undefined>();
    let lo = this.changesHead;
    let hi = this.changes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.changes[mid] as Change).rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.changes.length; i++) {
      const c = this.changes[i] as Change;
      if (c.kind === kind && !out.has(c.key)) out.set(c.key, c.prev);
    }
    return out;
  }

  /**
   * One page of a list read at revision `rv`: keys in [from, end) in key order, at most `limit`
   * items (0 = all), whether more follow, and how many.
   */
  private readPage(kind: FakeKind, rv: number, from: string, end: string, limit: number): { items: Stored[]; more: boolean; remaining: number } {
    const store = this.store(kind);
    const keys = this.sortedKeys(kind);
    const changed = rv >= this.rv ? new Map<string, Stored | undefined>() : this.changedSince(kind, rv);
    // Keys that existed at rv but are gone now are not in `keys`: merge them in.
    const extra = [...changed.keys()].filter((k) => !store.has(k) && k >= from && k < end).sort(cmp);
    const at = (k: string): Stored | undefined => (changed.has(k) ? changed.get(k) : store.get(k));
    const items: Stored[] = [];
    let i = lowerBound(keys, from);
    let j = 0;
    let more = false;
    let lastKey = '';
    while (i < keys.length || j < extra.length) {
      const a = keys[i];
      const b = extra[j];
      let k: string;
      if (a !== undefined && (b === undefined || a < b)) {
        k = a;
        i++;
      } else {
        k = b as string;
        j++;
      }
      // Extra keys are all < end, so the first key at or past it ends the range.
      if (k >= end) break;
      const s = at(k);
      if (!s) continue;
      if (limit > 0 && items.length >= limit) {
        more = true;
        break;
      }
      items.push(s);
      lastKey = k;
    }
    let remaining = 0;
    if (more) {
      // Items at rv after lastKey: current keys in range, corrected for what changed since.
      remaining = lowerBound(keys, end) - lowerBound(keys, `${lastKey}\u0000`);
      for (const [k, s] of changed) {
        if (k <= lastKey || k >= end) continue;
        remaining += (s ? 1 : 0) - (store.has(k) ? 1 : 0);
      }
    }
    return { items, more, remaining };
  }

  // ---------------------------------------------------------------- internals: watch

  private emit(type: WatchEventType, object: Stored): void {
    this.history.push({ rv: object.rv, type, object });
    while (this.history.length > this.historySize) {
      const dropped = this.history.shift();
      if (dropped) this.oldestWatchableRv = dropped.rv;
    }
    for (const w of this.watchers) {
      if (w.paused || w.kind !== object.kind) continue;
      if (w.namespace !== undefined && object.namespace !== w.namespace) continue;
      this.writeEvent(w, type, object);
    }
  }

  private sendBookmarks(): void {
    for (const w of this.watchers) {
      if (w.paused || !w.bookmarks) continue;
      this.writeLine(w, JSON.stringify({ type: 'BOOKMARK', object: { kind: w.kind, apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) } } }));
    }
  }

  private writeEvent(w: Watcher, type: WatchEventType, o: Stored): void {
    this.writeLine(w, `{"type":"${type}","object":${withKind(o)}}`);
  }

  private writeLine(w: Watcher, line: string): void {
    if (w.res.writableEnded || w.res.destroyed) return;
    w.res.write(line + '\n');
  }

  private forget(w: Watcher): void {
    if (w.timeout) clearTimeout(w.timeout);
    w.timeout = undefined;
    this.watchers.delete(w);
  }

  // ---------------------------------------------------------------- internals: HTTP

  private sendJson(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private route(pathname: string): { kind: FakeKind; namespace?: string; name?: string } | undefined {
    const p = pathname.replace(/\/+$/, '').split('/').slice(1); // ['api','v1',...]
    if (p[0] !== 'api' || p[1] !== 'v1') return undefined;
    const r = p.slice(2);
    if (r.length === 1 && r[0] === 'pods') return { kind: 'Pod' };
    if (r[0] === 'nodes' && r.length <= 2) return { kind: 'Node', ...(r[1] ? { name: r[1] } : {}) };
    if (r[0] === 'namespaces') {
      if (r.length <= 2) return { kind: 'Namespace', ...(r[1] ? { name: r[1] } : {}) };
      if (r[2] === 'pods' && r.length <= 4 && r[1]) return { kind: 'Pod', namespace: r[1], ...(r[3] ? { name: r[3] } : {}) };
    }
    return undefined;
  }

  private matches(m: RequestMatch, path: string, watch: boolean, continued: boolean): boolean {
    return (m.path === undefined || m.path === path) && (m.watch === undefined || m.watch === watch) && (m.continued === undefined || m.continued === continued);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const q = url.searchParams;
    const watch = q.get('watch') === 'true' || q.get('watch') === '1';
    const continued = (q.get('continue') ?? '') !== '';
    const record: RequestRecord = { watch, path: url.pathname, resourceVersion: q.get('resourceVersion') ?? undefined, query: Object.fromEntries(q), status: 200, expired: false };
    this.requests.push(record);
    const fail = (code: number, reason: string, message: string, metadata: Record<string, unknown> = {}): void => {
      record.status = code;
      this.sendJson(res, code, status(code, reason, message, metadata));
    };

    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
      return fail(401, 'Unauthorized', 'Unauthorized');
    }
    if (this.hangs > 0) {
      this.hangs--;
      record.status = 0;
      return;
    }
    if (this.failures.count > 0 && this.matches(this.failures.match, url.pathname, watch, continued)) {
      this.failures.count--;
      const code = this.failures.code;
      return fail(code, code === 410 ? 'Expired' : code === 503 ? 'ServiceUnavailable' : code === 429 ? 'TooManyRequests' : 'InternalError', 'injected failure');
    }
    if (this.leases.handle(req, res, url.pathname)) return;
    if (req.method !== 'GET') return fail(405, 'MethodNotAllowed', `${req.method ?? ''} is not supported`);
    const route = this.route(url.pathname);
    if (!route) return fail(404, 'NotFound', 'the server could not find the requested resource');

    if (route.name !== undefined) {
      const o = this.store(route.kind).get(keyOf(route.kind, route.namespace, route.name));
      if (!o) return fail(404, 'NotFound', `${route.kind.toLowerCase()}s "${route.name}" not found`);
      const text = withKind(o);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }

    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) return fail(400, 'BadRequest', `invalid resource version: ${rvParam}`);
    if (!watch) return this.list(route.kind, route.namespace, q, record, res, fail);

    // ---- watch
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const w: Watcher = {
      kind: route.kind,
      namespace: route.namespace,
      bookmarks: q.get('allowWatchBookmarks') === 'true',
      paused: false,
      req,
      res,
      timeout: undefined,
    };
    const matches = (o: Stored): boolean => o.kind === w.kind && (w.namespace === undefined || o.namespace === w.namespace);

    if (rvParam === '' || rvParam === '0') {
      for (const o of this.store(route.kind).values()) if (matches(o)) this.writeEvent(w, 'ADDED', o);
    } else {
      const from = Number(rvParam);
      if (from < this.oldestWatchableRv) {
        record.expired = true;
        this.writeLine(w, JSON.stringify({ type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${from} (${this.oldestWatchableRv})`) }));
        res.end();
        return;
      }
      for (const e of this.history) if (e.rv > from && matches(e.object)) this.writeEvent(w, e.type, e.object);
    }

    this.watchers.add(w);
    const timeoutSeconds = Number(q.get('timeoutSeconds') ?? '0');
    if (timeoutSeconds > 0) {
      w.timeout = setTimeout(() => {
        this.forget(w);
        res.end();
      }, timeoutSeconds * 1000);
    }
    const gone = (): void => this.forget(w);
    req.on('close', gone);
    res.on('close', gone);
  }

  private list(
    kind: FakeKind,
    namespace: string | undefined,
    q: URLSearchParams,
    record: RequestRecord,
    res: ServerResponse,
    fail: (code: number, reason: string, message: string, metadata?: Record<string, unknown>) => void,
  ): void {
    this.compactOld();
    const limitText = q.get('limit') ?? '';
    if (limitText !== '' && !/^\d+$/.test(limitText)) return fail(400, 'BadRequest', `invalid limit: ${limitText}`);
    const limit = this.ignoreLimit ? 0 : Number(limitText || '0');
    const token = q.get('continue') ?? '';
    const rvParam = q.get('resourceVersion') ?? '';
    const match = q.get('resourceVersionMatch') ?? '';
    const invalid = (detail: string): void => fail(422, 'Invalid', `ListOptions.meta.k8s.io "" is invalid: ${detail}`);
    if (match !== '' && rvParam === '') return invalid('resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided');
    if (match !== '' && match !== 'Exact' && match !== 'NotOlderThan') return invalid(`resourceVersionMatch: Unsupported value: "${match}"`);
    // Keys are relative to the listed prefix, as the etcd3 store encodes them in continue tokens.
    const prefix = namespace !== undefined ? `${namespace}/` : '';
    const end = prefix === '' ? '\uffff' : `${prefix}\uffff`;

    let rv = this.rv;
    let from = prefix;
    if (token !== '') {
      if (match !== '') return invalid('resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided');
      if (rvParam !== '' && rvParam !== '0') return fail(400, 'BadRequest', 'specifying resource version is not allowed when using continue');
      let t: { rv: number; start: string };
      try {
        t = decodeContinue(token);
      } catch (err) {
        return fail(400, 'BadRequest', `invalid continue token: ${(err as Error).message}`);
      }
      if (t.rv > 0 && t.rv < this.compactedRv) {
        return fail(410, 'Expired', CONTINUE_EXPIRED_INCONSISTENT, { continue: encodeContinue(-1, t.start) });
      }
      // rv -1: the "inconsistent continuation" a 410 offers, read at the latest revision.
      rv = t.rv > 0 ? Math.min(t.rv, this.rv) : this.rv;
      from = prefix + t.start;
    } else if (rvParam !== '') {
      const n = Number(rvParam);
      if (n > this.rv) return fail(504, 'Timeout', `Too large resource version: ${n}, current: ${this.rv}`);
      const exact = match === 'Exact' || (match === '' && limit > 0 && n > 0);
      if (exact) {
        if (n < this.compactedRv) return fail(410, 'Expired', LIST_EXPIRED);
        rv = n;
      } else {
        // Served from the watch cache: its current state, and (as the watch cache does) whole.
        return this.sendList(kind, res, record, this.readPage(kind, this.rv, from, end, 0), this.rv, undefined);
      }
    }
    const page = this.readPage(kind, rv, from, end, limit);
    const last = page.items[page.items.length - 1];
    const next = page.more && last ? encodeContinue(rv, `${last.key.slice(prefix.length)}\u0000`) : undefined;
    this.sendList(kind, res, record, page, rv, next);
  }

  private sendList(kind: FakeKind, res: ServerResponse, record: RequestRecord, page: { items: Stored[]; more: boolean; remaining: number }, rv: number, next: string | undefined): void {
    record.items = page.items.length;
    const meta: Record<string, unknown> = { resourceVersion: String(rv) };
    if (next !== undefined) {
      meta.continue = next;
      meta.remainingItemCount = page.remaining;
    }
    const head = `{"kind":"${kind}List","apiVersion":"v1","metadata":${JSON.stringify(meta)},"items":[`;
    let corrupt: ListCorruption | undefined;
    const continued = record.query.continue !== undefined && record.query.continue !== '';
    if (this.corruptions.count > 0 && this.matches(this.corruptions.match, record.path, false, continued)) {
      this.corruptions.count--;
      corrupt = this.corruptions.mode;
    }
    if (corrupt === 'not-json') {
      const html = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n';
      res.writeHead(200, { 'Content-Type': 'text/html', 'Content-Length': Buffer.byteLength(html) });
      res.end(html);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    const items = corrupt === 'truncated' ? page.items.slice(0, Math.ceil(page.items.length / 2)) : page.items;
    void this.stream(res, head, items, corrupt === 'truncated' ? '' : ']}');
  }

  /** Writes the items as the socket takes them, so no list is ever built in memory. */
  private async stream(res: ServerResponse, head: string, items: readonly Stored[], tail: string): Promise<void> {
    res.write(head);
    // Items go out in ~64 KB HTTP chunks, as a real server's buffered writer sends them.
    let group: Buffer[] = [];
    let size = 0;
    for (let i = 0; i <= items.length; i++) {
      const s = items[i];
      if (s) {
        const b = i === 0 ? s.bytes.subarray(1) : s.bytes;
        group.push(b);
        size += b.length;
      }
      if (size < 64 * 1024 && s) continue;
      if (res.destroyed) return;
      const ok = group.length === 0 || res.write(group.length === 1 ? (group[0] as Buffer) : Buffer.concat(group, size));
      group = [];
      size = 0;
      if (!ok) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    if (!res.destroyed) res.end(tail);
  }
}

// ------------------------------------------------------------------ fixtures with real shapes

export interface PodFixture {
  namespace?: string;
  name: string;
  node?: string;
  ip?: string;
  phase?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Add an injected istio-proxy sidecar and istio-init. Default true. */
  sidecar?: boolean;
  /** metadata.uid; default: derived from namespace/name, as stable as the name. */
  uid?: string;
}

function derivedUid(key: string): string {
  const h = createHash('sha256').update(key).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export function podFixture(f: PodFixture): FakeObject {
  const ns = f.namespace ?? 'default';
  const sidecar = f.sidecar ?? true;
  const containers: Record<string, unknown>[] = [
    {
      name: 'app',
      image: 'docker.io/library/nginx:1.27',
      ports: [{ containerPort: 8080, protocol: 'TCP' }],
      resources: {},
      terminationMessagePath: '/dev/termination-log',
      terminationMessagePolicy: 'File',
      imagePullPolicy: 'IfNotPresent',
    },
  ];
  if (sidecar) {
    containers.push({
      name: 'istio-proxy',
      image: 'docker.io/istio/proxyv2:1.24.0',
      args: ['proxy', 'sidecar', '--domain', `${ns}.svc.cluster.local`],
      ports: [{ containerPort: 15090, name: 'http-envoy-prom', protocol: 'TCP' }],
      securityContext: { runAsUser: 1337, runAsGroup: 1337, runAsNonRoot: true },
      resources: {},
      imagePullPolicy: 'IfNotPresent',
    });
  }
  const annotations: Record<string, string> = sidecar
    ? {
        'sidecar.istio.io/status':
          '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null}',
        'kubectl.kubernetes.io/default-container': 'app',
      }
    : {};
  const running = (f.phase ?? 'Running') === 'Running';
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: f.name,
      namespace: ns,
      uid: f.uid ?? derivedUid(`${ns}/${f.name}`),
      labels: { app: f.name.replace(/-[a-z0-9]+$/, ''), ...(sidecar ? { 'security.istio.io/tlsMode': 'istio' } : {}), ...f.labels },
      annotations: { ...annotations, ...f.annotations },
      ownerReferences: [],
    },
    spec: {
      ...(f.node ? { nodeName: f.node } : {}),
      ...(sidecar
        ? {
            initContainers: [
              {
                name: 'istio-init',
                image: 'docker.io/istio/proxyv2:1.24.0',
                args: ['istio-iptables', '-p', '15001', '-z', '15006', '-u', '1337', '-m', 'REDIRECT', '-i', '*', '-x', '', '-b', '*', '-d', '15090,15021,15020'],
                securityContext: { capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] }, runAsUser: 0, runAsNonRoot: false },
              },
            ],
          }
        : {}),
      containers,
      restartPolicy: 'Always',
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: 'default',
      schedulerName: 'default-scheduler',
      terminationGracePeriodSeconds: 30,
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
      priority: 0,
    },
    status: {
      phase: f.phase ?? 'Running',
      conditions: [
        { type: 'PodScheduled', status: f.node ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: '2025-01-01T00:00:00Z' },
        { type: 'Ready', status: running ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: '2025-01-01T00:00:05Z' },
      ],
      ...(f.node ? { hostIP: '172.18.0.2', hostIPs: [{ ip: '172.18.0.2' }] } : {}),
      ...(f.ip ? { podIP: f.ip, podIPs: [{ ip: f.ip }] } : {}),
      startTime: '2025-01-01T00:00:00Z',
      qosClass: 'BestEffort',
    },
  };
}

export interface RealisticPodFixture {
  name: string;
  namespace?: string;
  node: string;
  ip: string;
  /** The Deployment (and ReplicaSet) the pod belongs to; default: the name without its last two parts. */
  workload?: string;
}

type Json = Record<string, unknown>;

/** Merge keys of the lists Pod fields use (the `k:{...}` entries of a FieldsV1 set). */
const MERGE_KEYS: Record<string, (item: Json) => Json | undefined> = {
  containers: (x) => ({ name: x.name }),
  initContainers: (x) => ({ name: x.name }),
  env: (x) => ({ name: x.name }),
  volumes: (x) => ({ name: x.name }),
  volumeMounts: (x) => ({ mountPath: x.mountPath }),
  ports: (x) => ({ containerPort: x.containerPort, protocol: x.protocol ?? 'TCP' }),
  conditions: (x) => ({ type: x.type }),
  podIPs: (x) => ({ ip: x.ip }),
  hostIPs: (x) => ({ ip: x.ip }),
  ownerReferences: (x) => ({ uid: x.uid }),
};

/** The FieldsV1 set of a value, as server-side apply records it in managedFields. */
function fieldsV1(v: unknown, key?: string): Json {
  if (Array.isArray(v)) {
    const mk = key !== undefined ? MERGE_KEYS[key] : undefined;
    if (!mk || v.some((x) => typeof x !== 'object' || x === null)) return {}; // atomic list
    const out: Json = {};
    for (const x of v as Json[]) out[`k:${JSON.stringify(mk(x))}`] = { '.': {}, ...fieldsV1(x) };
    return out;
  }
  if (typeof v === 'object' && v !== null) {
    const out: Json = {};
    for (const [k, x] of Object.entries(v as Json)) {
      out[`f:${k}`] = typeof x === 'object' && x !== null && !Array.isArray(x) ? { '.': {}, ...fieldsV1(x, k) } : fieldsV1(x, k);
    }
    return out;
  }
  return {};
}

/**
 * A running pod as a real apiserver returns it after `istioctl kube-inject` (native-sidecar template,
 * from test/controlplane/fixtures/injected-pods.ts), owned by a ReplicaSet, with the defaults the
 * apiserver fills in, a kubelet-written status and the managedFields of kube-controller-manager and
 * kubelet: about 14 KB of JSON, half of it managedFields.
 */
export function realisticPodFixture(f: RealisticPodFixture): FakeObject {
  const ns = f.namespace ?? 'default';
  const workload = f.workload ?? (f.name.split('-').slice(0, -2).join('-') || f.name);
  const rs = `${workload}-5d7b9c6f4`;
  const base = structuredClone(injectedPod()) as unknown as { metadata: Json; spec: Json; status: Json };
  const labels = { ...(base.metadata.labels as Record<string, string>), app: workload, 'pod-template-hash': '5d7b9c6f4' };
  const annotations = base.metadata.annotations as Record<string, string>;
  const ownerReferences = [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: rs, uid: randomUUID(), controller: true, blockOwnerDeletion: true }];
  const spec: Json = {
    ...base.spec,
    nodeName: f.node,
    volumes: [
      ...(base.spec.volumes as Json[]),
      { name: 'istio-podinfo', downwardAPI: { items: [{ path: 'labels', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.labels' } }, { path: 'annotations', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.annotations' } }], defaultMode: 420 } },
      { name: 'istio-token', projected: { sources: [{ serviceAccountToken: { audience: 'istio-ca', expirationSeconds: 43200, path: 'istio-token' } }], defaultMode: 420 } },
      { name: 'istiod-ca-cert', configMap: { name: 'istio-ca-root-cert', defaultMode: 420 } },
      { name: 'kube-api-access-7xk2q', projected: { sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }, { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } }, { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } }], defaultMode: 420 } },
    ],
    restartPolicy: 'Always',
    terminationGracePeriodSeconds: 30,
    dnsPolicy: 'ClusterFirst',
    serviceAccountName: 'default',
    serviceAccount: 'default',
    securityContext: {},
    schedulerName: 'default-scheduler',
    tolerations: [
      { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
    ],
    priority: 0,
    enableServiceLinks: true,
    preemptionPolicy: 'PreemptLowerPriority',
  };
  const hex = (n: number): string => randomUUID().replaceAll('-', '').repeat(2).slice(0, n);
  const status: Json = {
    phase: 'Running',
    conditions: ['PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastProbeTime: null, lastTransitionTime: '2025-01-01T00:00:05Z' })),
    hostIP: '172.18.0.3',
    hostIPs: [{ ip: '172.18.0.3' }],
    podIP: f.ip,
    podIPs: [{ ip: f.ip }],
    startTime: '2025-01-01T00:00:00Z',
    initContainerStatuses: [
      { name: 'istio-init', state: { terminated: { exitCode: 0, reason: 'Completed', startedAt: '2025-01-01T00:00:01Z', finishedAt: '2025-01-01T00:00:01Z', containerID: `containerd://${hex(64)}` } }, lastState: {}, ready: true, restartCount: 0, image: 'registry.istio.io/testing/proxyv2:latest', imageID: `registry.istio.io/testing/proxyv2@sha256:${hex(64)}`, containerID: `containerd://${hex(64)}`, started: false },
      { name: 'istio-proxy', state: { running: { startedAt: '2025-01-01T00:00:02Z' } }, lastState: {}, ready: true, restartCount: 0, image: 'registry.istio.io/testing/proxyv2:latest', imageID: `registry.istio.io/testing/proxyv2@sha256:${hex(64)}`, containerID: `containerd://${hex(64)}`, started: true },
    ],
    containerStatuses: [
      { name: 'hello', state: { running: { startedAt: '2025-01-01T00:00:04Z' } }, lastState: {}, ready: true, restartCount: 0, image: 'fake.docker.io/google-samples/hello-go-gke:1.0', imageID: `fake.docker.io/google-samples/hello-go-gke@sha256:${hex(64)}`, containerID: `containerd://${hex(64)}`, started: true },
    ],
    qosClass: 'Burstable',
  };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: f.name,
      generateName: `${rs}-`,
      namespace: ns,
      labels,
      annotations,
      ownerReferences,
      // Last, where the real apiserver's encoder puts it.
      managedFields: [
        { manager: 'kube-controller-manager', operation: 'Update', apiVersion: 'v1', time: '2025-01-01T00:00:00Z', fieldsType: 'FieldsV1', fieldsV1: fieldsV1({ metadata: { generateName: '', labels, annotations, ownerReferences }, spec }) },
        { manager: 'kubelet', operation: 'Update', apiVersion: 'v1', time: '2025-01-01T00:00:05Z', fieldsType: 'FieldsV1', fieldsV1: fieldsV1({ status }), subresource: 'status' },
      ],
    },
    spec,
    status,
  };
}

export function nodeFixture(name: string, internalIp = '172.18.0.2', labels: Record<string, string> = {}): FakeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64', ...labels },
      annotations: { 'node.alpha.kubernetes.io/ttl': '0' },
    },
    spec: { podCIDR: '10.244.0.0/24', podCIDRs: ['10.244.0.0/24'] },
    status: {
      addresses: [
        { type: 'InternalIP', address: internalIp },
        { type: 'Hostname', address: name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastHeartbeatTime: '2025-01-01T00:00:00Z', lastTransitionTime: '2025-01-01T00:00:00Z' }],
      nodeInfo: {
        architecture: 'amd64',
        kernelVersion: '6.8.0',
        kubeletVersion: 'v1.31.0',
        operatingSystem: 'linux',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        containerRuntimeVersion: 'containerd://1.7.18',
        kubeProxyVersion: '',
        machineID: 'm',
        systemUUID: 's',
        bootID: 'b',
      },
    },
  };
}

export function namespaceFixture(name: string, labels: Record<string, string> = {}): FakeObject {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } },
    spec: { finalizers: ['kubernetes'] },
    status: { phase: 'Active' },
  };
}
