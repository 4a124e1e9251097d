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
export { diffNodeState, applyNodeStateDelta, NODE_STATE_DELTA_KIND, type NodeStateDelta } from './delta.js';
