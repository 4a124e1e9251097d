/** A classified meshed pod (what classifyPod returns), for model, reconciler and bus tests. */
import type { PodClass } from '../../controlplane/src/types.js';

export function podClass(name: string, node: string | undefined, i: number, over: Partial<PodClass> = {}): PodClass {
  return {
    key: `default/${name}`,
    namespace: 'default',
    name,
    node,
    ips: [`10.0.0.${i}`],
    optedOut: false,
    uid: `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
    appSockets: 'always',
    proxyUid: 1337,
    proxyId: `${name}.default`,
    outboundPort: 15001,
    inboundPort: 15006,
    inbound: { includePorts: '*', excludePorts: [15008, 15020, 15021, 15090] },
    outbound: { excludePorts: [53], includeCidrs: '*', excludeCidrs: [] },
    ...over,
  };
}
