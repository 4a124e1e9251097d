/** Finding the injected sidecar and the uid Envoy runs as. */
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { ANN, DEFAULT_PROXY_UID, PROXY_CONTAINER } from './constants.js';

export interface Proxy {
  container: V1Container;
  /** istio-proxy as a native sidecar (initContainers, restartPolicy Always). */
  native: boolean;
}

/**
 * The pod's istio-proxy sidecar, or undefined when the pod is not meshed.
 * Meshed means the injector's sidecar.istio.io/status annotation AND a
 * running proxy: istio-proxy among containers, or among initContainers with
 * restartPolicy Always (a native sidecar). istio-proxy as a plain init
 * container would run to completion before the app starts, so it is no
 * sidecar; istio-init alone or the annotation alone is not meshed either.
 */
export function findProxy(pod: V1Pod): Proxy | undefined {
  if (pod.metadata?.annotations?.[ANN.sidecarStatus] === undefined) return undefined;
  const classic = pod.spec?.containers?.find((c) => c.name === PROXY_CONTAINER);
  if (classic) return { container: classic, native: false };
  const native = pod.spec?.initContainers?.find((c) => c.name === PROXY_CONTAINER && c.restartPolicy === 'Always');
  if (native) return { container: native, native: true };
  return undefined;
}

/**
 * Envoy's uid: the container's securityContext.runAsUser, else the pod's
 * (Kubernetes semantics), else the proxyv2 image's user, 1337. Istio's own
 * proxy gid (runAsGroup, istio-iptables -g) plays no part here.
 */
export function proxyUid(pod: V1Pod, proxy: Proxy | undefined): number {
  return proxy?.container.securityContext?.runAsUser ?? pod.spec?.securityContext?.runAsUser ?? DEFAULT_PROXY_UID;
}

/** A literal env value of a container (valueFrom entries are not resolvable here). */
export function envValue(container: V1Container, name: string): string | undefined {
  return container.env?.find((e) => e.name === name && e.valueFrom === undefined)?.value;
}
