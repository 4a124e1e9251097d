/**
 * The istio.workload.Address delta feed, reduced to the pod keys istiod serves
 * as ambient workloads. istiod (ambient index, setTunnelProtocol) marks a pod
 * tunnel_protocol HBONE when it carries ambient.istio.io/redirection: enabled
 * (captured by ztunnel), and HBONE + native_tunnel when the pod terminates the
 * tunnel itself (a sidecar advertising networking.istio.io/tunnel: http);
 * sidecars otherwise get NONE or LEGACY_ISTIO_MTLS. Ambient = HBONE and not native.
 */
import type { IstioAddress, IstioWorkload, XdsResource } from './messages.js';
import { TYPE_ADDRESS } from './messages.js';
import type { Codec } from './protos.js';

/** Pod key from a workload: name/namespace, else the uid "<cluster>//Pod/<ns>/<name>". */
export function podKeyOf(w: IstioWorkload): string | undefined {
  const uid = w.uid ?? '';
  const m = /^[^/]*\/\/Pod\/([^/]+)\/([^/]+)$/.exec(uid);
  if (m) return `${m[1]}/${m[2]}`;
  if (uid && !m) return undefined; // WorkloadEntry, EndpointSlice, ServiceEntry: not a pod
  return w.namespace && w.name ? `${w.namespace}/${w.name}` : undefined;
}

export function isAmbient(w: IstioWorkload): boolean {
  const hbone = w.tunnel_protocol === 'HBONE' || w.tunnel_protocol === 1;
  return hbone && !w.native_tunnel;
}

export interface WorkloadTableOptions {
  /** Keep only workloads of this istio cluster id (multi-cluster meshes). */
  clusterId?: string;
}

/** Resource name -> ambient pod key, maintained from delta responses. */
export class AmbientTable {
  private readonly byResource = new Map<string, string>();

  constructor(
    private readonly codec: Codec<IstioAddress>,
    private readonly opts: WorkloadTableOptions = {},
  ) {}

  /**
   * Applies one DeltaDiscoveryResponse. `replace` drops everything first (the
   * first response of a wildcard subscription is the full state). A resource
   * that fails to decode keeps its previous entry and is reported in errors.
   */
  apply(resources: readonly XdsResource[], removed: readonly string[], replace: boolean): string[] {
    const errors: string[] = [];
    if (replace) this.byResource.clear();
    for (const name of removed) this.byResource.delete(name);
    for (const r of resources) {
      const name = r.name ?? '';
      const packed = r.resource;
      if (!packed || packed.type_url !== TYPE_ADDRESS) {
        errors.push(`${name}: unexpected type ${packed?.type_url ?? '(none)'}`);
        continue;
      }
      let addr: IstioAddress;
      try {
        addr = this.codec.decode(packed.value);
      } catch (e) {
        errors.push(`${name}: ${(e as Error).message}`);
        continue;
      }
      const w = addr.workload;
      const key = w ? podKeyOf(w) : undefined;
      const ours = !this.opts.clusterId || !w?.cluster_id || w.cluster_id === this.opts.clusterId;
      if (w && key && ours && isAmbient(w)) this.byResource.set(name, key);
      else this.byResource.delete(name);
    }
    return errors;
  }

  pods(): Set<string> {
    return new Set(this.byResource.values());
  }

  clear(): void {
    this.byResource.clear();
  }
}
