/**
 * The envoy Node meshlane presents to istiod.
 *
 * Modelled on istioctl's own debug client (istioctl/pkg/xds/client.go via
 * pkg/adsc): node id "sidecar~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local"
 * (istiod rejects ids without 4 '~' parts, an application node type, or a
 * valid IP), metadata GENERATOR=event, NAMESPACE and SERVICE_ACCOUNT. Without
 * PROXY_CONFIG in the metadata istiod does not list this connection in syncz.
 * On 15012 istiod checks that NAMESPACE/SERVICE_ACCOUNT match the token.
 */
import { networkInterfaces } from 'node:os';
import type { ProtoStruct, XdsNode } from './messages.js';

export interface NodeIdentity {
  /** The controlplane pod's namespace; must equal the token's namespace. */
  namespace: string;
  /** Workload name in the node id; the pod name is a good choice. */
  name: string;
  /** Must equal the token's service account when set. */
  serviceAccount?: string;
  /** A valid IP (the pod IP); default: the first non-internal interface address, else 0.0.0.0. */
  ip?: string;
  /** istiod's cluster id (multi-cluster); sent as CLUSTER_ID. */
  clusterId?: string;
  /** DNS domain suffix; default "cluster.local". */
  domain?: string;
}

function firstIp(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') return a.address;
  }
  return '0.0.0.0';
}

export function buildNode(id: NodeIdentity): XdsNode {
  const ip = id.ip ?? firstIp();
  const domain = id.domain ?? 'cluster.local';
  const fields: ProtoStruct['fields'] = {
    GENERATOR: { stringValue: 'event' },
    NAMESPACE: { stringValue: id.namespace },
  };
  if (id.serviceAccount) fields.SERVICE_ACCOUNT = { stringValue: id.serviceAccount };
  if (id.clusterId) fields.CLUSTER_ID = { stringValue: id.clusterId };
  return {
    id: `sidecar~${ip}~${id.name}.${id.namespace}~${id.namespace}.svc.${domain}`,
    metadata: { fields },
    user_agent_name: 'meshlane-controlplane',
  };
}
