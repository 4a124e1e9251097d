/**
 * The control plane's in-memory model of the cluster, joined from the
 * Kubernetes informers and istiod. Every mutation returns the nodes it
 * touched, so the reconciler recomputes those nodes and no others: no
 * O(cluster) work per event.
 */
import type { PodClass, ProxySync } from '../types.js';

export const OPT_OUT_KEY = 'meshlane.io/accelerate';

export interface ModelOptions {
  /** Pair a pod only once istiod reports its sidecar connected and synced. */
  syncGate: boolean;
}

/** A namespace opts out with meshlane.io/accelerate: "false" as label or annotation. */
export function namespaceOptedOut(labels?: Record<string, string>, annotations?: Record<string, string>): boolean {
  return labels?.[OPT_OUT_KEY] === 'false' || annotations?.[OPT_OUT_KEY] === 'false';
}

export class ClusterModel {
  readonly pods = new Map<string, PodClass>();
  private readonly podsByNode = new Map<string, Set<string>>();
  private readonly podsByNamespace = new Map<string, Set<string>>();
  private readonly podByProxyId = new Map<string, string>();
  private readonly optedOutNamespaces = new Set<string>();
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
    return old.node ? [old.node] : [];
  }

  /** Returns the nodes hosting the namespace's pods when its opt-out flipped. */
  upsertNamespace(name: string, optedOut: boolean): string[] {
    if (this.optedOutNamespaces.has(name) === optedOut) return [];
    if (optedOut) this.optedOutNamespaces.add(name);
    else this.optedOutNamespaces.delete(name);
    return this.nodesOfNamespace(name);
  }

  deleteNamespace(name: string): string[] {
    return this.upsertNamespace(name, false);
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
}
