/**
 * `meshlane pairs`: a node's desired state as its worker would build it:
 * the snapshot, then every later delta on the node's subject, applied in
 * generation order (duplicates skipped, invalid deltas skipped, a gap
 * stops the replay there and is reported).
 */
import { DEFAULT_SWITCHES, DELTA_STREAM, NODE_STATE_API_VERSION, applyNodeStateDelta, parseJson, parseNodeStateDelta, subjects, type NodeState } from '@meshlane/proto';
import { readSnapshot } from '@meshlane/proto/bus';
import { CliError, messageOf } from './errors.js';
import type { BusReader } from './reader.js';
import { table } from './table.js';

export interface NodeView {
  state: NodeState;
  /** Generation of the snapshot (null: none, built from deltas alone). */
  snapshotGeneration: number | null;
  snapshotDeltaSeq: number;
  deltasApplied: number;
  /** Deltas skipped or not applied, and why. */
  warnings: string[];
}

export async function loadNode(r: BusReader, node: string): Promise<NodeView> {
  const stored = await readSnapshot(await r.kv(), node).catch((err: unknown) => {
    throw new CliError(`snapshot of node ${node} is not valid: ${messageOf(err)}`);
  });
  let state: NodeState = stored?.snapshot.state ?? { apiVersion: NODE_STATE_API_VERSION, kind: 'NodeState', node, generation: 0, switches: DEFAULT_SWITCHES, endpoints: [], pairs: [] };
  const fromSeq = (stored?.snapshot.deltaSeq ?? 0) + 1;
  const warnings: string[] = [];
  let applied = 0;
  let seen = 0;
  for await (const m of r.from(DELTA_STREAM, subjects.delta(node), fromSeq)) {
    seen++;
    let d;
    try {
      d = parseNodeStateDelta(parseJson(m.data), node);
    } catch (err) {
      warnings.push(`delta at sequence ${m.seq} skipped: ${messageOf(err)}`);
      continue;
    }
    if (d.toGeneration <= state.generation) continue;
    if (d.fromGeneration !== state.generation) {
      warnings.push(`delta at sequence ${m.seq} goes from generation ${d.fromGeneration} but the state is at ${state.generation}: later deltas not applied`);
      break;
    }
    state = applyNodeStateDelta(state, d);
    applied++;
  }
  if (!stored && seen === 0) throw new CliError(`no snapshot for node ${node} (and no deltas): is it a node the control plane knows?`);
  if (!stored) warnings.unshift(`no snapshot for node ${node}: built from its deltas alone`);
  return { state, snapshotGeneration: stored?.snapshot.state.generation ?? null, snapshotDeltaSeq: fromSeq - 1, deltasApplied: applied, warnings };
}

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

export function renderNode(v: NodeView): string {
  const s = v.state;
  const origin = v.snapshotGeneration === null ? `${v.deltasApplied} delta(s)` : `snapshot generation ${v.snapshotGeneration} + ${v.deltasApplied} delta(s)`;
  const out = [
    `node ${s.node}  generation ${s.generation} (${origin})`,
    `switches: enabled=${s.switches.enabled} appSockets=${s.switches.appSockets} maxQueuedBytes=${s.switches.maxQueuedBytes}`,
    '',
    `endpoints (${s.endpoints.length}):`,
    s.endpoints.length ? table(['POD', 'IPS', 'ACCELERATE', 'APP_SOCKETS'], s.endpoints.map((e) => [e.pod, e.ips.join(',') || '-', yesNo(e.accelerate), yesNo(e.appSockets)])) : '  (none)',
    '',
    `accelerated pairs (${s.pairs.length}):`,
    s.pairs.length ? table(['CLIENT', 'SERVER'], s.pairs.map((p) => [p.client, p.server])) : '  (none)',
  ];
  return out.join('\n');
}

export function nodeJson(v: NodeView): object {
  return {
    node: v.state.node,
    generation: v.state.generation,
    snapshotGeneration: v.snapshotGeneration,
    snapshotDeltaSeq: v.snapshotDeltaSeq,
    deltasApplied: v.deltasApplied,
    switches: v.state.switches,
    endpoints: v.state.endpoints,
    pairs: v.state.pairs,
    warnings: v.warnings,
  };
}
