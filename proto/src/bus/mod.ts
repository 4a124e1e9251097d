export { readSnapshot, followSubject, nodeDeltaSubject, type StoredSnapshot, type DeltaMsg, type Follower } from './follow.js';
