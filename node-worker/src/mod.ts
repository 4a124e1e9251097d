export { Datapath, capacityForPods, IncompatiblePinError, type Capacity, type DatapathOptions } from './bpf/datapath.js';
export { readStatus, readCounters, formatStatus, type DatapathStatus } from './bpf/status.js';
export { probeKernel, missingFeatures, type KernelFeatures } from './bpf/features.js';
export {
  probeBehaviour,
  classifyBehaviour,
  decideAppSockets,
  unknownBehaviour,
  formatBehaviour,
  behaviourForBus,
  BEHAVIOUR_PROBES,
  DEFAULT_BEHAVIOUR_TIMEOUT_MS,
  type BehaviourReport,
  type BehaviourResults,
  type BehaviourDecisions,
  type BehaviourProbeOptions,
} from './bpf/behaviour.js';
export { applyNodeState, Reconciler, type ApplyResult } from './state/apply.js';
export { compileNodeState, endpointId } from './state/compile.js';
export { diffEntries } from './state/diff.js';
export { LAYOUTS, COUNTERS, COUNTER_ENUM_NAMES, ML_LAYOUT_VERSION, type CounterName } from './bpf/layout.js';
export { pinPaths, DEFAULT_PIN_ROOT } from './bpf/pins.js';
export { NodeFollower, type StateApplier, type FollowerOptions } from './bus/follower.js';
export { StatusReporter } from './bus/status.js';
export { libbpf } from './bpf/libbpf.js';
export { discoverPodCgroup, nodeMaxPods, inClusterApi, type ApiAccess, type PodCgroup } from './node-facts.js';
