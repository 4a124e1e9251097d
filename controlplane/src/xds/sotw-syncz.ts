/**
 * One state-of-the-world ADS stream subscribed to istio.io/debug/syncz.
 *
 * Every response is ACKed (version_info + response_nonce of that response) or,
 * when a ClientConfig does not decode, NACKed (last accepted version_info, the
 * response's nonce, error_detail INVALID_ARGUMENT). istiod does not push syncz
 * when a proxy ACKs, so the stream re-requests every pollMs with an empty
 * response_nonce, which istiod treats as a fresh subscription and answers.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ProxySync } from '../types.js';
import type { DiscoveryRequest, DiscoveryResponse, XdsNode } from './messages.js';
import { TYPE_SYNCZ } from './messages.js';
import type { XdsProtos } from './protos.js';
import { decodeSyncz } from './syncz.js';

export interface SynczStreamHandlers {
  onProxies(proxies: Map<string, ProxySync>): void;
  /** The stream ended: grpc status of the end. */
  onEnd(status: grpc.StatusObject): void;
}

const INVALID_ARGUMENT = 3;

export class SynczStream {
  private stream: grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private acceptedVersion = '';
  private ended = false;

  constructor(
    private readonly client: grpc.Client,
    private readonly protos: XdsProtos,
    private readonly node: XdsNode,
    private readonly pollMs: number,
    private readonly log: Logger,
    private readonly h: SynczStreamHandlers,
  ) {}

  start(metadata: grpc.Metadata): void {
    const m = this.protos.sotw;
    const s = this.client.makeBidiStreamRequest<DiscoveryRequest, DiscoveryResponse>(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      metadata,
    );
    this.stream = s;
    s.on('data', (r: DiscoveryResponse) => this.onResponse(r));
    s.on('error', () => undefined); // reported through 'status'
    s.on('status', (st: grpc.StatusObject) => this.end(st));
    s.write({ node: this.node, type_url: TYPE_SYNCZ, resource_names: [] });
    this.timer = setInterval(() => this.poll(), this.pollMs);
  }

  /** Ask istiod for a fresh syncz now. */
  poll(): void {
    if (this.ended || !this.stream) return;
    this.stream.write({ type_url: TYPE_SYNCZ, resource_names: [], response_nonce: '' });
  }

  close(): void {
    this.ended = true;
    if (this.timer) clearInterval(this.timer);
    this.stream?.cancel();
  }

  private end(st: grpc.StatusObject): void {
    if (this.timer) clearInterval(this.timer);
    if (this.ended) return;
    this.ended = true;
    this.h.onEnd(st);
  }

  private onResponse(r: DiscoveryResponse): void {
    if (this.ended || !this.stream) return;
    if (r.type_url !== TYPE_SYNCZ) {
      this.log.debug({ typeUrl: r.type_url }, 'istiod: ignoring unrequested type');
      return;
    }
    const { proxies, errors } = decodeSyncz(r.resources ?? [], this.protos.clientConfig);
    if (errors.length > 0) {
      this.log.warn({ nonce: r.nonce, errors: errors.slice(0, 5), count: errors.length }, 'istiod: NACK syncz');
      this.stream.write({
        type_url: TYPE_SYNCZ,
        version_info: this.acceptedVersion,
        response_nonce: r.nonce ?? '',
        resource_names: [],
        error_detail: { code: INVALID_ARGUMENT, message: errors.join('; ').slice(0, 4096) },
      });
    } else {
      this.acceptedVersion = r.version_info ?? '';
      this.stream.write({
        type_url: TYPE_SYNCZ,
        version_info: this.acceptedVersion,
        response_nonce: r.nonce ?? '',
        resource_names: [],
      });
    }
    // Proxies whose ClientConfig was malformed are absent, i.e. treated as not synced.
    this.h.onProxies(proxies);
  }
}
