/**
 * Loads the xDS protos once: envoy's from @grpc/grpc-js-xds's bundled copies,
 * istio's workload subset from this folder. The .proto files of this folder are
 * found relative to the package root (`<pkg>/src/xds/`), so the same path works
 * from src/ (tsx, vitest) and from dist/ (compiled): ship controlplane/src/xds/*.proto.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as protoLoader from '@grpc/proto-loader';
import type { ServiceDefinition, MethodDefinition } from '@grpc/grpc-js';
import type {
  ClientConfig,
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  DiscoveryRequest,
  DiscoveryResponse,
  IstioAddress,
} from './messages.js';

/** Directory holding this package's own .proto files. */
export const OWN_PROTO_DIR = fileURLToPath(new URL('../../src/xds/', import.meta.url));

function envoyIncludeDirs(): string[] {
  const require = createRequire(import.meta.url);
  const root = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
  return ['envoy-api', 'googleapis', 'xds', 'protoc-gen-validate'].map((d) => join(root, d));
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export interface Codec<T> {
  encode(message: T): Buffer;
  decode(bytes: Buffer): T;
}

export interface XdsProtos {
  /** envoy.service.discovery.v3.AggregatedDiscoveryService, ready for Client and Server. */
  ads: ServiceDefinition;
  sotw: MethodDefinition<DiscoveryRequest, DiscoveryResponse>;
  delta: MethodDefinition<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
  clientConfig: Codec<ClientConfig>;
  address: Codec<IstioAddress>;
}

let cached: XdsProtos | undefined;

function isMethod(v: unknown): v is MethodDefinition<unknown, unknown> {
  return typeof v === 'object' && v !== null && 'path' in v && 'requestSerialize' in v;
}

function method<Req, Res>(svc: protoLoader.ServiceDefinition, name: string): MethodDefinition<Req, Res> {
  const m: unknown = svc[name];
  if (!isMethod(m)) throw new Error(`xds protos: method ${name} missing`);
  return m as MethodDefinition<Req, Res>;
}

function service(pkg: protoLoader.PackageDefinition, name: string): protoLoader.ServiceDefinition {
  const s = pkg[name];
  if (s === undefined || 'format' in s) throw new Error(`xds protos: service ${name} missing`);
  return s as protoLoader.ServiceDefinition;
}

/** Loads (first call, ~hundreds of ms) or returns the cached protos. */
export function loadXdsProtos(): XdsProtos {
  if (cached) return cached;
  const pkg = protoLoader.loadSync(['envoy/service/discovery/v3/ads.proto', 'codec.proto'], {
    ...LOADER_OPTIONS,
    includeDirs: [OWN_PROTO_DIR, ...envoyIncludeDirs()],
  });
  const adsSvc = service(pkg, 'envoy.service.discovery.v3.AggregatedDiscoveryService');
  const codecSvc = service(pkg, 'meshlane.xds.Codec');
  const cc = method<ClientConfig, IstioAddress>(codecSvc, 'ClientConfig');
  cached = {
    ads: adsSvc as ServiceDefinition,
    sotw: method(adsSvc, 'StreamAggregatedResources'),
    delta: method(adsSvc, 'DeltaAggregatedResources'),
    clientConfig: { encode: cc.requestSerialize, decode: cc.requestDeserialize },
    address: { encode: cc.responseSerialize, decode: cc.responseDeserialize },
  };
  return cached;
}
