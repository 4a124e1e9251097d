/**
 * Publishes node updates: each delta onto the node's delta subject, then the
 * node's whole state into the snapshot bucket (coalesced: at most one write
 * per node per snapshotIntervalMs, the deltas carry everything between).
 *
 * Fencing. Every write is conditional: a delta carries the stream sequence
 * of the node's previous delta (Nats-Expected-Last-Subject-Sequence) and a
 * snapshot the bucket revision it replaces. A deposed leader's next write
 * therefore fails as soon as the new leader has written for that node, and a
 * snapshot of a lower leader epoch never replaces a higher one. A fenced
 * publisher stops and reports it; it never retries over newer state.
 */
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import { API_VERSION, parseJson, parseSnapshot, subjects, type NodeState, type Snapshot, type AuditEvent } from '@meshlane/proto';
import type { NodeUpdate } from '../reconcile/reconciler.js';

/** The client's own timeout has been seen not to fire across a server restart: bound it here too. */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/**
 * A node's snapshot is rewritten at most this often: deltas carry every
 * change in between, and a worker folds a tail of deltas in one map write.
 */
export const DEFAULT_SNAPSHOT_INTERVAL_MS = 2000;

export class FencedError extends Error {
  override name = 'FencedError';
}

interface NodeCursor {
  /** Stream sequence of the node's last delta (0: none). */
  deltaSeq: number;
  /** Snapshot bucket revision (0: no entry). */
  revision: number;
  /** Latest state not yet written to the bucket, built only when written. */
  pending?: () => NodeState;
  timer?: NodeJS.Timeout;
  /** Serializes this node's writes. */
  chain: Promise<void>;
}

export interface PublisherOptions {
  epoch: number;
  source: string;
  logger: Logger;
  snapshotIntervalMs?: number;
}

export class BusPublisher {
  private readonly js: JetStreamClient;
  private readonly cursors = new Map<string, NodeCursor>();
  private fenced: FencedError | undefined;
  private readonly onFenced: Array<(e: FencedError) => void> = [];
  readonly stats = { deltas: 0, snapshots: 0, deltaBytes: 0 };

  constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly o: PublisherOptions,
  ) {
    this.js = jetstream(nc);
  }

  whenFenced(cb: (e: FencedError) => void): void {
    this.onFenced.push(cb);
  }

  /** Continues from what the bus holds (see readBusState). */
  adopt(nodes: Iterable<[string, { deltaSeq: number; revision: number }]>): void {
    for (const [node, s] of nodes) this.cursors.set(node, { deltaSeq: s.deltaSeq, revision: s.revision, chain: Promise.resolve() });
  }

  private cursor(node: string): NodeCursor {
    let c = this.cursors.get(node);
    if (!c) this.cursors.set(node, (c = { deltaSeq: 0, revision: 0, chain: Promise.resolve() }));
    return c;
  }

  /** Queues an update; resolves when its delta is stored. Throws FencedError once fenced. */
  publish(u: NodeUpdate): Promise<void> {
    const c = this.cursor(u.node);
    const run = c.chain.then(() => this.publishNow(u, c));
    c.chain = run.catch(() => {});
    return run;
  }

  private fence(reason: string): never {
    const e = (this.fenced ??= new FencedError(`fenced: ${reason}`));
    for (const cb of this.onFenced.splice(0)) cb(e);
    throw e;
  }

  private async publishNow(u: NodeUpdate, c: NodeCursor): Promise<void> {
    const data = JSON.stringify(u.delta);
    const h = headers();
    h.set('Meshlane-Kind', 'NodeStateDelta');
    h.set('Meshlane-Epoch', String(this.o.epoch));
    h.set('Meshlane-Generation', String(u.generation));
    // The same id on every retry: if a timed-out attempt did land, JetStream
    // answers the retry with the original's sequence instead of storing twice.
    const msgID = `${u.node}/${this.o.epoch}/${u.delta.fromGeneration}-${u.delta.toGeneration}`;
    for (let delay = 100; ; delay = Math.min(delay * 2, 5000)) {
      if (this.fenced) throw this.fenced;
      try {
        const ack = await withDeadline(this.js.publish(subjects.delta(u.node), data, { headers: h, msgID, timeout: 2000, expect: { lastSubjectSequence: c.deltaSeq } }), 3000);
        c.deltaSeq = ack.seq;
        break;
      } catch (err) {
        const msg = (err as Error).message;
        if (/wrong last sequence/i.test(msg)) this.fence(`node ${u.node}: another writer published a delta after sequence ${c.deltaSeq}`);
        // Anything else (timeout, no responders while NATS restarts) is
        // retried in place: this node's later updates queue behind it, so
        // its deltas stay in order and none is skipped.
        this.o.logger.warn({ node: u.node, generation: u.generation, err: msg, retryMs: delay }, 'delta not stored yet; retrying');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    this.stats.deltas++;
    this.stats.deltaBytes += data.length;
    c.pending = u.state;
    if (c.revision === 0 && !c.timer) {
      // A node's first snapshot is written at once: until it exists, a new
      // leader has to replay the stream from its start to learn the node.
      c.chain = c.chain.then(() => this.writeSnapshot(u.node, c)).catch((err: Error) => this.o.logger.error({ node: u.node, err: err.message }, 'snapshot write failed'));
    } else if (!c.timer) {
      c.timer = setTimeout(() => {
        c.timer = undefined;
        c.chain = c.chain.then(() => this.writeSnapshot(u.node, c)).catch((err: Error) => this.o.logger.error({ node: u.node, err: err.message }, 'snapshot write failed'));
      }, this.o.snapshotIntervalMs ?? DEFAULT_SNAPSHOT_INTERVAL_MS);
    }
  }

  private async writeSnapshot(node: string, c: NodeCursor): Promise<void> {
    const build = c.pending;
    if (!build || this.fenced) return;
    c.pending = undefined;
    const state = build();
    const snap: Snapshot = { apiVersion: API_VERSION, kind: 'Snapshot', deltaSeq: c.deltaSeq, epoch: this.o.epoch, state };
    const key = subjects.snapshotKey(node);
    try {
      c.revision = c.revision === 0 ? await this.kv.create(key, JSON.stringify(snap)) : await this.kv.update(key, JSON.stringify(snap), c.revision);
      this.stats.snapshots++;
    } catch (err) {
      if (/wrong last sequence|key exists/i.test((err as Error).message)) {
        const cur = await this.kv.get(key);
        const stored = cur ? parseSnapshot(parseJson(cur.value)) : undefined;
        if (stored && stored.epoch > this.o.epoch) this.fence(`node ${node}: snapshot written by epoch ${stored.epoch}`);
        this.fence(`node ${node}: snapshot revision moved from ${c.revision}`);
      }
      throw err;
    }
  }

  /** Writes every pending snapshot now (shutdown, handover). */
  async flush(): Promise<void> {
    await Promise.all(
      [...this.cursors.entries()].map(async ([node, c]) => {
        if (c.timer) {
          clearTimeout(c.timer);
          c.timer = undefined;
          c.chain = c.chain.then(() => this.writeSnapshot(node, c));
        }
        await c.chain.catch(() => {});
      }),
    );
  }

  audit(ev: Omit<AuditEvent, 'apiVersion' | 'kind' | 'time' | 'source'>): void {
    const full: AuditEvent = { apiVersion: API_VERSION, kind: 'AuditEvent', time: new Date().toISOString(), source: this.o.source, ...ev };
    this.nc.publish(subjects.audit(ev.node, ev.type), JSON.stringify(full));
  }
}
