export { IstiodXdsSource, type IstiodXdsOptions } from './source.js';
export type { NodeIdentity } from './node.js';
export type { TransportOptions } from './credentials.js';
export type { BackoffOptions } from '../backoff.js';
export { loadXdsProtos, OWN_PROTO_DIR, type XdsProtos, type Codec } from './protos.js';
export { decodeSyncz, isSynced, proxyIdOf, statusesOf } from './syncz.js';
export { AmbientTable, isAmbient, podKeyOf } from './workload.js';
export * from './messages.js';
