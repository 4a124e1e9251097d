/**
 * Decoders for everything that arrives from the bus. Each validates before
 * anything is used and throws a ValidationError naming the field.
 */
import { ValidationError } from './errors.js';
import { NODE_STATE_DELTA_KIND, type NodeStateDelta } from './delta.js';
import { API_VERSION, type Snapshot, type WorkerStatus } from './messages.js';
import { NODE_STATE_API_VERSION } from './nodestate.js';
import { checkEndpoint, checkPair, parseNodeState } from './validate.js';

type Json = Record<string, unknown>;

function obj(v: unknown, field: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ValidationError(field, 'must be an object');
  return v as Json;
}

function int(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ValidationError(field, 'must be a non-negative integer');
  return v;
}

function arr(v: unknown, field: string): unknown[] {
  if (!Array.isArray(v)) throw new ValidationError(field, 'must be an array');
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

export function parseNodeStateDelta(v: unknown, expectNode?: string): NodeStateDelta {
  const o = obj(v, '$');
  if (o.apiVersion !== NODE_STATE_API_VERSION) throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}, want ${NODE_STATE_API_VERSION}`);
  if (o.kind !== NODE_STATE_DELTA_KIND) throw new ValidationError('$.kind', `must be ${NODE_STATE_DELTA_KIND}`);
  for (const k of Object.keys(o)) {
    if (!['apiVersion', 'kind', 'node', 'fromGeneration', 'toGeneration', 'upsertEndpoints', 'removeEndpoints', 'addPairs', 'removePairs', 'switches'].includes(k)) {
      throw new ValidationError(`$.${k}`, 'unknown field');
    }
  }
  if (typeof o.node !== 'string' || !o.node) throw new ValidationError('$.node', 'must be a non-empty string');
  if (expectNode !== undefined && o.node !== expectNode) throw new ValidationError('$.node', `delta is for node ${o.node}, this is ${expectNode}`);
  const fromGeneration = int(o.fromGeneration, '$.fromGeneration');
  const toGeneration = int(o.toGeneration, '$.toGeneration');
  if (toGeneration <= fromGeneration) throw new ValidationError('$.toGeneration', `must be greater than fromGeneration (${fromGeneration})`);
  const upsertEndpoints = arr(o.upsertEndpoints, '$.upsertEndpoints').map((e, i) => checkEndpoint(e, `$.upsertEndpoints[${i}]`));
  const removeEndpoints = arr(o.removeEndpoints, '$.removeEndpoints').map((e, i) => {
    if (typeof e !== 'string' || !e.includes('/')) throw new ValidationError(`$.removeEndpoints[${i}]`, 'must be namespace/name');
    return e;
  });
  const addPairs = arr(o.addPairs, '$.addPairs').map((p, i) => checkPair(p, `$.addPairs[${i}]`));
  const removePairs = arr(o.removePairs, '$.removePairs').map((p, i) => checkPair(p, `$.removePairs[${i}]`));
  const delta: NodeStateDelta = {
    apiVersion: NODE_STATE_API_VERSION,
    kind: NODE_STATE_DELTA_KIND,
    node: o.node,
    fromGeneration,
    toGeneration,
    upsertEndpoints,
    removeEndpoints,
    addPairs,
    removePairs,
  };
  if (o.switches !== undefined) {
    // Reuse the NodeState checks for switches through a minimal state.
    delta.switches = parseNodeState({ apiVersion: NODE_STATE_API_VERSION, kind: 'NodeState', node: o.node, generation: 0, switches: o.switches, endpoints: [], pairs: [] }).switches;
  }
  return delta;
}

export function parseSnapshot(v: unknown, expectNode?: string): Snapshot {
  const o = obj(v, '$');
  if (o.apiVersion !== API_VERSION) throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}, want ${API_VERSION}`);
  if (o.kind !== 'Snapshot') throw new ValidationError('$.kind', 'must be Snapshot');
  let state;
  try {
    state = parseNodeState(o.state, expectNode);
  } catch (err) {
    if (err instanceof ValidationError) throw new ValidationError(err.field.replace(/^\$/, '$.state'), err.problem);
    throw err;
  }
  return { apiVersion: API_VERSION, kind: 'Snapshot', deltaSeq: int(o.deltaSeq, '$.deltaSeq'), epoch: int(o.epoch, '$.epoch'), state };
}

export function parseWorkerStatus(v: unknown): WorkerStatus {
  const o = obj(v, '$');
  if (o.apiVersion !== API_VERSION) throw new ValidationError('$.apiVersion', `unsupported version ${JSON.stringify(o.apiVersion)}`);
  if (o.kind !== 'WorkerStatus') throw new ValidationError('$.kind', 'must be WorkerStatus');
  if (typeof o.node !== 'string') throw new ValidationError('$.node', 'must be a string');
  int(o.appliedGeneration, '$.appliedGeneration');
  int(o.desiredGeneration, '$.desiredGeneration');
  if (o.bus !== 'connected' && o.bus !== 'disconnected') throw new ValidationError('$.bus', 'must be connected or disconnected');
  obj(o.counters, '$.counters');
  return o as unknown as WorkerStatus;
}
