/**
 * Publishing is the leader's job. Every replica runs the sources, the model
 * and the reconciler (hot standby); only the leader publishes, and only
 * after its sources are synced (a partial model would publish removals). On
 * taking the lead it seeds the reconciler and the publisher from what the
 * bus holds, then publishes every node's delta from there.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import type { ControlPlane } from '../controlplane.js';
import type { LeaseElector } from '../leader/lease.js';
import { API_VERSION, subjects, type ControlPlaneStatus } from '@meshlane/proto';
import { BusPublisher, FencedError } from './publisher.js';
import { emptyNodeState, readBusState } from './takeover.js';

export interface LeadershipOptions {
  nc: NatsConnection;
  kv: KV;
  logger: Logger;
  /** controlplane/<pod name> in audit events. */
  source: string;
  /** Without an elector this replica leads alone (one replica only). */
  elector?: LeaseElector;
  snapshotIntervalMs?: number;
  /** The leader's heartbeat on the control plane status subject (ms). */
  statusIntervalMs?: number;
}

/** What readiness and the heartbeat say about publishing. */
export interface LeadershipHealth {
  leading: boolean;
  epoch?: number;
  fenced?: string;
  refused: Record<string, string>;
  retrying: string[];
}

export class BusLeadership {
  private publisher: BusPublisher | undefined;
  private epoch: number | undefined;
  private fencedReason: string | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private term = 0;
  readonly stats = { terms: 0, fenced: 0 };

  constructor(
    private readonly cp: ControlPlane,
    private readonly o: LeadershipOptions,
  ) {
    cp.onUpdate((u) => {
      const pub = this.publisher;
      pub?.publish(u).then(
        // Stored (the delta, or the snapshot that repairs the node): the end of each event's way to the bus.
        () => this.cp.published(u.node, u.generation),
        (err: Error) => {
          if (err instanceof FencedError) this.fenced(pub, err);
          else this.o.logger.error({ node: u.node, err: err.message }, 'publish failed');
        },
      );
    });
  }

  leading(): boolean {
    return this.publisher !== undefined;
  }

  /** Not ready while this replica was fenced and the Lease still names it, or a node cannot be published. */
  health(): LeadershipHealth {
    const h = this.publisher?.health();
    return {
      leading: this.leading(),
      ...(this.epoch !== undefined ? { epoch: this.epoch } : {}),
      ...(this.fencedReason ? { fenced: this.fencedReason } : {}),
      refused: h?.refused ?? {},
      retrying: h?.retrying ?? [],
    };
  }

  private reportStatus(): void {
    const pub = this.publisher;
    if (!pub || this.epoch === undefined) return;
    const h = pub.health();
    const st: ControlPlaneStatus = {
      apiVersion: API_VERSION,
      kind: 'ControlPlaneStatus',
      source: this.o.source,
      time: new Date().toISOString(),
      epoch: this.epoch,
      nodes: this.cp.reconciler.nodeNames().length,
      refused: h.refused,
      retrying: h.retrying,
      repairs: pub.stats.repairs,
      ...(h.fenced ? { fenced: h.fenced } : {}),
    };
    try {
      this.o.nc.publish(subjects.controlplaneStatus, JSON.stringify(st));
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message }, 'control plane status not sent');
    }
  }

  start(): void {
    const { elector } = this.o;
    if (!elector) {
      void this.lead(undefined);
      return;
    }
    elector.onStartedLeading((epoch) => void this.lead(epoch));
    elector.onStoppedLeading(() => {
      // Another replica leads now: being fenced by it is no longer news.
      this.fencedReason = undefined;
      this.standBy();
    });
    elector.start();
  }

  async stop(): Promise<void> {
    const pub = this.publisher;
    this.standBy();
    await pub?.flush();
    await this.o.elector?.stop();
  }

  private standBy(): void {
    this.term++;
    this.publisher = undefined;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  private fenced(pub: BusPublisher, err: FencedError): void {
    if (this.publisher !== pub) return;
    this.stats.fenced++;
    this.fencedReason = err.message;
    this.o.logger.error({ err: err.message }, 'fenced by a newer leader: publishing stopped');
    // The last word of this leader: other replicas and `meshlane status` see why it stopped.
    this.reportStatus();
    this.standBy();
  }

  private async lead(epoch: number | undefined): Promise<void> {
    const term = ++this.term;
    const log = this.o.logger;
    while (!this.cp.ready()) {
      if (term !== this.term) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    const bus = await readBusState(this.o.nc, this.o.kv, log);
    if (term !== this.term) return;
    const stored = Math.max(0, ...[...bus.values()].map((s) => s.epoch));
    const myEpoch = epoch ?? stored + 1;
    if (myEpoch < stored) {
      this.fencedReason = `the bus holds leader epoch ${stored}, newer than this leader's ${myEpoch}`;
      log.error({ epoch: myEpoch, stored }, 'a newer leader has written: not publishing');
      return;
    }
    this.fencedReason = undefined;
    this.epoch = myEpoch;
    const pub = new BusPublisher(this.o.nc, this.o.kv, { epoch: myEpoch, source: this.o.source, logger: log, ...(this.o.snapshotIntervalMs ? { snapshotIntervalMs: this.o.snapshotIntervalMs } : {}) });
    pub.adopt([...bus.entries()]);
    pub.whenFenced((e) => this.fenced(pub, e));
    const nodes = new Set([...this.cp.model.knownNodes(), ...this.cp.reconciler.nodeNames(), ...bus.keys()]);
    // A node the bus has never heard of starts from nothing at generation 0,
    // which is what its worker has too.
    for (const n of nodes) this.cp.reconciler.seed(bus.get(n)?.state ?? emptyNodeState(n));
    this.publisher = pub;
    this.stats.terms++;
    log.info({ epoch: myEpoch, nodes: nodes.size }, 'leading: publishing from the bus state on');
    pub.audit({ type: 'leader', node: 'cluster', summary: `${this.o.source} leads with epoch ${myEpoch}, ${nodes.size} nodes` });
    this.cp.reconciler.touch(nodes);
    this.reportStatus();
    this.heartbeat = setInterval(() => this.reportStatus(), this.o.statusIntervalMs ?? 5000);
    this.heartbeat.unref();
  }
}
