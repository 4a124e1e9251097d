/**
 * Makes the NATS credentials of a meshlane install (never committed):
 *
 *   Secret meshlane-nats-accounts         accounts.conf: every NATS account
 *                                         with its one user, imports, exports
 *                                         and limits (proto/src/accounts.ts),
 *                                         included by the NATS servers' nats.conf
 *   Secret meshlane-nats-credentials      controlplane, auditor: their passwords
 *   Secret meshlane-nats-node-credentials node-<token>: one password per node,
 *                                         mounted only by the worker's init step,
 *                                         which copies its own node's; in the
 *                                         worker's namespace (--worker-namespace,
 *                                         default meshlane-system), the others in
 *                                         the release's (--namespace, default
 *                                         istio-system)
 *
 * A node's account exists only once this has run with the node's name: run it
 * again whenever nodes join or leave (e.g. from a CronJob or CI), with --keep
 * pointing at the current Secrets so that existing passwords stay (a worker
 * whose password changed would be refused until its pod restarts):
 *
 *   { kubectl -n istio-system get secret meshlane-nats-credentials -o yaml; echo ---;
 *     kubectl -n meshlane-system get secret meshlane-nats-node-credentials -o yaml; } > current.yaml
 *   kubectl get nodes -o name | sed 's|node/||' | xargs \
 *     node --import tsx deploy/credentials.ts --namespace istio-system --worker-namespace meshlane-system --keep current.yaml > secrets.yaml
 *   kubectl apply -f secrets.yaml   # the NATS reloader picks accounts.conf up
 *
 * Until then the worker of a new node fails its init step, naming the node.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { busAccounts, renderAccounts, userName } from '../proto/src/accounts.js';

export const ACCOUNTS_SECRET = 'meshlane-nats-accounts';
export const ACCOUNTS_KEY = 'accounts.conf';
export const CREDENTIALS_SECRET = 'meshlane-nats-credentials';
export const NODE_CREDENTIALS_SECRET = 'meshlane-nats-node-credentials';

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

/** Passwords already issued, from a YAML stream of Secrets or a List of them (stringData or data). */
export function existingPasswords(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (doc: unknown): void => {
    if (doc === null || typeof doc !== 'object') return;
    const d = doc as { kind?: unknown; items?: unknown; metadata?: { name?: unknown }; stringData?: Record<string, unknown>; data?: Record<string, unknown> };
    // `kubectl get secret a b -o yaml` prints a List.
    if (d.kind === 'List' && Array.isArray(d.items)) return d.items.forEach(visit);
    if (d.kind !== 'Secret' || (d.metadata?.name !== CREDENTIALS_SECRET && d.metadata?.name !== NODE_CREDENTIALS_SECRET)) return;
    for (const [k, v] of Object.entries(d.data ?? {})) if (typeof v === 'string') out.set(k, Buffer.from(v, 'base64').toString('utf8'));
    for (const [k, v] of Object.entries(d.stringData ?? {})) if (typeof v === 'string') out.set(k, v);
  };
  for (const doc of yaml.loadAll(text)) visit(doc);
  return out;
}

export const DEFAULT_NAMESPACE = 'istio-system';
export const DEFAULT_WORKER_NAMESPACE = 'meshlane-system';

export function generateCredentials(nodes: readonly string[], opts: { namespace?: string; workerNamespace?: string; keep?: Map<string, string> } = {}): Secret[] {
  const ns = opts.namespace ?? DEFAULT_NAMESPACE;
  const workerNs = opts.workerNamespace ?? DEFAULT_WORKER_NAMESPACE;
  const pw = (user: string): string => opts.keep?.get(user) ?? randomBytes(24).toString('base64url');
  const controlplane = { user: userName({ role: 'controlplane' }), password: pw(userName({ role: 'controlplane' })) };
  const auditor = { user: userName({ role: 'auditor' }), password: pw(userName({ role: 'auditor' })) };
  const perNode = [...new Set(nodes)].sort().map((node) => {
    const user = userName({ role: 'worker', node });
    return { node, credential: { user, password: pw(user) } };
  });
  // Checks the names (DNS-1123, unique also once '.' becomes '_').
  const accounts = busAccounts({ controlplane, auditor, nodes: perNode });
  return [
    secret(ACCOUNTS_SECRET, ns, { [ACCOUNTS_KEY]: renderAccounts(accounts) }),
    secret(CREDENTIALS_SECRET, ns, { [controlplane.user]: controlplane.password, [auditor.user]: auditor.password }),
    secret(NODE_CREDENTIALS_SECRET, workerNs, Object.fromEntries(perNode.map((n) => [n.credential.user, n.credential.password]))),
  ];
}

const USAGE = 'usage: credentials.ts [--namespace NS] [--worker-namespace NS] [--keep secrets.yaml] NODE...\n';

function main(): void {
  const args = process.argv.slice(2);
  let namespace = DEFAULT_NAMESPACE;
  let workerNamespace = DEFAULT_WORKER_NAMESPACE;
  let keep: Map<string, string> | undefined;
  const nodes: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--namespace') namespace = args[++i] ?? namespace;
    else if (a === '--worker-namespace') workerNamespace = args[++i] ?? workerNamespace;
    else if (a === '--keep') keep = existingPasswords(readFileSync(args[++i] ?? '', 'utf8'));
    else if (a.startsWith('-')) {
      process.stderr.write(`credentials.ts: unknown option ${a}\n${USAGE}`);
      process.exit(2);
    } else nodes.push(a);
  }
  if (nodes.length === 0) {
    process.stderr.write(USAGE);
    process.exit(2);
  }
  process.stdout.write(generateCredentials(nodes, { namespace, workerNamespace, ...(keep ? { keep } : {}) }).map((s) => yaml.dump(s, { lineWidth: -1 })).join('---\n'));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
