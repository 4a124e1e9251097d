/**
 * Creates (or updates) the bus's JetStream assets with explicit limits, so a
 * restarted or re-deployed control plane converges on the same layout.
 */
import { DiscardPolicy, RetentionPolicy, StorageType, jetstreamManager, type StreamConfig } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { AUDIT_STREAM, DELTA_STREAM, SNAPSHOT_BUCKET, STATUS_STREAM, subjects } from '@meshlane/proto';

export interface BusLimits {
  /** JetStream replicas of every asset: 3 on a 3-node NATS cluster. */
  replicas: number;
  /** Deltas kept per node: a worker further behind resyncs from the snapshot. */
  deltaHistoryPerNode: number;
  /** Age after which deltas and audit events expire (ms). */
  deltaMaxAgeMs: number;
  auditMaxAgeMs: number;
}

export const DEFAULT_LIMITS: BusLimits = {
  replicas: 1,
  deltaHistoryPerNode: 100_000,
  deltaMaxAgeMs: 24 * 3600_000,
  auditMaxAgeMs: 7 * 24 * 3600_000,
};

const nanos = (ms: number) => ms * 1_000_000;

async function ensureStream(nc: NatsConnection, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.info(cfg.name);
    await jsm.streams.update(cfg.name, cfg);
  } catch (err) {
    if (!/not found/i.test((err as Error).message)) throw err;
    await jsm.streams.add(cfg);
  }
}

export async function setupBus(nc: NatsConnection, limits: BusLimits): Promise<KV> {
  await ensureStream(nc, {
    name: DELTA_STREAM,
    subjects: [subjects.allDeltas],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_msgs_per_subject: limits.deltaHistoryPerNode,
    max_age: nanos(limits.deltaMaxAgeMs),
    num_replicas: limits.replicas,
    // Deltas can be large for big nodes (n^2 pairs): allow up to 8 MiB.
    max_msg_size: 8 << 20,
  });
  await ensureStream(nc, {
    name: AUDIT_STREAM,
    subjects: [subjects.allAudit],
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(limits.auditMaxAgeMs),
    num_replicas: limits.replicas,
  });
  // Only the latest status of each worker matters to `meshlane status`.
  await ensureStream(nc, {
    name: STATUS_STREAM,
    subjects: [subjects.allStatus],
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_msgs_per_subject: 1,
    num_replicas: limits.replicas,
  });
  const kvm = new Kvm(nc);
  // allow_direct: gets name the key in the subject, which per-node NATS
  // permissions can match (see proto/src/permissions.ts).
  return kvm.create(SNAPSHOT_BUCKET, { history: 1, replicas: limits.replicas, max_bytes: -1, allow_direct: true });
}
