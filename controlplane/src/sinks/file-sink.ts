/**
 * Writes each node's desired state to DIR/<node>.json, the format
 * `meshlane-worker run --state` reads. A real mode for clusters without the
 * bus, and what the demo and tests use to hand states to workers.
 *
 * Atomically (a hidden temp file, then rename: a reader never sees half a
 * state) and compactly (no indentation: a 250-pod node is about 90 KB, not
 * 113+). Only a node's latest state matters to its worker, so updates are
 * coalesced: a node has at most one write in flight and one pending, and a
 * burst of generations for it costs one write per batch, not one per event.
 * Writes are asynchronous and serialization runs in slices, so thousands of
 * nodes written after the initial sync do not starve the event loop.
 *
 * The sink never decides when to start: it writes what it is given, and
 * ControlPlane gives nothing before the sources are synced.
 */
import { mkdirSync } from 'node:fs';
import { rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { NodeUpdate } from '../reconcile/reconciler.js';

export interface FileSinkOptions {
  logger?: Logger;
  /** Files being written at once. Default 16. */
  concurrency?: number;
  /** Longest a batch serializes states before yielding to the event loop (ms). Default 10. */
  sliceMs?: number;
  /** A failed write is retried after this long unless a newer state comes first (ms). Default 1000. */
  retryMs?: number;
  /** After a node's file is in place (renamed) at that generation. */
  onWritten?: (node: string, generation: number) => void;
}

export class FileSink {
  /** Latest update per node not yet being written. */
  private readonly pending = new Map<string, NodeUpdate>();
  private readonly writing = new Set<string>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  private scheduled = false;
  private idleWaiters: Array<() => void> = [];
  readonly stats = { writes: 0, bytes: 0, coalesced: 0, errors: 0 };

  constructor(
    private readonly dir: string,
    private readonly o: FileSinkOptions = {},
  ) {
    mkdirSync(dir, { recursive: true });
  }

  write(u: NodeUpdate): void {
    if (this.pending.has(u.node)) this.stats.coalesced++;
    this.pending.set(u.node, u);
    const retry = this.retries.get(u.node);
    if (retry) {
      clearTimeout(retry);
      this.retries.delete(u.node);
    }
    this.schedule();
  }

  /** Resolves when every state handed in so far is written (or failed and waits for its retry). */
  idle(): Promise<void> {
    if (this.quiet()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private quiet(): boolean {
    return this.pending.size === 0 && this.writing.size === 0;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.batch();
    });
  }

  private batch(): void {
    const limit = this.o.concurrency ?? 16;
    const deadline = performance.now() + (this.o.sliceMs ?? 10);
    for (const [node, u] of this.pending) {
      if (this.writing.size >= limit) return; // resumed as writes finish
      if (this.writing.has(node)) continue; // written again once its current write lands
      this.pending.delete(node);
      this.start(node, u);
      if (performance.now() >= deadline) {
        if (this.pending.size) this.schedule();
        return;
      }
    }
  }

  private start(node: string, u: NodeUpdate): void {
    this.writing.add(node);
    const path = join(this.dir, `${node}.json`);
    // Hidden, so that nothing globbing *.json (or --cluster-dir on the same folder) takes it for a state.
    const tmp = join(this.dir, `.${node}.json.tmp`);
    const text = `${JSON.stringify(u.state())}\n`;
    writeFile(tmp, text)
      .then(() => rename(tmp, path))
      .then(
        () => {
          this.stats.writes++;
          this.stats.bytes += Buffer.byteLength(text);
          this.o.onWritten?.(node, u.generation);
        },
        (err: Error) => {
          this.stats.errors++;
          this.o.logger?.error({ node, path, err: err.message }, 'node state not written; retrying');
          void unlink(tmp).catch(() => undefined);
          this.retryLater(u);
        },
      )
      .finally(() => {
        this.writing.delete(node);
        if (this.pending.size) this.schedule();
        else if (this.quiet()) this.settleIdle();
      });
  }

  private retryLater(u: NodeUpdate): void {
    if (this.pending.has(u.node) || this.retries.has(u.node)) return; // a newer state is on its way
    const t = setTimeout(() => {
      this.retries.delete(u.node);
      if (!this.pending.has(u.node)) this.write(u);
    }, this.o.retryMs ?? 1000);
    t.unref();
    this.retries.set(u.node, t);
  }

  private settleIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
