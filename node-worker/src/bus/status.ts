/** Publishes the worker's status on every change and as a heartbeat. */
import type { NatsConnection } from '@nats-io/transport-node';
import { API_VERSION, boundText, subjects, type WorkerStatus } from '@meshlane/proto';
import type { Datapath } from '../bpf/datapath.js';
import type { KernelFeatures } from '../bpf/features.js';
import { behaviourForBus, type BehaviourReport } from '../bpf/behaviour.js';
import { readStatus } from '../bpf/status.js';
import type { NodeFollower } from './follower.js';

export class StatusReporter {
  private timer: NodeJS.Timeout | undefined;
  connected = true;

  constructor(
    private readonly nc: NatsConnection,
    private readonly dp: Datapath,
    private readonly follower: NodeFollower,
    private readonly kernel: KernelFeatures,
    private readonly behaviour?: BehaviourReport,
  ) {}

  start(intervalMs: number): void {
    this.timer = setInterval(() => this.report(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  snapshot(): WorkerStatus {
    const s = readStatus(this.dp);
    return {
      apiVersion: API_VERSION,
      kind: 'WorkerStatus',
      node: this.follower.state.node,
      time: new Date().toISOString(),
      appliedGeneration: this.follower.state.generation,
      desiredGeneration: Math.max(this.follower.desiredGeneration, this.follower.state.generation),
      bus: this.connected ? 'connected' : 'disconnected',
      counters: s.counters,
      maps: s.maps,
      kernel: { ...this.kernel },
      ...(this.behaviour ? { behaviour: behaviourForBus(this.behaviour) } : {}),
      ...(this.follower.lastError ? { lastError: boundText(this.follower.lastError) } : {}),
    };
  }

  report(): void {
    try {
      this.nc.publish(subjects.status(this.follower.state.node), JSON.stringify(this.snapshot()));
    } catch {
      // disconnected: the next heartbeat after reconnect carries it
    }
  }
}
