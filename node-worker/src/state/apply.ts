/**
 * Brings the worker-owned maps to a desired state with as few syscalls as
 * the map types allow, in an order that never shows a half state as more
 * permissive than either end: an endpoint's exclusions land before it does
 * and leave after it.
 *
 * The reconciler remembers what it last wrote, so a 1-pod change costs a
 * 1-pod diff; it reads the maps back only when it has no memory of them (at
 * start, after re-adopting pins) or after a failed write.
 */
import type { NodeState } from '@meshlane/proto';
import type { Datapath } from '../bpf/datapath.js';
import type { PodCgroups } from '../pod-cgroups.js';
import { compileNodeState, OWNED_MAPS, type DesiredMaps, type OwnedMap } from './compile.js';
import { diffEntries, toEntries, type MapDiff } from './diff.js';

export interface ApplyResult {
  generation: number;
  changed: Partial<Record<OwnedMap | 'ml_config', { upserts: number; deletes: number }>>;
  entries: Record<OwnedMap, number>;
  /** Pods (namespace/name) whose cgroup was not found: nothing of them joins yet. */
  unresolved: string[];
}

export interface ReconcilerFacts {
  /** Finds each pod's cgroup by its uid; without it no entry matches a socket. */
  podCgroups?: PodCgroups;
  /** From the behaviour probes: may "auto" app sockets join on this kernel? */
  appSocketsAuto?: () => boolean;
}

const ORDER: Array<[OwnedMap, 'del' | 'up']> = [
  ['ml_endpoints', 'del'],
  ['ml_port_rules', 'up'],
  ['ml_cidr_exclude', 'up'],
  ['ml_cidr_include', 'up'],
  ['ml_endpoints', 'up'],
  ['ml_port_rules', 'del'],
  ['ml_cidr_exclude', 'del'],
  ['ml_cidr_include', 'del'],
];

export class Reconciler {
  private applied: DesiredMaps | undefined;
  private last: NodeState | undefined;
  private lastUnresolved: string[] = [];

  constructor(
    private readonly dp: Datapath,
    private readonly facts: ReconcilerFacts = {},
  ) {}

  /** Pods of the last applied state whose cgroup is still unknown. */
  get unresolved(): readonly string[] {
    return this.lastUnresolved;
  }

  /**
   * Applies the last state again when a fact it depends on may have
   * changed (a pod's cgroup appeared): level-triggered, so a no-op when
   * nothing did.
   */
  refresh(): ApplyResult | undefined {
    return this.last ? this.apply(this.last) : undefined;
  }

  private current(name: OwnedMap): DesiredMaps[OwnedMap] {
    return this.applied?.[name] ?? toEntries(this.dp.maps[name].entries());
  }

  apply(state: NodeState): ApplyResult {
    const podCgroups = this.facts.podCgroups?.resolve(state.endpoints.map((e) => e.uid)) ?? new Map();
    const desired = compileNodeState(state, { podCgroups, appSocketsAuto: this.facts.appSocketsAuto?.() ?? false });
    const diffs: Partial<Record<OwnedMap, MapDiff>> = {};
    const entries = {} as Record<OwnedMap, number>;
    for (const name of OWNED_MAPS) {
      const d = diffEntries(this.current(name), desired.maps[name]);
      if (d) diffs[name] = d;
      entries[name] = desired.maps[name].size;
    }
    this.applied = undefined; // until every write below has succeeded
    for (const [name, op] of ORDER) {
      const d = diffs[name];
      if (!d) continue;
      if (op === 'del') this.dp.maps[name].deleteMany(d.deletes);
      else this.dp.maps[name].updateMany(d.upserts);
    }
    const changed: ApplyResult['changed'] = {};
    for (const [name, d] of Object.entries(diffs) as Array<[OwnedMap, MapDiff]>) {
      changed[name] = { upserts: d.upserts.length, deletes: d.deletes.length };
    }
    const key = Buffer.alloc(4);
    const cfg = this.dp.maps.ml_config.lookup(key);
    if (!cfg || !cfg.equals(desired.config)) {
      this.dp.maps.ml_config.update(key, desired.config);
      changed.ml_config = { upserts: 1, deletes: 0 };
    }
    this.applied = desired.maps;
    this.last = state;
    this.lastUnresolved = desired.unresolved;
    return { generation: state.generation, changed, entries, unresolved: desired.unresolved };
  }
}

/** One-shot apply: reads the maps back first. */
export function applyNodeState(dp: Datapath, state: NodeState): ApplyResult {
  return new Reconciler(dp).apply(state);
}
