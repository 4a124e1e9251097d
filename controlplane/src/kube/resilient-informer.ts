/**
 * One resource's informer: the library's ListWatch (what makeInformer builds) streaming through a
 * GuardedWatch, plus what the library lacks:
 *  - after an 'error' (the library then stops for good) the informer is restarted after a capped,
 *    jittered exponential backoff; it resumes from its last resourceVersion, or relists when it has none;
 *  - a 410 Gone (ERROR event or HTTP status) makes the library drop its resourceVersion and relist;
 *    the relist reports objects that vanished meanwhile as deletes and only changed objects as upserts;
 *  - a list that hangs is abandoned after `listTimeoutMs`;
 *  - exceptions thrown by consumers never reach (and break) the library's event loop;
 *  - counters of errors, restarts, watchdog firings and lists.
 */
import { ListWatch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import type { Logger } from 'pino';
import { Backoff } from '../backoff.js';
import { GuardedWatch } from './guarded-watch.js';

export type Change = 'upsert' | 'delete';

export interface InformerTuning {
  /** Watch silence (no event, no bookmark) after which it is restarted. */
  inactivityMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  listTimeoutMs: number;
  /** Server-side watch timeout; each request asks for a random value in [this, 2 x this). */
  watchTimeoutSeconds: number;
}

export interface InformerStats {
  /** 'error' events from the library (failed list, failed or broken watch). */
  errors: number;
  /** Restarts after an error (each preceded by a backoff). */
  restarts: number;
  /** Watches torn down by the inactivity watchdog. */
  watchdogRestarts: number;
  /** Successful lists, the initial one included. */
  lists: number;
  /** Watch requests made. */
  watches: number;
}

export interface ResilientInformerSpec<T extends KubernetesObject> {
  /** Short name for logs and stats, e.g. "pods". */
  name: string;
  /** Watch path, e.g. /api/v1/pods. */
  path: string;
  /** Model name for the library's ObjectSerializer, e.g. "V1Pod". */
  model: string;
  list: () => Promise<KubernetesListObject<T>>;
}

export class ResilientInformer<T extends KubernetesObject> {
  readonly stats: InformerStats = { errors: 0, restarts: 0, watchdogRestarts: 0, lists: 0, watches: 0 };
  private readonly informer: ListWatch<T>;
  private readonly watch: GuardedWatch;
  private readonly backoff: Backoff;
  private readonly listeners: Array<(change: Change, obj: T) => void> = [];
  private readonly syncListeners: Array<() => void> = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly listTimers = new Set<NodeJS.Timeout>();
  private started = false;
  private stopped = false;
  private isSynced = false;

  constructor(
    kc: KubeConfig,
    private readonly spec: ResilientInformerSpec<T>,
    private readonly tuning: InformerTuning,
    private readonly log: Logger,
  ) {
    this.backoff = new Backoff({ initialMs: tuning.backoffInitialMs, maxMs: tuning.backoffMaxMs });
    this.watch = new GuardedWatch(kc, {
      inactivityMs: tuning.inactivityMs,
      timeoutSeconds: () => Math.floor(tuning.watchTimeoutSeconds * (1 + Math.random())),
      minHealthyMs: 1000,
      deserialize: (raw) => ObjectSerializer.deserialize(raw, spec.model, ''),
      onWatchStart: () => {
        this.stats.watches++;
        // The library only watches once its list has been applied: the first watch means synced.
        if (!this.isSynced && !this.stopped) {
          this.isSynced = true;
          this.log.info({ informer: spec.name, objects: this.informer.list().length }, 'informer synced');
          for (const cb of this.syncListeners) this.safely(cb);
        }
      },
      onActivity: () => this.backoff.reset(),
      onStall: (silentMs) => {
        this.stats.watchdogRestarts++;
        this.log.warn({ informer: spec.name, silentMs }, 'watch silent for too long; restarting it');
      },
    });
    this.informer = new ListWatch<T>(spec.path, this.watch, () => this.listOnce(), false);
    this.informer.on('add', (o) => this.emit('upsert', o));
    this.informer.on('update', (o) => this.emit('upsert', o));
    this.informer.on('delete', (o) => this.emit('delete', o));
    this.informer.on('error', (err) => this.onError(err));
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

  /** The informer's current view. */
  list(): readonly T[] {
    return this.informer.list();
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
    for (const t of this.listTimers) clearTimeout(t);
    this.listTimers.clear();
    this.watch.close();
    await this.informer.stop();
  }

  private kick(): void {
    this.informer.start().catch((err: unknown) => this.onError(err));
  }

  private onError(err: unknown): void {
    if (this.stopped) return;
    this.stats.errors++;
    if (this.restartTimer) return; // a restart is already due
    const delayMs = this.backoff.next();
    this.log.warn({ informer: this.spec.name, err: describe(err), delayMs }, 'informer failed; restarting after backoff');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopped) return;
      this.stats.restarts++;
      this.kick();
    }, delayMs);
  }

  private async listOnce(): Promise<KubernetesListObject<T>> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`list ${this.spec.path} timed out after ${this.tuning.listTimeoutMs} ms`)), this.tuning.listTimeoutMs);
      this.listTimers.add(timer);
    });
    try {
      const list = await Promise.race([this.spec.list(), timeout]);
      this.stats.lists++;
      this.backoff.reset();
      if (this.stats.lists > 1) {
        this.log.info({ informer: this.spec.name, items: list.items.length, resourceVersion: list.metadata?.resourceVersion }, 'relisted');
      }
      return list;
    } finally {
      if (timer) {
        clearTimeout(timer);
        this.listTimers.delete(timer);
      }
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

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as Error & { statusCode?: unknown; code?: unknown }).statusCode ?? (err as Error & { code?: unknown }).code;
    const first = err.message.split('\n', 1)[0] ?? '';
    return code !== undefined ? `${first} (${String(code)})` : first;
  }
  return String(err);
}
