/**
 * What the bus says every node has: its snapshot plus every delta stored
 * after it. A new leader seeds its reconciler from this (so its first
 * deltas continue exactly where the last leader stopped) and its publisher
 * (so its conditional writes expect the right sequence and revision).
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import {
  DEFAULT_SWITCHES,
  DELTA_STREAM,
  NODE_STATE_API_VERSION,
  SUBJECT_ROOT,
  applyNodeStateDelta,
  nodeToken,
  parseJson,
  parseNodeStateDelta,
  parseSnapshot,
  subjects,
  type NodeState,
} from '@meshlane/proto';
import { directGet, followSubject } from '@meshlane/proto/bus';
import { jetstreamManager } from '@nats-io/jetstream';

export interface NodeBusState {
  state: NodeState;
  /** Stream sequence of the node's last delta (0: none). */
  deltaSeq: number;
  /** Snapshot bucket revision (0: no entry). */
  revision: number;
  /** Highest leader epoch seen in the node's snapshot. */
  epoch: number;
}

export function emptyNodeState(node: string): NodeState {
  return { apiVersion: NODE_STATE_API_VERSION, kind: 'NodeState', node, generation: 0, switches: DEFAULT_SWITCHES, endpoints: [] };
}

export async function readBusState(nc: NatsConnection, kv: KV, log: Logger): Promise<Map<string, NodeBusState>> {
  const out = new Map<string, NodeBusState>();
  for await (const key of await kv.keys()) {
    const e = await kv.get(key);
    if (!e || e.operation !== 'PUT' || e.length === 0) continue;
    try {
      const s = parseSnapshot(parseJson(e.value));
      out.set(s.state.node, { state: s.state, deltaSeq: s.deltaSeq, revision: e.revision, epoch: s.epoch });
    } catch (err) {
      log.warn({ key, err: (err as Error).message }, 'unreadable snapshot: the node will be rebuilt from its deltas and repaired at its next write');
    }
  }
  // Deltas newer than the oldest snapshot, in stream order, onto each node.
  // A node without a snapshot is replayed from its first delta (`delta.0`,
  // always its first), so only those few subjects are listed.
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(DELTA_STREAM, { subjects_filter: `${SUBJECT_ROOT}.node.*.delta.0` });
  const snapshotted = new Set([...out.keys()].map((n) => nodeToken(n)));
  let from = out.size ? Math.min(...[...out.values()].map((s) => s.deltaSeq)) + 1 : 1;
  for (const subject of Object.keys(info.state.subjects ?? {})) {
    if (snapshotted.has(subject.split('.')[3] ?? '')) continue;
    const first = await directGet(nc, DELTA_STREAM, subject, 5000);
    if (first) from = Math.min(from, first.seq);
  }
  const follower = await followSubject(nc, subjects.allDeltas, from, (m) => {
    let d;
    try {
      d = parseNodeStateDelta(parseJson(m.data));
    } catch {
      return; // workers refuse it too; the next write to that node repairs it
    }
    if (m.subject !== subjects.delta(d.node, d.fromGeneration)) return; // stored under another node's or generation's subject
    let st = out.get(d.node);
    if (!st) out.set(d.node, (st = { state: emptyNodeState(d.node), deltaSeq: 0, revision: 0, epoch: 0 }));
    if (m.seq <= st.deltaSeq) return;
    st.deltaSeq = m.seq;
    if (d.fromGeneration === st.state.generation) st.state = applyNodeStateDelta(st.state, d);
  });
  await follower.caughtUp;
  await follower.stop();
  return out;
}
