/**
 * The worker's side of the bus. Its maps hold generation G of the node's
 * state; the delta to G+1 is stored under `delta.<G>`, which the worker
 * reads by a direct get, so it asks for exactly the next delta and can
 * neither skip one nor apply one twice. Live messages on its delta subjects
 * are only a hint that something new was stored (they are also delivered
 * for publishes JetStream refused); what is applied is always read back
 * from the stream.
 *
 * It never stops. Every failure (NATS away, bus not created yet, a delta or
 * snapshot that does not validate, a map write that fails) is logged,
 * audited, counted, kept in a bounded lastError, and retried with backoff;
 * the maps keep the last good state meanwhile (fail-static). A delta that is
 * refused leaves the worker at its generation until the snapshot moves past
 * it (the control plane repairs a node that way).
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import {
  API_VERSION,
  NODE_STATE_API_VERSION,
  DEFAULT_SWITCHES,
  ValidationError,
  NodeStateAccumulator,
  boundText,
  deltaSubjectGeneration,
  parseJson,
  parseNodeState,
  parseNodeStateDelta,
  subjects,
  type AuditEvent,
  type AuditEventType,
  type NodeState,
  type NodeStateDelta,
} from '@meshlane/proto';
import { readDelta, readSnapshot, type StoredMessage } from '@meshlane/proto/bus';

/** What applies a state to the maps: the Reconciler, or a stand-in without BPF. */
export interface StateApplier {
  apply(state: NodeState): { changed: Partial<Record<string, { upserts: number; deletes: number }>> };
}

export interface FollowerOptions {
  nc: NatsConnection;
  node: string;
  reconciler: StateApplier;
  logger: Logger;
  /** Called after every change of applied state (for status reports). */
  onApplied?: (state: NodeState) => void;
  /** Called after every failure, with its kind (for metrics). */
  onError?: (kind: FollowerErrorKind) => void;
  /** Direct-get timeout (ms). */
  requestTimeoutMs?: number;
  /** A look for missed deltas this often even without a hint (ms). */
  pollMs?: number;
  /** Longest wait between retries after failures (ms). */
  maxBackoffMs?: number;
}

export type FollowerErrorKind = 'bus' | 'rejected' | 'apply';

/** At most this many deltas are folded before the maps are written. */
const MAX_BATCH = 1000;
/** Further behind than this (by the hints), the snapshot is read first. */
const SNAPSHOT_AHEAD = 64;
/** Direct gets in flight while catching up. */
const PIPELINE = 32;

function emptyState(node: string): NodeState {
  return { apiVersion: NODE_STATE_API_VERSION, kind: 'NodeState', node, generation: 0, switches: DEFAULT_SWITCHES, endpoints: [] };
}

class Rejected extends Error {
  override name = 'Rejected';
  constructor(
    override readonly cause: Error,
    readonly what: string,
  ) {
    super(`${what}: ${cause.message}`);
  }
}

export class NodeFollower {
  /** What the maps hold. */
  state: NodeState;
  /** Highest generation validly stored on the bus that this worker has seen. */
  desiredGeneration = 0;
  /** The last failure, bounded for the status message; cleared by the next success. */
  lastError: string | undefined;
  readonly stats = { applied: 0, rejected: 0, resyncs: 0, retries: 0, polls: 0 };

  private readonly timeoutMs: number;
  private sub: Subscription | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** Read the snapshot before the next deltas (start, a refused delta, far behind). */
  private wantSnapshot = true;
  /** Highest generation named by a hint (unvalidated: only decides when to look). */
  private hinted = 0;
  private failures = 0;
  /** Stream sequences already refused (audited once each). */
  private readonly refused = new Set<number>();
  private appliedOnce = false;
  /**
   * Leader epoch of the state in the maps (the snapshot's, or the highest
   * Meshlane-Epoch of the deltas on it). A state from a newer leader at the
   * same generation wins, and a delta an older leader wrote after the new
   * one took over is refused: a handover race cannot leave a worker on a
   * mix of two leaders' states.
   */
  private epoch = 0;

  constructor(private readonly o: FollowerOptions) {
    this.state = emptyState(o.node);
    this.timeoutMs = o.requestTimeoutMs ?? 2000;
  }

  /** True once a state from the bus has been applied. */
  get synced(): boolean {
    return this.appliedOnce;
  }

  /** Subscribes to hints and starts following; returns at once, never throws. */
  start(): void {
    this.sub = this.o.nc.subscribe(subjects.nodeDeltas(this.o.node), {
      callback: (_err, m) => {
        const g = m ? deltaSubjectGeneration(this.o.node, m.subject) : undefined;
        if (g === undefined || g < this.state.generation) return;
        this.hinted = Math.max(this.hinted, g);
        if (g - this.state.generation > SNAPSHOT_AHEAD) this.wantSnapshot = true;
        this.kick();
      },
    });
    this.o.logger.info({ subject: subjects.nodeDeltas(this.o.node), pollMs: this.o.pollMs ?? 5000 }, 'following the bus');
    this.kick();
  }

  /** Look now (after a reconnect, or a hint). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.sync().finally(() => {
      this.running = undefined;
      if (this.stopped) return;
      if (this.again) {
        this.again = false;
        this.kick();
      } else {
        this.schedule();
      }
    });
  }

  /** Resolves once the bus has nothing newer than the maps (tests, benches). */
  async caughtUp(): Promise<void> {
    for (;;) {
      if (this.running) await this.running;
      else if (this.failures === 0 && !this.wantSnapshot && this.hinted <= this.state.generation) return;
      else await new Promise((r) => setTimeout(r, 10));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.sub?.unsubscribe();
    await this.running;
  }

  private schedule(): void {
    const poll = this.o.pollMs ?? 5000;
    const backoff = Math.min(this.o.maxBackoffMs ?? 30_000, 250 * 2 ** Math.min(this.failures, 16));
    const delay = this.failures > 0 ? Math.min(backoff, Math.max(poll, 250)) : poll;
    this.timer = setTimeout(() => {
      this.stats.polls++;
      this.kick();
    }, delay);
    this.timer.unref();
  }

  private async sync(): Promise<void> {
    try {
      if (this.wantSnapshot) await this.fromSnapshot();
      await this.followDeltas();
      this.failures = 0;
    } catch (err) {
      this.failures++;
      this.stats.retries++;
      const e = err as Error;
      if (e instanceof Rejected) {
        this.reject(e);
        this.o.onError?.('rejected');
      } else if (e instanceof ApplyError) {
        this.setError(`applying to the maps failed: ${e.message}`);
        this.o.logger.error({ err: this.lastError, attempt: this.failures }, 'applying the desired state failed; the maps keep the last good state, retrying');
        this.o.onError?.('apply');
      } else {
        this.setError(`bus: ${e.message}`);
        this.o.logger.warn({ err: this.lastError, attempt: this.failures }, 'cannot read the bus yet; the maps keep the last state, retrying');
        this.o.onError?.('bus');
      }
    }
  }

  /**
   * Applies the snapshot when it is ahead of the maps. A snapshot that does
   * not validate is refused like a delta; with no snapshot (a new node) the
   * deltas start from generation 0.
   */
  private async fromSnapshot(): Promise<void> {
    let stored;
    try {
      stored = await readSnapshot(this.o.nc, this.o.node, this.timeoutMs);
    } catch (err) {
      if (err instanceof ValidationError) throw new Rejected(err, 'snapshot');
      throw err;
    }
    this.wantSnapshot = false;
    if (!stored) return;
    const s = stored.snapshot.state;
    this.desiredGeneration = Math.max(this.desiredGeneration, s.generation);
    const newer = s.generation > this.state.generation || (s.generation === this.state.generation && stored.snapshot.epoch > this.epoch);
    if (!newer && this.appliedOnce) return;
    this.stats.resyncs++;
    this.applyState(s, `snapshot at revision ${stored.revision}`);
    this.epoch = stored.snapshot.epoch;
    this.audit('resync', { generation: s.generation, summary: `from the snapshot (revision ${stored.revision}, generation ${s.generation})` });
  }

  /** Reads delta.<G>, delta.<G+1>, ... until there is none, folding them into one map write per batch. */
  private async followDeltas(): Promise<void> {
    for (;;) {
      const acc = new NodeStateAccumulator(this.state);
      const batch: Array<{ seq: number; epoch: number; delta: NodeStateDelta }> = [];
      let epoch = this.epoch;
      // Every delta moves its node by exactly one generation, so the next
      // subjects are known in advance: while deltas keep coming, ask for
      // more of them at once and take the answers in order (a worker far
      // behind pays one round trip per window, not per delta; a live one
      // asks for one).
      const ahead: Array<Promise<StoredMessage | undefined>> = [];
      let next = acc.currentGeneration;
      const refill = () => {
        const window = Math.min(PIPELINE, 1 + batch.length, MAX_BATCH - batch.length);
        while (ahead.length < window) {
          const p = readDelta(this.o.nc, this.o.node, next++, this.timeoutMs);
          p.catch(() => {}); // awaited below, in order; a late one must not go unhandled
          ahead.push(p);
        }
      };
      while (batch.length < MAX_BATCH) {
        const from = acc.currentGeneration;
        refill();
        const m = await ahead.shift()!;
        if (!m) break;
        let d: NodeStateDelta;
        try {
          d = parseNodeStateDelta(parseJson(m.data), this.o.node);
          if (d.fromGeneration !== from) throw new ValidationError('$.fromGeneration', `is ${d.fromGeneration}, but the delta is stored as the one from generation ${from}`);
          const e = Number(m.header('Meshlane-Epoch') ?? '0');
          if (e < epoch) throw new ValidationError('Meshlane-Epoch', `written by leader epoch ${e}, older than the state's ${epoch}`);
          epoch = e;
        } catch (err) {
          // What came before it is still good: apply that, then refuse this one.
          if (batch.length) this.applyBatch(batch);
          this.wantSnapshot = true;
          throw new Rejected(err as Error, `delta from generation ${from} (stream sequence ${m.seq})`);
        }
        acc.apply(d);
        batch.push({ seq: m.seq, epoch, delta: d });
      }
      if (!batch.length) {
        // Nothing stored for this node yet (the control plane has not seen
        // it): the maps keep what they have, pinned from an earlier run.
        // Hinted further than stored (deltas expired, or refused publishes): the snapshot knows.
        if (this.hinted > this.state.generation) this.wantSnapshot = true;
        this.hinted = Math.min(this.hinted, this.state.generation);
        return;
      }
      this.applyBatch(batch);
      if (batch.length < MAX_BATCH) return;
    }
  }

  /**
   * The folded result must itself be a valid state (e.g. no IP claimed twice).
   * If it is not, the deltas are tried one by one so that the good prefix is
   * applied and the exact delta that breaks the state is the one refused.
   */
  private applyBatch(batch: ReadonlyArray<{ seq: number; epoch: number; delta: NodeStateDelta }>): void {
    const acc = new NodeStateAccumulator(this.state);
    for (const b of batch) acc.apply(b.delta);
    const last = batch[batch.length - 1]!;
    const what = batch.length === 1 ? `delta seq ${last.seq}` : `${batch.length} deltas, seq ${batch[0]!.seq}..${last.seq}`;
    try {
      this.applyState(parseNodeState(acc.toState(), this.o.node), what);
      this.epoch = last.epoch;
      return;
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
    }
    const one = new NodeStateAccumulator(this.state);
    let good = this.state;
    let goodEpoch = this.epoch;
    for (const b of batch) {
      one.apply(b.delta);
      try {
        good = parseNodeState(one.toState(), this.o.node);
        goodEpoch = b.epoch;
      } catch (err) {
        if (good !== this.state) {
          this.applyState(good, `deltas up to generation ${good.generation}`);
          this.epoch = goodEpoch;
        }
        this.wantSnapshot = true;
        throw new Rejected(err as Error, `delta from generation ${b.delta.fromGeneration} (stream sequence ${b.seq})`);
      }
    }
  }

  private applyState(next: NodeState, what: string): void {
    let r;
    try {
      r = this.o.reconciler.apply(next);
    } catch (err) {
      throw new ApplyError((err as Error).message);
    }
    this.state = next;
    this.appliedOnce = true;
    this.desiredGeneration = Math.max(this.desiredGeneration, next.generation);
    this.lastError = undefined;
    this.stats.applied++;
    const summary = Object.entries(r.changed).map(([m, c]) => `${m} +${c?.upserts ?? 0}/-${c?.deletes ?? 0}`).join(', ') || 'no map change';
    this.o.logger.info({ generation: next.generation, changed: r.changed, via: what }, 'desired state applied');
    this.audit('applied', { generation: next.generation, summary: boundText(`${what}: ${summary}`) });
    this.o.onApplied?.(next);
  }

  private reject(e: Rejected): void {
    const msg = /stream sequence (\d+)/.exec(e.what);
    const seq = msg ? Number(msg[1]) : -1;
    this.setError(`refused ${e.message}`);
    if (seq >= 0 && this.refused.has(seq)) return; // audited already; still waiting for the snapshot to move on
    if (seq >= 0) this.refused.add(seq);
    this.stats.rejected++;
    const field = e.cause instanceof ValidationError ? e.cause.field : undefined;
    this.o.logger.error({ what: e.what, err: boundText(e.cause.message) }, 'refused; maps unchanged, waiting for a snapshot past it');
    this.audit('rejected', { generation: this.state.generation, ...(field ? { field } : {}), reason: boundText(e.cause.message), summary: boundText(e.what) });
  }

  private setError(text: string): void {
    this.lastError = boundText(text);
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

class ApplyError extends Error {
  override name = 'ApplyError';
}
