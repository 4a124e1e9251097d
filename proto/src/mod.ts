export {
  NODE_STATE_API_VERSION,
  NODE_STATE_KIND,
  DEFAULT_SWITCHES,
  type NodeState,
  type Endpoint,
  type Pair,
  type Switches,
  type InboundCapture,
  type OutboundCapture,
  type PortSelector,
  type CidrSelector,
} from './nodestate.js';
export { parseNodeState } from './validate.js';
export { ValidationError } from './errors.js';
export { ipToBytes, bytesToIp, parseCidr, type Cidr } from './ip.js';
export { diffNodeState, applyNodeStateDelta, NodeStateAccumulator, NODE_STATE_DELTA_KIND, type NodeStateDelta } from './delta.js';
export { subjects, nodeToken, BUS_VERSION, SUBJECT_ROOT, SNAPSHOT_BUCKET, DELTA_STREAM, AUDIT_STREAM, STATUS_STREAM, type AuditEventType } from './subjects.js';
export { API_VERSION, type Snapshot, type WorkerStatus, type AuditEvent } from './messages.js';
export { parseJson, parseNodeStateDelta, parseSnapshot, parseWorkerStatus } from './decode.js';
export { comparePairs } from './delta.js';
export * from './permissions.js';
