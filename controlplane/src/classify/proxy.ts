/** Finding the injected sidecar and the uid Envoy runs as. */
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import type { Refusal } from '../types.js';
import { ANN, DEFAULT_PROXY_UID, INIT_CONTAINER, PROXY_CONTAINER, VALIDATION_CONTAINER } from './constants.js';
import { findIptablesContainer } from './iptables-args.js';

export interface Proxy {
  container: V1Container;
  /** istio-proxy as a native sidecar (initContainers, restartPolicy Always). */
  native: boolean;
}

/**
 * The pod's running istio-proxy: among containers, or among initContainers
 * with restartPolicy Always (a native sidecar). istio-proxy as a plain init
 * container would run to completion before the app starts, so it is no
 * sidecar. Whether the pod's traffic is captured to it is meshEvidence's
 * question.
 */
export function findProxy(pod: V1Pod): Proxy | undefined {
  const classic = pod.spec?.containers?.find((c) => c.name === PROXY_CONTAINER);
  if (classic) return { container: classic, native: false };
  const native = pod.spec?.initContainers?.find((c) => c.name === PROXY_CONTAINER && c.restartPolicy === 'Always');
  if (native) return { container: native, native: true };
  return undefined;
}

/**
 * Why the pod is not meshed, or undefined when it is. Meshed means a
 * running istio-proxy and something that captures the pod's traffic to it:
 *
 * - the injector's sidecar.istio.io/status annotation (istio-init, or
 *   istio-cni, which programs only pods carrying it, did the capture); or,
 *   without it,
 * - an istio-init init container running istio-iptables: what `istioctl
 *   kube-inject` of a CronJob leaves on its pods, whose Istio metadata
 *   went to spec.jobTemplate.metadata. istio-init applies its rules
 *   whatever the annotations say; its args are then read (capture.ts) and
 *   must say plain REDIRECT, or the pod is refused naming the arg.
 *
 * istio-validation without the annotation is not meshed: istio-cni skips
 * such a pod ("excluded due to not containing sidecar annotation"), and
 * istio-validation applies no rules itself.
 */
export function meshEvidence(pod: V1Pod, proxy: Proxy | undefined): Refusal | undefined {
  if (!proxy) {
    const plain = pod.spec?.initContainers?.find((c) => c.name === PROXY_CONTAINER);
    if (plain) {
      return {
        detail: `istio-proxy is an init container with restartPolicy ${plain.restartPolicy ?? 'unset'}: it runs to completion before the app starts, no sidecar`,
        setting: { on: 'container', kind: 'field', name: 'restartPolicy', value: plain.restartPolicy ?? '', container: PROXY_CONTAINER },
      };
    }
    return { detail: 'no istio-proxy sidecar (neither a container nor an init container with restartPolicy Always)' };
  }
  if (pod.metadata?.annotations?.[ANN.sidecarStatus] !== undefined) return undefined;
  const iptables = findIptablesContainer(pod);
  if (iptables?.name === INIT_CONTAINER) return undefined;
  if (iptables?.name === VALIDATION_CONTAINER) {
    return {
      detail: `istio-proxy and istio-validation but no ${ANN.sidecarStatus} annotation: istio-cni programs no capture for such a pod`,
      setting: { on: 'pod', kind: 'annotation', name: ANN.sidecarStatus, value: '' },
    };
  }
  return {
    detail: `istio-proxy without ${ANN.sidecarStatus} and without an istio-init running istio-iptables: nothing captures its traffic`,
    setting: { on: 'pod', kind: 'annotation', name: ANN.sidecarStatus, value: '' },
  };
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
