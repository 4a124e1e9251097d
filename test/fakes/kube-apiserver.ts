/**
 * A protocol-faithful fake kube-apiserver for core/v1 Pods, Nodes and Namespaces.
 *
 * It speaks the list/watch protocol the way the real apiserver (watch cache) does, so that the
 * unmodified @kubernetes/client-node informers run against it:
 *  - lists carry `kind: PodList`, `apiVersion: v1`, `metadata.resourceVersion`; items carry their own
 *    resourceVersion (and, like the real server, no kind/apiVersion);
 *  - `?watch=true&resourceVersion=N` streams newline-delimited `{"type","object"}` events with
 *    resourceVersion > N; RV "" or "0" first replays the current state as synthetic ADDED events;
 *  - one global, monotonically increasing resourceVersion (like etcd's revision);
 *  - a bounded event history: a watch from an RV older than the history gets HTTP 200 followed by
 *    an ERROR event carrying a Status `code: 410, reason: Expired`, then the stream ends;
 *  - BOOKMARK events (only kind/apiVersion/metadata.resourceVersion) every `bookmarkIntervalMs`
 *    when `allowWatchBookmarks=true`;
 *  - `timeoutSeconds` ends the stream cleanly;
 *  - optional bearer-token authentication (401 Status otherwise).
 *
 * Fault injection: compactHistory(), dropWatches(), pauseWatches(), failNextRequests().
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { FakeLeases } from './leases.js';

export type FakeKind = 'Pod' | 'Node' | 'Namespace';

export interface FakeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  [k: string]: unknown;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEntry {
  rv: number;
  type: WatchEventType;
  kind: FakeKind;
  object: FakeObject;
}

interface Watcher {
  kind: FakeKind;
  namespace: string | undefined;
  bookmarks: boolean;
  paused: boolean;
  req: IncomingMessage;
  res: ServerResponse;
  timeout: NodeJS.Timeout | undefined;
}

export interface RequestRecord {
  watch: boolean;
  path: string;
  resourceVersion: string | undefined;
  query: Record<string, string>;
  /** HTTP status. */
  status: number;
  /** A watch answered with an ERROR event 410 Expired (HTTP status stays 200, like the real server). */
  expired: boolean;
}

/** Restricts an injected fault to some requests. */
export interface RequestMatch {
  path?: string;
  watch?: boolean;
}

export interface FakeApiServerOptions {
  /** Events kept for watch resumption; older RVs get 410 Gone. Default 1000. */
  historySize?: number;
  /** Period of BOOKMARK events to watchers that allow them. Default 1000 ms; 0 disables. */
  bookmarkIntervalMs?: number;
  /** When set, every request must carry `Authorization: Bearer <token>`. */
  token?: string;
  /** First resourceVersion handed out. Default 1000. */
  initialResourceVersion?: number;
}

const NAMESPACED: Record<FakeKind, boolean> = { Pod: true, Node: false, Namespace: false };

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function keyOf(kind: FakeKind, ns: string | undefined, name: string): string {
  return NAMESPACED[kind] ? `${ns ?? ''}/${name}` : name;
}

export class FakeKubeApiServer {
  /** coordination.k8s.io/v1 Leases, for leader election. */
  readonly leases = new FakeLeases();
  private readonly server: Server;
  private readonly objects = new Map<FakeKind, Map<string, FakeObject>>([
    ['Pod', new Map()],
    ['Node', new Map()],
    ['Namespace', new Map()],
  ]);
  private readonly history: HistoryEntry[] = [];
  /** Watches from an RV strictly below this are answered 410 Gone. */
  private oldestWatchableRv: number;
  private rv: number;
  private readonly watchers = new Set<Watcher>();
  private readonly historySize: number;
  private readonly token: string | undefined;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  private failures: { count: number; code: number; match: RequestMatch } = { count: 0, code: 500, match: {} };
  private hangs = 0;
  private port = 0;
  /** Every API request served, in order. */
  readonly requests: RequestRecord[] = [];

  private constructor(opts: FakeApiServerOptions) {
    this.historySize = opts.historySize ?? 1000;
    this.token = opts.token;
    this.rv = opts.initialResourceVersion ?? 1000;
    this.oldestWatchableRv = this.rv;
    this.server = createServer((req, res) => this.handle(req, res));
    const every = opts.bookmarkIntervalMs ?? 1000;
    if (every > 0) {
      this.bookmarkTimer = setInterval(() => this.sendBookmarks(), every);
      this.bookmarkTimer.unref();
    }
  }

  static async start(opts: FakeApiServerOptions = {}): Promise<FakeKubeApiServer> {
    const s = new FakeKubeApiServer(opts);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', reject);
      s.server.listen(0, '127.0.0.1', () => resolve());
    });
    s.port = (s.server.address() as AddressInfo).port;
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The current global resourceVersion. */
  resourceVersion(): string {
    return String(this.rv);
  }

  /** Open (including paused) watch connections. */
  openWatches(kind?: FakeKind): number {
    let n = 0;
    for (const w of this.watchers) if (!kind || w.kind === kind) n++;
    return n;
  }

  /** Kubeconfig YAML pointing at this server (bearer token if the server requires one). */
  kubeconfig(): string {
    const user = this.token ? `{ token: "${this.token}" }` : '{}';
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: fake',
      '  cluster:',
      `    server: ${this.url}`,
      // The client refuses plain http unless TLS verification is explicitly skipped.
      '    insecure-skip-tls-verify: true',
      'contexts:',
      '- name: fake',
      '  context: { cluster: fake, user: fake }',
      'current-context: fake',
      'users:',
      '- name: fake',
      `  user: ${user}`,
      '',
    ].join('\n');
  }

  // ---------------------------------------------------------------- test API: objects

  create(obj: FakeObject): FakeObject {
    const kind = this.kindOf(obj);
    const key = keyOf(kind, obj.metadata.namespace, obj.metadata.name);
    const store = this.store(kind);
    if (store.has(key)) throw new Error(`${kind} ${key} already exists`);
    const o = clone(obj);
    o.apiVersion = 'v1';
    o.kind = kind;
    if (NAMESPACED[kind]) o.metadata.namespace = o.metadata.namespace ?? 'default';
    else delete o.metadata.namespace;
    o.metadata.uid = o.metadata.uid ?? randomUUID();
    o.metadata.creationTimestamp = o.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    o.metadata.resourceVersion = String(++this.rv);
    store.set(key, o);
    this.emit('ADDED', kind, o);
    return clone(o);
  }

  update(obj: FakeObject): FakeObject {
    const kind = this.kindOf(obj);
    const key = keyOf(kind, obj.metadata.namespace ?? (NAMESPACED[kind] ? 'default' : undefined), obj.metadata.name);
    const store = this.store(kind);
    const old = store.get(key);
    if (!old) throw new Error(`${kind} ${key} not found`);
    const o = clone(obj);
    o.apiVersion = 'v1';
    o.kind = kind;
    o.metadata.namespace = old.metadata.namespace;
    if (!NAMESPACED[kind]) delete o.metadata.namespace;
    o.metadata.uid = old.metadata.uid;
    o.metadata.creationTimestamp = old.metadata.creationTimestamp;
    o.metadata.resourceVersion = String(++this.rv);
    store.set(key, o);
    this.emit('MODIFIED', kind, o);
    return clone(o);
  }

  remove(kind: FakeKind, ns: string | undefined, name: string): void {
    const key = keyOf(kind, ns, name);
    const store = this.store(kind);
    const old = store.get(key);
    if (!old) throw new Error(`${kind} ${key} not found`);
    store.delete(key);
    // The DELETED event carries the object's last state at the deletion's revision.
    const o = clone(old);
    o.metadata.resourceVersion = String(++this.rv);
    this.emit('DELETED', kind, o);
  }

  get(kind: FakeKind, ns: string | undefined, name: string): FakeObject | undefined {
    const o = this.store(kind).get(keyOf(kind, ns, name));
    return o ? clone(o) : undefined;
  }

  // ---------------------------------------------------------------- test API: faults

  /** Forget the whole event history: any watch from an RV below the current one gets 410 Gone. */
  compactHistory(): void {
    this.history.length = 0;
    this.oldestWatchableRv = this.rv;
  }

  /** Abruptly destroy every open watch connection (no clean end of stream). */
  dropWatches(): void {
    for (const w of [...this.watchers]) {
      this.forget(w);
      w.req.socket.destroy();
    }
  }

  /** Keep every currently open watch connection open but silent forever (no events, no bookmarks, no timeout). */
  pauseWatches(): void {
    for (const w of this.watchers) {
      w.paused = true;
      if (w.timeout) clearTimeout(w.timeout);
      w.timeout = undefined;
    }
  }

  /** The next `count` API requests (lists or watches, or only those matching `match`) fail with HTTP `code`. */
  failNextRequests(count: number, code = 500, match: RequestMatch = {}): void {
    this.failures = { count, code, match };
  }

  /** The next `count` API requests never get an answer (the connection stays open). */
  hangNextRequests(count: number): void {
    this.hangs = count;
  }

  async close(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    for (const w of [...this.watchers]) this.forget(w);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---------------------------------------------------------------- internals

  private kindOf(obj: FakeObject): FakeKind {
    const k = obj.kind;
    if (k === 'Pod' || k === 'Node' || k === 'Namespace') return k;
    throw new Error(`unsupported kind ${String(k)}`);
  }

  private store(kind: FakeKind): Map<string, FakeObject> {
    const s = this.objects.get(kind);
    if (!s) throw new Error(`no store for ${kind}`);
    return s;
  }

  private emit(type: WatchEventType, kind: FakeKind, object: FakeObject): void {
    const rv = Number(object.metadata.resourceVersion);
    this.history.push({ rv, type, kind, object: clone(object) });
    while (this.history.length > this.historySize) {
      const dropped = this.history.shift();
      if (dropped) this.oldestWatchableRv = dropped.rv;
    }
    for (const w of this.watchers) {
      if (w.paused || w.kind !== kind) continue;
      if (w.namespace !== undefined && object.metadata.namespace !== w.namespace) continue;
      this.write(w, { type, object });
    }
  }

  private sendBookmarks(): void {
    for (const w of this.watchers) {
      if (w.paused || !w.bookmarks) continue;
      this.write(w, {
        type: 'BOOKMARK',
        object: { kind: w.kind, apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) } },
      });
    }
  }

  private write(w: Watcher, ev: unknown): void {
    if (w.res.writableEnded || w.res.destroyed) return;
    w.res.write(JSON.stringify(ev) + '\n');
  }

  private forget(w: Watcher): void {
    if (w.timeout) clearTimeout(w.timeout);
    w.timeout = undefined;
    this.watchers.delete(w);
  }

  private sendJson(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private route(pathname: string): { kind: FakeKind; namespace?: string; name?: string } | undefined {
    const p = pathname.replace(/\/+$/, '').split('/').slice(1); // ['api','v1',...]
    if (p[0] !== 'api' || p[1] !== 'v1') return undefined;
    const r = p.slice(2);
    if (r.length === 1 && r[0] === 'pods') return { kind: 'Pod' };
    if (r[0] === 'nodes' && r.length <= 2) return { kind: 'Node', ...(r[1] ? { name: r[1] } : {}) };
    if (r[0] === 'namespaces') {
      if (r.length <= 2) return { kind: 'Namespace', ...(r[1] ? { name: r[1] } : {}) };
      if (r[2] === 'pods' && r.length <= 4 && r[1]) return { kind: 'Pod', namespace: r[1], ...(r[3] ? { name: r[3] } : {}) };
    }
    return undefined;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const q = url.searchParams;
    const watch = q.get('watch') === 'true' || q.get('watch') === '1';
    const record: RequestRecord = { watch, path: url.pathname, resourceVersion: q.get('resourceVersion') ?? undefined, query: Object.fromEntries(q), status: 200, expired: false };
    this.requests.push(record);
    const fail = (code: number, reason: string, message: string): void => {
      record.status = code;
      this.sendJson(res, code, status(code, reason, message));
    };

    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
      return fail(401, 'Unauthorized', 'Unauthorized');
    }
    if (this.hangs > 0) {
      this.hangs--;
      record.status = 0;
      return;
    }
    const m = this.failures.match;
    if (this.failures.count > 0 && (m.path === undefined || m.path === url.pathname) && (m.watch === undefined || m.watch === watch)) {
      this.failures.count--;
      const code = this.failures.code;
      return fail(code, code === 410 ? 'Expired' : code === 503 ? 'ServiceUnavailable' : 'InternalError', 'injected failure');
    }
    if (this.leases.handle(req, res, url.pathname)) return;
    if (req.method !== 'GET') return fail(405, 'MethodNotAllowed', `${req.method ?? ''} is not supported`);
    const route = this.route(url.pathname);
    if (!route) return fail(404, 'NotFound', 'the server could not find the requested resource');

    if (route.name !== undefined) {
      const o = this.store(route.kind).get(keyOf(route.kind, route.namespace, route.name));
      if (!o) return fail(404, 'NotFound', `${route.kind.toLowerCase()}s "${route.name}" not found`);
      return this.sendJson(res, 200, o);
    }

    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) return fail(400, 'BadRequest', `invalid resource version: ${rvParam}`);
    if (!watch) {
      const items = [...this.store(route.kind).values()]
        .filter((o) => route.namespace === undefined || o.metadata.namespace === route.namespace)
        .sort((a, b) => keyOf(route.kind, a.metadata.namespace, a.metadata.name).localeCompare(keyOf(route.kind, b.metadata.namespace, b.metadata.name)))
        .map((o) => {
          const { kind: _k, apiVersion: _a, ...rest } = o;
          return rest;
        });
      return this.sendJson(res, 200, {
        kind: `${route.kind}List`,
        apiVersion: 'v1',
        metadata: { resourceVersion: String(this.rv) },
        items,
      });
    }

    // ---- watch
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const w: Watcher = {
      kind: route.kind,
      namespace: route.namespace,
      bookmarks: q.get('allowWatchBookmarks') === 'true',
      paused: false,
      req,
      res,
      timeout: undefined,
    };
    const matches = (kind: FakeKind, o: FakeObject): boolean =>
      kind === w.kind && (w.namespace === undefined || o.metadata.namespace === w.namespace);

    if (rvParam === '' || rvParam === '0') {
      for (const o of this.store(route.kind).values()) if (matches(route.kind, o)) this.write(w, { type: 'ADDED', object: o });
    } else {
      const from = Number(rvParam);
      if (from < this.oldestWatchableRv) {
        record.expired = true;
        this.write(w, {
          type: 'ERROR',
          object: status(410, 'Expired', `too old resource version: ${from} (${this.oldestWatchableRv})`),
        });
        res.end();
        return;
      }
      for (const e of this.history) if (e.rv > from && matches(e.kind, e.object)) this.write(w, { type: e.type, object: e.object });
    }

    this.watchers.add(w);
    const timeoutSeconds = Number(q.get('timeoutSeconds') ?? '0');
    if (timeoutSeconds > 0) {
      w.timeout = setTimeout(() => {
        this.forget(w);
        res.end();
      }, timeoutSeconds * 1000);
    }
    const gone = (): void => this.forget(w);
    req.on('close', gone);
    res.on('close', gone);
  }
}

// ------------------------------------------------------------------ fixtures with real shapes

export interface PodFixture {
  namespace?: string;
  name: string;
  node?: string;
  ip?: string;
  phase?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Add an injected istio-proxy sidecar and istio-init. Default true. */
  sidecar?: boolean;
}

export function podFixture(f: PodFixture): FakeObject {
  const ns = f.namespace ?? 'default';
  const sidecar = f.sidecar ?? true;
  const containers: Record<string, unknown>[] = [
    {
      name: 'app',
      image: 'docker.io/library/nginx:1.27',
      ports: [{ containerPort: 8080, protocol: 'TCP' }],
      resources: {},
      terminationMessagePath: '/dev/termination-log',
      terminationMessagePolicy: 'File',
      imagePullPolicy: 'IfNotPresent',
    },
  ];
  if (sidecar) {
    containers.push({
      name: 'istio-proxy',
      image: 'docker.io/istio/proxyv2:1.24.0',
      args: ['proxy', 'sidecar', '--domain', `${ns}.svc.cluster.local`],
      ports: [{ containerPort: 15090, name: 'http-envoy-prom', protocol: 'TCP' }],
      securityContext: { runAsUser: 1337, runAsGroup: 1337, runAsNonRoot: true },
      resources: {},
      imagePullPolicy: 'IfNotPresent',
    });
  }
  const annotations: Record<string, string> = sidecar
    ? {
        'sidecar.istio.io/status':
          '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null}',
        'kubectl.kubernetes.io/default-container': 'app',
      }
    : {};
  const running = (f.phase ?? 'Running') === 'Running';
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: f.name,
      namespace: ns,
      labels: { app: f.name.replace(/-[a-z0-9]+$/, ''), ...(sidecar ? { 'security.istio.io/tlsMode': 'istio' } : {}), ...f.labels },
      annotations: { ...annotations, ...f.annotations },
      ownerReferences: [],
    },
    spec: {
      ...(f.node ? { nodeName: f.node } : {}),
      ...(sidecar
        ? {
            initContainers: [
              {
                name: 'istio-init',
                image: 'docker.io/istio/proxyv2:1.24.0',
                args: ['istio-iptables', '-p', '15001', '-z', '15006', '-u', '1337', '-m', 'REDIRECT', '-i', '*', '-x', '', '-b', '*', '-d', '15090,15021,15020'],
                securityContext: { capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] }, runAsUser: 0, runAsNonRoot: false },
              },
            ],
          }
        : {}),
      containers,
      restartPolicy: 'Always',
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: 'default',
      schedulerName: 'default-scheduler',
      terminationGracePeriodSeconds: 30,
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
      priority: 0,
    },
    status: {
      phase: f.phase ?? 'Running',
      conditions: [
        { type: 'PodScheduled', status: f.node ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: '2025-01-01T00:00:00Z' },
        { type: 'Ready', status: running ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: '2025-01-01T00:00:05Z' },
      ],
      ...(f.node ? { hostIP: '172.18.0.2', hostIPs: [{ ip: '172.18.0.2' }] } : {}),
      ...(f.ip ? { podIP: f.ip, podIPs: [{ ip: f.ip }] } : {}),
      startTime: '2025-01-01T00:00:00Z',
      qosClass: 'BestEffort',
    },
  };
}

export function nodeFixture(name: string, internalIp = '172.18.0.2', labels: Record<string, string> = {}): FakeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64', ...labels },
      annotations: { 'node.alpha.kubernetes.io/ttl': '0' },
    },
    spec: { podCIDR: '10.244.0.0/24', podCIDRs: ['10.244.0.0/24'] },
    status: {
      addresses: [
        { type: 'InternalIP', address: internalIp },
        { type: 'Hostname', address: name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastHeartbeatTime: '2025-01-01T00:00:00Z', lastTransitionTime: '2025-01-01T00:00:00Z' }],
      nodeInfo: {
        architecture: 'amd64',
        kernelVersion: '6.8.0',
        kubeletVersion: 'v1.31.0',
        operatingSystem: 'linux',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        containerRuntimeVersion: 'containerd://1.7.18',
        kubeProxyVersion: '',
        machineID: 'm',
        systemUUID: 's',
        bootID: 'b',
      },
    },
  };
}

export function namespaceFixture(name: string, labels: Record<string, string> = {}): FakeObject {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } },
    spec: { finalizers: ['kubernetes'] },
    status: { phase: 'Active' },
  };
}
