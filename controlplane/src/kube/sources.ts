/**
 * The control plane's Kubernetes inputs: informers on Pods (all namespaces), Nodes and Namespaces,
 * made robust against errors (backoff restart), 410 Gone (relist) and hung watches (watchdog).
 */
import { CoreV1Api, type KubeConfig, type V1Namespace, type V1Node, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ResilientInformer, type Change, type InformerStats, type InformerTuning } from './resilient-informer.js';

export type { Change, InformerStats } from './resilient-informer.js';
export { loadKubeConfig } from './config.js';

export interface KubeSourcesOptions {
  /** A watch silent (no event, no bookmark) this long is restarted. Default 5 minutes. */
  inactivityTimeoutMs?: number;
  /** First retry delay after an error. Default 500 ms. */
  backoffInitialMs?: number;
  /** Retry delay cap. Default 30 s. */
  backoffMaxMs?: number;
  /** A list taking longer is abandoned and retried. Default 60 s. */
  listTimeoutMs?: number;
  /** Server-side watch timeout, randomized in [this, 2 x this). Default 300 s. */
  watchTimeoutSeconds?: number;
}

export type KubeResource = 'pods' | 'nodes' | 'namespaces';

export class KubeSources {
  private readonly podInformer: ResilientInformer<V1Pod>;
  private readonly nodeInformer: ResilientInformer<V1Node>;
  private readonly namespaceInformer: ResilientInformer<V1Namespace>;
  private readonly syncListeners: Array<() => void> = [];
  private started = false;

  constructor(kc: KubeConfig, log: Logger, opts: KubeSourcesOptions = {}) {
    const tuning: InformerTuning = {
      inactivityMs: opts.inactivityTimeoutMs ?? 5 * 60_000,
      backoffInitialMs: opts.backoffInitialMs ?? 500,
      backoffMaxMs: opts.backoffMaxMs ?? 30_000,
      listTimeoutMs: opts.listTimeoutMs ?? 60_000,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
    };
    const api = kc.makeApiClient(CoreV1Api);
    const logger = log.child({ component: 'kube-sources' });
    this.podInformer = new ResilientInformer<V1Pod>(
      kc,
      { name: 'pods', path: '/api/v1/pods', model: 'V1Pod', list: () => api.listPodForAllNamespaces() },
      tuning,
      logger,
    );
    this.nodeInformer = new ResilientInformer<V1Node>(
      kc,
      { name: 'nodes', path: '/api/v1/nodes', model: 'V1Node', list: () => api.listNode() },
      tuning,
      logger,
    );
    this.namespaceInformer = new ResilientInformer<V1Namespace>(
      kc,
      { name: 'namespaces', path: '/api/v1/namespaces', model: 'V1Namespace', list: () => api.listNamespace() },
      tuning,
      logger,
    );
    for (const inf of this.informers()) {
      inf.onSynced(() => {
        if (!this.synced()) return;
        logger.info('pods, nodes and namespaces synced');
        for (const cb of this.syncListeners) cb();
      });
    }
  }

  /** Pod added or changed ('upsert'), or gone ('delete', with its last known state). */
  onPod(cb: (change: Change, pod: V1Pod) => void): void {
    this.podInformer.on(cb);
  }

  onNode(cb: (change: Change, node: V1Node) => void): void {
    this.nodeInformer.on(cb);
  }

  onNamespace(cb: (change: Change, ns: V1Namespace) => void): void {
    this.namespaceInformer.on(cb);
  }

  /** Called once, when all three informers have delivered their initial list. */
  onSynced(cb: () => void): void {
    this.syncListeners.push(cb);
  }

  /** true once all three informers have delivered their initial list. */
  synced(): boolean {
    return this.informers().every((i) => i.synced());
  }

  /** Resolves when synced(); rejects after timeoutMs. */
  waitForSync(timeoutMs: number): Promise<void> {
    if (this.synced()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Kubernetes informers not synced after ${timeoutMs} ms`)), timeoutMs);
      this.onSynced(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  start(): void {
    if (this.started) throw new Error('KubeSources already started');
    this.started = true;
    for (const i of this.informers()) i.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.informers().map((i) => i.stop()));
  }

  /** Current cache views. */
  pods(): readonly V1Pod[] {
    return this.podInformer.list();
  }

  nodes(): readonly V1Node[] {
    return this.nodeInformer.list();
  }

  namespaces(): readonly V1Namespace[] {
    return this.namespaceInformer.list();
  }

  /** Per-informer counters (errors, restarts, watchdog restarts, lists, watches); live objects. */
  stats(): Readonly<Record<KubeResource, Readonly<InformerStats>>> {
    return { pods: this.podInformer.stats, nodes: this.nodeInformer.stats, namespaces: this.namespaceInformer.stats };
  }

  /** Total restarts (after errors and by the watchdog) across all informers. */
  restarts(): number {
    return this.informers().reduce((n, i) => n + i.stats.restarts + i.stats.watchdogRestarts, 0);
  }

  private informers(): Array<ResilientInformer<V1Pod> | ResilientInformer<V1Node> | ResilientInformer<V1Namespace>> {
    return [this.podInformer, this.nodeInformer, this.namespaceInformer];
  }
}
