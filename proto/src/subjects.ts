/**
 * The bus layout, version v1. Every name a component or an operator needs
 * is built here; nothing else spells a subject.
 *
 *   KV bucket  meshlane-snapshots     key <node>: the node's whole NodeState
 *                                     (Snapshot envelope), the resync point
 *   stream     MESHLANE_DELTAS        meshlane.v1.node.<node>.delta:
 *                                     NodeStateDelta, generation from -> to
 *   subject    meshlane.v1.node.<node>.status   WorkerStatus, every change
 *                                     and every heartbeat interval
 *   stream     MESHLANE_AUDIT         meshlane.v1.audit.<node>.<event>:
 *                                     AuditEvent (applied, rejected, resync)
 *
 * Operators audit with `nats sub 'meshlane.v1.>'` or `meshlane audit tail`.
 */

export const BUS_VERSION = 'v1';
export const SUBJECT_ROOT = `meshlane.${BUS_VERSION}`;

export const SNAPSHOT_BUCKET = 'meshlane-snapshots';
export const DELTA_STREAM = 'MESHLANE_DELTAS';
export const AUDIT_STREAM = 'MESHLANE_AUDIT';
export const STATUS_STREAM = 'MESHLANE_STATUS';

/** Node names are DNS-1123 subdomains: dots are legal there, but split NATS tokens. */
export function nodeToken(node: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node)) throw new Error(`node name ${JSON.stringify(node)} is not a DNS-1123 name`);
  return node.replaceAll('.', '_');
}

export const subjects = {
  delta: (node: string) => `${SUBJECT_ROOT}.node.${nodeToken(node)}.delta`,
  status: (node: string) => `${SUBJECT_ROOT}.node.${nodeToken(node)}.status`,
  audit: (node: string, event: AuditEventType) => `${SUBJECT_ROOT}.audit.${nodeToken(node)}.${event}`,
  allDeltas: `${SUBJECT_ROOT}.node.*.delta`,
  allStatus: `${SUBJECT_ROOT}.node.*.status`,
  allAudit: `${SUBJECT_ROOT}.audit.>`,
  everything: `${SUBJECT_ROOT}.>`,
  /** KV key of a node's snapshot. */
  snapshotKey: (node: string) => nodeToken(node),
};

export type AuditEventType = 'applied' | 'rejected' | 'resync' | 'published' | 'leader';
