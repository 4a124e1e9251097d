/**
 * Where list pages are selected (json-select.ts): on a worker thread (select-worker.ts) when the
 * compiled worker is there and the page is big enough to be worth the hop, else on this thread.
 *
 * The body and the output buffer move to the worker with the job and come back with the reply
 * (transferred ArrayBuffers: no copy, and no sharing, which would make every copy into them slower).
 * Until the reply, this thread must not touch them; select() hands back the buffers to use after.
 * One worker serves every informer of a KubeSources; it is unref'd (never keeps the process alive)
 * and started on the first big page. If it fails, or stalls past a job's deadline, it is given up
 * for good: the jobs it held fail (their buffers went with it; the informer retries the page after
 * its backoff) and every later page is selected on this thread.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { selectSplitRaw, type SplitRanges } from './json-select.js';
import { LIST_SELECTIONS, type ListSelectionName } from './projection.js';
import type { SelectJob, SelectReply } from './select-worker.js';

/** Bodies smaller than this are selected inline: a thread hop costs more than scanning them. */
const MIN_WORKER_BYTES = 256 * 1024;

/** A selection and the buffers to use from now on (the ones passed in may have been moved away). */
export interface Selected {
  ranges: SplitRanges;
  src: Buffer;
  out: Buffer;
}

interface Pending {
  resolve: (r: Selected) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** A failure the worker reported for a job (the message is the selection's own, e.g. JsonSelectError's). */
export class SelectWorkerError extends Error {
  constructor(message: string, name: string) {
    super(message);
    this.name = name;
  }
}

/** A buffer that owns its whole ArrayBuffer (so that it can be transferred). */
function movable(b: Buffer): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer;
}

export class SelectPool {
  private worker: Worker | undefined;
  private broken: string | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  /** `workerUrl` undefined: always inline. `onBroken` hears once why the worker was given up. */
  constructor(
    private readonly workerUrl: URL | undefined,
    private readonly onBroken?: (why: string) => void,
  ) {}

  /** Whether big pages go to the worker. */
  usesWorker(): boolean {
    return this.workerUrl !== undefined && this.broken === undefined;
  }

  /** A buffer for select() (never a slice of Node's shared pool, so it can move to the worker). */
  alloc(size: number): Buffer {
    return Buffer.allocUnsafeSlow(size);
  }

  /**
   * selectSplitRaw(src[0, srcLength), LIST_SELECTIONS[selection], 'items', out); `out` must be at
   * least srcLength long. Rejects with the selection's error for malformed input, or when the
   * worker failed or has not answered within `timeoutMs`.
   */
  select(src: Buffer, srcLength: number, selection: ListSelectionName, out: Buffer, timeoutMs: number): Promise<Selected> {
    if (srcLength < MIN_WORKER_BYTES || !this.usesWorker() || !movable(src) || !movable(out) || src.buffer === out.buffer) {
      try {
        return Promise.resolve({ ranges: selectSplitRaw(src.subarray(0, srcLength), LIST_SELECTIONS[selection], 'items', out), src, out });
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
    }
    const job: SelectJob = { id: this.nextId++, selection, src: src.buffer as ArrayBuffer, srcLength, out: out.buffer as ArrayBuffer };
    return new Promise<Selected>((resolve, reject) => {
      const timer = setTimeout(() => this.giveUp(`did not answer within ${timeoutMs} ms`), timeoutMs);
      this.pending.set(job.id, { resolve, reject, timer });
      this.start().postMessage(job, [job.src, job.out]);
    });
  }

  /** Stop the worker (the process never waits for it anyway). */
  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    this.broken ??= 'closed';
    this.failPending('closed');
    await w?.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(this.workerUrl as URL);
    w.unref();
    w.on('message', (reply: SelectReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      clearTimeout(p.timer);
      if (reply.ok) {
        p.resolve({ ranges: { length: reply.length, found: reply.found, start: reply.start, end: reply.end, elements: reply.elements }, src: Buffer.from(reply.src), out: Buffer.from(reply.out) });
      } else {
        p.reject(new SelectWorkerError(reply.error, reply.name));
      }
    });
    w.on('error', (err) => this.giveUp(`failed: ${err.message}`));
    w.on('exit', (code) => this.giveUp(`exited with code ${code}`));
    this.worker = w;
    return w;
  }

  private giveUp(why: string): void {
    if (this.broken !== undefined) return;
    this.broken = why;
    const w = this.worker;
    this.worker = undefined;
    void w?.terminate();
    this.onBroken?.(why);
    this.failPending(why);
  }

  private failPending(why: string): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new Error(`list page selection worker ${why}`));
    }
  }
}

/** The compiled worker next to this module, when there is one (not when running from TypeScript sources). */
export function builtWorkerUrl(): URL | undefined {
  const url = new URL('./select-worker.js', import.meta.url);
  return existsSync(fileURLToPath(url)) ? url : undefined;
}
