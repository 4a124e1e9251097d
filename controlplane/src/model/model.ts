/**
 * The control plane's in-memory model of the cluster, joined from the
 * Kubernetes informers and istiod. Every mutation returns the nodes it
 * touched, so the reconciler recomputes those nodes and no others: no
 * O(cluster) work per event.
 */
import { optOutOf } from '../classify/pod.js';
import { ANN } from '../classify/constants.js';
import { REASONS, type PodClass, type ProxySync, type Reason, type Setting, type Verdict } from '../types.js';
import { nodeVerdicts, podVerdict } from './verdict.js';

export const OPT_OUT_KEY = ANN.accelerate;

export interface ModelOptions {
  /** Pair a pod only once istiod reports its sidecar connected and synced. */
  syncGate: boolean;
}

/**
 * The label or annotation that opts a namespace out, read exactly as a
 * pod's (classify/pod.ts optOutOf: anything but "true", trimmed, any case).
 */
export function namespaceOptOut(labels?: Record<string, string>, annotations?: Record<string, string>): Setting | undefined {
  return optOutOf({ labels, annotations }, 'namespace');
}

/** A namespace opts out with meshlane.io/accelerate: "false" (see namespaceOptOut). */
export function namespaceOptedOut(labels?: Record<string, string>, annotations?: Record<string, string>): boolean {
  return namespaceOptOut(labels, annotations) !== undefined;
}

/** A pod's current verdict, where it runs and since when it holds. */
export interface StoredVerdict extends Verdict {
  pod: string;
  node: string | undefined;
  /** When this verdict (reason and detail) was first computed. */
  since: Date;
}

/** A pod whose verdict changed (`from` undefined: its first). */
export interface VerdictChange {
  pod: string;
  node: string | undefined;
  from: Verdict | undefined;
  to: Verdict;
}

export class ClusterModel {
  readonly pods = new Map<string, PodClass>();
  private readonly podsByNode = new Map<string, Set<string>>();
  private readonly podsByNamespace = new Map<string, Set<string>>();
  private readonly podByProxyId = new Map<string, string>();
  /** Opted-out namespaces and the label or annotation that opts each out (undefined: not told). */
  private readonly optedOutNamespaces = new Map<string, Setting | undefined>();
  private readonly verdicts = new Map<string, StoredVerdict>();
  private readonly counts = new Map<Reason, number>(REASONS.map((r) => [r, 0]));
  private readonly nodes = new Set<string>();
  private synced = new Set<string>();
  private ambient = new Set<string>();

  constructor(readonly options: ModelOptions) {}

  private index(map: Map<string, Set<string>>, key: string | undefined, pod: string, add: boolean): void {
    if (key === undefined) return;
    let set = map.get(key);
    if (add) {
      if (!set) map.set(key, (set = new Set()));
      set.add(pod);
    } else if (set) {
      set.delete(pod);
      if (set.size === 0) map.delete(key);
    }
  }

  private nodeOf(podKey: string): string | undefined {
    return this.pods.get(podKey)?.node;
  }

  upsertPod(pod: PodClass): string[] {
    const old = this.pods.get(pod.key);
    if (old) {
      this.index(this.podsByNode, old.node, old.key, false);
      this.podByProxyId.delete(old.proxyId);
    }
    this.pods.set(pod.key, pod);
    this.index(this.podsByNode, pod.node, pod.key, true);
    this.index(this.podsByNamespace, pod.namespace, pod.key, true);
    this.podByProxyId.set(pod.proxyId, pod.key);
    return [...new Set([old?.node, pod.node].filter((n): n is string => n !== undefined))];
  }

  deletePod(key: string): string[] {
    const old = this.pods.get(key);
    if (!old) return [];
    this.pods.delete(key);
    this.index(this.podsByNode, old.node, key, false);
    this.index(this.podsByNamespace, old.namespace, key, false);
    this.podByProxyId.delete(old.proxyId);
    this.forgetVerdict(key);
    return old.node ? [old.node] : [];
  }

  /**
   * `optOut`: the setting that opts the namespace out (namespaceOptOut), or
   * undefined / false when it does not; true when opted out by a setting
   * not told. Returns the nodes hosting the namespace's pods when its
   * opt-out, or what it rests on, changed.
   */
  upsertNamespace(name: string, optOut: Setting | boolean | undefined): string[] {
    const optedOut = optOut !== undefined && optOut !== false;
    const setting = typeof optOut === 'object' ? optOut : undefined;
    const was = this.optedOutNamespaces.get(name);
    if (this.optedOutNamespaces.has(name) === optedOut && (!optedOut || sameSetting(was, setting))) return [];
    if (optedOut) this.optedOutNamespaces.set(name, setting);
    else this.optedOutNamespaces.delete(name);
    return this.nodesOfNamespace(name);
  }

  deleteNamespace(name: string): string[] {
    return this.upsertNamespace(name, false);
  }

  /** The setting that opts a namespace out (undefined when it does not, or when not told). */
  namespaceOptOut(name: string): Setting | undefined {
    return this.optedOutNamespaces.get(name);
  }

  private nodesOfNamespace(name: string): string[] {
    const out = new Set<string>();
    for (const key of this.podsByNamespace.get(name) ?? []) {
      const n = this.nodeOf(key);
      if (n) out.add(n);
    }
    return [...out];
  }

  upsertNode(name: string): string[] {
    if (this.nodes.has(name)) return [];
    this.nodes.add(name);
    return [name];
  }

  deleteNode(name: string): string[] {
    return this.nodes.delete(name) ? [name] : [];
  }

  knownNodes(): string[] {
    return [...new Set([...this.nodes, ...this.podsByNode.keys()])];
  }

  hasNode(name: string): boolean {
    return this.nodes.has(name);
  }

  /** istiod's full view of connected proxies; returns nodes whose pods changed sync state. */
  setProxies(proxies: ReadonlyMap<string, ProxySync>): string[] {
    const next = new Set<string>();
    for (const p of proxies.values()) if (p.synced) next.add(p.proxyId);
    const changed = new Set<string>();
    for (const id of next) if (!this.synced.has(id)) changed.add(id);
    for (const id of this.synced) if (!next.has(id)) changed.add(id);
    this.synced = next;
    return this.nodesOfProxies(changed);
  }

  /** Some proxies changed (what one syncz answer differs by); returns nodes of their pods. */
  updateProxies(changes: Iterable<ProxySync>): string[] {
    const changed: string[] = [];
    for (const p of changes) {
      if (p.synced === this.synced.has(p.proxyId)) continue;
      if (p.synced) this.synced.add(p.proxyId);
      else this.synced.delete(p.proxyId);
      changed.push(p.proxyId);
    }
    return this.nodesOfProxies(changed);
  }

  /** istiod's ambient workloads (pod keys); returns nodes of pods that changed. */
  setAmbient(pods: ReadonlySet<string>): string[] {
    const changed = new Set<string>();
    for (const k of pods) if (!this.ambient.has(k)) changed.add(k);
    for (const k of this.ambient) if (!pods.has(k)) changed.add(k);
    this.ambient = new Set(pods);
    const out = new Set<string>();
    for (const k of changed) {
      const n = this.nodeOf(k);
      if (n) out.add(n);
    }
    return [...out];
  }

  private nodesOfProxies(ids: Iterable<string>): string[] {
    const out = new Set<string>();
    for (const id of ids) {
      const key = this.podByProxyId.get(id);
      const n = key ? this.nodeOf(key) : undefined;
      if (n) out.add(n);
    }
    return [...out];
  }

  podsOnNode(node: string): PodClass[] {
    const out: PodClass[] = [];
    for (const key of this.podsByNode.get(node) ?? []) {
      const p = this.pods.get(key);
      if (p) out.push(p);
    }
    return out;
  }

  namespaceOptedOut(name: string): boolean {
    return this.optedOutNamespaces.has(name);
  }

  isAmbient(key: string): boolean {
    return this.ambient.has(key);
  }

  isSynced(proxyId: string): boolean {
    return !this.options.syncGate || this.synced.has(proxyId);
  }

  // ------------------------------------------------------------ verdicts

  /** A pod's verdict as last refreshed (undefined: unknown pod, or not refreshed yet). */
  verdict(key: string): StoredVerdict | undefined {
    return this.verdicts.get(key);
  }

  /** Pods per verdict reason, every reason listed. */
  verdictCounts(): ReadonlyMap<Reason, number> {
    return this.counts;
  }

  /**
   * Recomputes the verdicts of a node's pods (what its state was just
   * computed from); `enabled` is the kill switch. Returns those that changed.
   */
  refreshNode(node: string, enabled: boolean): VerdictChange[] {
    const out: VerdictChange[] = [];
    for (const [key, v] of nodeVerdicts(this, node, enabled)) this.store(key, node, v, out);
    return out;
  }

  /** Recomputes one pod's verdict (pods on no node have no node pass); returns it if it changed. */
  refreshPod(key: string, enabled: boolean): VerdictChange[] {
    const pod = this.pods.get(key);
    const out: VerdictChange[] = [];
    if (pod) this.store(key, pod.node, podVerdict(this, pod, undefined, enabled), out);
    return out;
  }

  private store(key: string, node: string | undefined, v: Verdict, out: VerdictChange[]): void {
    const old = this.verdicts.get(key);
    if (old && old.node === node && sameVerdict(old, v)) return;
    if (old) this.counts.set(old.reason, (this.counts.get(old.reason) ?? 1) - 1);
    this.counts.set(v.reason, (this.counts.get(v.reason) ?? 0) + 1);
    this.verdicts.set(key, { ...v, pod: key, node, since: old && sameVerdict(old, v) ? old.since : new Date() });
    out.push({ pod: key, node, from: old, to: v });
  }

  private forgetVerdict(key: string): void {
    const old = this.verdicts.get(key);
    if (!old) return;
    this.verdicts.delete(key);
    this.counts.set(old.reason, (this.counts.get(old.reason) ?? 1) - 1);
  }
}

function sameSetting(a: Setting | undefined, b: Setting | undefined): boolean {
  return a?.on === b?.on && a?.kind === b?.kind && a?.name === b?.name && a?.value === b?.value && a?.container === b?.container;
}

function sameVerdict(a: Verdict, b: Verdict): boolean {
  return a.reason === b.reason && a.detail === b.detail && a.endpoint === b.endpoint && a.accelerate === b.accelerate && sameSetting(a.setting, b.setting);
}
