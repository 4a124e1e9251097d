/**
 * One incremental (delta) ADS stream with a wildcard subscription to
 * type.googleapis.com/istio.workload.Address. The first response after
 * subscribing is istiod's full state and replaces the table; later responses
 * add/replace resources and remove removed_resources. Each response is ACKed
 * by its nonce, or NACKed (nonce + error_detail) when a resource is malformed;
 * well-formed resources of a NACKed response are still applied (as gRPC's xDS
 * clients do), a malformed one keeps its previous state.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { DeltaDiscoveryRequest, DeltaDiscoveryResponse, XdsNode } from './messages.js';
import { TYPE_ADDRESS } from './messages.js';
import type { XdsProtos } from './protos.js';
import type { AmbientTable } from './workload.js';

export interface AddressStreamHandlers {
  onChange(): void;
  onEnd(status: grpc.StatusObject): void;
}

const INVALID_ARGUMENT = 3;

export class AddressStream {
  private stream: grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse> | undefined;
  private first = true;
  private ended = false;

  constructor(
    private readonly client: grpc.Client,
    private readonly protos: XdsProtos,
    private readonly node: XdsNode,
    private readonly table: AmbientTable,
    private readonly log: Logger,
    private readonly h: AddressStreamHandlers,
  ) {}

  start(metadata: grpc.Metadata): void {
    const m = this.protos.delta;
    const s = this.client.makeBidiStreamRequest<DeltaDiscoveryRequest, DeltaDiscoveryResponse>(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      metadata,
    );
    this.stream = s;
    s.on('data', (r: DeltaDiscoveryResponse) => this.onResponse(r));
    s.on('error', () => undefined); // reported through 'status'
    s.on('status', (st: grpc.StatusObject) => this.end(st));
    // No names on the first request: wildcard (istio treats its own types as wildcard types).
    s.write({ node: this.node, type_url: TYPE_ADDRESS, resource_names_subscribe: [] });
  }

  close(): void {
    this.ended = true;
    this.stream?.cancel();
  }

  private end(st: grpc.StatusObject): void {
    if (this.ended) return;
    this.ended = true;
    this.h.onEnd(st);
  }

  private onResponse(r: DeltaDiscoveryResponse): void {
    if (this.ended || !this.stream) return;
    if (r.type_url !== TYPE_ADDRESS) {
      this.log.debug({ typeUrl: r.type_url }, 'istiod: ignoring unrequested delta type');
      return;
    }
    const errors = this.table.apply(r.resources ?? [], r.removed_resources ?? [], this.first);
    this.first = false;
    const ack: DeltaDiscoveryRequest = { type_url: TYPE_ADDRESS, response_nonce: r.nonce ?? '' };
    if (errors.length > 0) {
      this.log.warn({ nonce: r.nonce, errors: errors.slice(0, 5), count: errors.length }, 'istiod: NACK workload addresses');
      ack.error_detail = { code: INVALID_ARGUMENT, message: errors.join('; ').slice(0, 4096) };
    }
    this.stream.write(ack);
    this.h.onChange();
  }
}
