/**
 * A protocol-faithful fake istiod: a real grpc-js server implementing
 * envoy.service.discovery.v3.AggregatedDiscoveryService with real envoy messages.
 *
 * Modelled on istiod (pilot/pkg/xds):
 *  - while not ready, every stream is refused with UNAVAILABLE "server is not
 *    ready to serve discovery information" (ads.go);
 *  - optional bearer-token check (UNAUTHENTICATED otherwise);
 *  - the first request's node id must be "type~ip~id~domain" with an application
 *    node type and a valid IP (model.ParseServiceNodeWithMetadata), else INVALID_ARGUMENT;
 *  - SotW istio.io/debug/syncz answers one envoy.service.status.v3.ClientConfig
 *    per registered proxy (statusgen.go): node.id = proxy.ID ("<pod>.<ns>", the
 *    third part of the node id), generic_xds_configs for LDS/RDS/EDS/CDS/ECDS
 *    with SYNCED / STALE / NOT_SENT; clients without PROXY_CONFIG metadata (this
 *    one's callers) are not listed. syncz is not pushed on proxy changes unless
 *    `pushSynczOnChange`: clients poll;
 *  - request handling follows istio's shouldRespond: empty response_nonce =>
 *    (re)subscribe and answer; error_detail => NACK recorded, no answer; stale
 *    nonce => ignored; matching nonce => ACK recorded;
 *  - delta istio.workload.Address: wildcard subscription, first answer is the
 *    full state, then incremental pushes (resources + removed_resources), keyed
 *    by the workload uid "Kubernetes//Pod/<ns>/<name>".
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { loadXdsProtos, type XdsProtos } from '../../controlplane/src/xds/protos.js';
import type {
  ClientConfig,
  ConfigStatus,
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  DiscoveryRequest,
  DiscoveryResponse,
  IstioWorkload,
  ProtoAny,
  XdsNode,
  XdsResource,
} from '../../controlplane/src/xds/messages.js';
import {
  TYPE_ADDRESS,
  TYPE_CLIENT_CONFIG,
  TYPE_CLUSTER,
  TYPE_ENDPOINT,
  TYPE_LISTENER,
  TYPE_ROUTE,
  TYPE_SYNCZ,
} from '../../controlplane/src/xds/messages.js';

const TYPE_ECDS = 'type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig';
const NODE_TYPES = new Set(['sidecar', 'router', 'waypoint', 'ztunnel']);
const CLUSTER_ID = 'Kubernetes';

export interface FakeIstiodOptions {
  /** Require "authorization: Bearer <token>". */
  token?: string;
  /** Refuse this many streams with UNAVAILABLE before becoming ready. */
  warmupRefusals?: number;
  /** Push syncz to subscribers whenever proxies change (real istiod only does on config pushes). */
  pushSynczOnChange?: boolean;
  /** Answer DeltaAggregatedResources with UNIMPLEMENTED (an istiod without delta). */
  deltaUnimplemented?: boolean;
  /** Emit the deprecated ClientConfig.xds_config form (istio <= 1.12) instead of generic_xds_configs. */
  legacySyncz?: boolean;
  /** Serve TLS (like 15012) with this PEM certificate chain and key instead of plaintext. */
  tls?: { cert: Buffer; key: Buffer };
}

export interface FakeWorkload {
  namespace: string;
  name: string;
  ip?: string;
  /** ambient.istio.io/redirection: enabled => tunnel_protocol HBONE. */
  ambient?: boolean;
  /** A sidecar that speaks HBONE itself (HBONE + native_tunnel). */
  nativeTunnel?: boolean;
  node?: string;
}

export interface RecordedNack {
  stream: 'sotw' | 'delta';
  typeUrl: string;
  nonce: string;
  message: string;
}

export interface ConnectedClient {
  nodeId: string;
  metadata: Record<string, string>;
  authorization: string | undefined;
}

type SotwCall = grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;
type DeltaCall = grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

interface Watched {
  nonceSent: string;
  nonceAcked: string;
}

interface SotwConn {
  call: SotwCall;
  node: XdsNode | undefined;
  watched: Map<string, Watched>;
}

interface DeltaConn {
  call: DeltaCall;
  node: XdsNode | undefined;
  watched: Watched | undefined;
}

function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  return Buffer.alloc(16); // tests use IPv4
}

function metadataStrings(node: XdsNode | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(node?.metadata?.fields ?? {})) {
    if (typeof v.stringValue === 'string') out[k] = v.stringValue;
  }
  return out;
}

export class FakeIstiod {
  readonly nacks: RecordedNack[] = [];
  readonly clients: ConnectedClient[] = [];
  acks = 0;
  refusals = 0;
  synczResponses = 0;

  private readonly protos: XdsProtos = loadXdsProtos();
  private readonly server = new grpc.Server();
  private readonly proxies = new Map<string, { acked: boolean }>();
  private readonly workloads = new Map<string, Buffer>();
  private readonly sotw = new Set<SotwConn>();
  private readonly delta = new Set<DeltaConn>();
  private warmupLeft: number;
  private ready = true;
  private version = 0;
  private port = 0;

  private constructor(private readonly opts: FakeIstiodOptions) {
    this.warmupLeft = opts.warmupRefusals ?? 0;
  }

  static async start(opts: FakeIstiodOptions = {}): Promise<FakeIstiod> {
    const f = new FakeIstiod(opts);
    f.server.addService(f.protos.ads, {
      StreamAggregatedResources: (call: SotwCall) => f.onSotw(call),
      DeltaAggregatedResources: (call: DeltaCall) => f.onDelta(call),
    });
    f.port = await new Promise<number>((resolve, reject) =>
      f.server.bindAsync('127.0.0.1:0', serverCredentials(opts), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
    return f;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Open ADS streams (both kinds). */
  streams(): number {
    return this.sotw.size + this.delta.size;
  }

  setReady(ready: boolean): void {
    this.ready = ready;
  }

  /** A proxy (its "<pod>.<ns>" id or full node id) connected to this istiod; acked: every watched type ACKed. */
  setProxy(id: string, s: { acked: boolean }): void {
    this.proxies.set(proxyIdOf(id), { acked: s.acked });
    if (this.opts.pushSynczOnChange) this.pushSyncz();
  }

  removeProxy(id: string): void {
    this.proxies.delete(proxyIdOf(id));
    if (this.opts.pushSynczOnChange) this.pushSyncz();
  }

  setWorkload(w: FakeWorkload): void {
    const uid = podUid(w.namespace, w.name);
    const wl: IstioWorkload = {
      uid,
      name: w.name,
      namespace: w.namespace,
      addresses: [ipBytes(w.ip ?? '10.0.0.1')],
      tunnel_protocol: w.ambient || w.nativeTunnel ? 'HBONE' : 'LEGACY_ISTIO_MTLS',
      native_tunnel: w.nativeTunnel ?? false,
      node: w.node ?? 'node-a',
      cluster_id: CLUSTER_ID,
      service_account: 'default',
    };
    this.putAddress(uid, this.protos.address.encode({ workload: wl }));
  }

  /** A resource whose bytes are not a valid istio.workload.Address. */
  setMalformedWorkload(namespace: string, name: string): void {
    this.putAddress(podUid(namespace, name), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff]));
  }

  removeWorkload(namespace: string, name: string): void {
    const uid = podUid(namespace, name);
    if (!this.workloads.delete(uid)) return;
    for (const c of this.delta) if (c.watched) this.sendDelta(c, [], [uid]);
  }

  /** End every open stream as an istiod going away would (UNAVAILABLE). */
  disconnectAll(): void {
    const err = { code: grpc.status.UNAVAILABLE, details: 'istiod shutting down' };
    for (const c of this.sotw) c.call.emit('error', err);
    for (const c of this.delta) c.call.emit('error', err);
    this.sotw.clear();
    this.delta.clear();
  }

  async close(): Promise<void> {
    this.disconnectAll();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    this.server.forceShutdown();
  }

  // ---- stream handling -------------------------------------------------

  /** Readiness and authentication, checked before the first request like istiod. */
  private admit(call: SotwCall | DeltaCall): boolean {
    if (!this.ready || this.warmupLeft > 0) {
      if (this.warmupLeft > 0) this.warmupLeft--;
      this.refusals++;
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'server is not ready to serve discovery information' });
      return false;
    }
    if (this.opts.token !== undefined) {
      const auth = call.metadata.get('authorization')[0];
      if (auth !== `Bearer ${this.opts.token}`) {
        call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: 'authentication failure' });
        return false;
      }
    }
    return true;
  }

  /** The first request's node, validated like istiod's initProxyMetadata. */
  private initNode(call: SotwCall | DeltaCall, node: XdsNode | null | undefined): XdsNode | undefined {
    const id = node?.id ?? '';
    const parts = id.split('~');
    if (parts.length !== 4 || !NODE_TYPES.has(parts[0] ?? '') || !isIP(parts[1] ?? '')) {
      call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: `invalid node id ${JSON.stringify(id)}` });
      return undefined;
    }
    const auth = call.metadata.get('authorization')[0];
    this.clients.push({ nodeId: id, metadata: metadataStrings(node ?? undefined), authorization: typeof auth === 'string' ? auth : undefined });
    return node ?? undefined;
  }

  private onSotw(call: SotwCall): void {
    if (!this.admit(call)) return;
    const conn: SotwConn = { call, node: undefined, watched: new Map() };
    this.sotw.add(conn);
    const drop = (): void => void this.sotw.delete(conn);
    call.on('error', drop);
    call.on('cancelled', drop);
    call.on('end', () => {
      drop();
      call.end();
    });
    call.on('data', (req: DiscoveryRequest) => {
      if (!conn.node) {
        conn.node = this.initNode(call, req.node);
        if (!conn.node) return drop();
      }
      const type = req.type_url ?? '';
      const nonce = req.response_nonce ?? '';
      const w = conn.watched.get(type);
      if (req.error_detail) {
        this.nacks.push({ stream: 'sotw', typeUrl: type, nonce, message: req.error_detail.message });
        return;
      }
      if (nonce === '' || !w) return this.respondSotw(conn, type);
      if (nonce !== w.nonceSent) return; // stale nonce: ignored
      w.nonceAcked = nonce;
      this.acks++;
    });
  }

  private respondSotw(conn: SotwConn, type: string): void {
    const resources = type === TYPE_SYNCZ ? this.synczResources() : [];
    const nonce = randomUUID();
    conn.watched.set(type, { nonceSent: nonce, nonceAcked: conn.watched.get(type)?.nonceAcked ?? '' });
    if (type === TYPE_SYNCZ) this.synczResponses++;
    conn.call.write({ version_info: `v${++this.version}`, resources, type_url: type, nonce });
  }

  private pushSyncz(): void {
    for (const c of this.sotw) if (c.watched.has(TYPE_SYNCZ)) this.respondSotw(c, TYPE_SYNCZ);
  }

  /** A garbage resource in the next syncz answers, to exercise the client's NACK. */
  malformedSyncz = false;

  private synczResources(): ProtoAny[] {
    const out: ProtoAny[] = [];
    for (const [id, p] of this.proxies) {
      out.push({ type_url: TYPE_CLIENT_CONFIG, value: this.protos.clientConfig.encode(this.clientConfig(id, p.acked)) });
    }
    if (this.malformedSyncz) out.push({ type_url: TYPE_CLIENT_CONFIG, value: Buffer.from([0x0a, 0xff, 0xff, 0xff]) });
    return out;
  }

  private clientConfig(id: string, acked: boolean): ClientConfig {
    const pending: ConfigStatus = acked ? 'SYNCED' : 'STALE';
    const statuses: Array<[string, ConfigStatus]> = [
      [TYPE_LISTENER, pending],
      [TYPE_ROUTE, pending],
      [TYPE_ENDPOINT, 'SYNCED'],
      [TYPE_CLUSTER, 'SYNCED'],
      [TYPE_ECDS, 'NOT_SENT'],
    ];
    const node: XdsNode = { id, metadata: { fields: { NAMESPACE: { stringValue: id.split('.').pop() ?? '' } } } };
    if (this.opts.legacySyncz) {
      const legacy = { [TYPE_LISTENER]: 'listener_config', [TYPE_ROUTE]: 'route_config', [TYPE_ENDPOINT]: 'endpoint_config', [TYPE_CLUSTER]: 'cluster_config' } as const;
      return {
        node,
        xds_config: statuses.flatMap(([t, status]) => {
          const f = (legacy as Record<string, string>)[t];
          // protobufjs sets the oneof from the member present; an empty dump message marks the type.
          return f ? [{ status, [f]: {} }] : [];
        }),
      };
    }
    return { node, generic_xds_configs: statuses.map(([type_url, config_status]) => ({ type_url, config_status })) };
  }

  private onDelta(call: DeltaCall): void {
    if (this.opts.deltaUnimplemented) {
      call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'unknown method DeltaAggregatedResources' });
      return;
    }
    if (!this.admit(call)) return;
    const conn: DeltaConn = { call, node: undefined, watched: undefined };
    this.delta.add(conn);
    const drop = (): void => void this.delta.delete(conn);
    call.on('error', drop);
    call.on('cancelled', drop);
    call.on('end', () => {
      drop();
      call.end();
    });
    call.on('data', (req: DeltaDiscoveryRequest) => {
      if (!conn.node) {
        conn.node = this.initNode(call, req.node);
        if (!conn.node) return drop();
      }
      const nonce = req.response_nonce ?? '';
      if (req.error_detail) {
        this.nacks.push({ stream: 'delta', typeUrl: req.type_url ?? '', nonce, message: req.error_detail.message });
        return;
      }
      if (req.type_url !== TYPE_ADDRESS) {
        if (nonce === '') call.write({ type_url: req.type_url ?? '', resources: [], removed_resources: [], nonce: randomUUID(), system_version_info: '' });
        return;
      }
      if (nonce === '' || !conn.watched) {
        conn.watched = { nonceSent: '', nonceAcked: '' };
        const all = [...this.workloads.keys()];
        return this.sendDelta(conn, all, []);
      }
      if (nonce !== conn.watched.nonceSent) return;
      conn.watched.nonceAcked = nonce;
      this.acks++;
    });
  }

  private putAddress(uid: string, bytes: Buffer): void {
    this.workloads.set(uid, bytes);
    for (const c of this.delta) if (c.watched) this.sendDelta(c, [uid], []);
  }

  private sendDelta(c: DeltaConn, names: string[], removed: string[]): void {
    const resources: XdsResource[] = names.flatMap((name) => {
      const value = this.workloads.get(name);
      return value ? [{ name, version: `v${this.version}`, resource: { type_url: TYPE_ADDRESS, value } }] : [];
    });
    const nonce = randomUUID();
    if (c.watched) c.watched.nonceSent = nonce;
    c.call.write({
      system_version_info: `v${++this.version}`,
      type_url: TYPE_ADDRESS,
      resources,
      removed_resources: removed,
      nonce,
    });
  }
}

function serverCredentials(o: FakeIstiodOptions): grpc.ServerCredentials {
  if (!o.tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(null, [{ cert_chain: o.tls.cert, private_key: o.tls.key }], false);
}

function podUid(namespace: string, name: string): string {
  return `${CLUSTER_ID}//Pod/${namespace}/${name}`;
}

/** istiod's proxy.ID: the third '~' part of a node id, or the id as given. */
function proxyIdOf(id: string): string {
  const parts = id.split('~');
  return parts.length === 4 ? (parts[2] ?? id) : id;
}
