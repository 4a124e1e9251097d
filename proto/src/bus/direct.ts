/**
 * JetStream direct gets, sent as plain requests. The subject names the
 * stream and the message's subject (`$JS.API.DIRECT.GET.<stream>.<subject>`),
 * so the request carries nothing but its subject: this is what lets a node's
 * account import exactly its own snapshot key and delta subjects. No
 * JetStream client, no `$JS.API.INFO`, no consumer is involved.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { parseJson, parseSnapshot } from '../decode.js';
import type { Snapshot } from '../messages.js';
import { DELTA_STREAM, SNAPSHOT_STREAM, subjects } from '../subjects.js';

export interface StoredMessage {
  /** Stream sequence. */
  seq: number;
  subject: string;
  data: Uint8Array;
  header(name: string): string | undefined;
}

export class DirectGetError extends Error {
  override name = 'DirectGetError';
}

/** The last message stored on `subject`, or undefined when there is none. */
export async function directGet(nc: NatsConnection, stream: string, subject: string, timeoutMs: number): Promise<StoredMessage | undefined> {
  const m = await nc.request(subjects.directGet(stream, subject), undefined, { timeout: timeoutMs });
  const h = m.headers;
  if (h?.code === 404) return undefined;
  if (h?.code && h.code !== 200) throw new DirectGetError(`direct get ${subject}: ${h.code} ${h.description}`);
  const seq = Number(h?.get('Nats-Sequence'));
  if (!h || !Number.isInteger(seq) || seq <= 0) throw new DirectGetError(`direct get ${subject}: answer without a stream sequence`);
  return { seq, subject: h.get('Nats-Subject') || subject, data: m.data, header: (name) => h.get(name) || undefined };
}

export interface StoredSnapshot {
  snapshot: Snapshot;
  /** Bucket revision (the stream sequence of the entry). */
  revision: number;
}

/** A node's snapshot from the bucket: undefined when there is none (or it was deleted). Throws ValidationError when it does not parse. */
export async function readSnapshot(nc: NatsConnection, node: string, timeoutMs: number): Promise<StoredSnapshot | undefined> {
  const m = await directGet(nc, SNAPSHOT_STREAM, subjects.snapshot(node), timeoutMs);
  // A KV delete or purge leaves a marker with no data.
  if (!m || m.data.length === 0 || m.header('KV-Operation')) return undefined;
  return { snapshot: parseSnapshot(parseJson(m.data), node), revision: m.seq };
}

/** The stored delta that takes `node` from generation `from`, or undefined. Not parsed: the caller validates. */
export function readDelta(nc: NatsConnection, node: string, from: number, timeoutMs: number): Promise<StoredMessage | undefined> {
  return directGet(nc, DELTA_STREAM, subjects.delta(node, from), timeoutMs);
}
