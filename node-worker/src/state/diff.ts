/**
 * The difference between what a map holds and what it should hold. Pure;
 * returns undefined for "nothing to do", like a snapshot cache that has
 * nothing newer to send.
 */
import type { Entries } from './compile.js';

export interface MapDiff {
  upserts: Array<[Buffer, Buffer]>;
  deletes: Buffer[];
}

export function diffEntries(current: Entries, desired: Entries): MapDiff | undefined {
  const upserts: Array<[Buffer, Buffer]> = [];
  const deletes: Buffer[] = [];
  for (const [hex, [key, value]] of desired) {
    const have = current.get(hex);
    if (!have || !have[1].equals(value)) upserts.push([key, value]);
  }
  for (const [hex, [key]] of current) {
    if (!desired.has(hex)) deletes.push(key);
  }
  return upserts.length || deletes.length ? { upserts, deletes } : undefined;
}

export function toEntries(pairs: Array<[Buffer, Buffer]>): Entries {
  const m: Entries = new Map();
  for (const [k, v] of pairs) m.set(k.toString('hex'), [k, v]);
  return m;
}
