export { classifyPod, captureProblem } from './classify.js';
export { CaptureConfigError } from './errors.js';
export { parsePort, parsePortList, parsePortSelector, parseCidrList, parseCidrSelector } from './lists.js';
