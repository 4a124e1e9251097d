/**
 * `meshlane status`: where every node stands. Desired generation: the newer
 * of the node's snapshot and its latest delta; applied generation, bus state
 * and counters: its latest WorkerStatus (MESHLANE_STATUS keeps one per
 * node); heartbeat age: since that status was stored.
 */
import { DELTA_STREAM, STATUS_STREAM, SUBJECT_ROOT, parseControlPlaneStatus, parseJson, parseNodeStateDelta, parseWorkerStatus, subjects, type ControlPlaneStatus, type WorkerStatus } from '@meshlane/proto';
import { formatAge } from './duration.js';
import { classify, nodeFromToken } from './events.js';
import { messageOf } from './errors.js';
import type { BusReader } from './reader.js';
import { table } from './table.js';

export type NodeCondition = 'converged' | 'lagging' | 'stale' | 'no-status' | 'disconnected' | 'no-desired-state' | 'ahead';

export interface NodeRow {
  node: string;
  desiredGeneration: number | null;
  /** Where the desired generation came from. */
  desiredFrom: 'snapshot' | 'delta' | null;
  appliedGeneration: number | null;
  lag: number | null;
  bus: WorkerStatus['bus'] | null;
  /** When the latest status was stored on the bus (ISO), and how long ago (ms). */
  lastHeartbeat: string | null;
  heartbeatAgeMs: number | null;
  stale: boolean;
  condition: NodeCondition;
  paired: number | null;
  bytesRedirected: number | null;
  held: number | null;
  lastError: string | null;
  /** What could not be read or did not validate. */
  problems: string[];
}

/** The leader's heartbeat, as last stored. */
export interface ControlPlaneRow {
  status: ControlPlaneStatus | null;
  ageMs: number | null;
  /** Why the control plane is not publishing everything (empty: it is). */
  problems: string[];
}

export interface StatusReport {
  converged: boolean;
  staleAfterMs: number;
  controlplane: ControlPlaneRow;
  nodes: NodeRow[];
}

/** Every node token that has a snapshot, a delta or a status. */
async function nodeTokens(r: BusReader): Promise<string[]> {
  const tokens = new Set(await r.snapshotTokens());
  // Every node's first delta is delta.0: listing those is enough to find them.
  for (const s of [...(await r.subjects(DELTA_STREAM, `${SUBJECT_ROOT}.node.*.delta.0`)), ...(await r.subjects(STATUS_STREAM, subjects.allStatus))]) {
    const c = classify(s);
    if (c) tokens.add(c.token);
  }
  return [...tokens].sort();
}

async function desired(r: BusReader, node: string, problems: string[]): Promise<{ gen: number | null; from: NodeRow['desiredFrom'] }> {
  let gen: number | null = null;
  let from: NodeRow['desiredFrom'] = null;
  try {
    const s = await r.snapshot(node);
    if (s) [gen, from] = [s.snapshot.state.generation, 'snapshot'];
  } catch (err) {
    problems.push(`snapshot: ${messageOf(err)}`);
  }
  // Then the deltas after it, one generation at a time, as the worker reads them.
  for (let g = gen ?? 0; ; g++) {
    const m = await r.last(DELTA_STREAM, subjects.delta(node, g));
    if (!m) break;
    try {
      const d = parseNodeStateDelta(parseJson(m.data), node);
      if (d.fromGeneration !== g) throw new Error(`$.fromGeneration: ${d.fromGeneration} stored as the delta from ${g}`);
      [gen, from] = [d.toGeneration, 'delta'];
    } catch (err) {
      problems.push(`delta from generation ${g} (sequence ${m.seq}) is not valid: ${messageOf(err)}`);
      break;
    }
  }
  return { gen, from };
}

function sum(c: Record<string, number>, keys: (k: string) => boolean): number {
  return Object.entries(c).reduce((n, [k, v]) => (keys(k) && typeof v === 'number' ? n + v : n), 0);
}

async function nodeRow(r: BusReader, token: string, now: number, staleAfterMs: number): Promise<NodeRow> {
  const node = nodeFromToken(token);
  const problems: string[] = [];
  const want = await desired(r, node, problems);
  let st: WorkerStatus | undefined;
  let stored: Date | undefined;
  const m = await r.last(STATUS_STREAM, subjects.status(node));
  if (m) {
    try {
      const s = parseWorkerStatus(parseJson(m.data), node);
      [st, stored] = [s, m.time];
    } catch (err) {
      problems.push(`latest status: ${messageOf(err)}`);
    }
  }
  const age = stored ? now - stored.getTime() : null;
  const stale = age === null || age > staleAfterMs;
  const applied = st?.appliedGeneration ?? null;
  const lag = want.gen !== null && applied !== null ? want.gen - applied : null;
  const condition: NodeCondition = !st
    ? 'no-status'
    : stale
      ? 'stale'
      : want.gen === null
        ? 'no-desired-state'
        : lag !== null && lag > 0
          ? 'lagging'
          : lag !== null && lag < 0
            ? 'ahead'
            : st.bus !== 'connected'
              ? 'disconnected'
              : 'converged';
  return {
    node,
    desiredGeneration: want.gen,
    desiredFrom: want.from,
    appliedGeneration: applied,
    lag,
    bus: st?.bus ?? null,
    lastHeartbeat: stored?.toISOString() ?? null,
    heartbeatAgeMs: age,
    stale,
    condition,
    paired: st ? sum(st.counters, (k) => k.startsWith('paired_')) : null,
    bytesRedirected: st ? (st.counters.bytes_redirected ?? 0) : null,
    held: st ? (st.counters.held ?? 0) : null,
    lastError: st?.lastError ?? null,
    problems,
  };
}

export async function gatherStatus(r: BusReader, staleAfterMs: number, now = Date.now()): Promise<StatusReport> {
  const nodes: NodeRow[] = [];
  for (const t of await nodeTokens(r)) nodes.push(await nodeRow(r, t, now, staleAfterMs));
  const controlplane = await controlPlaneRow(r, now, staleAfterMs);
  return { converged: nodes.every((n) => n.condition === 'converged') && controlplane.problems.length === 0, staleAfterMs, controlplane, nodes };
}

async function controlPlaneRow(r: BusReader, now: number, staleAfterMs: number): Promise<ControlPlaneRow> {
  const m = await r.last(STATUS_STREAM, subjects.controlplaneStatus);
  if (!m) return { status: null, ageMs: null, problems: ['no leader heartbeat on the bus: no control plane is publishing'] };
  let st: ControlPlaneStatus;
  try {
    st = parseControlPlaneStatus(parseJson(m.data));
  } catch (err) {
    return { status: null, ageMs: null, problems: [`leader heartbeat is not valid: ${messageOf(err)}`] };
  }
  const ageMs = now - m.time.getTime();
  const problems: string[] = [];
  if (ageMs > staleAfterMs) problems.push(`leader heartbeat ${formatAge(ageMs)} old: no control plane is publishing`);
  if (st.fenced) problems.push(`leader ${st.source} is fenced and publishes nothing: ${st.fenced}`);
  for (const [node, why] of Object.entries(st.refused)) problems.push(`node ${node} cannot be published: ${why}`);
  if (st.retrying.length) problems.push(`writes being retried for ${st.retrying.length} node(s): ${st.retrying.slice(0, 5).join(', ')}`);
  return { status: st, ageMs, problems };
}

function bytes(n: number | null): string {
  if (n === null) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) [v, i] = [v / 1024, i + 1];
  return i === 0 ? `${v}B` : `${v.toFixed(1)}${units[i]}`;
}

const num = (n: number | null) => (n === null ? '-' : String(n));

export function renderStatus(rep: StatusReport): string {
  const cp = rep.controlplane;
  const leader = cp.status ? `control plane: ${cp.status.source} leads with epoch ${cp.status.epoch}, ${cp.status.nodes} node(s), heartbeat ${formatAge(cp.ageMs ?? 0)} ago, ${cp.status.repairs} repair(s)` : 'control plane: no leader heartbeat';
  const head0 = [leader, ...cp.problems.map((p) => `  PROBLEM: ${p}`)].join('\n');
  if (rep.nodes.length === 0) return `${head0}\nno nodes on the bus (no snapshot, delta or worker status yet)`;
  const rows = rep.nodes.map((n) => [
    n.node,
    num(n.desiredGeneration),
    num(n.appliedGeneration),
    num(n.lag),
    n.bus ?? '-',
    n.heartbeatAgeMs === null ? 'never' : `${formatAge(n.heartbeatAgeMs)} ago${n.stale ? ' STALE' : ''}`,
    n.condition === 'converged' ? 'converged' : n.condition.toUpperCase(),
    num(n.paired),
    bytes(n.bytesRedirected),
    num(n.held),
    [n.lastError, ...n.problems].filter((x) => x).join('; ') || '-',
  ]);
  const head = ['NODE', 'DESIRED', 'APPLIED', 'LAG', 'BUS', 'HEARTBEAT', 'STATE', 'PAIRED', 'BYTES_REDIRECTED', 'HELD', 'LAST_ERROR'];
  const lagging = rep.nodes.filter((n) => n.condition !== 'converged').length;
  const summary =
    lagging === 0 && cp.problems.length === 0
      ? `all ${rep.nodes.length} node(s) converged`
      : lagging === 0
        ? `all ${rep.nodes.length} node(s) have applied what is on the bus, but the control plane has problems (above)`
        : `${lagging} of ${rep.nodes.length} node(s) not converged`;
  return `${head0}\n${table(head, rows)}\n${summary}`;
}
