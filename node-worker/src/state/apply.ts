/**
 * Brings the worker-owned maps to a desired state with as few syscalls as
 * the map types allow, in an order that never shows a half state as more
 * permissive than either end: pairs go before endpoints on the way out and
 * after them on the way in; an endpoint's exclusions land before it does.
 */
import type { Datapath } from '../bpf/datapath.js';
import { compileNodeState, OWNED_MAPS, type OwnedMap } from './compile.js';
import { diffEntries, toEntries, type MapDiff } from './diff.js';
import type { NodeState } from '@meshlane/proto';

export interface ApplyResult {
  generation: number;
  changed: Partial<Record<OwnedMap | 'ml_config', { upserts: number; deletes: number }>>;
  entries: Record<OwnedMap, number>;
}

export function applyNodeState(dp: Datapath, state: NodeState): ApplyResult {
  const desired = compileNodeState(state);
  const diffs: Partial<Record<OwnedMap, MapDiff>> = {};
  const entries = {} as Record<OwnedMap, number>;
  for (const name of OWNED_MAPS) {
    const d = diffEntries(toEntries(dp.maps[name].entries()), desired.maps[name]);
    if (d) diffs[name] = d;
    entries[name] = desired.maps[name].size;
  }
  const changed: ApplyResult['changed'] = {};
  const del = (name: OwnedMap): void => {
    const d = diffs[name];
    if (d) dp.maps[name].deleteMany(d.deletes);
  };
  const up = (name: OwnedMap): void => {
    const d = diffs[name];
    if (d) dp.maps[name].updateMany(d.upserts);
  };
  del('ml_pairs');
  del('ml_endpoints');
  up('ml_port_rules');
  up('ml_cidr_exclude');
  up('ml_cidr_include');
  up('ml_endpoints');
  del('ml_port_rules');
  del('ml_cidr_exclude');
  del('ml_cidr_include');
  up('ml_pairs');
  for (const [name, d] of Object.entries(diffs) as Array<[OwnedMap, MapDiff]>) {
    changed[name] = { upserts: d.upserts.length, deletes: d.deletes.length };
  }
  const key = Buffer.alloc(4);
  const cfg = dp.maps.ml_config.lookup(key);
  if (!cfg || !cfg.equals(desired.config)) {
    dp.maps.ml_config.update(key, desired.config);
    changed.ml_config = { upserts: 1, deletes: 0 };
  }
  return { generation: state.generation, changed, entries };
}
