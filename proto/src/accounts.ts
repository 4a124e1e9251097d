/**
 * Who may do what on the bus, as NATS accounts: the isolation boundary of
 * NATS itself, not a list of subject permissions.
 *
 * Why accounts. NATS checks a client's publish permissions on the subject
 * of a message, never on the reply subject of a request, and JetStream
 * publishes its answer to that reply subject with its account's rights: a
 * worker allowed one harmless read could aim the answer at
 * `$JS.API.STREAM.PURGE.<stream>` or at another node's subject. Across
 * accounts that cannot happen: a request that crosses a service import
 * reaches the exporter with a reply subject the server made up, and the
 * answer is delivered back into the requester's own account, where no
 * JetStream API and no other node's subject exists.
 *
 *   MESHLANE          the control plane. Owns JetStream: the streams and
 *                     the snapshot bucket. The only account that can write
 *                     a delta or a snapshot.
 *   NODE_<token>      one per node, one user (its worker), no JetStream.
 *                     Imports exactly, as services of MESHLANE: a direct get
 *                     of its own snapshot key, direct gets of its own delta
 *                     subjects, and its own status and worker audit subjects
 *                     (so JetStream's acks of them travel back through the
 *                     server's reply mapping, never to a subject the node
 *                     names: a stream import would pass the node's reply
 *                     subject into MESHLANE, and JetStream would "ack" to
 *                     `$JS.API.STREAM.PURGE.<stream>`, verified on 2.9.10);
 *                     as a stream, its own delta subjects (live hints).
 *                     Exports its status and audit subjects as streams to
 *                     AUDITOR only (which cannot act on a reply).
 *   AUDITOR           read-only operators (`meshlane` CLI). Imports every
 *                     meshlane subject as a stream and the JetStream API's
 *                     read-only requests (info, message gets); nothing it
 *                     publishes can reach another account except those reads.
 *
 * A node therefore reads only its own state and writes only its own status
 * and audit events, whatever subjects or reply subjects it uses; checked
 * against a real nats-server by test/bus/isolation.test.ts.
 */
import { AUDIT_STREAM, DELTA_STREAM, JS_API, SNAPSHOT_STREAM, SNAPSHOT_SUBJECT_PREFIX, STATUS_STREAM, nodeToken, subjects, type AuditEventType } from './subjects.js';

export type Principal = { role: 'worker'; node: string } | { role: 'controlplane' } | { role: 'auditor' };

/** A password (plain or a bcrypt hash `$2a$...`) or an nkey public key. */
export type Credential = { user: string; password: string } | { nkey: string };

export interface BusCredentials {
  controlplane: Credential;
  auditor: Credential;
  /** One credential per node name. */
  nodes: ReadonlyArray<{ node: string; credential: Credential }>;
}

/** What a worker may put on its own audit subjects; the control plane's own types are not among them. */
export const WORKER_AUDIT_TYPES: readonly AuditEventType[] = ['applied', 'rejected', 'resync'];

export const CONTROLPLANE_ACCOUNT = 'MESHLANE';
export const AUDITOR_ACCOUNT = 'AUDITOR';

export function accountName(p: Principal): string {
  switch (p.role) {
    case 'worker':
      return `NODE_${nodeToken(p.node)}`;
    case 'controlplane':
      return CONTROLPLANE_ACCOUNT;
    case 'auditor':
      return AUDITOR_ACCOUNT;
  }
}

/** The user name a principal connects as (for password credentials). */
export function userName(p: Principal): string {
  return p.role === 'worker' ? `node-${nodeToken(p.node)}` : p.role;
}

export interface SubjectPermission {
  allow: string[];
}

/** User permissions inside an account: defence in depth, the account is the boundary. */
export interface Permissions {
  publish: SubjectPermission;
  subscribe: SubjectPermission;
}

export interface Export {
  kind: 'stream' | 'service';
  subject: string;
  /** The accounts that may import it (never public). */
  to: string[];
  /**
   * Services only: how long the server keeps a request's reply mapping
   * waiting for the answer (nats-server `response_threshold`, a Go
   * duration; its default is 2m).
   */
  responseThreshold?: string;
}

export interface Import {
  kind: 'stream' | 'service';
  account: string;
  subject: string;
}

export interface Limits {
  /** Connections of the account (its users together). */
  maxConnections: number;
  /** Subscriptions per connection. */
  maxSubscriptions: number;
  /** Largest message a client of the account may publish (bytes). */
  maxPayload: number;
}

export interface Account {
  name: string;
  principal: Principal;
  jetstream: boolean;
  credential: Credential;
  /** Absent: everything inside the account (the control plane's). */
  permissions?: Permissions;
  exports: Export[];
  imports: Import[];
  limits?: Limits;
}

/** A worker publishes heartbeats and audit events of a few KB; a node needs one connection (two during a restart). */
export const WORKER_LIMITS: Limits = { maxConnections: 4, maxSubscriptions: 64, maxPayload: 64 << 10 };
/** Operators' CLIs: a handful at once, reads only. */
export const AUDITOR_LIMITS: Limits = { maxConnections: 32, maxSubscriptions: 256, maxPayload: 64 << 10 };

/**
 * How long the server holds the reply mapping of a worker's status or audit
 * publish. JetStream's ack answers (and clears) it at once; should an answer
 * never come, a publish that names a reply subject would leave a mapping in
 * MESHLANE for nats-server's default of 2 minutes, and a worker could pile
 * up hundreds of thousands (about 0.8 KB each, measured on 2.9.10) and fill
 * the server's memory. 1 s bounds them to what one worker sends in a second
 * (test/bus/isolation.test.ts).
 */
export const WORKER_WRITE_RESPONSE_THRESHOLD = '1s';

/** The direct gets a worker may send: its own snapshot key, its own delta subjects. */
export function workerReads(node: string): { snapshot: string; deltas: string } {
  return {
    snapshot: subjects.directGet(SNAPSHOT_STREAM, subjects.snapshot(node)),
    deltas: subjects.directGet(DELTA_STREAM, subjects.nodeDeltas(node)),
  };
}

function workerAuditSubjects(node: string): string[] {
  return WORKER_AUDIT_TYPES.map((t) => subjects.audit(node, t));
}

const ALL_STREAMS = [DELTA_STREAM, STATUS_STREAM, AUDIT_STREAM, SNAPSHOT_STREAM] as const;

/** The JetStream API requests the auditor may send: reads without side effects. */
export function auditorReads(): string[] {
  const out = [`${JS_API}.INFO`, `${JS_API}.STREAM.NAMES`];
  for (const s of ALL_STREAMS) out.push(`${JS_API}.STREAM.INFO.${s}`, `${JS_API}.STREAM.MSG.GET.${s}`, `${JS_API}.DIRECT.GET.${s}`, `${JS_API}.DIRECT.GET.${s}.>`);
  return out;
}

/** Every account of the bus. Node names must be unique (also after '.' -> '_'). */
export function busAccounts(c: BusCredentials): Account[] {
  const nodes = [...c.nodes].sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  const seen = new Set<string>();
  for (const n of nodes) {
    const t = nodeToken(n.node);
    if (seen.has(t)) throw new Error(`node ${n.node} is listed twice (or clashes with another once '.' becomes '_')`);
    seen.add(t);
  }
  const cp: Account = { name: CONTROLPLANE_ACCOUNT, principal: { role: 'controlplane' }, jetstream: true, credential: c.controlplane, exports: [], imports: [] };
  const auditor: Account = {
    name: AUDITOR_ACCOUNT,
    principal: { role: 'auditor' },
    jetstream: false,
    credential: c.auditor,
    permissions: { publish: { allow: auditorReads() }, subscribe: { allow: [subjects.everything, `${SNAPSHOT_SUBJECT_PREFIX}.>`, '_INBOX.>'] } },
    exports: [],
    imports: [],
    limits: AUDITOR_LIMITS,
  };
  // The auditor sees the control plane's subjects live (deltas, its audit events, snapshot writes)...
  for (const subject of [subjects.allDeltas, subjects.allAudit, subjects.controlplaneStatus, `${SNAPSHOT_SUBJECT_PREFIX}.>`]) {
    cp.exports.push({ kind: 'stream', subject, to: [AUDITOR_ACCOUNT] });
    auditor.imports.push({ kind: 'stream', account: CONTROLPLANE_ACCOUNT, subject });
  }
  // ...and reads its history.
  for (const subject of auditorReads()) {
    cp.exports.push({ kind: 'service', subject, to: [AUDITOR_ACCOUNT] });
    auditor.imports.push({ kind: 'service', account: CONTROLPLANE_ACCOUNT, subject });
  }
  const workers: Account[] = nodes.map(({ node, credential }) => {
    const name = accountName({ role: 'worker', node });
    const reads = workerReads(node);
    const own = [subjects.status(node), ...workerAuditSubjects(node)];
    const acc: Account = {
      name,
      principal: { role: 'worker', node },
      jetstream: false,
      credential,
      permissions: {
        publish: { allow: [...own, reads.snapshot, reads.deltas] },
        subscribe: { allow: [subjects.nodeDeltas(node), '_INBOX.>'] },
      },
      // Straight to the auditor: streams re-exported through MESHLANE do not reach it.
      exports: own.map((subject) => ({ kind: 'stream', subject, to: [AUDITOR_ACCOUNT] })),
      imports: [
        ...[reads.snapshot, reads.deltas, ...own].map((subject): Import => ({ kind: 'service', account: CONTROLPLANE_ACCOUNT, subject })),
        { kind: 'stream', account: CONTROLPLANE_ACCOUNT, subject: subjects.nodeDeltas(node) },
      ],
      limits: WORKER_LIMITS,
    };
    cp.exports.push(
      ...[reads.snapshot, reads.deltas].map((subject): Export => ({ kind: 'service', subject, to: [name] })),
      // Its writes are never answered: their reply mappings must not outlive a second (see WORKER_WRITE_RESPONSE_THRESHOLD).
      ...own.map((subject): Export => ({ kind: 'service', subject, to: [name], responseThreshold: WORKER_WRITE_RESPONSE_THRESHOLD })),
      { kind: 'stream', subject: subjects.nodeDeltas(node), to: [name] },
    );
    for (const subject of own) auditor.imports.push({ kind: 'stream', account: name, subject });
    return acc;
  });
  const all = [cp, auditor, ...workers];
  const ids = new Set<string>();
  for (const a of all) {
    const id = 'nkey' in a.credential ? a.credential.nkey : a.credential.user;
    if (ids.has(id)) throw new Error(`two principals share the identity ${id}`);
    ids.add(id);
  }
  return all;
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

function describe(p: Principal): string {
  return p.role === 'worker' ? `worker of node ${p.node}` : p.role;
}

function renderAccount(a: Account): string {
  const i = '    ';
  const cred = 'nkey' in a.credential ? `nkey: ${q(a.credential.nkey)}` : `user: ${q(a.credential.user)}, password: ${q(a.credential.password)}`;
  const perms = a.permissions
    ? `, permissions: { publish: { allow: ${renderList(a.permissions.publish.allow)} }, subscribe: { allow: ${renderList(a.permissions.subscribe.allow)} } }`
    : '';
  const lines = [`  ${q(a.name)}: {`, `${i}# ${describe(a.principal)}`];
  if (a.jetstream) lines.push(`${i}jetstream: enabled`);
  lines.push(`${i}users: [ { ${cred}${perms} } ]`);
  if (a.limits) lines.push(`${i}limits: { max_connections: ${a.limits.maxConnections}, max_subscriptions: ${a.limits.maxSubscriptions}, max_payload: ${a.limits.maxPayload} }`);
  if (a.exports.length) {
    lines.push(`${i}exports: [`);
    for (const e of a.exports) {
      const threshold = e.kind === 'service' && e.responseThreshold !== undefined ? `, response_threshold: ${q(e.responseThreshold)}` : '';
      lines.push(`${i}  { ${e.kind}: ${q(e.subject)}, accounts: ${renderList(e.to)}${threshold} }`);
    }
    lines.push(`${i}]`);
  }
  if (a.imports.length) {
    lines.push(`${i}imports: [`);
    for (const m of a.imports) lines.push(`${i}  { ${m.kind}: { account: ${q(m.account)}, subject: ${q(m.subject)} } }`);
    lines.push(`${i}]`);
  }
  lines.push('  }');
  return lines.join('\n');
}

/** `accounts { ... }`: every account with its one user; no account, no access. */
export function renderAccounts(accounts: readonly Account[]): string {
  return ['accounts {', ...accounts.map(renderAccount), '}', ''].join('\n');
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
  /** Largest message (bytes); NATS' default is 1 MiB. */
  maxPayload?: number;
  jetstream: { storeDir: string; maxMemory?: string; maxFile?: string };
  cluster?: { name: string; listen: string; routes: readonly string[]; tls?: TlsFiles };
  tls?: TlsFiles;
  accounts: readonly Account[];
  /** Instead of inlining the accounts, `include` this file (relative to the config file). */
  includeAccounts?: string;
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
  if (o.maxPayload !== undefined) out.push(`max_payload: ${o.maxPayload}`);
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
  if (o.includeAccounts !== undefined) {
    if (o.accounts.length > 0) throw new Error('give accounts or includeAccounts, not both');
    out.push(`include ${q(o.includeAccounts)}`);
  } else {
    out.push(renderAccounts(o.accounts));
  }
  return `${out.join('\n')}\n`;
}
