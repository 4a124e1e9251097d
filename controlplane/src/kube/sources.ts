/**
 * The control plane's Kubernetes inputs: informers on Pods (all namespaces), Nodes and Namespaces,
 * made robust against errors (backoff restart), 410 Gone (relist) and hung watches (watchdog), and
 * able to list clusters of 100,000 pods (paginated lists, projected objects; resilient-informer.ts).
 *
 * Consumers get projections (projection.ts): V1Pod / V1Node / V1Namespace objects holding only the
 * fields the control plane reads, never managedFields and the like.
 */
import type { KubeConfig, V1Namespace, V1Node, V1ObjectMeta, V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { projectNamespace, projectNode, projectPod } from './projection.js';
import { ResilientInformer, type Change, type InformerStats, type InformerTuning } from './resilient-informer.js';
import { SelectPool, builtWorkerUrl } from './select-pool.js';

export type { Change, InformerStats } from './resilient-informer.js';
export { loadKubeConfig } from './config.js';

export interface KubeSourcesOptions {
  /** A watch silent (no event, no bookmark) this long is restarted. Default 5 minutes. */
  inactivityTimeoutMs?: number;
  /** First retry delay after an error. Default 500 ms. */
  backoffInitialMs?: number;
  /** Retry delay cap. Default 30 s. */
  backoffMaxMs?: number;
  /** One list request (one page) taking longer is abandoned and retried. Default 60 s. */
  listTimeoutMs?: number;
  /** Server-side watch timeout, randomized in [this, 2 x this). Default 300 s. */
  watchTimeoutSeconds?: number;
  /** Objects per list page. Default 500 (client-go's page size). */
  listPageSize?: number;
  /** A list page larger than this is abandoned and asked for again with half the objects. Default 64 MiB. */
  maxListPageBytes?: number;
  /**
   * Scan list pages on a worker thread (select-worker.ts), when the compiled worker is present.
   * Default true. Off, or when running from TypeScript sources, pages are scanned on this thread.
   */
  selectInWorker?: boolean;
}

export type KubeResource = 'pods' | 'nodes' | 'namespaces';

/** What the caches keep of an object (see pods()). */
function identityMeta(m: V1ObjectMeta | undefined): V1ObjectMeta {
  const out: V1ObjectMeta = { name: m?.name ?? '' };
  if (m?.namespace !== undefined) out.namespace = m.namespace;
  if (m?.uid !== undefined) out.uid = m.uid;
  if (m?.resourceVersion !== undefined) out.resourceVersion = m.resourceVersion;
  return out;
}

export class KubeSources {
  private readonly podInformer: ResilientInformer<V1Pod>;
  private readonly nodeInformer: ResilientInformer<V1Node>;
  private readonly namespaceInformer: ResilientInformer<V1Namespace>;
  private readonly syncListeners: Array<() => void> = [];
  private readonly pool: SelectPool;
  private started = false;

  constructor(kc: KubeConfig, log: Logger, opts: KubeSourcesOptions = {}) {
    const logger = log.child({ component: 'kube-sources' });
    this.pool = new SelectPool(opts.selectInWorker === false ? undefined : builtWorkerUrl(), (why) =>
      logger.warn({ why }, 'list selection worker given up; selecting list pages on the main thread'),
    );
    const tuning: InformerTuning = {
      inactivityMs: opts.inactivityTimeoutMs ?? 5 * 60_000,
      backoffInitialMs: opts.backoffInitialMs ?? 500,
      backoffMaxMs: opts.backoffMaxMs ?? 30_000,
      listTimeoutMs: opts.listTimeoutMs ?? 60_000,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
      pageSize: opts.listPageSize ?? 500,
      maxPageBytes: opts.maxListPageBytes ?? 64 * 2 ** 20,
      pool: this.pool,
    };
    this.podInformer = new ResilientInformer<V1Pod>(
      kc,
      { name: 'pods', path: '/api/v1/pods', project: projectPod, selection: 'pods', identity: (p) => ({ metadata: identityMeta(p.metadata) }) },
      tuning,
      logger,
    );
    this.nodeInformer = new ResilientInformer<V1Node>(
      kc,
      { name: 'nodes', path: '/api/v1/nodes', project: projectNode, selection: 'nodes', identity: (n) => ({ metadata: identityMeta(n.metadata) }) },
      tuning,
      logger,
    );
    this.namespaceInformer = new ResilientInformer<V1Namespace>(
      kc,
      { name: 'namespaces', path: '/api/v1/namespaces', project: projectNamespace, selection: 'namespaces', identity: (n) => ({ metadata: identityMeta(n.metadata) }) },
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

  /**
   * Pod added or changed ('upsert'), or gone ('delete'), as its projection (projection.ts). A delete
   * carries the last state the watch reported, or, when a relist found the pod gone, its identity
   * (metadata name, namespace, uid, resourceVersion) only.
   */
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
    await this.pool.close();
  }

  /**
   * What the caches hold: each object's identity (metadata name, namespace, uid, resourceVersion),
   * not the object. The full projection is only handed to onPod/onNode/onNamespace listeners.
   */
  pods(): readonly V1Pod[] {
    return this.podInformer.list();
  }

  nodes(): readonly V1Node[] {
    return this.nodeInformer.list();
  }

  namespaces(): readonly V1Namespace[] {
    return this.namespaceInformer.list();
  }

  /** Per-informer counters (errors, restarts, watchdog restarts, lists, pages, watches, last error); live objects. */
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
