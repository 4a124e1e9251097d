/**
 * A BPF map held by fd, with the sizes the kernel reports for it. Keys and
 * values are Buffers laid out by layout.ts.
 */
import { BpfError, BPF_ANY, libbpf } from './libbpf.js';

/** Leading fields of struct bpf_map_info (uapi/linux/bpf.h). */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

export function mapInfo(fd: number): MapInfo {
  const b = libbpf.objInfo(fd, 96);
  const nameBytes = b.subarray(24, 40);
  const nul = nameBytes.indexOf(0);
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    keySize: b.readUInt32LE(8),
    valueSize: b.readUInt32LE(12),
    maxEntries: b.readUInt32LE(16),
    flags: b.readUInt32LE(20),
    name: nameBytes.subarray(0, nul < 0 ? 16 : nul).toString(),
  };
}

export const MAP_TYPE_ARRAY = 2;
export const MAP_TYPE_PERCPU_ARRAY = 6;
export const MAP_TYPE_LPM_TRIE = 11;
export const MAP_TYPE_SOCKHASH = 18;
export const MAP_TYPE_SK_STORAGE = 24;

const ENOENT = 2;

export class BpfMap {
  readonly info: MapInfo;
  private closed = false;

  constructor(
    readonly name: string,
    readonly fd: number,
  ) {
    this.info = mapInfo(fd);
  }

  static openPinned(name: string, path: string): BpfMap {
    return new BpfMap(name, libbpf.objGet(path));
  }

  get keySize(): number {
    return this.info.keySize;
  }

  get valueSize(): number {
    return this.info.valueSize;
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    const rc = libbpf.update(this.fd, key, value, flags);
    if (rc < 0) throw new BpfError(`updating ${this.name}`, -rc);
  }

  /** Returns false when the key was not there. */
  delete(key: Buffer): boolean {
    const rc = libbpf.del(this.fd, key);
    if (rc === -ENOENT) return false;
    if (rc < 0) throw new BpfError(`deleting from ${this.name}`, -rc);
    return true;
  }

  lookup(key: Buffer, valueSize = this.valueSize): Buffer | undefined {
    const value = Buffer.alloc(valueSize);
    const rc = libbpf.lookup(this.fd, key, value);
    if (rc === -ENOENT) return undefined;
    if (rc < 0) throw new BpfError(`looking up ${this.name}`, -rc);
    return value;
  }

  keys(): Buffer[] {
    const out: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const rc = libbpf.nextKey(this.fd, prev, next);
      if (rc === -ENOENT) return out;
      if (rc < 0) throw new BpfError(`iterating ${this.name}`, -rc);
      out.push(next);
      prev = next;
    }
  }

  entries(): Array<[Buffer, Buffer]> {
    const out: Array<[Buffer, Buffer]> = [];
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) out.push([k, v]); // deleted between get_next_key and lookup: skip
    }
    return out;
  }

  /** Upserts many entries in as few syscalls as the map type allows. */
  updateMany(entries: Array<[Buffer, Buffer]>): void {
    if (entries.length === 0) return;
    if (this.info.type === MAP_TYPE_LPM_TRIE) {
      for (const [k, v] of entries) this.update(k, v);
      return;
    }
    const keys = Buffer.concat(entries.map(([k]) => k));
    const values = Buffer.concat(entries.map(([, v]) => v));
    libbpf.updateBatch(this.fd, keys, values, entries.length);
  }

  deleteMany(keys: Buffer[]): void {
    if (keys.length === 0) return;
    if (this.info.type === MAP_TYPE_LPM_TRIE) {
      for (const k of keys) this.delete(k);
      return;
    }
    libbpf.deleteBatch(this.fd, Buffer.concat(keys), keys.length);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libbpf.closeFd(this.fd);
  }
}
