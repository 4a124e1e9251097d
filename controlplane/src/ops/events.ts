/**
 * What flows on the bus, as one readable line each: deltas, worker statuses
 * and audit events. Decoding never throws: a message that fails validation
 * is shown as such (that is what an auditor wants to see).
 */
import { AUDIT_STREAM, DELTA_STREAM, SUBJECT_ROOT, parseJson, parseNodeStateDelta, parseWorkerStatus, ValidationError, type AuditEvent } from '@meshlane/proto';

export type BusKind = 'delta' | 'status' | 'audit';

export interface BusEvent {
  subject: string;
  data: Uint8Array;
  /** Stream time (replay) or arrival time (live). */
  time: Date;
}

/** The node token and kind of a meshlane subject, or undefined for any other subject. */
export function classify(subject: string): { kind: BusKind; token: string; auditType?: string } | undefined {
  const parts = subject.split('.');
  const root = SUBJECT_ROOT.split('.');
  if (parts.length < root.length + 3 || root.some((r, i) => parts[i] !== r)) return undefined;
  const [area, token, last] = parts.slice(root.length);
  if (token === undefined || last === undefined) return undefined;
  if (area === 'node' && (last === 'delta' || last === 'status')) return { kind: last, token };
  if (area === 'audit') return { kind: 'audit', token, auditType: last };
  return undefined;
}

/** The streams a kind is replayed from. */
export const REPLAY_STREAMS: Partial<Record<BusKind, string>> = { delta: DELTA_STREAM, audit: AUDIT_STREAM };

/** Node names are DNS-1123 (no `_`): a subject token maps back to exactly one name. */
export const nodeFromToken = (token: string) => token.replaceAll('_', '.');

function problem(err: unknown): string {
  return err instanceof ValidationError ? `${err.field}: ${err.problem}` : err instanceof Error ? err.message : String(err);
}

function str(o: Record<string, unknown>, k: string): string | undefined {
  const v = o[k];
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined;
}

const NODE_WIDTH = 16;
const KIND_WIDTH = 9;

function line(time: string, node: string, kind: string, details: string): string {
  return `${time}  ${node.padEnd(NODE_WIDTH)}  ${kind.padEnd(KIND_WIDTH)}  ${details}`.trimEnd();
}

function isoOr(text: string | undefined, fallback: Date): string {
  const t = text === undefined ? NaN : Date.parse(text);
  return Number.isNaN(t) ? fallback.toISOString() : new Date(t).toISOString();
}

function renderDelta(e: BusEvent, node: string, v: unknown): string {
  try {
    const d = parseNodeStateDelta(v, node);
    const sw = d.switches ? `  switches enabled=${d.switches.enabled} appSockets=${d.switches.appSockets} maxQueuedBytes=${d.switches.maxQueuedBytes}` : '';
    return line(
      e.time.toISOString(),
      node,
      'delta',
      `gen ${d.fromGeneration}->${d.toGeneration}  endpoints +${d.upsertEndpoints.length} -${d.removeEndpoints.length}${sw}`,
    );
  } catch (err) {
    const o = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
    const gen = str(o, 'fromGeneration') !== undefined ? `gen ${str(o, 'fromGeneration')}->${str(o, 'toGeneration') ?? '?'}  ` : '';
    return line(e.time.toISOString(), node, 'delta', `${gen}INVALID ${problem(err)}`);
  }
}

function renderStatus(e: BusEvent, node: string, v: unknown): string {
  try {
    const s = parseWorkerStatus(v);
    if (s.node !== node) return line(e.time.toISOString(), node, 'status', `INVALID $.node: status of ${s.node} on ${node}'s subject`);
    const err = s.lastError ? `  last error: ${s.lastError}` : '';
    return line(isoOr(s.time, e.time), node, 'status', `applied gen ${s.appliedGeneration}  desired gen ${s.desiredGeneration}  bus ${s.bus}${err}`);
  } catch (err) {
    return line(e.time.toISOString(), node, 'status', `INVALID ${problem(err)}`);
  }
}

function renderAudit(e: BusEvent, node: string, type: string, v: unknown): string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return line(e.time.toISOString(), node, type, 'INVALID $: must be an object');
  const a = v as Partial<AuditEvent> & Record<string, unknown>;
  const parts: string[] = [];
  if (a.node !== undefined && a.node !== node) parts.push(`INVALID $.node: event of ${String(a.node)} on ${node}'s subject`);
  if (a.generation !== undefined) parts.push(`gen ${a.generation}`);
  if (a.source !== undefined) parts.push(`source ${a.source}`);
  if (a.field !== undefined) parts.push(`field ${a.field}`);
  if (a.reason !== undefined) parts.push(`reason ${a.reason}`);
  if (a.summary !== undefined) parts.push(`(${a.summary})`);
  return line(isoOr(str(a, 'time'), e.time), node, type, parts.join('  '));
}

/** One readable line for a bus message. */
export function render(e: BusEvent): string {
  const c = classify(e.subject);
  if (!c) return line(e.time.toISOString(), '?', '?', e.subject);
  const node = nodeFromToken(c.token);
  let v: unknown;
  try {
    v = parseJson(e.data);
  } catch (err) {
    return line(e.time.toISOString(), node, c.auditType ?? c.kind, `INVALID ${problem(err)}`);
  }
  switch (c.kind) {
    case 'delta':
      return renderDelta(e, node, v);
    case 'status':
      return renderStatus(e, node, v);
    case 'audit':
      return renderAudit(e, node, c.auditType ?? '?', v);
  }
}

/** The raw JSON of a message on one line; undefined when it is not JSON. */
export function rawJson(e: BusEvent): string | undefined {
  try {
    return JSON.stringify(parseJson(e.data));
  } catch {
    return undefined;
  }
}
