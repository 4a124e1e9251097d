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
  for (const [hex, value] of desired) {
    const have = current.get(hex);
    if (!have || !have.equals(value)) upserts.push([Buffer.from(hex, 'hex'), value]);
  }
  for (const hex of current.keys()) {
    if (!desired.has(hex)) deletes.push(Buffer.from(hex, 'hex'));
  }
  return upserts.length || deletes.length ? { upserts, deletes } : undefined;
}

export function toEntries(pairs: Array<[Buffer, Buffer]>): Entries {
  const m: Entries = new Map();
  for (const [k, v] of pairs) m.set(k.toString('hex'), v);
  return m;
}
