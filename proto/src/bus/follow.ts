/**
 * Reading a node's state from the bus: its snapshot from the bucket, then
 * every delta after the snapshot's sequence, in order, through an ordered
 * consumer (a server-side cursor that the client recreates by itself after a
 * gap, a reconnect or a server restart). Used by workers to follow their
 * node, and by a new leader to learn where every node stands.
 */
import { DeliverPolicy, jetstream, type JsMsg } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { parseJson, parseSnapshot } from '../decode.js';
import type { Snapshot } from '../messages.js';
import { DELTA_STREAM, subjects } from '../subjects.js';

export interface StoredSnapshot {
  snapshot: Snapshot;
  revision: number;
}

export async function readSnapshot(kv: KV, node: string): Promise<StoredSnapshot | undefined> {
  const e = await kv.get(subjects.snapshotKey(node));
  if (!e || e.operation !== 'PUT' || e.length === 0) return undefined;
  return { snapshot: parseSnapshot(parseJson(e.value), node), revision: e.revision };
}

export interface DeltaMsg {
  seq: number;
  /** Messages after this one on the consumer at delivery time. */
  pending: number;
  data: Uint8Array;
  subject: string;
}

export interface Follower {
  stop(): Promise<void>;
  /** Resolves once everything stored when the follower started has been handed over. */
  caughtUp: Promise<void>;
}

/**
 * Hands every stored message on `filter` from `fromSeq` on to `onMsg`, one at
 * a time and in order, then keeps following new ones until stop().
 */
export async function followSubject(
  nc: NatsConnection,
  filter: string,
  fromSeq: number,
  onMsg: (m: DeltaMsg) => Promise<void> | void,
  /** The connection's inbox prefix, when its permissions confine replies to one. */
  inboxPrefix?: string,
): Promise<Follower> {
  const js = jetstream(nc, inboxPrefix ? { watcherPrefix: inboxPrefix } : {});
  const consumer = await js.consumers.get(DELTA_STREAM, {
    filter_subjects: filter,
    deliver_policy: fromSeq > 1 ? DeliverPolicy.StartSequence : DeliverPolicy.All,
    ...(fromSeq > 1 ? { opt_start_seq: fromSeq } : {}),
  });
  const info = await consumer.info(true);
  let resolveCaught: () => void = () => {};
  const caughtUp = new Promise<void>((r) => (resolveCaught = r));
  if ((info.num_pending ?? 0) === 0) resolveCaught();
  // Short pulls: after a server restart the client's recreated ordered
  // consumer was seen to deliver one message and then wait for a missed
  // heartbeat (30 s by default) before the next; 2 s pulls bound that stall.
  const messages = await consumer.consume({ max_messages: 1024, expires: 2000 });
  const loop = (async () => {
    for await (const m of messages as AsyncIterable<JsMsg>) {
      await onMsg({ seq: m.seq, pending: m.info.pending, data: m.data, subject: m.subject });
      if (m.info.pending === 0) resolveCaught();
    }
  })();
  return {
    caughtUp,
    async stop() {
      await messages.close();
      await loop.catch(() => {});
    },
  };
}

