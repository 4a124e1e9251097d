/**
 * The worker's side of the bus: load the node's snapshot, apply its deltas
 * in generation order, and resync from the snapshot on any gap. Duplicates
 * are skipped; a malformed or foreign delta is rejected on the audit subject
 * and changes no map. When NATS goes away the maps keep the last state
 * (fail-static) and the ordered consumer picks up where it stopped when it
 * returns.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import {
  API_VERSION,
  NODE_STATE_API_VERSION,
  DEFAULT_SWITCHES,
  SNAPSHOT_BUCKET,
  ValidationError,
  NodeStateAccumulator,
  parseJson,
  parseNodeState,
  parseNodeStateDelta,
  subjects,
  type AuditEvent,
  type AuditEventType,
  type NodeState,
} from '@meshlane/proto';
import { followSubject, readSnapshot, type DeltaMsg, type Follower } from '@meshlane/proto/bus';
/** What applies a state to the maps: the Reconciler, or a stand-in without BPF. */
export interface StateApplier {
  apply(state: NodeState): { changed: Partial<Record<string, { upserts: number; deletes: number }>> };
}

export interface FollowerOptions {
  nc: NatsConnection;
  node: string;
  reconciler: StateApplier;
  logger: Logger;
  /** The inbox prefix the connection was made with (see proto permissions). */
  inboxPrefix?: string;
  /** Called after every change of applied state (for status reports). */
  onApplied?: (state: NodeState) => void;
}

/** At most this many deltas are folded before the maps are written. */
const MAX_BATCH = 1000;

function emptyState(node: string): NodeState {
  return { apiVersion: NODE_STATE_API_VERSION, kind: 'NodeState', node, generation: 0, switches: DEFAULT_SWITCHES, endpoints: [], pairs: [] };
}

export class NodeFollower {
  private kv: KV | undefined;
  private follower: Follower | undefined;
  private resyncing: Promise<void> | undefined;
  /** What the maps hold. */
  state: NodeState;
  /** Highest generation seen on the bus. */
  desiredGeneration = 0;
  lastError: string | undefined;
  /** Stream sequence of the last delta that caused a resync. */
  private gapSeq = 0;
  /** Deltas applied in memory, not yet in the maps. */
  private batch: { acc: NodeStateAccumulator; firstSeq: number; lastSeq?: number; count: number } | undefined;
  readonly stats = { applied: 0, duplicates: 0, gaps: 0, rejected: 0, resyncs: 0 };

  constructor(private readonly o: FollowerOptions) {
    this.state = emptyState(o.node);
  }

  /** Waits (with backoff) for the control plane to have created the bus, then follows. */
  async start(): Promise<void> {
    for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
      try {
        // Direct gets name the key in the subject, so NATS permissions can
        // confine a worker to its own node's snapshot.
        const js = jetstream(this.o.nc, this.o.inboxPrefix ? { watcherPrefix: this.o.inboxPrefix } : {});
        this.kv = await new Kvm(js).open(SNAPSHOT_BUCKET, { allow_direct: true });
        await this.resync('start');
        return;
      } catch (err) {
        // Before the control plane has created the bucket and stream, gets
        // and consumer creates find nothing (not found, no responders, or a
        // timeout where permissions hide the difference).
        if (!/not found|no responders|timeout|503/i.test((err as Error).message)) throw err;
        this.o.logger.info({ retryMs: delay, err: (err as Error).message }, 'bus not created yet (the control plane creates it): waiting');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Resolves once every delta stored at the last (re)sync has been applied. */
  async caughtUp(): Promise<void> {
    await this.resyncing;
    await this.follower?.caughtUp;
  }

  async stop(): Promise<void> {
    await this.resyncing;
    await this.follower?.stop();
    this.follower = undefined;
  }

  private resync(reason: string): Promise<void> {
    this.resyncing ??= this.doResync(reason).finally(() => (this.resyncing = undefined));
    return this.resyncing;
  }

  private async doResync(reason: string): Promise<void> {
    await this.follower?.stop();
    this.follower = undefined;
    this.batch = undefined;
    this.stats.resyncs++;
    const stored = await readSnapshot(this.kv!, this.o.node);
    let from = 1;
    if (stored) {
      this.apply(stored.snapshot.state, `snapshot (${reason})`);
      from = stored.snapshot.deltaSeq + 1;
    }
    this.o.logger.info({ generation: this.state.generation, fromSeq: from, reason }, 'following the bus');
    this.audit('resync', { generation: this.state.generation, reason, summary: `from snapshot generation ${stored?.snapshot.state.generation ?? 0}, deltas from sequence ${from}` });
    this.follower = await followSubject(this.o.nc, subjects.delta(this.o.node), from, (m) => this.onDelta(m), this.o.inboxPrefix);
  }

  private apply(next: NodeState, what: string): void {
    const r = this.o.reconciler.apply(next);
    this.state = next;
    this.desiredGeneration = Math.max(this.desiredGeneration, next.generation);
    this.stats.applied++;
    this.o.logger.info({ generation: next.generation, changed: r.changed, via: what }, 'desired state applied');
    this.audit('applied', { generation: next.generation, summary: `${what}: ${Object.entries(r.changed).map(([m, c]) => `${m} +${c?.upserts ?? 0}/-${c?.deletes ?? 0}`).join(', ') || 'no map change'}` });
    this.o.onApplied?.(next);
  }

  /**
   * Deltas go into an in-memory accumulator and reach the maps when the
   * consumer has nothing more pending (or every MAX_BATCH deltas): a worker
   * catching up on thousands of deltas applies the result once, and a live
   * one applies each delta as it comes (pending is then 0).
   */
  private onDelta(m: DeltaMsg): void {
    if (this.resyncing) return; // the resync restarts the follower after the snapshot
    try {
      const d = parseNodeStateDelta(parseJson(m.data), this.o.node);
      this.desiredGeneration = Math.max(this.desiredGeneration, d.toGeneration);
      const have = this.batch?.acc.currentGeneration ?? this.state.generation;
      if (d.toGeneration <= have) {
        this.stats.duplicates++;
      } else if (d.fromGeneration !== have) {
        if (m.seq <= this.gapSeq) {
          // Seen before a resync that did not close it: this delta cannot
          // follow any state the snapshot leads to. Skip it, don't loop.
          throw new ValidationError('$.fromGeneration', `delta ${d.fromGeneration} -> ${d.toGeneration} does not follow generation ${have}, also after a resync`);
        }
        this.gapSeq = m.seq;
        this.stats.gaps++;
        this.batch = undefined;
        this.o.logger.warn({ have, from: d.fromGeneration, to: d.toGeneration, seq: m.seq }, 'gap in deltas: resyncing from the snapshot');
        void this.resync(`gap: have ${have}, delta from ${d.fromGeneration}`).catch((err: Error) => this.fail(err));
        return;
      } else {
        this.batch ??= { acc: new NodeStateAccumulator(this.state), firstSeq: m.seq, count: 0 };
        this.batch.acc.apply(d);
        this.batch.count++;
        this.batch.lastSeq = m.seq;
      }
    } catch (err) {
      this.reject(err as Error, `stream sequence ${m.seq}`);
    }
    if (this.batch && (m.pending === 0 || this.batch.count >= MAX_BATCH)) this.flushBatch();
  }

  private flushBatch(): void {
    const b = this.batch;
    this.batch = undefined;
    if (!b) return;
    const what = b.count === 1 ? `delta seq ${b.lastSeq}` : `${b.count} deltas, seq ${b.firstSeq}..${b.lastSeq}`;
    let next: NodeState;
    try {
      // The result must itself be a valid state (e.g. no pair to a missing endpoint).
      next = parseNodeState(b.acc.toState(), this.o.node);
    } catch (err) {
      // Nothing of the batch is applied; the next delta will not follow and
      // trigger one resync, after which these sequences are refused.
      this.gapSeq = Math.max(this.gapSeq, b.lastSeq ?? 0);
      this.reject(err as Error, what);
      return;
    }
    try {
      this.apply(next, what);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private reject(err: Error, what: string): void {
    this.stats.rejected++;
    const field = err instanceof ValidationError ? err.field : undefined;
    this.lastError = err.message;
    this.o.logger.error({ what, err: this.lastError }, 'delta rejected; maps unchanged');
    this.audit('rejected', { generation: this.state.generation, ...(field ? { field } : {}), reason: this.lastError, summary: what });
  }

  private fail(err: Error): void {
    this.lastError = err.message;
    this.o.logger.error({ err: err.message }, 'applying failed; will resync');
    void this.resync('apply failed').catch(() => {});
  }

  private audit(type: AuditEventType, ev: Partial<AuditEvent>): void {
    const full: AuditEvent = { apiVersion: API_VERSION, kind: 'AuditEvent', type, node: this.o.node, time: new Date().toISOString(), source: `worker/${this.o.node}`, ...ev };
    try {
      this.o.nc.publish(subjects.audit(this.o.node, type), JSON.stringify(full));
    } catch {
      // disconnected: audit is best effort, the log has it
    }
  }
}
