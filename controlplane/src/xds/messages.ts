/**
 * Shapes of the xDS messages as @grpc/proto-loader produces and accepts them
 * (keepCase, enums as strings, longs as strings, defaults, oneofs). Only the
 * fields meshlane reads or writes are typed; everything is optional on input.
 */

export interface ProtoAny {
  type_url: string;
  value: Buffer;
}

/**
 * google.protobuf.Value / Struct (node metadata). protobufjs defines these
 * well-known types with camelCase field names even under keepCase.
 */
export interface ProtoValue {
  stringValue?: string;
  boolValue?: boolean;
  numberValue?: number;
  structValue?: ProtoStruct;
  listValue?: { values: ProtoValue[] };
}

export interface ProtoStruct {
  fields: Record<string, ProtoValue>;
}

/** envoy.config.core.v3.Node */
export interface XdsNode {
  id?: string;
  cluster?: string;
  metadata?: ProtoStruct | null;
  user_agent_name?: string;
}

/** google.rpc.Status */
export interface RpcStatus {
  code: number;
  message: string;
}

export interface DiscoveryRequest {
  version_info?: string;
  node?: XdsNode | null;
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: RpcStatus | null;
}

export interface DiscoveryResponse {
  version_info?: string;
  resources?: ProtoAny[];
  type_url?: string;
  nonce?: string;
}

export interface DeltaDiscoveryRequest {
  node?: XdsNode | null;
  type_url?: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: RpcStatus | null;
}

export interface XdsResource {
  name?: string;
  aliases?: string[];
  version?: string;
  resource?: ProtoAny | null;
}

export interface DeltaDiscoveryResponse {
  system_version_info?: string;
  resources?: XdsResource[];
  type_url?: string;
  removed_resources?: string[];
  nonce?: string;
}

/** envoy.service.status.v3.ConfigStatus, as a string. */
export type ConfigStatus = 'UNKNOWN' | 'SYNCED' | 'NOT_SENT' | 'STALE' | 'ERROR';

/** envoy.service.status.v3.PerXdsConfig (deprecated form, istio <= 1.12). */
export interface PerXdsConfig {
  status?: ConfigStatus | number;
  per_xds_config?: 'listener_config' | 'cluster_config' | 'route_config' | 'scoped_route_config' | 'endpoint_config';
}

/** envoy.service.status.v3.ClientConfig.GenericXdsConfig (istio >= 1.13). */
export interface GenericXdsConfig {
  type_url?: string;
  config_status?: ConfigStatus | number;
}

/** envoy.service.status.v3.ClientConfig, one per proxy in istio.io/debug/syncz. */
export interface ClientConfig {
  node?: XdsNode | null;
  xds_config?: PerXdsConfig[];
  generic_xds_configs?: GenericXdsConfig[];
}

export type TunnelProtocol = 'NONE' | 'HBONE' | 'LEGACY_ISTIO_MTLS';

/** istio.workload.Workload (subset). */
export interface IstioWorkload {
  uid?: string;
  name?: string;
  namespace?: string;
  addresses?: Buffer[];
  tunnel_protocol?: TunnelProtocol | number;
  native_tunnel?: boolean;
  node?: string;
  cluster_id?: string;
  service_account?: string;
}

/** istio.workload.Service (subset). */
export interface IstioService {
  name?: string;
  namespace?: string;
  hostname?: string;
}

/** istio.workload.Address */
export interface IstioAddress {
  workload?: IstioWorkload | null;
  service?: IstioService | null;
  type?: 'workload' | 'service';
}

export const TYPE_SYNCZ = 'istio.io/debug/syncz';
export const TYPE_ADDRESS = 'type.googleapis.com/istio.workload.Address';
export const TYPE_CLIENT_CONFIG = 'type.googleapis.com/envoy.service.status.v3.ClientConfig';
export const TYPE_LISTENER = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const TYPE_CLUSTER = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const TYPE_ROUTE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
export const TYPE_ENDPOINT = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
