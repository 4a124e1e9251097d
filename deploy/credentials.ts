/**
 * Makes the NATS credentials of a meshlane install (never committed):
 *
 *   Secret meshlane-nats-auth             auth.conf: every user with its
 *                                         permissions (proto/src/permissions.ts),
 *                                         included by the NATS servers' nats.conf
 *   Secret meshlane-nats-credentials      controlplane, auditor: their passwords
 *   Secret meshlane-nats-node-credentials node-<token>: one password per node,
 *                                         mounted only by the worker's init step,
 *                                         which copies its own node's
 *
 * Run it again whenever nodes join or leave (e.g. from a CronJob or CI), with
 * --keep pointing at the current Secrets so that existing passwords stay:
 *
 *   kubectl get nodes -o name | sed 's|node/||' | xargs \
 *     node --import tsx deploy/credentials.ts --namespace istio-system --keep current.yaml > secrets.yaml
 *   kubectl apply -f secrets.yaml   # the NATS reloader picks auth.conf up
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { busUsers, renderAuthorization, userName, type DeltaAccess } from '../proto/src/permissions.js';

export interface Secret {
  apiVersion: 'v1';
  kind: 'Secret';
  metadata: { name: string; namespace: string; labels: Record<string, string> };
  type: 'Opaque';
  stringData: Record<string, string>;
}

function secret(name: string, namespace: string, stringData: Record<string, string>): Secret {
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace, labels: { 'app.kubernetes.io/part-of': 'meshlane' } }, type: 'Opaque', stringData };
}

/** Passwords already issued, from a YAML stream of Secrets (stringData or data). */
export function existingPasswords(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const doc of yaml.loadAll(text)) {
    if (doc === null || typeof doc !== 'object') continue;
    const d = doc as { kind?: unknown; metadata?: { name?: unknown }; stringData?: Record<string, unknown>; data?: Record<string, unknown> };
    if (d.kind !== 'Secret' || (d.metadata?.name !== 'meshlane-nats-credentials' && d.metadata?.name !== 'meshlane-nats-node-credentials')) continue;
    for (const [k, v] of Object.entries(d.stringData ?? {})) if (typeof v === 'string') out.set(k, v);
    for (const [k, v] of Object.entries(d.data ?? {})) if (typeof v === 'string') out.set(k, Buffer.from(v, 'base64').toString('utf8'));
  }
  return out;
}

export function generateCredentials(nodes: readonly string[], opts: { namespace?: string; keep?: Map<string, string>; deltaAccess?: DeltaAccess } = {}): Secret[] {
  const ns = opts.namespace ?? 'istio-system';
  const pw = (user: string): string => opts.keep?.get(user) ?? randomBytes(24).toString('base64url');
  const controlplane = { user: 'controlplane', password: pw('controlplane') };
  const auditor = { user: 'auditor', password: pw('auditor') };
  const perNode = [...new Set(nodes)].sort().map((node) => {
    const user = userName({ role: 'worker', node });
    return { node, credential: { user, password: pw(user) } };
  });
  const users = busUsers({ controlplane, auditor, nodes: perNode, deltaAccess: opts.deltaAccess ?? 'ordered' });
  return [
    secret('meshlane-nats-auth', ns, { 'auth.conf': renderAuthorization(users) }),
    secret('meshlane-nats-credentials', ns, { controlplane: controlplane.password, auditor: auditor.password }),
    secret('meshlane-nats-node-credentials', ns, Object.fromEntries(perNode.map((n) => [n.credential.user, n.credential.password]))),
  ];
}

function main(): void {
  const args = process.argv.slice(2);
  let namespace = 'istio-system';
  let keep: Map<string, string> | undefined;
  let deltaAccess: DeltaAccess = 'ordered';
  const nodes: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--namespace') namespace = args[++i] ?? namespace;
    else if (a === '--keep') keep = existingPasswords(readFileSync(args[++i] ?? '', 'utf8'));
    else if (a === '--delta-access') {
      const v = args[++i];
      if (v !== 'ordered' && v !== 'durable') throw new Error('--delta-access is ordered or durable');
      deltaAccess = v;
    } else nodes.push(a);
  }
  if (nodes.length === 0) {
    process.stderr.write('usage: credentials.ts [--namespace NS] [--keep secrets.yaml] [--delta-access ordered|durable] NODE...\n');
    process.exit(2);
  }
  process.stdout.write(generateCredentials(nodes, { namespace, keep, deltaAccess }).map((s) => yaml.dump(s, { lineWidth: -1 })).join('---\n'));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
