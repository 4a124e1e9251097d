/**
 * NATS authorization for the meshlane bus (see subjects.ts), as pure code:
 * who may publish and subscribe to what, as plain objects and as
 * nats-server configuration text. Checked against a real nats-server 2.9.10
 * with @nats-io/{transport-node,jetstream,kv} 3.4 by
 * test/bus/permissions.test.ts.
 *
 * Three principals:
 *
 *  - a node's worker reads only its own node's snapshot and deltas and
 *    publishes only its own status and audit events;
 *  - the control plane publishes deltas and snapshots, manages the streams
 *    and bucket, and listens to every status and audit event;
 *  - an auditor reads everything and changes nothing.
 *
 * What the clients really send (nats.js v3.4), and what is allowed for it:
 *
 *  - `kv.get(key)` on a bucket opened with `allow_direct: true` sends
 *    `$JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<key>` (the key is in the
 *    subject, so it can be scoped per node). Without `allow_direct` it sends
 *    `$JS.API.STREAM.MSG.GET.KV_<bucket>` with the key in the payload, which
 *    no subject permission can scope: workers are never allowed that one.
 *    So a worker opens the bucket with
 *    `new Kvm(js).open(SNAPSHOT_BUCKET, { allow_direct: true })` (the bucket
 *    is created with allow_direct, the default on 2.9+).
 *  - `js.consumers.get(DELTA_STREAM, { filter_subjects: subjects.delta(node) })`
 *    (an ordered pull consumer, one string filter) sends
 *    `$JS.API.STREAM.INFO.<stream>`, then
 *    `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`; the server (2.9+)
 *    refuses a request whose config filter differs from the filter in the
 *    subject, so allowing only `...CREATE.<stream>.*.<own delta subject>`
 *    lets a worker create consumers on its own deltas only. Pulls go to
 *    `$JS.API.CONSUMER.MSG.NEXT.<stream>.<name>`, resets call
 *    `CONSUMER.DELETE` and `CONSUMER.INFO`. Consumer names cannot contain a
 *    dot, so those three cannot be scoped per node: they are allowed on every
 *    consumer of the delta stream, and the random (nuid) consumer name is the
 *    capability. Workers must therefore NOT set a guessable `name_prefix`,
 *    and nobody but the control plane may list consumers. (See DeltaAccess
 *    for the `durable` alternative, where every subject is scoped.)
 *  - `jetstreamManager()` and `Kvm.open()` check the API with `$JS.API.INFO`
 *    (account usage numbers, no data): allowed to everyone.
 *  - Replies: every request above is answered on the client's inbox. With the
 *    default `_INBOX.>` any user allowed to subscribe there could read every
 *    other user's replies, snapshots and deltas included. Each principal
 *    therefore gets its own inbox prefix (`inboxPrefix()`, passed to
 *    `connect({ inboxPrefix })`, and as `watcherPrefix` to `jetstream()`)
 *    and may subscribe to that prefix only.
 */
import { DELTA_STREAM, AUDIT_STREAM, STATUS_STREAM, SNAPSHOT_BUCKET, SUBJECT_ROOT, nodeToken, subjects } from './subjects.js';

/** The stream behind the snapshot bucket. */
export const SNAPSHOT_STREAM = `KV_${SNAPSHOT_BUCKET}`;
/** The subject prefix of the snapshot bucket's keys. */
export const SNAPSHOT_SUBJECT_PREFIX = `$KV.${SNAPSHOT_BUCKET}`;
const API = '$JS.API';
const ALL_STREAMS = [DELTA_STREAM, AUDIT_STREAM, STATUS_STREAM, SNAPSHOT_STREAM] as const;

export interface SubjectPermission {
  allow: string[];
  deny?: string[];
}

export interface Permissions {
  publish: SubjectPermission;
  subscribe: SubjectPermission;
}

export type Principal = { role: 'worker'; node: string } | { role: 'controlplane' } | { role: 'auditor' };

/** A password (plain or a bcrypt hash `$2a$...`) or an nkey public key. */
export type Credential = { user: string; password: string } | { nkey: string };

export interface BusUser {
  principal: Principal;
  credential: Credential;
  permissions: Permissions;
}

/**
 * The inbox prefix a principal must connect with (`connect({ inboxPrefix })`
 * and `jetstream(nc, { watcherPrefix })`): the only subjects it may
 * subscribe to for replies. Node tokens only hold [-a-z0-9_], so
 * `_INBOX_node_<token>` never equals the prefix of another principal.
 */
export function inboxPrefix(p: Principal): string {
  switch (p.role) {
    case 'worker':
      return `_INBOX_node_${nodeToken(p.node)}`;
    case 'controlplane':
      return '_INBOX_controlplane';
    case 'auditor':
      return '_INBOX_auditor';
  }
}

/** The user name a principal connects as (for password credentials). */
export function userName(p: Principal): string {
  return p.role === 'worker' ? `node-${nodeToken(p.node)}` : p.role;
}

/** The KV subject of a node's snapshot key. */
export function snapshotSubject(node: string): string {
  return `${SNAPSHOT_SUBJECT_PREFIX}.${subjects.snapshotKey(node)}`;
}

/**
 * How a worker reads its deltas.
 *
 *  - `ordered`: the worker creates its own ordered pull consumers (nats.js
 *    `js.consumers.get(DELTA_STREAM, { filter_subjects: subjects.delta(node) })`),
 *    so it can restart from any stream sequence (the snapshot's deltaSeq + 1).
 *    The create subject pins the filter to its own delta subject, but not the
 *    rest of the consumer config: a worker could create a *push* consumer on
 *    its own deltas whose deliver_subject is any subject, and the server then
 *    publishes its deltas there on the account's behalf, past its publish
 *    permissions (verified on 2.9.10). It leaks nothing (they are its own
 *    deltas) but lets a compromised worker inject its own delta messages
 *    into other subjects (another node's status or audit subject), so every
 *    reader must check a message's kind and node against its subject
 *    (parseWorkerStatus does). Pull/info/delete are allowed on any consumer
 *    name of the stream: the random name is the capability.
 *  - `durable`: the control plane creates one durable pull consumer per node
 *    (`deltaConsumerName(node)`, filter = the node's delta subject, explicit
 *    ack) and the worker may only look it up, pull from it and ack it: every
 *    subject is scoped to the node and no consumer config is in the worker's
 *    hands. The worker then skips deltas at or below its snapshot's deltaSeq
 *    instead of choosing where to start. Closes the hole above.
 */
export type DeltaAccess = 'ordered' | 'durable';

/** The durable pull consumer the control plane creates for a node (`durable` delta access). */
export function deltaConsumerName(node: string): string {
  return `delta_${nodeToken(node)}`;
}

/** A node's worker: its own snapshot, its own deltas, its own status and audit events. */
export function workerPermissions(node: string, deltas: DeltaAccess = 'ordered'): Permissions {
  const token = nodeToken(node);
  const consumers =
    deltas === 'ordered'
      ? [
          // The ordered consumer reads the stream's info first.
          `${API}.STREAM.INFO.${DELTA_STREAM}`,
          // Consumers (any name) filtered to its own delta subject only.
          `${API}.CONSUMER.CREATE.${DELTA_STREAM}.*.${subjects.delta(node)}`,
          // Pull, check, remove its consumer: the random name is the capability.
          `${API}.CONSUMER.MSG.NEXT.${DELTA_STREAM}.*`,
          `${API}.CONSUMER.INFO.${DELTA_STREAM}.*`,
          `${API}.CONSUMER.DELETE.${DELTA_STREAM}.*`,
        ]
      : [
          `${API}.CONSUMER.INFO.${DELTA_STREAM}.${deltaConsumerName(node)}`,
          `${API}.CONSUMER.MSG.NEXT.${DELTA_STREAM}.${deltaConsumerName(node)}`,
          `$JS.ACK.${DELTA_STREAM}.${deltaConsumerName(node)}.>`,
        ];
  return {
    publish: {
      allow: [
        subjects.status(node),
        `${SUBJECT_ROOT}.audit.${token}.*`,
        `${API}.INFO`,
        // kv.get(<own key>) with allow_direct: the key is in the subject.
        `${API}.DIRECT.GET.${SNAPSHOT_STREAM}.${snapshotSubject(node)}`,
        ...consumers,
      ],
    },
    subscribe: { allow: [`${inboxPrefix({ role: 'worker', node })}.>`] },
  };
}

/**
 * The control plane: publishes deltas and snapshots and its audit events,
 * creates and manages meshlane's streams, the bucket and their consumers
 * (nothing else in the account), listens to every status and audit event.
 */
export function controlPlanePermissions(): Permissions {
  const api: string[] = [`${API}.INFO`, `${API}.STREAM.NAMES`, `${API}.STREAM.LIST`];
  for (const s of ALL_STREAMS) {
    api.push(
      `${API}.STREAM.CREATE.${s}`,
      `${API}.STREAM.UPDATE.${s}`,
      `${API}.STREAM.INFO.${s}`,
      `${API}.STREAM.MSG.GET.${s}`,
      `${API}.STREAM.PURGE.${s}`,
      `${API}.DIRECT.GET.${s}`,
      `${API}.DIRECT.GET.${s}.>`,
      // CONSUMER.{CREATE,INFO,DELETE,NAMES,LIST}.<s>[.<name>[.<filter>]]
      `${API}.CONSUMER.*.${s}`,
      `${API}.CONSUMER.*.${s}.>`,
      // CONSUMER.{DURABLE.CREATE,MSG.NEXT}.<s>.<name>
      `${API}.CONSUMER.*.*.${s}.>`,
      `$JS.ACK.${s}.>`,
      `$JS.FC.${s}.>`,
    );
  }
  return {
    publish: {
      allow: [subjects.allDeltas, subjects.allAudit, `${SNAPSHOT_SUBJECT_PREFIX}.>`, ...api],
    },
    subscribe: {
      allow: [subjects.allStatus, subjects.allAudit, `${inboxPrefix({ role: 'controlplane' })}.>`],
    },
  };
}

/**
 * The auditor: subscribes to the whole bus and to live snapshot writes, and
 * reads snapshots and stream history. It publishes nothing on the bus. The
 * only publishes it has are JetStream API *requests* that read: account and
 * stream info (`STREAM.INFO` with `subjects_filter` lists the bucket's keys),
 * and message gets by sequence or last-by-subject. None of them has a side
 * effect; it is denied consumer creation (which would be a write, and a push
 * consumer's deliver subject could be aimed at any subject).
 */
export function auditorPermissions(): Permissions {
  const api: string[] = [`${API}.INFO`, `${API}.STREAM.NAMES`];
  for (const s of ALL_STREAMS) {
    api.push(`${API}.STREAM.INFO.${s}`, `${API}.STREAM.MSG.GET.${s}`, `${API}.DIRECT.GET.${s}`, `${API}.DIRECT.GET.${s}.>`);
  }
  return {
    publish: { allow: api },
    subscribe: {
      allow: [subjects.everything, `${SNAPSHOT_SUBJECT_PREFIX}.>`, `${inboxPrefix({ role: 'auditor' })}.>`],
    },
  };
}

export function permissionsFor(p: Principal, deltas: DeltaAccess = 'ordered'): Permissions {
  switch (p.role) {
    case 'worker':
      return workerPermissions(p.node, deltas);
    case 'controlplane':
      return controlPlanePermissions();
    case 'auditor':
      return auditorPermissions();
  }
}

export interface BusCredentials {
  controlplane: Credential;
  auditor: Credential;
  /** One credential per node name. */
  nodes: ReadonlyArray<{ node: string; credential: Credential }>;
  /** How workers read their deltas (default `ordered`). */
  deltaAccess?: DeltaAccess;
}

/** Every user of the bus with its permissions. */
export function busUsers(c: BusCredentials): BusUser[] {
  const users: BusUser[] = [
    { principal: { role: 'controlplane' }, credential: c.controlplane, permissions: controlPlanePermissions() },
    { principal: { role: 'auditor' }, credential: c.auditor, permissions: auditorPermissions() },
  ];
  const seen = new Set<string>();
  for (const n of c.nodes) {
    const t = nodeToken(n.node);
    if (seen.has(t)) throw new Error(`node ${n.node} is listed twice`);
    seen.add(t);
    users.push({ principal: { role: 'worker', node: n.node }, credential: n.credential, permissions: workerPermissions(n.node, c.deltaAccess ?? 'ordered') });
  }
  const ids = new Set<string>();
  for (const u of users) {
    const id = 'nkey' in u.credential ? u.credential.nkey : u.credential.user;
    if (ids.has(id)) throw new Error(`two users share the identity ${id}`);
    ids.add(id);
  }
  return users;
}

// ---- nats-server configuration text ----

/** A string as nats-server config reads it: JSON quoting is accepted, `$` stays literal. */
function q(s: string): string {
  if (/[\r\n]/.test(s)) throw new Error(`config value ${JSON.stringify(s)} contains a line break`);
  return JSON.stringify(s);
}

function renderList(xs: readonly string[]): string {
  return `[${xs.map(q).join(', ')}]`;
}

function renderSubjectPermission(sp: SubjectPermission): string {
  const parts = [`allow: ${renderList(sp.allow)}`];
  if (sp.deny && sp.deny.length > 0) parts.push(`deny: ${renderList(sp.deny)}`);
  return `{ ${parts.join(', ')} }`;
}

/** A permissions block: `{ publish: {...}, subscribe: {...} }`. */
export function renderPermissions(p: Permissions, indent = ''): string {
  return [
    '{',
    `${indent}  publish: ${renderSubjectPermission(p.publish)}`,
    `${indent}  subscribe: ${renderSubjectPermission(p.subscribe)}`,
    `${indent}}`,
  ].join('\n');
}

function renderUser(u: BusUser, indent: string): string {
  const id = 'nkey' in u.credential ? `nkey: ${q(u.credential.nkey)}` : `user: ${q(u.credential.user)}, password: ${q(u.credential.password)}`;
  return `${indent}{ ${id},\n${indent}  # ${describe(u.principal)}\n${indent}  permissions: ${renderPermissions(u.permissions, `${indent}  `)} }`;
}

function describe(p: Principal): string {
  return p.role === 'worker' ? `worker of node ${p.node}` : p.role;
}

/** `authorization { users: [...] }`: every user; no user, no access. */
export function renderAuthorization(users: readonly BusUser[]): string {
  return ['authorization {', '  users: [', users.map((u) => renderUser(u, '    ')).join(',\n'), '  ]', '}', ''].join('\n');
}

export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
  /** Require client certificates too (default false: users authenticate by password/nkey). */
  verify?: boolean;
}

export interface ServerConfigOptions {
  /** `server_name` (unique in a cluster; `$POD_NAME` style env references are passed through unquoted). */
  serverName?: string;
  listen?: string;
  /** Monitoring port (`/healthz`, `/varz`); omitted when undefined. */
  httpPort?: number;
  jetstream: { storeDir: string; maxMemory?: string; maxFile?: string };
  cluster?: { name: string; listen: string; routes: readonly string[]; tls?: TlsFiles };
  tls?: TlsFiles;
  users: readonly BusUser[];
  /** Instead of inlining users, `include` this file (relative to the config file). */
  includeAuthorization?: string;
}

function renderTls(t: TlsFiles, indent: string): string {
  const lines = [`${indent}tls {`, `${indent}  cert_file: ${q(t.cert)}`, `${indent}  key_file: ${q(t.key)}`, `${indent}  ca_file: ${q(t.ca)}`];
  if (t.verify) lines.push(`${indent}  verify: true`);
  lines.push(`${indent}}`);
  return lines.join('\n');
}

/** A value that is either a literal string or an environment reference `$NAME`. */
function valueOrEnv(s: string): string {
  return /^\$[A-Z_][A-Z0-9_]*$/.test(s) ? s : q(s);
}

/** A complete nats-server configuration. */
export function renderServerConfig(o: ServerConfigOptions): string {
  const out: string[] = [];
  if (o.serverName !== undefined) out.push(`server_name: ${valueOrEnv(o.serverName)}`);
  out.push(`listen: ${q(o.listen ?? '0.0.0.0:4222')}`);
  if (o.httpPort !== undefined) out.push(`http_port: ${o.httpPort}`);
  const js = [`jetstream {`, `  store_dir: ${q(o.jetstream.storeDir)}`];
  if (o.jetstream.maxMemory) js.push(`  max_memory_store: ${o.jetstream.maxMemory}`);
  if (o.jetstream.maxFile) js.push(`  max_file_store: ${o.jetstream.maxFile}`);
  js.push('}');
  out.push(js.join('\n'));
  if (o.tls) out.push(renderTls(o.tls, ''));
  if (o.cluster) {
    const c = [`cluster {`, `  name: ${q(o.cluster.name)}`, `  listen: ${q(o.cluster.listen)}`, `  routes: ${renderList(o.cluster.routes)}`];
    if (o.cluster.tls) c.push(renderTls(o.cluster.tls, '  '));
    c.push('}');
    out.push(c.join('\n'));
  }
  if (o.includeAuthorization !== undefined) {
    if (o.users.length > 0) throw new Error('give users or includeAuthorization, not both');
    out.push(`include ${q(o.includeAuthorization)}`);
  } else {
    out.push(renderAuthorization(o.users));
  }
  return `${out.join('\n')}\n`;
}
