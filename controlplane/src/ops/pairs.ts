/**
 * `meshlane pairs`: a node's desired state as its worker would build it:
 * the snapshot, then the deltas from its generation on, read one
 * generation at a time as the worker reads them (an invalid one stops the
 * replay there and is reported).
 */
import { DEFAULT_SWITCHES, DELTA_STREAM, NODE_STATE_API_VERSION, applyNodeStateDelta, parseJson, parseNodeStateDelta, subjects, type NodeState } from '@meshlane/proto';
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
  const stored = await r.snapshot(node).catch((err: unknown) => {
    throw new CliError(`snapshot of node ${node} is not valid: ${messageOf(err)}`);
  });
  let state: NodeState = stored?.snapshot.state ?? { apiVersion: NODE_STATE_API_VERSION, kind: 'NodeState', node, generation: 0, switches: DEFAULT_SWITCHES, endpoints: [] };
  const warnings: string[] = [];
  let applied = 0;
  // The deltas after the snapshot, exactly as the worker reads them: delta.<G>, delta.<G+1>, ...
  for (;;) {
    const m = await r.last(DELTA_STREAM, subjects.delta(node, state.generation));
    if (!m) break;
    let d;
    try {
      d = parseNodeStateDelta(parseJson(m.data), node);
      if (d.fromGeneration !== state.generation) throw new Error(`$.fromGeneration: ${d.fromGeneration} stored as the delta from ${state.generation}`);
    } catch (err) {
      warnings.push(`delta from generation ${state.generation} (sequence ${m.seq}) is not valid, the worker waits for a newer snapshot: ${messageOf(err)}`);
      break;
    }
    state = applyNodeStateDelta(state, d);
    applied++;
  }
  if (!stored && applied === 0) throw new CliError(`no snapshot for node ${node} (and no deltas): is it a node the control plane knows?`);
  if (!stored) warnings.unshift(`no snapshot for node ${node}: built from its deltas alone`);
  return { state, snapshotGeneration: stored?.snapshot.state.generation ?? null, snapshotDeltaSeq: stored?.snapshot.deltaSeq ?? 0, deltasApplied: applied, warnings };
}

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

/** Sidecar -> sidecar is allowed between any two endpoints that both accelerate. */
function acceleratedPairs(s: NodeState): number {
  const n = s.endpoints.filter((e) => e.accelerate).length;
  return n * (n - 1);
}

export function renderNode(v: NodeView): string {
  const s = v.state;
  const origin = v.snapshotGeneration === null ? `${v.deltasApplied} delta(s)` : `snapshot generation ${v.snapshotGeneration} + ${v.deltasApplied} delta(s)`;
  const out = [
    `node ${s.node}  generation ${s.generation} (${origin})`,
    `switches: enabled=${s.switches.enabled} appSockets=${s.switches.appSockets} maxQueuedBytes=${s.switches.maxQueuedBytes}`,
    '',
    `endpoints (${s.endpoints.length}):`,
    s.endpoints.length ? table(['POD', 'IPS', 'ACCELERATE', 'APP_SOCKETS'], s.endpoints.map((e) => [e.pod, e.ips.join(',') || '-', yesNo(e.accelerate), e.appSockets])) : '  (none)',
    '',
    `sidecar pairs: every two accelerated endpoints, ${acceleratedPairs(s)} directed pair(s)`,
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
    acceleratedPairs: acceleratedPairs(v.state),
    warnings: v.warnings,
  };
}
