/**
 * Reading every delta after a stream sequence, in order, through an ordered
 * consumer (a server-side cursor that the client recreates by itself after a
 * gap, a reconnect or a server restart). Used by a new leader to learn where
 * every node stands; only the control plane's account can create consumers.
 */
import { DeliverPolicy, jetstream, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { DELTA_STREAM } from '../subjects.js';

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
): Promise<Follower> {
  const js = jetstream(nc);
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

