/**
 * Publishes node updates: each delta under its own subject
 * (`delta.<from>`), then the node's whole state into the snapshot bucket
 * (coalesced: at most one write per node per snapshotIntervalMs, the deltas
 * carry everything between).
 *
 * Fencing. A delta subject is written create-only (expected last subject
 * sequence 0, with an idempotent message id for retries), a snapshot
 * conditionally on the bucket revision it replaces. When a write is refused
 * the publisher reads what is there instead of guessing:
 *
 *  - written by a newer leader epoch: this leader is deposed and stops
 *    publishing for every node;
 *  - anything else (an unparseable or foreign message, an older leader's
 *    write racing the handover): only that node is affected. It is repaired
 *    by writing its whole current state as the snapshot at the update's
 *    generation, which moves its worker past the occupied subject, and
 *    audited; every other node keeps publishing.
 *
 * A message the server cannot take (over max_payload or the stream's
 * max_msg_size) is never retried as is: the node is repaired through its
 * snapshot, and if that does not fit either the node is marked refused,
 * audited and reported (`health()`, metrics) until a later state fits.
 */
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import { API_VERSION, DELTA_STREAM, boundText, parseJson, parseNodeStateDelta, parseSnapshot, subjects, type AuditEvent, type NodeState, type Snapshot } from '@meshlane/proto';
import { directGet } from '@meshlane/proto/bus';
import type { NodeUpdate } from '../reconcile/reconciler.js';

/** The client's own timeout has been seen not to fire across a server restart: bound it here too. */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A node's snapshot is rewritten at most this often: deltas carry every
 * change in between, and a worker folds a tail of deltas in one map write.
 */
export const DEFAULT_SNAPSHOT_INTERVAL_MS = 2000;

export class FencedError extends Error {
  override name = 'FencedError';
}

/** The server will never take this message as it is. */
class TooLargeError extends Error {
  override name = 'TooLargeError';
}

function isTooLarge(msg: string): boolean {
  return /max(imum)?[ _]payload|message size exceeds|MAX_PAYLOAD/i.test(msg);
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
  /** Deltas cannot continue this node until a snapshot lands (a repair is owed). */
  needsSnapshot: boolean;
  /** Why the node's state cannot be published, while it cannot. */
  refused?: string;
  /**
   * Added to the reconciler's generations of this node on the bus. A repair
   * moves the node past subjects it cannot use, so the bus's generations run
   * ahead of the reconciler's from then on (until the next takeover reseeds).
   */
  offset: number;
}

export interface PublisherOptions {
  epoch: number;
  source: string;
  logger: Logger;
  snapshotIntervalMs?: number;
  /** Largest message the server takes (its max_payload); learnt from the connection when absent. */
  maxPayload?: number;
}

export interface PublisherHealth {
  fenced: string | undefined;
  /** Nodes whose state cannot be published now, with the reason. */
  refused: Record<string, string>;
  /** Nodes with a write being retried (NATS away, timeouts). */
  retrying: string[];
}

export class BusPublisher {
  private readonly js: JetStreamClient;
  private readonly cursors = new Map<string, NodeCursor>();
  private fenced: FencedError | undefined;
  private readonly onFenced: Array<(e: FencedError) => void> = [];
  private readonly retrying = new Set<string>();
  readonly stats = { deltas: 0, snapshots: 0, deltaBytes: 0, repairs: 0, refused: 0 };

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

  health(): PublisherHealth {
    const refused: Record<string, string> = {};
    for (const [n, c] of this.cursors) if (c.refused) refused[n] = c.refused;
    return { fenced: this.fenced?.message, refused, retrying: [...this.retrying] };
  }

  /** Continues from what the bus holds (see readBusState). */
  adopt(nodes: Iterable<[string, { deltaSeq: number; revision: number }]>): void {
    for (const [node, s] of nodes) this.cursors.set(node, { deltaSeq: s.deltaSeq, revision: s.revision, chain: Promise.resolve(), needsSnapshot: false, offset: 0 });
  }

  private cursor(node: string): NodeCursor {
    let c = this.cursors.get(node);
    if (!c) this.cursors.set(node, (c = { deltaSeq: 0, revision: 0, chain: Promise.resolve(), needsSnapshot: false, offset: 0 }));
    return c;
  }

  /** Queues an update; resolves when it is stored (as a delta, or as the repairing snapshot). Throws FencedError once fenced. */
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

  private maxPayload(): number {
    return this.o.maxPayload ?? this.nc.info?.max_payload ?? 1 << 20;
  }

  /** Retries transient failures in place (this node's later updates queue behind it, so nothing is reordered or skipped). */
  private async retry<T>(node: string, what: string, attempt: () => Promise<T>): Promise<T> {
    for (let delay = 100; ; delay = Math.min(delay * 2, 5000)) {
      if (this.fenced) throw this.fenced;
      try {
        const r = await attempt();
        this.retrying.delete(node);
        return r;
      } catch (err) {
        const msg = (err as Error).message;
        if (err instanceof FencedError || err instanceof TooLargeError || /wrong last sequence|key exists/i.test(msg)) throw err;
        if (isTooLarge(msg)) throw new TooLargeError(msg);
        this.retrying.add(node);
        this.o.logger.warn({ node, what, err: msg, retryMs: delay }, 'not stored yet; retrying');
        await sleep(delay);
      }
    }
  }

  private async publishNow(u: NodeUpdate, c: NodeCursor): Promise<void> {
    const generation = u.generation + c.offset;
    const state = (): NodeState => ({ ...u.state(), generation });
    if (c.needsSnapshot) {
      // The worker waits for a snapshot past the subject that could not be
      // written; a delta after it would follow nothing the worker has.
      c.pending = state;
      await this.writeSnapshot(u.node, c);
      return;
    }
    const from = u.delta.fromGeneration + c.offset;
    const data = JSON.stringify(c.offset ? { ...u.delta, fromGeneration: from, toGeneration: generation } : u.delta);
    const msgID = `${u.node}/${this.o.epoch}/${from}`;
    try {
      if (data.length > this.maxPayload()) throw new TooLargeError(`delta of ${data.length} bytes is over the server's max_payload of ${this.maxPayload()}`);
      const h = headers();
      h.set('Meshlane-Kind', 'NodeStateDelta');
      h.set('Meshlane-Epoch', String(this.o.epoch));
      h.set('Meshlane-Generation', String(generation));
      // The same id on every retry: if a timed-out attempt did land, JetStream
      // answers the retry with the original's sequence instead of storing twice.
      const ack = await this.retry(u.node, `delta ${from}`, () =>
        withDeadline(this.js.publish(subjects.delta(u.node, from), data, { headers: h, msgID, timeout: 2000, expect: { lastSubjectSequence: 0 } }), 3000),
      );
      c.deltaSeq = ack.seq;
      this.stats.deltas++;
      this.stats.deltaBytes += data.length;
    } catch (err) {
      if (err instanceof FencedError) throw err;
      const reason = err instanceof TooLargeError ? `cannot publish the delta: ${err.message}` : await this.occupied(u.node, from, msgID, c);
      if (reason === undefined) {
        this.stats.deltas++;
      } else {
        await this.repair(u.node, from, state, c, reason);
        return;
      }
    }
    c.pending = state;
    if (c.revision === 0 && !c.timer) {
      // A node's first snapshot is written at once: until it exists, a new
      // leader has to replay the stream from its start to learn the node.
      await this.writeSnapshot(u.node, c).catch((err: Error) => this.snapshotFailed(u.node, err));
    } else if (!c.timer) {
      c.timer = setTimeout(() => {
        c.timer = undefined;
        c.chain = c.chain.then(() => this.writeSnapshot(u.node, c)).catch((err: Error) => this.snapshotFailed(u.node, err));
      }, this.o.snapshotIntervalMs ?? DEFAULT_SNAPSHOT_INTERVAL_MS);
    }
  }

  /**
   * The delta subject was taken. Undefined when what is there is this very
   * delta (a retry that had landed); fences when a newer leader wrote it;
   * otherwise the reason the node needs a repair.
   */
  private async occupied(node: string, from: number, msgID: string, c: NodeCursor): Promise<string | undefined> {
    const m = await this.retry(node, `reading delta ${from}`, () => directGet(this.nc, DELTA_STREAM, subjects.delta(node, from), 2000));
    if (!m) return `delta subject ${from} refused the write but holds nothing`;
    c.deltaSeq = Math.max(c.deltaSeq, m.seq);
    if (m.header('Nats-Msg-Id') === msgID) return undefined;
    const epoch = Number(m.header('Meshlane-Epoch'));
    if (Number.isInteger(epoch) && epoch > this.o.epoch) {
      try {
        parseNodeStateDelta(parseJson(m.data), node);
        this.fence(`node ${node}: delta ${from} written by leader epoch ${epoch}`);
      } catch (err) {
        if (err instanceof FencedError) throw err;
        // A higher epoch on a message that is not a delta proves nothing.
      }
    }
    let what: string;
    try {
      parseNodeStateDelta(parseJson(m.data), node);
      what = `a delta of another writer (epoch ${m.header('Meshlane-Epoch') ?? 'none'})`;
    } catch (err) {
      what = `a message that is not a valid delta (${boundText((err as Error).message, 200)})`;
    }
    return `delta subject ${from} (stream sequence ${m.seq}) holds ${what}`;
  }

  /**
   * Moves the node's worker past an unusable delta subject: its whole state
   * as the snapshot, at a generation above every delta subject already taken
   * (a deposed leader may still be writing some), so that no worker can
   * hold that generation through other deltas.
   */
  private async repair(node: string, from: number, state: () => NodeState, c: NodeCursor, reason: string): Promise<void> {
    this.stats.repairs++;
    let free = from + 1;
    while (await this.retry(node, `probing delta ${free}`, () => directGet(this.nc, DELTA_STREAM, subjects.delta(node, free), 2000))) free++;
    const target = free + 1;
    c.offset += target - (from + 1);
    c.needsSnapshot = true;
    this.o.logger.error({ node, generation: target, reason }, 'delta not publishable: repairing the node through its snapshot');
    this.audit({ type: 'repaired', node, generation: target, reason: boundText(reason), summary: `snapshot at generation ${target} replaces delta ${from}` });
    c.pending = () => ({ ...state(), generation: target });
    if (c.timer) {
      clearTimeout(c.timer);
      c.timer = undefined;
    }
    await this.writeSnapshot(node, c);
  }

  private snapshotFailed(node: string, err: Error): void {
    if (err instanceof FencedError) return;
    this.o.logger.error({ node, err: err.message }, 'snapshot write failed');
  }

  private async writeSnapshot(node: string, c: NodeCursor): Promise<void> {
    const build = c.pending;
    if (!build || this.fenced) return;
    c.pending = undefined;
    const state = build();
    const snap: Snapshot = { apiVersion: API_VERSION, kind: 'Snapshot', deltaSeq: c.deltaSeq, epoch: this.o.epoch, state };
    const data = JSON.stringify(snap);
    const key = subjects.snapshotKey(node);
    if (data.length > this.maxPayload()) {
      this.refuse(node, c, state.generation, `snapshot of ${data.length} bytes is over the server's max_payload of ${this.maxPayload()}`);
      return;
    }
    for (let attempt = 0; ; attempt++) {
      try {
        c.revision = await this.retry(node, 'snapshot', () => withDeadline(c.revision === 0 ? this.kv.create(key, data) : this.kv.update(key, data, c.revision), 3000));
        break;
      } catch (err) {
        const msg = (err as Error).message;
        if (err instanceof TooLargeError) {
          this.refuse(node, c, state.generation, `cannot publish the snapshot: ${msg}`);
          return;
        }
        if (!/wrong last sequence|key exists/i.test(msg) || attempt > 0) throw err;
        await this.takeOver(node, c);
      }
    }
    this.stats.snapshots++;
    if (c.needsSnapshot || c.refused) this.o.logger.info({ node, generation: state.generation }, 'node repaired: snapshot written');
    c.needsSnapshot = false;
    c.refused = undefined;
  }

  /**
   * The snapshot revision moved under us. A newer leader's snapshot fences;
   * anything else (unreadable, deleted, an older leader's or our own timed-out
   * write) is replaced, conditionally on the revision just read.
   */
  private async takeOver(node: string, c: NodeCursor): Promise<void> {
    const cur = await this.retry(node, 'reading snapshot', () => withDeadline(this.kv.get(subjects.snapshotKey(node)), 3000));
    c.revision = cur?.revision ?? 0;
    if (!cur || cur.operation !== 'PUT' || cur.length === 0) {
      this.audit({ type: 'repaired', node, reason: 'the snapshot was deleted', summary: 'snapshot rewritten' });
      return;
    }
    try {
      const stored = parseSnapshot(parseJson(cur.value), node);
      if (stored.epoch > this.o.epoch) this.fence(`node ${node}: snapshot written by leader epoch ${stored.epoch}`);
    } catch (err) {
      if (err instanceof FencedError) throw err;
      this.stats.repairs++;
      this.o.logger.error({ node, revision: cur.revision, err: (err as Error).message }, 'the stored snapshot does not validate: replacing it');
      this.audit({ type: 'repaired', node, reason: boundText(`snapshot revision ${cur.revision} does not validate: ${(err as Error).message}`), summary: 'snapshot rewritten' });
    }
  }

  private refuse(node: string, c: NodeCursor, generation: number, reason: string): void {
    this.stats.refused++;
    c.needsSnapshot = true;
    c.refused = reason;
    this.o.logger.error({ node, generation, reason }, 'node state cannot be published; its worker keeps its last state');
    this.audit({ type: 'refused', node, generation, reason: boundText(reason) });
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
    try {
      this.nc.publish(subjects.audit(ev.node, ev.type), JSON.stringify(full));
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message, type: ev.type, node: ev.node }, 'audit event not sent');
    }
  }
}
