/**
 * The bus layout, version v2. Every name a component or an operator needs
 * is built here; nothing else spells a subject.
 *
 *   KV bucket  meshlane-snapshots     key <node>: the node's whole NodeState
 *                                     (Snapshot envelope), the resync point
 *   stream     MESHLANE_DELTAS        meshlane.v2.node.<node>.delta.<from>:
 *                                     the NodeStateDelta from generation
 *                                     <from> to <from>+1; one message per
 *                                     subject, written create-only
 *   stream     MESHLANE_STATUS        meshlane.v2.node.<node>.status:
 *                                     WorkerStatus, the latest per node
 *   stream     MESHLANE_AUDIT         meshlane.v2.audit.<node>.<event>:
 *                                     AuditEvent (applied, rejected, ...)
 *
 * A worker at generation G reads exactly `delta.<G>` (a direct get: the
 * subject is the whole request, so NATS can scope it to the node), which is
 * why a delta can neither be skipped nor jump. Operators audit with
 * `nats sub 'meshlane.v2.>'` or `meshlane audit tail`.
 */

export const BUS_VERSION = 'v2';
export const SUBJECT_ROOT = `meshlane.${BUS_VERSION}`;

export const SNAPSHOT_BUCKET = 'meshlane-snapshots';
export const DELTA_STREAM = 'MESHLANE_DELTAS';
export const AUDIT_STREAM = 'MESHLANE_AUDIT';
export const STATUS_STREAM = 'MESHLANE_STATUS';
/** The stream behind the snapshot bucket. */
export const SNAPSHOT_STREAM = `KV_${SNAPSHOT_BUCKET}`;
/** The subject prefix of the snapshot bucket's keys. */
export const SNAPSHOT_SUBJECT_PREFIX = `$KV.${SNAPSHOT_BUCKET}`;
/** The JetStream API subject prefix. */
export const JS_API = '$JS.API';

/** Node names are DNS-1123 subdomains: dots are legal there, but split NATS tokens. */
export function nodeToken(node: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node) || node.length > 253) throw new Error(`node name ${JSON.stringify(node)} is not a DNS-1123 name`);
  return node.replaceAll('.', '_');
}

export type AuditEventType = 'applied' | 'rejected' | 'resync' | 'published' | 'leader' | 'repaired' | 'refused';

export const subjects = {
  /** The delta that takes a node from generation `from` to `from + 1`. */
  delta: (node: string, from: number) => `${SUBJECT_ROOT}.node.${nodeToken(node)}.delta.${from}`,
  /** Every delta subject of one node. */
  nodeDeltas: (node: string) => `${SUBJECT_ROOT}.node.${nodeToken(node)}.delta.*`,
  status: (node: string) => `${SUBJECT_ROOT}.node.${nodeToken(node)}.status`,
  audit: (node: string, event: AuditEventType) => `${SUBJECT_ROOT}.audit.${nodeToken(node)}.${event}`,
  /** Every audit subject of one node. */
  nodeAudit: (node: string) => `${SUBJECT_ROOT}.audit.${nodeToken(node)}.*`,
  /** The leader's own heartbeat: epoch, nodes it cannot publish, fencing. */
  controlplaneStatus: `${SUBJECT_ROOT}.controlplane.status`,
  allDeltas: `${SUBJECT_ROOT}.node.*.delta.*`,
  allStatus: `${SUBJECT_ROOT}.node.*.status`,
  allAudit: `${SUBJECT_ROOT}.audit.>`,
  everything: `${SUBJECT_ROOT}.>`,
  /** KV key of a node's snapshot. */
  snapshotKey: (node: string) => nodeToken(node),
  /** The subject under which the bucket stores a node's snapshot. */
  snapshot: (node: string) => `${SNAPSHOT_SUBJECT_PREFIX}.${nodeToken(node)}`,
  /** The direct get that reads the last message stored on `subject` of `stream`. */
  directGet: (stream: string, subject: string) => `${JS_API}.DIRECT.GET.${stream}.${subject}`,
};

/** The generation named by a delta subject, or undefined if it is not one of `node`'s. */
export function deltaSubjectGeneration(node: string, subject: string): number | undefined {
  const prefix = `${SUBJECT_ROOT}.node.${nodeToken(node)}.delta.`;
  if (!subject.startsWith(prefix)) return undefined;
  const g = subject.slice(prefix.length);
  return /^(0|[1-9][0-9]{0,15})$/.test(g) ? Number(g) : undefined;
}
