/** Where the control plane's Kubernetes credentials come from. */
import { KubeConfig } from '@kubernetes/client-node';

/**
 * `path` given (`--kubeconfig FILE`): that file. Otherwise the library's default chain:
 * $KUBECONFIG, ~/.kube/config, then the in-cluster service account
 * (KUBERNETES_SERVICE_HOST/PORT + /var/run/secrets/kubernetes.io/serviceaccount).
 * Throws if no cluster could be found, rather than letting informers fail later.
 */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) {
    kc.loadFromFile(path);
  } else if (process.env.KUBERNETES_SERVICE_HOST && !process.env.KUBECONFIG) {
    kc.loadFromCluster();
  } else {
    kc.loadFromDefault();
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster || !cluster.server) {
    throw new Error(
      path ? `kubeconfig ${path}: no current cluster` : 'no Kubernetes configuration found (no --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster service account)',
    );
  }
  return kc;
}
