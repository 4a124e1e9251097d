/**
 * One resource's informer: a paginated list, then a watch through a GuardedWatch, with its own cache.
 *
 * The library's ListWatch is not used: it lists in one unpaginated request (a 100,000-pod list is
 * ~1.5 GB of JSON, past what one JavaScript string can hold, so it failed and relisted forever) and
 * keeps every object fully deserialized (~40 KB per pod). Here:
 *  - the list is read in pages (`limit`, `continue`) of `pageSize` objects; each page is reduced to
 *    the fields the projection needs before it is parsed (json-select.ts; on a worker thread when
 *    there is one, select-pool.ts), and its items are parsed, projected and delivered one by one;
 *    a page's continue token is read from its first bytes, so up to PAGES_AHEAD pages are on their
 *    way while one is delivered; the event loop is given back between batches of objects, so a long
 *    list never blocks it for long;
 *  - all pages of one list are one snapshot (the first page's resourceVersion); when its continue
 *    token has expired (410), the list starts again from the beginning; when a list fails half-way
 *    (network, 5xx, timeout) it resumes from its last continue token after the backoff;
 *  - a page larger than `maxPageBytes` is abandoned while downloading and asked for again with half
 *    the limit; a response that cannot be read (not JSON, not a list, too large even for one object)
 *    is an error with a message naming the list and page, followed by the usual backoff, never by an
 *    immediate relist;
 *  - consumers get each object's projection (projection.ts) once, on upsert or delete; the cache
 *    keeps only its identity (metadata name/namespace/uid/resourceVersion), which is all that a
 *    relist needs to report deletes and skip unchanged objects;
 *  - after an error the informer restarts after a capped, jittered exponential backoff; it resumes
 *    from its last resourceVersion, or relists when it has none;
 *  - a 410 Gone (ERROR event or HTTP status) on the watch drops the resourceVersion and relists; the
 *    relist reports objects that vanished meanwhile as deletes and only changed objects as upserts;
 *  - exceptions thrown by consumers never reach (and break) the informer;
 *  - counters of errors, restarts, watchdog firings, lists, pages and watches.
 */
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Backoff } from '../backoff.js';
import { GuardedWatch } from './guarded-watch.js';
import { KubeApiError, ListReadError, fetchListPage, newPageScratch, type ListPage, type PageScratch } from './list-pager.js';
import type { ListSelectionName } from './projection.js';
import type { SelectPool } from './select-pool.js';

export type Change = 'upsert' | 'delete';

export interface InformerTuning {
  /** Watch silence (no event, no bookmark) after which it is restarted. */
  inactivityMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** One list request (one page) taking longer is abandoned. */
  listTimeoutMs: number;
  /** Server-side watch timeout; each request asks for a random value in [this, 2 x this). */
  watchTimeoutSeconds: number;
  /** Objects per list page (`limit`). */
  pageSize: number;
  /** A list page whose body is larger is abandoned while downloading and asked for again, smaller. */
  maxPageBytes: number;
  /** Where list pages are selected (this thread or a worker). */
  pool: SelectPool;
}

export interface InformerStats {
  /** Failures (failed list page, failed or broken watch), each followed by a backoff. */
  errors: number;
  /** Restarts after an error (each preceded by a backoff). */
  restarts: number;
  /** Watches torn down by the inactivity watchdog. */
  watchdogRestarts: number;
  /** Complete lists, the initial one included. */
  lists: number;
  /** List pages read. */
  pages: number;
  /** Lists started again from the beginning because their continue token had expired (410). */
  listRestarts: number;
  /** Watch requests made. */
  watches: number;
  /** The last failure, for /readyz and logs; undefined once the informer has recovered. */
  lastError?: string | undefined;
}

export interface ResilientInformerSpec<T extends KubernetesObject> {
  /** Short name for logs and stats, e.g. "pods". */
  name: string;
  /** Collection path, e.g. /api/v1/pods. */
  path: string;
  /** A raw object (list item reduced to `selection`, or watch event object) as consumers get it; undefined when unusable. */
  project: (raw: unknown) => T | undefined;
  /** What a list page keeps of each item before parsing (projection.ts LIST_SELECTIONS); must keep all that `project` reads. */
  selection: ListSelectionName;
  /** What the cache keeps of an object: at least metadata name, namespace and resourceVersion. */
  identity: (obj: T) => T;
}

/** Objects delivered between two yields to the event loop. */
const BATCH = 100;
/** Consecutive 410s (expired continue tokens, or watches expired right after a list) before backing off. */
const MAX_EXPIRED_IN_A_ROW = 3;
/** List pages in flight beyond the one being delivered. */
const PAGES_AHEAD = 2;

/** A list page asked for and not yet delivered. */
interface InFlight {
  page: number;
  /** The continue token read from its first bytes: undefined = not yet, null = it is the last page. */
  headToken: string | null | undefined;
  /** Its successor has been asked for. */
  nextAsked: boolean;
  abort: AbortController;
  result: Promise<ListPage>;
}

/** A list in progress: kept across a failure, so the next attempt resumes from the last page. */
interface ListRun {
  /** The snapshot's resourceVersion (the first page's). */
  rv: string | undefined;
  /** Token for the next page; undefined before the first page. */
  continueToken: string | undefined;
  /** Keys listed so far. */
  seen: Set<string>;
  pages: number;
  items: number;
  limit: number;
  startedAt: number;
  /** Buffers reused from page to page; dropped with the run. */
  scratch: PageScratch;
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class ResilientInformer<T extends KubernetesObject> {
  readonly stats: InformerStats = { errors: 0, restarts: 0, watchdogRestarts: 0, lists: 0, pages: 0, listRestarts: 0, watches: 0, lastError: undefined };
  private readonly cache = new Map<string, T>();
  private readonly watch: GuardedWatch;
  private readonly backoff: Backoff;
  private readonly listeners: Array<(change: Change, obj: T) => void> = [];
  private readonly syncListeners: Array<() => void> = [];
  /** Where the watch resumes; '' = a list is needed first. */
  private resourceVersion = '';
  private listing: ListRun | undefined;
  private listAbort: AbortController | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private running = false;
  private started = false;
  private stopped = false;
  private isSynced = false;
  /** Lists whose continue token expired, since the last complete list. */
  private continueExpiredInARow = 0;
  /** Watches that expired (410) since the last object event. */
  private watchExpiredInARow = 0;

  constructor(
    private readonly kc: KubeConfig,
    private readonly spec: ResilientInformerSpec<T>,
    private readonly tuning: InformerTuning,
    private readonly log: Logger,
  ) {
    this.backoff = new Backoff({ initialMs: tuning.backoffInitialMs, maxMs: tuning.backoffMaxMs });
    this.watch = new GuardedWatch(kc, {
      inactivityMs: tuning.inactivityMs,
      timeoutSeconds: () => Math.floor(tuning.watchTimeoutSeconds * (1 + Math.random())),
      minHealthyMs: 1000,
      onWatchStart: () => {
        this.stats.watches++;
      },
      onActivity: () => {
        this.backoff.reset();
        this.stats.lastError = undefined;
      },
      onStall: (silentMs) => {
        this.stats.watchdogRestarts++;
        this.log.warn({ informer: spec.name, silentMs }, 'watch silent for too long; restarting it');
      },
      onCallbackError: (err) => this.log.error({ informer: spec.name, err: describe(err) }, 'watch event handling threw'),
    });
  }

  on(cb: (change: Change, obj: T) => void): void {
    this.listeners.push(cb);
  }

  onSynced(cb: () => void): void {
    this.syncListeners.push(cb);
  }

  synced(): boolean {
    return this.isSynced;
  }

  /** The cache: each object's identity (see ResilientInformerSpec.identity), not the object. */
  list(): readonly T[] {
    return [...this.cache.values()];
  }

  start(): void {
    if (this.started) throw new Error(`informer ${this.spec.name} already started`);
    this.started = true;
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    this.listAbort?.abort();
    this.watch.close();
  }

  // ---------------------------------------------------------------- the loop

  /** List if needed, then watch. Every path out of a watch comes back here (or to onError). */
  private kick(): void {
    if (this.stopped || this.running) return;
    this.running = true;
    void this.cycle();
  }

  private async cycle(): Promise<void> {
    try {
      if (this.resourceVersion === '') await this.listAll();
    } catch (err) {
      this.running = false;
      this.onError(err);
      return;
    }
    this.running = false;
    if (this.stopped) return;
    void this.watch.watch(
      this.spec.path,
      { resourceVersion: this.resourceVersion },
      (phase, obj) => this.onEvent(phase, obj),
      (err) => this.onWatchDone(err),
    );
  }

  private onWatchDone(err: unknown): void {
    if (this.stopped) return;
    if (isGone(err)) this.resourceVersion = '';
    else if (err) return this.onError(err);
    if (this.resourceVersion === '') {
      // Expired (ERROR event or HTTP 410): relist at once, unless that keeps happening.
      if (++this.watchExpiredInARow > MAX_EXPIRED_IN_A_ROW) {
        // Each relist is a whole list: a server that expires every watch at once must not get them back to back.
        this.watchExpiredInARow = 0;
        return this.onError(new Error(`watch ${this.spec.path} expired (410) ${MAX_EXPIRED_IN_A_ROW + 1} times in a row without delivering an object`));
      }
      this.log.info({ informer: this.spec.name }, 'watch expired (410 Gone); relisting');
    }
    this.kick();
  }

  private onError(err: unknown): void {
    if (this.stopped) return;
    this.stats.errors++;
    this.stats.lastError = describe(err);
    if (this.restartTimer) return; // a restart is already due
    const delayMs = this.backoff.next();
    this.log.warn({ informer: this.spec.name, err: this.stats.lastError, delayMs, resumingList: this.listing !== undefined }, 'informer failed; restarting after backoff');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopped) return;
      this.stats.restarts++;
      this.kick();
    }, delayMs);
  }

  // ---------------------------------------------------------------- watch events

  private onEvent(phase: string, raw: unknown): void {
    if (this.stopped) return;
    if (phase === 'ERROR') {
      const code = isObject(raw) ? raw.code : undefined;
      if (code === 410) this.resourceVersion = ''; // the watch ends next; then relist
      else this.log.warn({ informer: this.spec.name, status: raw }, 'watch ERROR event');
      return;
    }
    if (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED') {
      const obj = this.spec.project(raw);
      if (!obj) {
        this.log.warn({ informer: this.spec.name, phase }, 'watch event without a usable object; skipped');
        return;
      }
      this.watchExpiredInARow = 0;
      if (phase === 'DELETED') this.remove(obj);
      else this.upsert(obj);
    }
    // ADDED/MODIFIED/DELETED and BOOKMARK all move the resume point forward.
    const meta = isObject(raw) ? raw.metadata : undefined;
    const rv = isObject(meta) ? meta.resourceVersion : undefined;
    if (typeof rv === 'string' && rv !== '') this.resourceVersion = rv;
  }

  private upsert(obj: T): void {
    const key = keyOf(obj);
    const cur = this.cache.get(key);
    const rv = obj.metadata?.resourceVersion;
    if (cur && rv !== undefined && cur.metadata?.resourceVersion === rv) return; // unchanged
    this.cache.set(key, this.spec.identity(obj));
    this.emit('upsert', obj);
  }

  private remove(obj: T): void {
    if (this.cache.delete(keyOf(obj))) this.emit('delete', obj);
  }

  // ---------------------------------------------------------------- list

  private newRun(): ListRun {
    return { rv: undefined, continueToken: undefined, seen: new Set(), pages: 0, items: 0, limit: this.tuning.pageSize, startedAt: Date.now(), scratch: newPageScratch() };
  }

  private async listAll(): Promise<void> {
    const abort = new AbortController();
    this.listAbort = abort;
    try {
      await this.listPages(abort.signal);
    } finally {
      // Pages requested ahead of need are not wanted any more (done, failed or stopped).
      abort.abort();
      if (this.listAbort === abort) this.listAbort = undefined;
    }
  }

  private async listPages(signal: AbortSignal): Promise<void> {
    let run = this.listing ?? this.newRun();
    this.listing = run;
    /**
     * Pages asked for and not yet delivered, in order. A page's continue token is known from its
     * first bytes (list metadata precedes the items), so the next page is asked for while this one
     * is still arriving, up to PAGES_AHEAD pages beyond the one being delivered: the apiserver and
     * the network work while consumers do.
     */
    let ahead: InFlight[] = [];
    /** A page is being delivered (its selection buffers are in use). */
    let delivering = false;
    const drop = (): void => {
      for (const f of ahead) f.abort.abort();
      ahead = [];
      // An abandoned page may still be being selected (on the worker) into its buffers: new ones.
      run.scratch = newPageScratch();
    };
    const ask = (token: string | undefined, page: number): void => {
      const f: InFlight = { page, headToken: undefined, nextAsked: false, abort: new AbortController(), result: Promise.resolve(undefined as never) };
      const onAbort = (): void => f.abort.abort();
      signal.addEventListener('abort', onAbort, { once: true });
      f.result = fetchListPage(
        this.kc,
        {
          path: this.spec.path,
          limit: run.limit,
          continueToken: token,
          page,
          timeoutMs: this.tuning.listTimeoutMs,
          maxBytes: this.tuning.maxPageBytes,
          signal: f.abort.signal,
          scratch: run.scratch,
          slot: page % (PAGES_AHEAD + 1),
          pool: this.tuning.pool,
          onHead: (next) => {
            f.headToken = next ?? null;
            askMore();
          },
        },
        this.spec.selection,
      ).finally(() => signal.removeEventListener('abort', onAbort));
      // Awaited later (asked for ahead of need); a failure meanwhile is not "unhandled".
      f.result.catch(() => undefined);
      ahead.push(f);
    };
    const askMore = (): void => {
      const last = ahead[ahead.length - 1];
      // Pages alive (in flight, or being delivered) each hold one of PAGES_AHEAD + 1 buffer slots.
      if (!last || last.nextAsked || typeof last.headToken !== 'string' || ahead.length + (delivering ? 1 : 0) > PAGES_AHEAD) return;
      last.nextAsked = true;
      ask(last.headToken, last.page + 1);
    };

    ask(run.continueToken, run.pages + 1);
    for (;;) {
      const f = ahead[0] as InFlight;
      let page: ListPage;
      const waitFrom = Date.now();
      try {
        page = await f.result;
      } catch (err) {
        if (this.stopped) return;
        drop();
        if (err instanceof KubeApiError && err.code === 410 && run.continueToken !== undefined) {
          // The snapshot is gone (etcd compacted it): only a new list from the start is consistent.
          this.stats.listRestarts++;
          if (++this.continueExpiredInARow > MAX_EXPIRED_IN_A_ROW) {
            this.continueExpiredInARow = 0;
            this.listing = undefined;
            throw new Error(`list ${this.spec.path}: continue token expired ${MAX_EXPIRED_IN_A_ROW + 1} times in a row: ${err.message}`);
          }
          this.log.warn({ informer: this.spec.name, pages: run.pages, items: run.items }, 'list continue token expired (410); listing again from the beginning');
          run = this.newRun();
          this.listing = run;
          ask(undefined, 1);
          continue;
        }
        if (err instanceof ListReadError && err.tooLarge && run.limit > 1) {
          run.limit = Math.max(1, Math.floor(run.limit / 2));
          this.log.warn({ informer: this.spec.name, page: run.pages + 1, limit: run.limit, maxPageBytes: this.tuning.maxPageBytes }, 'list page too large; asking for fewer objects per page');
          ask(run.continueToken, run.pages + 1);
          continue;
        }
        if (err instanceof ListReadError && err.tooLarge) {
          throw new ListReadError(`${err.message}, even one object per page (an object that large, or a server ignoring limit; see maxListPageBytes)`, true);
        }
        throw err;
      }
      if (this.stopped) return;
      ahead.shift();
      delivering = true;
      const applyFrom = Date.now();
      run.rv ??= page.resourceVersion;
      const next = page.continueToken;
      if (f.nextAsked && f.headToken !== next) {
        drop();
        throw new ListReadError(`list ${this.spec.path} page ${f.page}: continue token in the body differs from the one read ahead`);
      }
      if (next !== undefined && !f.nextAsked) {
        // The head was not readable early: ask now.
        f.nextAsked = true;
        ask(next, f.page + 1);
      }
      if (next === undefined && page.length > run.limit) {
        this.log.warn({ informer: this.spec.name, items: page.length, limit: run.limit }, 'server ignored the list limit');
      }
      for (let i = 0; i < page.length; i++) {
        if (i > 0 && i % BATCH === 0) {
          await yieldToEventLoop();
          if (this.stopped) return;
        }
        // Parsed only now, so each item is garbage as soon as its consumers are done with it.
        const obj = this.spec.project(page.item(i));
        if (!obj) continue;
        run.seen.add(keyOf(obj));
        this.upsert(obj);
      }
      // Only now is the page done: a failure above resumes with this page again.
      delivering = false;
      run.pages++;
      run.items += page.length;
      run.continueToken = next;
      this.stats.pages++;
      this.log.debug(
        { informer: this.spec.name, page: run.pages, items: page.length, bytes: page.bytes, remaining: page.remainingItemCount, waitedMs: applyFrom - waitFrom, deliveredMs: Date.now() - applyFrom },
        'list page',
      );
      if (next === undefined) break;
      askMore();
      await yieldToEventLoop();
      if (this.stopped) return;
    }
    // Complete: whatever the snapshot lacks is gone (in batches too: after a long outage, many may be).
    const gone: string[] = [];
    for (const key of this.cache.keys()) if (!run.seen.has(key)) gone.push(key);
    for (let i = 0; i < gone.length; i++) {
      if (i > 0 && i % BATCH === 0) {
        await yieldToEventLoop();
        if (this.stopped) return;
      }
      const key = gone[i] as string;
      const obj = this.cache.get(key);
      if (!obj) continue;
      this.cache.delete(key);
      this.emit('delete', obj);
    }
    this.listing = undefined;
    this.resourceVersion = run.rv ?? '';
    this.stats.lists++;
    this.stats.lastError = undefined;
    this.continueExpiredInARow = 0;
    this.backoff.reset();
    const info = { informer: this.spec.name, objects: this.cache.size, pages: run.pages, ms: Date.now() - run.startedAt, resourceVersion: this.resourceVersion };
    if (!this.isSynced) {
      this.isSynced = true;
      this.log.info(info, 'informer synced');
      for (const cb of this.syncListeners) this.safely(cb);
    } else {
      this.log.info(info, 'relisted');
    }
  }

  private emit(change: Change, obj: T): void {
    if (this.stopped) return;
    for (const cb of this.listeners) this.safely(() => cb(change, obj));
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ informer: this.spec.name, err: describe(err) }, 'informer callback threw');
    }
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

function keyOf(o: KubernetesObject): string {
  const ns = o.metadata?.namespace;
  const name = o.metadata?.name ?? '';
  return ns ? `${ns}/${name}` : name;
}

function isGone(err: unknown): boolean {
  if (!isObject(err)) return false;
  return err.statusCode === 410 || err.code === 410;
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as Error & { statusCode?: unknown; code?: unknown }).statusCode ?? (err as Error & { code?: unknown }).code;
    const first = err.message.split('\n', 1)[0] ?? '';
    return code !== undefined && !first.includes(`HTTP ${String(code)}`) ? `${first} (${String(code)})` : first;
  }
  return String(err);
}
