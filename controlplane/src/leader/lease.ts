/**
 * Leader election on a coordination.k8s.io/v1 Lease, the way client-go does
 * it: the holder renews every retry period; anyone may take the lease over
 * once it has not been renewed for its duration; every takeover increments
 * leaseTransitions. That count (+1) is the leader's epoch: the bus fences
 * every write with it, so a deposed leader that has not noticed yet cannot
 * overwrite a newer leader's state.
 */
import { CoordinationV1Api, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface LeaseOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds: number;
  /** Give up leadership when a renewal has not succeeded for this long. */
  renewDeadlineMs: number;
  retryPeriodMs: number;
  logger: Logger;
}

export const DEFAULT_LEASE = { leaseDurationSeconds: 15, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

function httpCode(err: unknown): number | undefined {
  const e = err as { code?: number; statusCode?: number; body?: string };
  return e.code ?? e.statusCode;
}

export class LeaseElector {
  private readonly api: CoordinationV1Api;
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private lastRenew = 0;
  private running = false;
  epoch = 0;
  private readonly started: Array<(epoch: number) => void> = [];
  private readonly stopped: Array<() => void> = [];

  constructor(
    kc: KubeConfig,
    private readonly o: LeaseOptions,
  ) {
    this.api = kc.makeApiClient(CoordinationV1Api);
  }

  onStartedLeading(cb: (epoch: number) => void): void {
    this.started.push(cb);
  }

  onStoppedLeading(cb: () => void): void {
    this.stopped.push(cb);
  }

  isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.running = true;
    void this.tick();
  }

  /** Stops campaigning; a leader releases the lease so a standby takes over at once. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.leading) {
      this.lose('stopping');
      try {
        const l = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace });
        if (l.spec?.holderIdentity === this.o.identity) {
          l.spec.holderIdentity = undefined;
          l.spec.renewTime = new Date(0);
          await this.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body: l });
        }
      } catch {
        // best effort: the lease expires by itself
      }
    }
  }

  private schedule(): void {
    if (this.running) this.timer = setTimeout(() => void this.tick(), this.o.retryPeriodMs);
  }

  private lose(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    this.o.logger.warn({ identity: this.o.identity, epoch: this.epoch, reason }, 'stopped leading');
    for (const cb of this.stopped) cb();
  }

  private async tick(): Promise<void> {
    try {
      await this.tryAcquireOrRenew();
    } catch (err) {
      this.o.logger.debug({ err: (err as Error).message }, 'lease attempt failed');
    }
    if (this.leading && Date.now() - this.lastRenew > this.o.renewDeadlineMs) this.lose('renew deadline passed');
    this.schedule();
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const now = new Date();
    let lease: V1Lease | undefined;
    try {
      lease = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace });
    } catch (err) {
      if (httpCode(err) !== 404) throw err;
    }
    if (!lease) {
      const body: V1Lease = {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: this.o.name, namespace: this.o.namespace },
        spec: { holderIdentity: this.o.identity, leaseDurationSeconds: this.o.leaseDurationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
      };
      await this.api.createNamespacedLease({ namespace: this.o.namespace, body });
      return this.won(1);
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity;
    const renewed = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
    const expired = !holder || renewed + (spec.leaseDurationSeconds ?? this.o.leaseDurationSeconds) * 1000 < now.getTime();
    if (holder === this.o.identity) {
      spec.renewTime = now;
      lease.spec = spec;
      try {
        await this.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body: lease });
      } catch (err) {
        if (httpCode(err) === 409) this.lose('lease changed under us');
        throw err;
      }
      return this.won((spec.leaseTransitions ?? 0) + 1);
    }
    if (!expired) {
      this.lose(`held by ${holder}`);
      return;
    }
    spec.holderIdentity = this.o.identity;
    spec.acquireTime = now;
    spec.renewTime = now;
    spec.leaseDurationSeconds = this.o.leaseDurationSeconds;
    spec.leaseTransitions = (spec.leaseTransitions ?? 0) + 1;
    lease.spec = spec;
    await this.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body: lease });
    return this.won(spec.leaseTransitions + 1);
  }

  private won(epoch: number): void {
    this.lastRenew = Date.now();
    if (this.leading && epoch === this.epoch) return;
    this.leading = true;
    this.epoch = epoch;
    this.o.logger.info({ identity: this.o.identity, epoch }, 'started leading');
    for (const cb of this.started) cb(epoch);
  }
}
