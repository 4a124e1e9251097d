export { readSnapshot, followSubject, type StoredSnapshot, type DeltaMsg, type Follower } from './follow.js';
