/**
 * The istio-iptables command line the injector wrote into istio-init (or,
 * with istio-cni, istio-validation). Without istio-cni these args, not the
 * annotations, are what programmed the pod's iptables: mesh-wide defaults
 * (values.global.proxy.excludeIPRanges, meshConfig.proxyListenPort, ...)
 * reach the pod only here.
 */
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { INIT_CONTAINER, VALIDATION_CONTAINER } from './constants.js';
import { CaptureConfigError } from './errors.js';

/** One istio-iptables flag: pflag short and long name, the env var viper binds, the default. */
interface Flag {
  short: string;
  long: string;
  fallback: string;
}

/** Flags that matter here, with istio-iptables' own defaults (tools/istio-iptables/pkg/cmd/root.go). */
export const IPTABLES_FLAGS = {
  outboundPort: { short: 'p', long: 'envoy-port', fallback: '15001' },
  inboundPort: { short: 'z', long: 'inbound-capture-port', fallback: '15006' },
  tunnelPort: { short: 'e', long: 'inbound-tunnel-port', fallback: '15008' },
  mode: { short: 'm', long: 'istio-inbound-interception-mode', fallback: '' },
  includeInbound: { short: 'b', long: 'istio-inbound-ports', fallback: '' },
  excludeInbound: { short: 'd', long: 'istio-local-exclude-ports', fallback: '' },
  includeCidrs: { short: 'i', long: 'istio-service-cidr', fallback: '' },
  excludeCidrs: { short: 'x', long: 'istio-service-exclude-cidr', fallback: '' },
  excludeOutbound: { short: 'o', long: 'istio-local-outbound-ports-exclude', fallback: '' },
  includeOutbound: { short: 'q', long: 'istio-outbound-ports', fallback: '' },
  excludeInterfaces: { short: 'c', long: 'exclude-interfaces', fallback: '' },
} as const satisfies Record<string, Flag>;

export type IptablesFlag = keyof typeof IPTABLES_FLAGS;
export type IptablesSettings = Record<IptablesFlag, string>;

/** istio-init if present, else istio-validation; undefined when neither runs istio-iptables. */
export function findIptablesContainer(pod: V1Pod): V1Container | undefined {
  const inits = pod.spec?.initContainers ?? [];
  for (const name of [INIT_CONTAINER, VALIDATION_CONTAINER]) {
    const c = inits.find((x) => x.name === name);
    if (c && [...(c.command ?? []), ...(c.args ?? [])].includes('istio-iptables')) return c;
  }
  return undefined;
}

/** Value of one flag in argv (last occurrence wins, as with pflag), or undefined. */
function flagValue(argv: readonly string[], flag: Flag): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    const longEq = `--${flag.long}=`;
    const shortEq = `-${flag.short}=`;
    if (a === `-${flag.short}` || a === `--${flag.long}`) {
      if (i + 1 < argv.length) value = argv[++i];
    } else if (a.startsWith(longEq)) {
      value = a.slice(longEq.length);
    } else if (a.startsWith(shortEq)) {
      value = a.slice(shortEq.length);
    } else if (a.startsWith(`-${flag.short}`) && !a.startsWith('--') && a.length > 2) {
      value = a.slice(2); // pflag shorthand with attached value: -p15001
    }
  }
  return value;
}

/**
 * Each flag as istio-iptables resolves it: the command-line value, else the
 * container env var viper binds to it (long name upper-cased, "-" -> "_"),
 * else istio-iptables' default.
 */
export function readIptablesSettings(container: V1Container): IptablesSettings {
  const argv = [...(container.command ?? []), ...(container.args ?? [])];
  const env = new Map((container.env ?? []).filter((e) => e.valueFrom === undefined).map((e) => [e.name, e.value ?? '']));
  const out = {} as IptablesSettings;
  for (const key of Object.keys(IPTABLES_FLAGS) as IptablesFlag[]) {
    const flag: Flag = IPTABLES_FLAGS[key];
    out[key] = flagValue(argv, flag) ?? env.get(flag.long.toUpperCase().replaceAll('-', '_')) ?? flag.fallback;
  }
  return out;
}

/**
 * istio-iptables' --skip-rule-apply as pflag and viper read it (a bool:
 * "--skip-rule-apply" alone, or =VALUE with Go strconv.ParseBool values;
 * else env SKIP_RULE_APPLY). Throws CaptureConfigError on a value
 * istio-iptables would refuse.
 */
export function skipsRuleApply(container: V1Container): boolean {
  const argv = [...(container.command ?? []), ...(container.args ?? [])];
  const source = `${container.name} --skip-rule-apply`;
  let text: string | undefined;
  for (const a of argv) {
    if (a === '--skip-rule-apply') text = 'true';
    else if (a.startsWith('--skip-rule-apply=')) text = a.slice('--skip-rule-apply='.length);
  }
  if (text === undefined) {
    const env = container.env?.find((e) => e.name === 'SKIP_RULE_APPLY' && e.valueFrom === undefined);
    if (env === undefined) return false;
    text = env.value ?? '';
  }
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(text)) return false;
  throw new CaptureConfigError(source, text, 'not a boolean');
}
