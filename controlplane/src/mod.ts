export type { PodClass, ProxySync, IstiodSource, Ineligible } from './types.js';
export { classifyPod, captureProblem } from './classify/mod.js';
export { ClusterModel, namespaceOptedOut, type ModelOptions } from './model/model.js';
export { nodeEndpoints } from './model/endpoints.js';
export { Reconciler, type NodeUpdate, type ReconcilerOptions } from './reconcile/reconciler.js';
export { KubeSources, loadKubeConfig } from './kube/sources.js';
export * from './xds/index.js';
export { ControlPlane, type ControlPlaneOptions } from './controlplane.js';
export { FileSink } from './sinks/file-sink.js';
