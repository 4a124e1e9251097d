export { followSubject, type DeltaMsg, type Follower } from './follow.js';
export { directGet, readSnapshot, readDelta, DirectGetError, type StoredMessage, type StoredSnapshot } from './direct.js';
