/**
 * Reads a desired NodeState from a file and notices when it changes. A bad
 * file is refused whole: the caller keeps the last good state in the maps.
 */
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { parseNodeState, type NodeState } from '@meshlane/proto';

export class StateFileError extends Error {
  override name = 'StateFileError';
  constructor(
    readonly path: string,
    cause: Error,
  ) {
    super(`${path}: ${cause.message}`, { cause });
  }
}

export function readStateFile(path: string, node: string): NodeState {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new StateFileError(path, err as Error);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new StateFileError(path, new Error(`not JSON: ${(err as Error).message}`));
  }
  try {
    return parseNodeState(json, node);
  } catch (err) {
    throw new StateFileError(path, err as Error);
  }
}

/** Calls onChange whenever the file's content may have changed (poll: survives atomic renames). */
export function watchStateFile(path: string, onChange: () => void, intervalMs = 200): () => void {
  const listener = (cur: Stats, prev: Stats) => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.ino !== prev.ino || cur.size !== prev.size) onChange();
  };
  watchFile(path, { interval: intervalMs, persistent: true }, listener);
  return () => unwatchFile(path, listener);
}

