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
  applyNodeStateDelta,
  parseJson,
  parseNodeStateDelta,
  parseSnapshot,
  subjects,
  type NodeState,
} from '@meshlane/proto';
import { followSubject } from '@meshlane/proto/bus';
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
  return { apiVersion: NODE_STATE_API_VERSION, kind: 'NodeState', node, generation: 0, switches: DEFAULT_SWITCHES, endpoints: [], pairs: [] };
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
      log.warn({ key, err: (err as Error).message }, 'unreadable snapshot: the node will be rebuilt from its deltas');
    }
  }
  // Deltas newer than the oldest snapshot, in stream order, onto each node;
  // from the start when a node has deltas but no snapshot yet.
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(DELTA_STREAM, { subjects_filter: subjects.allDeltas });
  const withDeltas = Object.keys(info.state.subjects ?? {});
  const unsnapshotted = withDeltas.some((subject) => ![...out.keys()].some((node) => subjects.delta(node) === subject));
  const from = out.size && !unsnapshotted ? Math.min(...[...out.values()].map((s) => s.deltaSeq)) + 1 : 1;
  const follower = await followSubject(nc, subjects.allDeltas, from, (m) => {
    let d;
    try {
      d = parseNodeStateDelta(parseJson(m.data));
    } catch {
      return; // workers reject it too; it changed nothing
    }
    let st = out.get(d.node);
    if (!st) out.set(d.node, (st = { state: emptyNodeState(d.node), deltaSeq: 0, revision: 0, epoch: 0 }));
    if (m.seq <= st.deltaSeq) return;
    st.deltaSeq = m.seq; // the next conditional publish must expect this one
    if (d.fromGeneration === st.state.generation) st.state = applyNodeStateDelta(st.state, d);
  });
  await follower.caughtUp;
  await follower.stop();
  return out;
}
