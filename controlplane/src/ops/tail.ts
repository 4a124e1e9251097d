/**
 * `meshlane audit tail`: every delta, worker status and audit event as it
 * flows, optionally after replaying the delta and audit streams' history
 * from a point in time. Live messages come from core subscriptions (which
 * the auditor may make); history from message gets by sequence, merged by
 * stream time. Live messages that arrive while history is being replayed
 * are held back and dropped when the replay already showed them.
 */
import type { StoredMsg } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { AUDIT_STREAM, DELTA_STREAM, SUBJECT_ROOT, nodeToken, subjects } from '@meshlane/proto';
import { explain } from './errors.js';
import { rawJson, render, type BusEvent } from './events.js';
import type { BusReader } from './reader.js';

export interface TailOptions {
  node?: string;
  json: boolean;
  /** Replay history from this time first ('all': from the beginning). */
  since?: Date | 'all';
  out: (line: string) => void;
  note: (line: string) => void;
}

export interface Tail {
  /** Rejects when the bus refuses a subscription (e.g. a permission). */
  failed: Promise<never>;
  stop(): Promise<void>;
}

/** The live subjects to follow and the replay filters of the two streams. */
export function tailSubjects(node: string | undefined) {
  const t = node === undefined ? undefined : nodeToken(node);
  const audit = t === undefined ? subjects.allAudit : `${SUBJECT_ROOT}.audit.${t}.*`;
  const delta = node === undefined ? subjects.allDeltas : subjects.nodeDeltas(node);
  const status = node === undefined ? subjects.allStatus : subjects.status(node);
  return { live: [delta, status, audit], replay: [{ stream: DELTA_STREAM, filter: delta }, { stream: AUDIT_STREAM, filter: audit }] };
}

async function* mergeByTime(a: AsyncGenerator<StoredMsg>, b: AsyncGenerator<StoredMsg>): AsyncGenerator<StoredMsg> {
  let x = await a.next();
  let y = await b.next();
  while (!x.done || !y.done) {
    if (y.done || (!x.done && x.value.time.getTime() <= y.value.time.getTime())) {
      yield x.value;
      x = await a.next();
    } else {
      yield y.value;
      y = await b.next();
    }
  }
}

const keyOf = (e: { subject: string; data: Uint8Array }) => `${e.subject}\n${Buffer.from(e.data).toString('utf8')}`;

/** How long a replayed message may still show up live (the overlap of replay and subscriptions). */
const OVERLAP_MS = 10_000;

export async function startTail(nc: NatsConnection, reader: BusReader | undefined, o: TailOptions): Promise<Tail> {
  const { live, replay } = tailSubjects(o.node);
  const show = (e: BusEvent) => {
    if (!o.json) return o.out(render(e));
    const j = rawJson(e);
    if (j === undefined) o.note(`skipping a message that is not JSON on ${e.subject}`);
    else o.out(j);
  };
  // Replayed messages recent enough to also arrive live, by subject and payload.
  const recent = new Map<string, number>();
  let held: BusEvent[] | undefined = o.since !== undefined ? [] : undefined;
  const onLive = (e: BusEvent) => {
    if (held) return void held.push(e);
    const k = keyOf(e);
    const n = recent.get(k);
    if (n !== undefined) {
      if (n <= 1) recent.delete(k);
      else recent.set(k, n - 1);
      return;
    }
    show(e);
  };

  let fail: (e: Error) => void = () => {};
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => {});
  const subs: Subscription[] = live.map((subject) =>
    nc.subscribe(subject, {
      callback: (err, m) => {
        if (err) return fail(explain(err, `subscribing to ${subject}`));
        onLive({ subject: m.subject, data: m.data, time: new Date() });
      },
    }),
  );
  const stop = async () => {
    for (const s of subs) s.unsubscribe();
  };
  try {
    await nc.flush();
    if (o.since !== undefined && reader) {
      const t0 = Date.now();
      const since = o.since;
      const cursors = await Promise.all(
        replay.map(async (r) => reader.from(r.stream, r.filter, since === 'all' ? 1 : await reader.seqAt(r.stream, r.filter, since))),
      );
      let count = 0;
      const [a, b] = cursors;
      if (a && b) {
        for await (const m of mergeByTime(a, b)) {
          count++;
          show({ subject: m.subject, data: m.data, time: m.time });
          if (m.time.getTime() >= t0 - OVERLAP_MS) recent.set(keyOf(m), (recent.get(keyOf(m)) ?? 0) + 1);
        }
      }
      o.note(`replayed ${count} message${count === 1 ? '' : 's'} from ${DELTA_STREAM} and ${AUDIT_STREAM}`);
      const waiting = held ?? [];
      held = undefined;
      for (const e of waiting) onLive(e);
      setTimeout(() => recent.clear(), OVERLAP_MS).unref();
    }
  } catch (err) {
    await stop();
    throw explain(err, 'replaying history');
  }
  o.note(`following ${live.join(', ')} (Ctrl-C to stop)`);
  return { failed, stop };
}
