/**
 * Facts about the node the worker discovers instead of being told: where
 * the kubelet puts pods in cgroup v2 (the programs attach there), and how
 * many pods the node may hold (it sizes the maps).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { request } from 'node:https';
import { request as plainRequest } from 'node:http';
import { join } from 'node:path';

export interface PodCgroup {
  path: string;
  /** The kubelet's cgroup driver, as told by the directory it made. */
  driver: 'systemd' | 'cgroupfs';
}

function isCgroup2Dir(p: string): boolean {
  return existsSync(join(p, 'cgroup.procs')) && statSync(p).isDirectory();
}

/**
 * The kubepods cgroup under a cgroup v2 mount: `kubepods.slice` with the
 * systemd driver (the kubeadm, EKS, GKE and k3s default), `kubepods` with
 * cgroupfs. Throws naming both when neither is there.
 */
export function discoverPodCgroup(root: string): PodCgroup {
  if (!existsSync(join(root, 'cgroup.controllers'))) throw new Error(`${root} is not a cgroup v2 mount (no cgroup.controllers): mount the host's /sys/fs/cgroup there`);
  const systemd = join(root, 'kubepods.slice');
  if (isCgroup2Dir(systemd)) return { path: systemd, driver: 'systemd' };
  const cgroupfs = join(root, 'kubepods');
  if (isCgroup2Dir(cgroupfs)) return { path: cgroupfs, driver: 'cgroupfs' };
  throw new Error(`no kubepods cgroup under ${root}: looked for ${systemd} (systemd driver) and ${cgroupfs} (cgroupfs driver); give --cgroup PATH`);
}

export interface ApiAccess {
  /** https://host:port of the Kubernetes API. */
  url: string;
  token?: string;
  /** CA bundle (PEM) of the API's serving certificate. */
  ca?: string;
}

const SA = '/var/run/secrets/kubernetes.io/serviceaccount';

/** In-cluster API access of the pod's service account, or undefined outside a cluster. */
export function inClusterApi(): ApiAccess | undefined {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT;
  if (!host || !port || !existsSync(join(SA, 'token'))) return undefined;
  return {
    url: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    token: readFileSync(join(SA, 'token'), 'utf8').trim(),
    ...(existsSync(join(SA, 'ca.crt')) ? { ca: readFileSync(join(SA, 'ca.crt'), 'utf8') } : {}),
  };
}

class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

function getJson(api: ApiAccess, path: string, timeoutMs: number): Promise<unknown> {
  const url = new URL(path, api.url);
  const send = url.protocol === 'http:' ? plainRequest : request;
  return new Promise((resolve, reject) => {
    const req = send(
      url,
      { method: 'GET', headers: { accept: 'application/json', ...(api.token ? { authorization: `Bearer ${api.token}` } : {}) }, ...(api.ca ? { ca: api.ca } : {}), timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new HttpError(`GET ${path}: HTTP ${res.statusCode} ${body.slice(0, 200)}`, res.statusCode ?? 0));
          try {
            resolve(JSON.parse(body));
          } catch (err) {
            reject(new Error(`GET ${path}: not JSON: ${(err as Error).message}`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The node's pod capacity (`status.capacity.pods`, the kubelet's --max-pods). */
export async function nodeMaxPods(api: ApiAccess, node: string, timeoutMs = 5000): Promise<number> {
  const obj = (await getJson(api, `/api/v1/nodes/${encodeURIComponent(node)}`, timeoutMs)) as { status?: { capacity?: Record<string, unknown> } };
  const raw = obj.status?.capacity?.pods;
  const n = typeof raw === 'string' ? Number(raw) : typeof raw === 'number' ? raw : NaN;
  if (!Number.isInteger(n) || n <= 0) throw new Error(`node ${node}: status.capacity.pods is ${JSON.stringify(raw)}, not a pod count`);
  return n;
}

/**
 * Is the worker's own DaemonSet going away (deleted, or being deleted)?
 * That is how a stopping worker tells `helm uninstall` / `kubectl delete`
 * from a rolling update or a node drain: only then does it detach the
 * programs on its way out. Unknown (the API unreachable) counts as no:
 * staying attached is the fail-static side.
 */
export async function daemonSetDeleted(api: ApiAccess, namespace: string, name: string, timeoutMs = 3000): Promise<boolean> {
  try {
    const ds = (await getJson(api, `/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/daemonsets/${encodeURIComponent(name)}`, timeoutMs)) as { metadata?: { deletionTimestamp?: string } };
    return ds.metadata?.deletionTimestamp !== undefined;
  } catch (err) {
    return err instanceof HttpError && err.status === 404;
  }
}
