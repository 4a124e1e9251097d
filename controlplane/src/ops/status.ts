/**
 * `meshlane status`: where every node stands. Desired generation: the newer
 * of the node's snapshot and its latest delta; applied generation, bus state
 * and counters: its latest WorkerStatus (MESHLANE_STATUS keeps one per
 * node); heartbeat age: since that status was stored.
 */
import { DELTA_STREAM, STATUS_STREAM, parseJson, parseNodeStateDelta, parseWorkerStatus, subjects, type WorkerStatus } from '@meshlane/proto';
import { readSnapshot } from '@meshlane/proto/bus';
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

export interface StatusReport {
  converged: boolean;
  staleAfterMs: number;
  nodes: NodeRow[];
}

/** Every node token that has a snapshot, a delta or a status. */
async function nodeTokens(r: BusReader): Promise<string[]> {
  const tokens = new Set(await r.snapshotTokens());
  for (const s of [...(await r.subjects(DELTA_STREAM, subjects.allDeltas)), ...(await r.subjects(STATUS_STREAM, subjects.allStatus))]) {
    const c = classify(s);
    if (c) tokens.add(c.token);
  }
  return [...tokens].sort();
}

async function desired(r: BusReader, node: string, problems: string[]): Promise<{ gen: number | null; from: NodeRow['desiredFrom'] }> {
  let gen: number | null = null;
  let from: NodeRow['desiredFrom'] = null;
  try {
    const s = await readSnapshot(await r.kv(), node);
    if (s) [gen, from] = [s.snapshot.state.generation, 'snapshot'];
  } catch (err) {
    problems.push(`snapshot: ${messageOf(err)}`);
  }
  const m = await r.last(DELTA_STREAM, subjects.delta(node));
  if (m) {
    try {
      const d = parseNodeStateDelta(parseJson(m.data), node);
      if (gen === null || d.toGeneration > gen) [gen, from] = [d.toGeneration, 'delta'];
    } catch (err) {
      problems.push(`latest delta (sequence ${m.seq}): ${messageOf(err)}`);
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
      const s = parseWorkerStatus(parseJson(m.data));
      if (s.node !== node) throw new Error(`$.node: status of ${s.node} on ${node}'s subject`);
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
  return { converged: nodes.every((n) => n.condition === 'converged'), staleAfterMs, nodes };
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
  if (rep.nodes.length === 0) return 'no nodes on the bus (no snapshot, delta or worker status yet)';
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
  const summary = lagging === 0 ? `all ${rep.nodes.length} node(s) converged` : `${lagging} of ${rep.nodes.length} node(s) not converged`;
  return `${table(head, rows)}\n${summary}`;
}
