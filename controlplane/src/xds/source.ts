/**
 * IstiodXdsSource: the control plane's view of istiod over ADS.
 *
 * A session is one gRPC channel carrying two streams: SotW for
 * istio.io/debug/syncz (which proxies are connected and ACKed) and, optionally,
 * delta for istio.workload.Address (which pods are ambient). When the syncz
 * stream ends or stays silent, the session is torn down and rebuilt after a
 * capped, jittered exponential backoff, re-reading the token (and CA) file.
 * State is kept across sessions and re-reported after the first answer of the
 * next one; callbacks fire only when the state changed.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { IstiodSource, ProxySync } from '../types.js';
import { Backoff, type BackoffOptions } from '../backoff.js';
import { callMetadata, channelCredentials, channelOptions, type TransportOptions } from './credentials.js';
import { AddressStream } from './delta-address.js';
import { buildNode, type NodeIdentity } from './node.js';
import { loadXdsProtos, type XdsProtos } from './protos.js';
import { SynczStream } from './sotw-syncz.js';
import { sameProxies } from './syncz.js';
import { AmbientTable } from './workload.js';

export interface IstiodXdsOptions extends TransportOptions {
  /** host:port of istiod: 15012 (TLS) or 15010 (plaintext). */
  address: string;
  /** Who this client says it is (namespace and service account must match the token on 15012). */
  node: NodeIdentity;
  logger: Logger;
  /** Re-request syncz this often (ms). Default 5000. */
  synczPollMs?: number;
  /** Subscribe to the ambient workload feed. Default true. */
  ambient?: boolean;
  /** Rebuild the session when syncz has not answered for this long (ms). Default max(3 * poll, 15000). */
  silenceTimeoutMs?: number;
  backoff?: BackoffOptions;
}

interface Session {
  id: number;
  client: grpc.Client;
  syncz: SynczStream;
  address: AddressStream | undefined;
  lastAnswer: number;
  watchdog: NodeJS.Timeout;
}

type ProxiesCb = (proxies: ReadonlyMap<string, ProxySync>) => void;
type AmbientCb = (pods: ReadonlySet<string>) => void;

export class IstiodXdsSource implements IstiodSource {
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly table: AmbientTable;
  private protos: XdsProtos | undefined;
  private session: Session | undefined;
  private sessions = 0;
  private retry: NodeJS.Timeout | undefined;
  private running = false;
  private isConnected = false;
  private everConnected = false;
  private proxies: Map<string, ProxySync> | undefined;
  private ambientPods: Set<string> | undefined;
  private readonly proxyCbs: ProxiesCb[] = [];
  private readonly ambientCbs: AmbientCb[] = [];

  constructor(private readonly opts: IstiodXdsOptions) {
    this.log = opts.logger.child({ component: 'istiod-xds', istiod: opts.address });
    this.backoff = new Backoff(opts.backoff);
    this.table = new AmbientTable(loadXdsProtos().address, opts.node.clusterId ? { clusterId: opts.node.clusterId } : {});
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.protos = loadXdsProtos();
    this.connect();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
    this.teardown();
  }

  /** Called with the current state at once if known, then on every change. */
  onProxies(cb: ProxiesCb): void {
    this.proxyCbs.push(cb);
    if (this.proxies) cb(this.proxies);
  }

  /** Called with the current state at once if known, then on every change. */
  onAmbient(cb: AmbientCb): void {
    this.ambientCbs.push(cb);
    if (this.ambientPods) cb(this.ambientPods);
  }

  connected(): boolean {
    return this.isConnected;
  }

  private connect(): void {
    this.retry = undefined;
    if (!this.running || !this.protos) return;
    const o = this.opts;
    let client: grpc.Client;
    let metadata: grpc.Metadata;
    try {
      client = new grpc.Client(o.address, channelCredentials(o), channelOptions(o));
      metadata = callMetadata(o, o.node.clusterId);
    } catch (e) {
      this.log.error({ err: e }, 'istiod: cannot set up the connection');
      this.scheduleReconnect();
      return;
    }
    const id = ++this.sessions;
    const node = buildNode(o.node);
    const pollMs = o.synczPollMs ?? 5000;
    const syncz = new SynczStream(client, this.protos, node, pollMs, this.log, {
      onProxies: (p) => this.gotProxies(id, p),
      onEnd: (st) => this.ended(id, 'syncz', st),
    });
    const address =
      o.ambient === false
        ? undefined
        : new AddressStream(client, this.protos, node, this.table, this.log, {
            onChange: () => this.gotAmbient(id),
            onEnd: (st) => this.addressEnded(id, st),
          });
    const silence = o.silenceTimeoutMs ?? Math.max(3 * pollMs, 15_000);
    const watchdog = setInterval(() => {
      const s = this.session;
      if (s?.id === id && Date.now() - s.lastAnswer > silence) {
        this.log.info({ silenceMs: silence }, 'istiod: no syncz answer, reconnecting');
        this.teardown();
        this.scheduleReconnect();
      }
    }, Math.min(silence, 1000));
    this.session = { id, client, syncz, address, lastAnswer: Date.now(), watchdog };
    this.log.debug({ session: id, node: node.id }, 'istiod: connecting');
    syncz.start(metadata);
    address?.start(metadata);
  }

  private teardown(): void {
    const s = this.session;
    this.session = undefined;
    this.isConnected = false;
    if (!s) return;
    clearInterval(s.watchdog);
    s.syncz.close();
    s.address?.close();
    s.client.close();
  }

  private scheduleReconnect(): void {
    if (!this.running || this.retry) return;
    const delay = this.backoff.next();
    this.log.debug({ delayMs: delay }, 'istiod: reconnect scheduled');
    this.retry = setTimeout(() => this.connect(), delay);
  }

  private ended(id: number, stream: string, st: grpc.StatusObject): void {
    if (this.session?.id !== id) return;
    const wasConnected = this.isConnected;
    this.teardown();
    this.logEnd(stream, st, wasConnected);
    this.scheduleReconnect();
  }

  private addressEnded(id: number, st: grpc.StatusObject): void {
    if (this.session?.id !== id) return;
    if (st.code === grpc.status.UNIMPLEMENTED) {
      // An istiod without delta xDS: keep syncz, report no ambient pods.
      this.log.info({ details: st.details }, 'istiod: no workload address feed; assuming no ambient pods');
      this.table.clear();
      this.setAmbient(new Set());
      return;
    }
    this.ended(id, 'workload-address', st);
  }

  private logEnd(stream: string, st: grpc.StatusObject, wasConnected: boolean): void {
    const f = { stream, code: grpc.status[st.code], details: st.details };
    switch (st.code) {
      case grpc.status.UNAVAILABLE: // istiod starting ("not ready to serve discovery information"), restarting or unreachable
        if (wasConnected || !this.everConnected) this.log.info(f, 'istiod: unavailable, will retry');
        else this.log.debug(f, 'istiod: still unavailable');
        return;
      case grpc.status.UNAUTHENTICATED:
      case grpc.status.PERMISSION_DENIED:
      case grpc.status.INVALID_ARGUMENT:
        this.log.error(f, 'istiod: refused this client (token, namespace/service account or node id)');
        return;
      case grpc.status.OK:
      case grpc.status.CANCELLED:
        this.log.info(f, 'istiod: stream closed');
        return;
      default:
        this.log.warn(f, 'istiod: stream failed');
    }
  }

  private gotProxies(id: number, p: Map<string, ProxySync>): void {
    const s = this.session;
    if (s?.id !== id) return;
    s.lastAnswer = Date.now();
    const first = !this.isConnected;
    if (first) {
      this.isConnected = true;
      this.everConnected = true;
      this.backoff.reset();
      this.log.info({ session: id, proxies: p.size }, 'istiod: connected');
    }
    if (!first && this.proxies && sameProxies(this.proxies, p)) return;
    this.proxies = p;
    for (const cb of this.proxyCbs) cb(p);
  }

  private gotAmbient(id: number): void {
    if (this.session?.id !== id) return;
    this.setAmbient(this.table.pods());
  }

  private setAmbient(pods: Set<string>): void {
    const prev = this.ambientPods;
    if (prev && prev.size === pods.size && [...pods].every((k) => prev.has(k))) return;
    this.ambientPods = pods;
    for (const cb of this.ambientCbs) cb(pods);
  }
}
