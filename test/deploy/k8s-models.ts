/**
 * The Kubernetes schemas every rendered object is validated against
 * (kubernetes-models), by "apiVersion/kind"; a kind missing here is a
 * failure in the tests that use it, never a pass.
 */
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { Job } from 'kubernetes-models/batch/v1';

/** One rendered manifest object, as YAML gives it. */
export interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [k: string]: unknown;
}

export interface Validatable {
  validate(): void;
}

export const MODELS: Record<string, (o: Obj) => Validatable> = {
  'v1/Namespace': (o) => new Namespace(o as never),
  'v1/ServiceAccount': (o) => new ServiceAccount(o as never),
  'v1/ConfigMap': (o) => new ConfigMap(o as never),
  'v1/Service': (o) => new Service(o as never),
  'v1/Secret': (o) => new Secret(o as never),
  'apps/v1/Deployment': (o) => new Deployment(o as never),
  'apps/v1/DaemonSet': (o) => new DaemonSet(o as never),
  'apps/v1/StatefulSet': (o) => new StatefulSet(o as never),
  'rbac.authorization.k8s.io/v1/Role': (o) => new Role(o as never),
  'rbac.authorization.k8s.io/v1/RoleBinding': (o) => new RoleBinding(o as never),
  'rbac.authorization.k8s.io/v1/ClusterRole': (o) => new ClusterRole(o as never),
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': (o) => new ClusterRoleBinding(o as never),
  'policy/v1/PodDisruptionBudget': (o) => new PodDisruptionBudget(o as never),
  'networking.k8s.io/v1/NetworkPolicy': (o) => new NetworkPolicy(o as never),
  'batch/v1/Job': (o) => new Job(o as never),
};
