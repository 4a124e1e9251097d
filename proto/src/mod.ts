export {
  NODE_STATE_API_VERSION,
  NODE_STATE_KIND,
  DEFAULT_SWITCHES,
  type NodeState,
  type Endpoint,
  LIMITS,
  MAX_STATE_BYTES,
  type Switches,
  type InboundCapture,
  type OutboundCapture,
  type PortSelector,
  type CidrSelector,
  type AppSocketsPolicy,
  APP_SOCKETS_POLICIES,
} from './nodestate.js';
export { parseNodeState, isPodUid } from './validate.js';
export { ValidationError } from './errors.js';
export { ipToBytes, bytesToIp, canonicalIp, parseCidr, type Cidr } from './ip.js';
export { diffNodeState, applyNodeStateDelta, sameEndpoint, sameSwitches, NodeStateAccumulator, NODE_STATE_DELTA_KIND, type NodeStateDelta } from './delta.js';
export {
  subjects,
  nodeToken,
  deltaSubjectGeneration,
  BUS_VERSION,
  SUBJECT_ROOT,
  SNAPSHOT_BUCKET,
  SNAPSHOT_STREAM,
  SNAPSHOT_SUBJECT_PREFIX,
  JS_API,
  DELTA_STREAM,
  AUDIT_STREAM,
  STATUS_STREAM,
  type AuditEventType,
} from './subjects.js';
export { API_VERSION, MAX_BEHAVIOUR_RESULTS, type Snapshot, type WorkerStatus, type WorkerBehaviour, type AuditEvent, type ControlPlaneStatus } from './messages.js';
export { parseJson, parseNodeStateDelta, parseSnapshot, parseWorkerStatus, parseControlPlaneStatus, boundText, MAX_REASON_LENGTH } from './decode.js';
export * from './accounts.js';
