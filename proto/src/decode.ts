/**
 * Decoders for everything that arrives from the bus. Each validates before
 * anything is used and throws a ValidationError naming the field.
 */
import { ValidationError } from './errors.js';
import { NODE_STATE_DELTA_KIND, type NodeStateDelta } from './delta.js';
import { API_VERSION, MAX_BEHAVIOUR_RESULTS, type ControlPlaneStatus, type Snapshot, type WorkerBehaviour, type WorkerStatus } from './messages.js';
import { LIMITS, NODE_STATE_API_VERSION } from './nodestate.js';
import { arr, checkEndpoint, checkSwitches, nodeName, noUnknown, obj, parseNodeState, podKey } from './validate.js';

function int(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ValidationError(field, 'must be a non-negative integer');
  return v;
}

export function parseJson(data: Uint8Array | string): unknown {
  const text = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ValidationError('$', `not JSON: ${(err as Error).message}`);
  }
}

/**
 * A delta moves its node by exactly one generation: a worker at generation
 * G asks the bus for the delta from G, so nothing can be skipped in between.
 */
export function parseNodeStateDelta(v: unknown, expectNode?: string): NodeStateDelta {
  const o = obj(v, '$');
  if (o.apiVersion !== NODE_STATE_API_VERSION) throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}, want ${NODE_STATE_API_VERSION}`);
  if (o.kind !== NODE_STATE_DELTA_KIND) throw new ValidationError('$.kind', `must be ${NODE_STATE_DELTA_KIND}`);
  noUnknown(o, '$', ['apiVersion', 'kind', 'node', 'fromGeneration', 'toGeneration', 'upsertEndpoints', 'removeEndpoints', 'switches']);
  const node = nodeName(o.node, '$.node');
  if (expectNode !== undefined && node !== expectNode) throw new ValidationError('$.node', `delta is for node ${node}, this is ${expectNode}`);
  const fromGeneration = int(o.fromGeneration, '$.fromGeneration');
  const toGeneration = int(o.toGeneration, '$.toGeneration');
  if (toGeneration !== fromGeneration + 1) throw new ValidationError('$.toGeneration', `must be fromGeneration + 1 (${fromGeneration + 1})`);
  const upsertEndpoints = arr(o.upsertEndpoints, '$.upsertEndpoints', LIMITS.endpoints).map((e, i) => checkEndpoint(e, `$.upsertEndpoints[${i}]`));
  const removeEndpoints = arr(o.removeEndpoints, '$.removeEndpoints', LIMITS.endpoints).map((e, i) => podKey(e, `$.removeEndpoints[${i}]`));
  const delta: NodeStateDelta = {
    apiVersion: NODE_STATE_API_VERSION,
    kind: NODE_STATE_DELTA_KIND,
    node,
    fromGeneration,
    toGeneration,
    upsertEndpoints,
    removeEndpoints,
  };
  if (o.switches !== undefined) delta.switches = checkSwitches(o.switches, '$.switches');
  return delta;
}

export function parseSnapshot(v: unknown, expectNode?: string): Snapshot {
  const o = obj(v, '$');
  if (o.apiVersion !== API_VERSION) throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}, want ${API_VERSION}`);
  if (o.kind !== 'Snapshot') throw new ValidationError('$.kind', 'must be Snapshot');
  noUnknown(o, '$', ['apiVersion', 'kind', 'deltaSeq', 'epoch', 'state']);
  let state;
  try {
    state = parseNodeState(o.state, expectNode);
  } catch (err) {
    if (err instanceof ValidationError) throw new ValidationError(err.field.replace(/^\$/, '$.state'), err.problem);
    throw err;
  }
  return { apiVersion: API_VERSION, kind: 'Snapshot', deltaSeq: int(o.deltaSeq, '$.deltaSeq'), epoch: int(o.epoch, '$.epoch'), state };
}

/** The longest reason or error text carried in a status or audit event; the rest is cut. */
export const MAX_REASON_LENGTH = 1024;

/** Bounds a free text for the bus (status lastError, audit reasons). */
export function boundText(s: string, max = MAX_REASON_LENGTH): string {
  return s.length <= max ? s : `${s.slice(0, max - 20)}... (${s.length} chars)`;
}

export function parseWorkerStatus(v: unknown, expectNode?: string): WorkerStatus {
  const o = obj(v, '$');
  if (o.apiVersion !== API_VERSION) throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}`);
  if (o.kind !== 'WorkerStatus') throw new ValidationError('$.kind', 'must be WorkerStatus');
  const node = nodeName(o.node, '$.node');
  if (expectNode !== undefined && node !== expectNode) throw new ValidationError('$.node', `status is for node ${node}, its subject names ${expectNode}`);
  int(o.appliedGeneration, '$.appliedGeneration');
  int(o.desiredGeneration, '$.desiredGeneration');
  if (o.bus !== 'connected' && o.bus !== 'disconnected') throw new ValidationError('$.bus', 'must be connected or disconnected');
  obj(o.counters, '$.counters');
  if (o.lastError !== undefined && (typeof o.lastError !== 'string' || o.lastError.length > MAX_REASON_LENGTH)) throw new ValidationError('$.lastError', `must be a string of at most ${MAX_REASON_LENGTH} characters`);
  if (o.behaviour !== undefined) checkBehaviour(o.behaviour, '$.behaviour');
  return o as unknown as WorkerStatus;
}

const BEHAVIOUR_WORD = /^[A-Za-z][A-Za-z0-9-]{0,31}$/;

function checkBehaviour(v: unknown, field: string): WorkerBehaviour {
  const o = obj(v, field);
  // Other fields are let through: a newer worker may report more.
  if (typeof o.kernel !== 'string' || o.kernel.length > 128) throw new ValidationError(`${field}.kernel`, 'must be a string of at most 128 characters');
  const results = obj(o.results, `${field}.results`);
  const entries = Object.entries(results);
  if (entries.length > MAX_BEHAVIOUR_RESULTS) throw new ValidationError(`${field}.results`, `at most ${MAX_BEHAVIOUR_RESULTS} results`);
  for (const [k, r] of entries) {
    if (!BEHAVIOUR_WORD.test(k)) throw new ValidationError(`${field}.results`, `bad probe name ${JSON.stringify(k.slice(0, 40))}`);
    if (typeof r !== 'string' || !BEHAVIOUR_WORD.test(r)) throw new ValidationError(`${field}.results.${k}`, 'must be a word of at most 32 characters');
  }
  if (o.appSocketsAuto !== 'nonblocking-only' && o.appSocketsAuto !== 'off') throw new ValidationError(`${field}.appSocketsAuto`, 'must be nonblocking-only or off');
  if (typeof o.reason !== 'string' || o.reason.length > MAX_REASON_LENGTH) throw new ValidationError(`${field}.reason`, `must be a string of at most ${MAX_REASON_LENGTH} characters`);
  return o as unknown as WorkerBehaviour;
}

export function parseControlPlaneStatus(v: unknown): ControlPlaneStatus {
  const o = obj(v, '$');
  if (o.apiVersion !== API_VERSION) throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}`);
  if (o.kind !== 'ControlPlaneStatus') throw new ValidationError('$.kind', 'must be ControlPlaneStatus');
  if (typeof o.source !== 'string' || typeof o.time !== 'string') throw new ValidationError('$.source', 'source and time must be strings');
  int(o.epoch, '$.epoch');
  int(o.nodes, '$.nodes');
  int(o.repairs, '$.repairs');
  obj(o.refused, '$.refused');
  if (!Array.isArray(o.retrying)) throw new ValidationError('$.retrying', 'must be an array');
  return o as unknown as ControlPlaneStatus;
}
