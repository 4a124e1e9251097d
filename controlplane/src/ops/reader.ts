/**
 * Read-only access to the bus, with nothing the auditor is denied: stream
 * info (with a subjects filter, which lists snapshot keys and node subjects),
 * message gets by sequence / next-by-subject / last-by-subject
 * ($JS.API.STREAM.MSG.GET, which works whether or not a stream allows direct
 * gets) and direct gets of snapshot keys. It creates no consumer: the
 * auditor may not, and an operator's look must leave nothing behind.
 */
import { jetstreamManager, type JetStreamManager, type MsgRequest, type StoredMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { SNAPSHOT_SUBJECT_PREFIX, SNAPSHOT_STREAM } from '@meshlane/proto';
import { readSnapshot, type StoredSnapshot } from '@meshlane/proto/bus';
import { explain } from './errors.js';

export class BusReader {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly timeoutMs: number,
  ) {}

  static async open(nc: NatsConnection, timeoutMs: number): Promise<BusReader> {
    try {
      return new BusReader(nc, await jetstreamManager(nc, { timeout: timeoutMs }), timeoutMs);
    } catch (err) {
      throw explain(err, 'JetStream');
    }
  }

  /** A node's snapshot, by a direct get (the key is in the subject). Throws a ValidationError when it does not parse. */
  async snapshot(node: string): Promise<StoredSnapshot | undefined> {
    try {
      return await readSnapshot(this.nc, node, this.timeoutMs);
    } catch (err) {
      if (err instanceof Error && err.name === 'ValidationError') throw err;
      throw explain(err, `snapshot of node ${node}`);
    }
  }

  /** The subjects in `stream` that match `filter` and hold a message. */
  async subjects(stream: string, filter: string): Promise<string[]> {
    try {
      const si = await this.jsm.streams.info(stream, { subjects_filter: filter });
      return Object.keys(si.state.subjects ?? {}).sort();
    } catch (err) {
      throw explain(err, `stream ${stream}`);
    }
  }

  /** Node tokens of the snapshot keys. */
  async snapshotTokens(): Promise<string[]> {
    const prefix = `${SNAPSHOT_SUBJECT_PREFIX}.`;
    return (await this.subjects(SNAPSHOT_STREAM, `${prefix}>`)).map((s) => s.slice(prefix.length));
  }

  async lastSeq(stream: string): Promise<{ first: number; last: number }> {
    try {
      const si = await this.jsm.streams.info(stream);
      return { first: si.state.first_seq, last: si.state.last_seq };
    } catch (err) {
      throw explain(err, `stream ${stream}`);
    }
  }

  private async get(stream: string, q: MsgRequest): Promise<StoredMsg | null> {
    try {
      return await this.jsm.streams.getMessage(stream, q);
    } catch (err) {
      throw explain(err, `reading stream ${stream}`);
    }
  }

  /** The latest message on `subject`, or null. */
  last(stream: string, subject: string): Promise<StoredMsg | null> {
    return this.get(stream, { last_by_subj: subject });
  }

  /** The first message at or after `seq` whose subject matches `filter`, or null. */
  next(stream: string, filter: string, seq: number): Promise<StoredMsg | null> {
    const q = { seq: Math.max(1, seq), next_by_subj: filter };
    return this.get(stream, q);
  }

  /** Every message matching `filter` from `fromSeq` on, in order, up to the stream's end when each is read. */
  async *from(stream: string, filter: string, fromSeq: number): AsyncGenerator<StoredMsg> {
    for (let seq = fromSeq; ; ) {
      const m = await this.next(stream, filter, seq);
      if (!m) return;
      yield m;
      seq = m.seq + 1;
    }
  }

  /**
   * The first sequence whose message on `filter` was stored at or after
   * `since` (binary search over message gets: stream times rise with the
   * sequence). Past the end when there is none.
   */
  async seqAt(stream: string, filter: string, since: Date): Promise<number> {
    const { first, last } = await this.lastSeq(stream);
    let lo = Math.max(1, first);
    let hi = last + 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const m = await this.next(stream, filter, mid);
      if (!m || m.time.getTime() >= since.getTime()) hi = mid;
      else lo = m.seq + 1;
    }
    return lo;
  }
}
