/**
 * Creates (or updates) the bus's JetStream assets with explicit limits, so a
 * restarted or re-deployed control plane converges on the same layout, and
 * no principal can fill the server: every stream is bounded in bytes and
 * message size, and each node's audit and status history is bounded per
 * subject, so one noisy node cannot push the others' events out.
 */
import { DiscardPolicy, RetentionPolicy, StorageType, jetstreamManager, type StreamConfig } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { AUDIT_STREAM, DELTA_STREAM, MAX_STATE_BYTES, SNAPSHOT_BUCKET, STATUS_STREAM, subjects } from '@meshlane/proto';

/**
 * Audit history is bounded per subject (node and event type) and in bytes,
 * discarding the oldest. One node can hold at most its worker types x
 * auditPerSubject x AUDIT_EVENT_MAX_BYTES (24 MiB by default) of the
 * stream's auditMaxBytes (1 GiB): flooding, it pushes out only its own
 * events; it would take some 40 nodes flooding together to push out
 * everyone else's history (test/bus/isolation.test.ts keeps the ratio).
 */
export interface BusLimits {
  /** JetStream replicas of every asset: 3 on a 3-node NATS cluster. */
  replicas: number;
  /** Age after which deltas expire (ms): a worker further behind resyncs from the snapshot. */
  deltaMaxAgeMs: number;
  deltaMaxBytes: number;
  auditMaxAgeMs: number;
  auditMaxBytes: number;
  /** Audit events kept per node and event type. */
  auditPerSubject: number;
}

export const DEFAULT_LIMITS: BusLimits = {
  replicas: 1,
  deltaMaxAgeMs: 24 * 3600_000,
  deltaMaxBytes: 256 << 20,
  auditMaxAgeMs: 7 * 24 * 3600_000,
  auditMaxBytes: 1 << 30,
  auditPerSubject: 1_000,
};

const nanos = (ms: number) => ms * 1_000_000;

/**
 * An audit event carries at most two 1 KiB texts (reason and summary are
 * bounded by boundText), a status its counters and map sizes (about 3 KB):
 * anything bigger is refused by the stream.
 */
export const AUDIT_EVENT_MAX_BYTES = 8 << 10;
export const STATUS_MAX_BYTES = 16 << 10;

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
    // One message per subject: each subject is one generation step, written once.
    max_msgs_per_subject: 1,
    max_age: nanos(limits.deltaMaxAgeMs),
    max_bytes: limits.deltaMaxBytes,
    max_msg_size: MAX_STATE_BYTES,
    num_replicas: limits.replicas,
    // Workers read by subject (direct gets name it in the request).
    allow_direct: true,
    // Idempotent publish retries are recognised for this long.
    duplicate_window: nanos(120_000),
  });
  await ensureStream(nc, {
    name: AUDIT_STREAM,
    subjects: [subjects.allAudit],
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(limits.auditMaxAgeMs),
    max_bytes: limits.auditMaxBytes,
    max_msgs_per_subject: limits.auditPerSubject,
    max_msg_size: AUDIT_EVENT_MAX_BYTES,
    num_replicas: limits.replicas,
    allow_direct: true,
    // Acks stay on: workers' events arrive through service imports, so an
    // ack goes back through the server's reply mapping (into the worker's
    // own account) and clears it at once.
  });
  // Only the latest status of each worker (and of the control plane) matters.
  await ensureStream(nc, {
    name: STATUS_STREAM,
    subjects: [subjects.allStatus, subjects.controlplaneStatus],
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_msgs_per_subject: 1,
    max_msg_size: STATUS_MAX_BYTES,
    // One status per subject: room for 16,384 nodes at the largest status,
    // so no node's status can push another's out.
    max_bytes: 16_384 * STATUS_MAX_BYTES,
    num_replicas: limits.replicas,
    allow_direct: true,
  });
  const kvm = new Kvm(nc);
  // allow_direct: gets name the key in the subject, which is what a node's
  // account imports (see proto/src/accounts.ts).
  return kvm.create(SNAPSHOT_BUCKET, { history: 1, replicas: limits.replicas, max_bytes: -1, maxValueSize: MAX_STATE_BYTES, allow_direct: true });
}
