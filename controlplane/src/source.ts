/** What the control plane needs from a cluster: Kubernetes informers, or a folder of manifests. */
import type { V1Namespace, V1Node, V1Pod } from '@kubernetes/client-node';

export type Change = 'upsert' | 'delete';

export interface ClusterSource {
  onPod(cb: (change: Change, pod: V1Pod) => void): void;
  onNode(cb: (change: Change, node: V1Node) => void): void;
  onNamespace(cb: (change: Change, ns: V1Namespace) => void): void;
  /** Every kind listed at least once. */
  synced(): boolean;
  start(): void;
  stop(): Promise<void>;
}
