/**
 * The TypeScript mirror of bpf/include/meshlane_layout.h against the truth:
 * the BTF that clang wrote into the compiled objects (sizes and offsets of
 * every struct and field), and the header's counter enum and layout version.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COUNTER_ENUM_NAMES, LAYOUTS, ML_LAYOUT_VERSION } from '@meshlane/node-worker';
import { ROOT } from '../harness/cluster.js';

interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number; bits_offset: number }[];
}

function loadBtf(object: string): Map<number, BtfType> {
  const out = execFileSync('bpftool', ['btf', 'dump', 'file', object, '-j'], { encoding: 'utf8' });
  const types = (JSON.parse(out) as { types: BtfType[] }).types;
  return new Map(types.map((t) => [t.id, t]));
}

function sizeOf(btf: Map<number, BtfType>, id: number): number {
  const t = btf.get(id);
  if (!t) throw new Error(`BTF type ${id} missing`);
  switch (t.kind) {
    case 'INT':
    case 'STRUCT':
    case 'UNION':
    case 'ENUM':
      return t.size ?? 0;
    case 'ARRAY':
      return (t.nr_elems ?? 0) * sizeOf(btf, t.type_id ?? 0);
    case 'TYPEDEF':
    case 'CONST':
    case 'VOLATILE':
      return sizeOf(btf, t.type_id ?? 0);
    default:
      throw new Error(`unexpected BTF kind ${t.kind}`);
  }
}

const header = readFileSync(join(ROOT, 'bpf/include/meshlane_layout.h'), 'utf8');

describe('layout - TypeScript mirror of bpf/include/meshlane_layout.h', () => {
  for (const object of ['sockops.bpf.o', 'redirect.bpf.o']) {
    it(`matches the BTF of ${object}, struct by struct and field by field`, () => {
      const btf = loadBtf(join(ROOT, 'bpf/out', object));
      const structs = new Map([...btf.values()].filter((t) => t.kind === 'STRUCT' && t.name?.startsWith('ml_')).map((t) => [t.name!, t]));
      expect(structs.size).toBeGreaterThan(5);
      for (const [name, c] of structs) {
        const mirror = LAYOUTS[name];
        expect(mirror, `layout.ts has no mirror of struct ${name}`).toBeDefined();
        expect(mirror!.size, `${name} size`).toBe(c.size);
        const fields = (c.members ?? []).map((m) => ({ name: m.name, offset: m.bits_offset / 8, size: sizeOf(btf, m.type_id) }));
        expect(mirror!.fields, `${name} fields`).toEqual(fields);
      }
    });
  }

  it('mirrors the counter enum in order', () => {
    const body = /enum ml_counter \{([\s\S]*?)\};/.exec(header)?.[1] ?? '';
    const names = [...body.matchAll(/^\s*(ML_C_[A-Z0-9_]+)/gm)].map((m) => m[1]).filter((n) => n !== 'ML_C_MAX');
    expect(COUNTER_ENUM_NAMES).toEqual(names);
  });

  it('carries the header layout version', () => {
    expect(Number(/#define ML_LAYOUT_VERSION (\d+)/.exec(header)?.[1])).toBe(ML_LAYOUT_VERSION);
  });

  it('mirrors every flag constant', async () => {
    const layout = await import('@meshlane/node-worker/layout');
    for (const m of header.matchAll(/#define ML_((?:EP|CFG|PAIR|PORT|DIR)_[A-Z_]+)\s+\(?(1U << \d+|\d+)\)?/g)) {
      const value = m[2]!.includes('<<') ? 1 << Number(m[2]!.split('<<')[1]) : Number(m[2]);
      const tsName = m[1]!;
      expect((layout as Record<string, unknown>)[tsName], `ML_${m[1]}`).toBe(value);
    }
  });
});
