/**
 * Bus messages other than NodeState and NodeStateDelta. Encoding: JSON in
 * the protobuf JSON mapping's style (lowerCamel fields, enums as strings),
 * one message per NATS message, so `nats sub` shows an operator what flows.
 * JSON.parse of a few KB costs microseconds: fast enough at 1,000 events/s.
 */
import type { NodeState } from './nodestate.js';
import type { AuditEventType } from './subjects.js';

export const API_VERSION = 'meshlane.io/v1alpha2';

/** The KV snapshot: a node's whole state, and where its deltas continue. */
export interface Snapshot {
  apiVersion: typeof API_VERSION;
  kind: 'Snapshot';
  /**
   * Stream sequence of the last delta folded into this state (0: none yet).
   * Workers continue from the state's generation (the delta subject names
   * it); a new leader replays the stream from the lowest deltaSeq.
   */
  deltaSeq: number;
  /** Leader epoch that wrote it: a lower epoch never overwrites a higher one. */
  epoch: number;
  state: NodeState;
}

export interface WorkerStatus {
  apiVersion: typeof API_VERSION;
  kind: 'WorkerStatus';
  node: string;
  /** ISO time this status was taken. */
  time: string;
  /** Generation in the node's maps. */
  appliedGeneration: number;
  /** Highest generation the worker has heard of. */
  desiredGeneration: number;
  /** connected | disconnected (fail-static on the last state) */
  bus: 'connected' | 'disconnected';
  counters: Record<string, number>;
  maps: Record<string, { entries: number | null; max: number }>;
  kernel: Record<string, string | boolean>;
  /** What the worker's behaviour probe found at start (workers before it send none). */
  behaviour?: WorkerBehaviour;
  lastError?: string;
}

/**
 * How sockets in the sockhash behave towards apps on the worker's kernel,
 * probed at start, and what it decided for app sockets of 'auto' pods.
 * Bounded: at most MAX_BEHAVIOUR_RESULTS results of short words.
 */
export interface WorkerBehaviour {
  kernel: string;
  /** probe -> result, e.g. blockingRecv: 'eagain', fionread: 'exact'. */
  results: Record<string, string>;
  appSocketsAuto: 'nonblocking-only' | 'off';
  reason: string;
}

export const MAX_BEHAVIOUR_RESULTS = 16;

export interface AuditEvent {
  apiVersion: typeof API_VERSION;
  kind: 'AuditEvent';
  type: AuditEventType;
  node: string;
  time: string;
  /** Who emitted it: worker/<node> or controlplane/<pod>. */
  source: string;
  generation?: number;
  /** For rejections: the JSON path of the bad field and the reason. */
  field?: string;
  reason?: string;
  /** A short summary for humans (counts of upserts/removes, etc.). */
  summary?: string;
}

/** The leader's heartbeat on `meshlane.v2.controlplane.status`: what `meshlane status` and readiness report. */
export interface ControlPlaneStatus {
  apiVersion: typeof API_VERSION;
  kind: 'ControlPlaneStatus';
  /** controlplane/<pod>. */
  source: string;
  time: string;
  epoch: number;
  /** Nodes with a desired state. */
  nodes: number;
  /** Set once this leader has seen a newer leader's write: it publishes nothing more. */
  fenced?: string;
  /** Nodes whose state cannot be published, with the reason. */
  refused: Record<string, string>;
  /** Nodes with a write being retried (NATS unreachable, timeouts). */
  retrying: string[];
  /** Repairs since this leader started (a delta subject held something else). */
  repairs: number;
}
