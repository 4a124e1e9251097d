/**
 * Decoding istio.io/debug/syncz: one envoy.service.status.v3.ClientConfig per
 * connected proxy (istiod pilot/pkg/xds/statusgen.go). istiod reports, per type
 * (LDS, RDS, EDS, CDS and, since 1.13, ECDS), SYNCED when the proxy ACKed the
 * nonce last sent, STALE when not yet, NOT_SENT when nothing was sent (a type
 * the proxy does not watch, e.g. ECDS without extensions).
 */
import type { ProxySync } from '../types.js';
import type { ClientConfig, ConfigStatus, ProtoAny } from './messages.js';
import { TYPE_CLIENT_CONFIG, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from './messages.js';
import type { Codec } from './protos.js';

/** Types every Envoy sidecar watches: without both ACKed it serves no traffic correctly. */
const REQUIRED = [TYPE_CLUSTER, TYPE_LISTENER];

const LEGACY_TYPES: Record<string, string> = {
  listener_config: TYPE_LISTENER,
  cluster_config: TYPE_CLUSTER,
  route_config: TYPE_ROUTE,
  scoped_route_config: 'type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration',
  endpoint_config: TYPE_ENDPOINT,
};

const STATUS_BY_NUMBER: ConfigStatus[] = ['UNKNOWN', 'SYNCED', 'NOT_SENT', 'STALE', 'ERROR'];

function statusName(s: ConfigStatus | number | undefined): ConfigStatus {
  if (typeof s === 'number') return STATUS_BY_NUMBER[s] ?? 'UNKNOWN';
  return s ?? 'UNKNOWN';
}

/**
 * istiod sends proxy.ID ("<pod>.<namespace>"); a full node id
 * "sidecar~10.0.0.5~<pod>.<namespace>~<namespace>.svc.cluster.local" is reduced to that.
 */
export function proxyIdOf(nodeId: string): string {
  const parts = nodeId.split('~');
  return parts.length === 4 ? (parts[2] ?? '') : nodeId;
}

/** Status per type url of one proxy, from either the current or the deprecated field. */
export function statusesOf(cc: ClientConfig): Map<string, ConfigStatus> {
  const out = new Map<string, ConfigStatus>();
  for (const g of cc.generic_xds_configs ?? []) out.set(g.type_url ?? '', statusName(g.config_status));
  for (const p of cc.xds_config ?? []) {
    const t = p.per_xds_config ? LEGACY_TYPES[p.per_xds_config] : undefined;
    if (t && !out.has(t)) out.set(t, statusName(p.status));
  }
  return out;
}

/**
 * Synced: CDS and LDS ACKed at the nonce istiod last sent, and no type STALE or
 * in error. NOT_SENT is tolerated for other types (the proxy does not watch them).
 */
export function isSynced(statuses: ReadonlyMap<string, ConfigStatus>): boolean {
  for (const t of REQUIRED) if (statuses.get(t) !== 'SYNCED') return false;
  for (const s of statuses.values()) if (s !== 'SYNCED' && s !== 'NOT_SENT') return false;
  return true;
}

export interface SynczResult {
  proxies: Map<string, ProxySync>;
  /** Resources that could not be decoded; their proxies are left out (= not synced). */
  errors: string[];
}

export function decodeSyncz(resources: readonly ProtoAny[], codec: Codec<ClientConfig>): SynczResult {
  const proxies = new Map<string, ProxySync>();
  const errors: string[] = [];
  resources.forEach((packed, i) => {
    if (packed.type_url !== TYPE_CLIENT_CONFIG) {
      errors.push(`resource ${i}: unexpected type ${packed.type_url}`);
      return;
    }
    let cc: ClientConfig;
    try {
      cc = codec.decode(packed.value);
    } catch (e) {
      errors.push(`resource ${i}: ${(e as Error).message}`);
      return;
    }
    const proxyId = proxyIdOf(cc.node?.id ?? '');
    if (!proxyId) {
      errors.push(`resource ${i}: ClientConfig without node id`);
      return;
    }
    const synced = isSynced(statusesOf(cc));
    // The same proxy twice (reconnect race inside istiod): synced only if every copy is.
    const prev = proxies.get(proxyId);
    proxies.set(proxyId, { proxyId, synced: synced && (prev?.synced ?? true) });
  });
  return { proxies, errors };
}

export function sameProxies(a: ReadonlyMap<string, ProxySync>, b: ReadonlyMap<string, ProxySync>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k)?.synced !== v.synced) return false;
  return true;
}
