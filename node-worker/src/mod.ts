export { Datapath, capacityForPods, IncompatiblePinError, type Capacity, type DatapathOptions } from './bpf/datapath.js';
export { readStatus, readCounters, formatStatus, type DatapathStatus } from './bpf/status.js';
export { probeKernel, missingFeatures, type KernelFeatures } from './bpf/features.js';
export { applyNodeState, Reconciler, type ApplyResult } from './state/apply.js';
export { compileNodeState, endpointId } from './state/compile.js';
export { diffEntries } from './state/diff.js';
export { LAYOUTS, COUNTERS, COUNTER_ENUM_NAMES, ML_LAYOUT_VERSION, type CounterName } from './bpf/layout.js';
export { pinPaths, DEFAULT_PIN_ROOT } from './bpf/pins.js';
