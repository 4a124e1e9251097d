/**
 * A drop-in replacement for the library's `Watch` (what `makeInformer`/`ListWatch` stream through)
 * that fixes what the library lacks:
 *  - asks for BOOKMARK events and a server-side `timeoutSeconds`, so a healthy watch is never silent
 *    for long and always ends on its own;
 *  - an inactivity watchdog: a watch that delivered nothing (no event, no bookmark, not even
 *    response headers) for `inactivityMs` is torn down and reported to the informer as a clean end
 *    of stream, so the informer re-watches from its last resourceVersion (or relists after a 410);
 *  - aborts the informer itself initiates (stop(), re-watch) are not reported back as errors;
 *  - a watch that ends cleanly almost at once without delivering anything is reported as an error,
 *    so a server that keeps closing watches costs a backoff instead of a hot loop;
 *  - an optional `deserialize` turns each event object into what the consumer wants (the informer
 *    projects them itself, like list items, so consumers see one shape whichever path delivered it);
 *  - an exception thrown by the callback is reported to `onCallbackError`: the library's line reader
 *    would otherwise swallow it as if the line were not JSON.
 * After close(), every open watch is aborted and no new one starts.
 */
import { Watch, type KubeConfig } from '@kubernetes/client-node';

export interface GuardedWatchOptions {
  /** Silence, in ms, after which a watch is considered hung. */
  inactivityMs: number;
  /** Server-side timeout for one watch request, in seconds (called per request, may randomize). */
  timeoutSeconds: () => number;
  /** A clean end of stream sooner than this with nothing delivered counts as an error. */
  minHealthyMs: number;
  /** Turns a raw ADDED/MODIFIED/DELETED event object into what the callback gets. Default: as is. */
  deserialize?: (raw: unknown) => unknown;
  /** The callback threw (the event is lost to it; the watch goes on). */
  onCallbackError?: (err: unknown) => void;
  /** A watch request is being made (the informer has finished any list before it). */
  onWatchStart: () => void;
  /** Something (event or bookmark) arrived. */
  onActivity: () => void;
  /** The watchdog tore down a silent watch. */
  onStall: (silentMs: number) => void;
}

type Done = (err: unknown) => void;
type Callback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;

interface Attempt {
  finished: boolean;
  inner: AbortController | undefined;
  timer: NodeJS.Timeout | undefined;
}

const OBJECT_PHASES = new Set(['ADDED', 'MODIFIED', 'DELETED']);

export class GuardedWatch extends Watch {
  private closed = false;
  private readonly attempts = new Set<Attempt>();

  constructor(
    config: KubeConfig,
    private readonly opts: GuardedWatchOptions,
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: Callback,
    done: Done,
  ): Promise<AbortController> {
    // Returned at once: the informer keeps it as its handle, and aborting it silently ends this attempt
    // even while the request is still waiting for response headers.
    const outer = new AbortController();
    if (this.closed) return outer;
    this.opts.onWatchStart();

    const attempt: Attempt = { finished: false, inner: undefined, timer: undefined };
    this.attempts.add(attempt);
    const startedAt = Date.now();
    let lastActivity = startedAt;
    let delivered = 0;

    const end = (): void => {
      attempt.finished = true;
      if (attempt.timer) clearTimeout(attempt.timer);
      attempt.timer = undefined;
      this.attempts.delete(attempt);
      attempt.inner?.abort();
    };
    const finish = (err: unknown): void => {
      if (attempt.finished) return;
      end();
      if (!this.closed) done(err);
    };
    const arm = (): void => {
      if (attempt.timer) clearTimeout(attempt.timer);
      attempt.timer = setTimeout(() => {
        if (attempt.finished) return;
        this.opts.onStall(Date.now() - lastActivity);
        finish(null);
      }, this.opts.inactivityMs);
    };
    outer.signal.addEventListener('abort', () => {
      if (!attempt.finished) end();
    });
    arm();

    const guardedCallback: Callback = (phase, apiObj, watchObj) => {
      if (attempt.finished) return;
      delivered++;
      lastActivity = Date.now();
      arm();
      this.opts.onActivity();
      const deserialize = this.opts.deserialize;
      try {
        callback(phase, deserialize && OBJECT_PHASES.has(phase) ? deserialize(apiObj) : apiObj, watchObj);
      } catch (err) {
        this.opts.onCallbackError?.(err);
      }
    };
    const guardedDone: Done = (err) => {
      if (attempt.finished) return;
      if (!err && delivered === 0 && Date.now() - startedAt < this.opts.minHealthyMs) {
        finish(new Error(`watch ${path} closed after ${Date.now() - startedAt} ms without delivering anything`));
        return;
      }
      finish(err ?? null);
    };

    const params = {
      ...queryParams,
      allowWatchBookmarks: true,
      timeoutSeconds: this.opts.timeoutSeconds(),
    };
    super.watch(path, params, guardedCallback, guardedDone).then(
      (inner) => {
        if (attempt.finished) inner.abort();
        else attempt.inner = inner;
      },
      (err: unknown) => finish(err),
    );
    return outer;
  }

  /** Abort every open watch; later watch() calls do nothing. */
  close(): void {
    this.closed = true;
    for (const a of [...this.attempts]) {
      a.finished = true;
      if (a.timer) clearTimeout(a.timer);
      a.timer = undefined;
      a.inner?.abort();
    }
    this.attempts.clear();
  }
}
