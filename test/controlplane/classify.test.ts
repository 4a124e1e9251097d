/** controlplane - classifyPod: every rule of the brief's section 2, on pods shaped like Istio's injector output. */
import { describe, expect, it } from 'vitest';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import type { Ineligible, PodClass } from '../../controlplane/src/types.js';
import {
  captureProblem,
  classifyPod,
  parseCidrList,
  parsePortList,
  parsePortSelector,
} from '../../controlplane/src/classify/mod.js';
import { hostNetworkPod, injectedPod, kubeInjectCronJobPod, plainPod, type InjectOptions } from './fixtures/injected-pods.js';

/** A copy of `pod` changed by `fn`. */
function edit(pod: V1Pod, fn: (p: V1Pod) => void): V1Pod {
  const copy = structuredClone(pod);
  fn(copy);
  return copy;
}

function container(pod: V1Pod, name: string): V1Container {
  const c = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

/** Replace the value following `flag` in istio-init's args (a stale or hand-written init container). */
function setArg(pod: V1Pod, flag: string, value: string): V1Pod {
  return edit(pod, (p) => {
    const args = container(p, 'istio-init').args ?? [];
    const i = args.indexOf(flag);
    if (i < 0) args.splice(1, 0, flag, value);
    else args[i + 1] = value;
  });
}

const annotated = (annotations: Record<string, string>, o: InjectOptions = {}): V1Pod =>
  injectedPod({ ...o, annotations: { ...o.annotations, ...annotations } });

/** Change an annotation after injection: the init container keeps what it was rendered with. */
const reannotate = (pod: V1Pod, annotations: Record<string, string>): V1Pod =>
  edit(pod, (p) => Object.assign(p.metadata!.annotations!, annotations));

const ELIGIBLE: Omit<PodClass, 'ineligible'> = {
  key: 'default/hello-5d7b9c6f4-x2x7q',
  namespace: 'default',
  name: 'hello-5d7b9c6f4-x2x7q',
  node: 'worker-1',
  ips: ['10.244.1.7'],
  optedOut: false,
  uid: '6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d',
  appSockets: 'auto',
  proxyUid: 1337,
  proxyId: 'hello-5d7b9c6f4-x2x7q.default',
  outboundPort: 15001,
  inboundPort: 15006,
  inbound: { includePorts: '*', excludePorts: [15008, 15020, 15021, 15090] },
  outbound: { excludePorts: [53], includeCidrs: '*', excludeCidrs: [] },
};

interface Row {
  name: string;
  pod: V1Pod;
  ineligible?: Ineligible;
  /** Fields that differ from ELIGIBLE. */
  expect?: Partial<PodClass>;
  /** What the refusal's detail must say. */
  detail?: RegExp;
}

function check(row: Row): void {
  const { refusal, optOut, ...got } = classifyPod(row.pod);
  expect(got.ineligible).toBe(row.ineligible);
  expect(got).toEqual({ ...ELIGIBLE, ...row.expect, ...(row.ineligible ? { ineligible: row.ineligible } : {}) });
  // A refusal says why exactly when the pod is ineligible; an opt-out names its setting exactly when opted out.
  expect(refusal !== undefined).toBe(row.ineligible !== undefined);
  if (refusal) expect(refusal.detail).not.toBe('');
  if (row.detail) expect(refusal?.detail).toMatch(row.detail);
  expect(optOut !== undefined).toBe(got.optedOut);
}

/** Pods without istio-init are read as istio-cni reads them: excludeOutboundPorts defaults to 15020. */
const CNI_OUTBOUND = { outbound: { ...ELIGIBLE.outbound, excludePorts: [53, 15020] } };

/** What an unreadable capture setting yields besides the reason: nothing captured, so nothing accelerated. */
const NOTHING = {
  inbound: { includePorts: [], excludePorts: [15008, 15020, 15021, 15090] },
  outbound: { excludePorts: [53], includeCidrs: [], excludeCidrs: [] },
};

describe('meshed: sidecar.istio.io/status and a running istio-proxy', () => {
  const rows: Row[] = [
    { name: 'native sidecar (istio-proxy in initContainers, restartPolicy Always)', pod: injectedPod() },
    { name: 'classic sidecar (istio-proxy in containers)', pod: injectedPod({ native: false }) },
    {
      name: 'istio-proxy in initContainers without restartPolicy Always is no sidecar',
      pod: edit(injectedPod(), (p) => delete container(p, 'istio-proxy').restartPolicy),
      ineligible: 'not-meshed',
      detail: /init container with restartPolicy unset/,
    },
    {
      name: 'istio-init only, no istio-proxy',
      pod: edit(injectedPod(), (p) => (p.spec!.initContainers = p.spec!.initContainers!.filter((c) => c.name !== 'istio-proxy'))),
      ineligible: 'not-meshed',
    },
    {
      // What istioctl kube-inject of a CronJob leaves on its pods (see kube-inject-cronjob.test.ts):
      // istio-init's REDIRECT rules capture the traffic whatever the annotations say.
      name: 'istio-proxy and istio-init without sidecar.istio.io/status: captured by istio-init, meshed',
      pod: edit(injectedPod({ native: false }), (p) => delete p.metadata!.annotations!['sidecar.istio.io/status']),
    },
    {
      name: 'istio-proxy without sidecar.istio.io/status and without istio-init: nothing captures',
      pod: edit(injectedPod({ native: false }), (p) => {
        delete p.metadata!.annotations!['sidecar.istio.io/status'];
        p.spec!.initContainers = [];
      }),
      ineligible: 'not-meshed',
      expect: CNI_OUTBOUND,
      detail: /without sidecar\.istio\.io\/status and without an istio-init/,
    },
    {
      name: 'istio-proxy + istio-validation without sidecar.istio.io/status: istio-cni skips the pod',
      pod: edit(injectedPod({ cni: true }), (p) => delete p.metadata!.annotations!['sidecar.istio.io/status']),
      ineligible: 'not-meshed',
      expect: CNI_OUTBOUND,
      detail: /istio-cni programs no capture/,
    },
    {
      name: 'status annotation only, containers stripped',
      pod: edit(plainPod(), (p) => (p.metadata!.annotations = { 'sidecar.istio.io/status': '{}' })),
      ineligible: 'not-meshed',
      expect: CNI_OUTBOUND,
    },
    { name: 'not injected at all', pod: plainPod(), ineligible: 'not-meshed', expect: CNI_OUTBOUND },
  ];
  it.each(rows)('$name', check);
});

describe('istioctl kube-inject CronJob pods: Istio metadata on the Job, containers on the pod', () => {
  const cron = kubeInjectCronJobPod();
  const CRON = {
    key: 'default/hellocron-29433600-7x9kq',
    name: 'hellocron-29433600-7x9kq',
    proxyId: 'hellocron-29433600-7x9kq.default',
    uid: '3c9d1e7f-2a4b-4c6d-8e0f-1a2b3c4d5e6f',
    ips: ['10.244.1.9'],
  };
  /** Replace the value after `flag` in the CronJob pod's istio-init args. */
  const cronArg = (flag: string, value: string) =>
    edit(cron, (p) => {
      const args = container(p, 'istio-init').args!;
      const i = args.indexOf(flag);
      if (i < 0) args.splice(1, 0, flag, value);
      else args[i + 1] = value;
    });
  const rows: Row[] = [
    { name: 'no sidecar.istio.io/status, istio-init REDIRECT + istio-proxy: meshed, as captured', pod: cron, expect: CRON },
    {
      name: 'the same as a native sidecar',
      pod: edit(cron, (p) => {
        const proxy = container(p, 'istio-proxy');
        p.spec!.containers = p.spec!.containers.filter((c) => c.name !== 'istio-proxy');
        p.spec!.initContainers!.push({ ...proxy, restartPolicy: 'Always' });
      }),
      expect: CRON,
    },
    { name: 'args say TPROXY', pod: cronArg('-m', 'TPROXY'), ineligible: 'interception-mode', expect: CRON, detail: /TPROXY \(istio-init arg -m\)/ },
    { name: 'an unreadable -b', pod: cronArg('-b', '80,http'), ineligible: 'capture-unreadable', expect: { ...CRON, ...NOTHING }, detail: /^istio-init -b: "80,http": item "http": not a port number/ },
    { name: 'an unreadable -x', pod: cronArg('-x', '10.0.0.0/33'), ineligible: 'capture-unreadable', expect: { ...CRON, ...NOTHING }, detail: /^istio-init -x: "10\.0\.0\.0\/33"/ },
    {
      name: 'istio-init --skip-rule-apply applied no rules',
      pod: edit(cron, (p) => container(p, 'istio-init').args!.push('--skip-rule-apply')),
      ineligible: 'interception-mode',
      expect: CRON,
      detail: /--skip-rule-apply/,
    },
    {
      name: 'istio-init --skip-rule-apply=maybe is unreadable',
      pod: edit(cron, (p) => container(p, 'istio-init').args!.push('--skip-rule-apply=maybe')),
      ineligible: 'capture-unreadable',
      expect: { ...CRON, ...NOTHING },
      detail: /--skip-rule-apply: "maybe"/,
    },
    {
      name: 'istio-init without istio-iptables in its args is no capture',
      pod: edit(cron, (p) => (container(p, 'istio-init').args = ['sleep', '1'])),
      ineligible: 'not-meshed',
      expect: { ...CRON, ...CNI_OUTBOUND },
    },
    {
      name: 'istio-init but no istio-proxy',
      pod: edit(cron, (p) => (p.spec!.containers = p.spec!.containers.filter((c) => c.name !== 'istio-proxy'))),
      ineligible: 'not-meshed',
      expect: CRON,
      detail: /no istio-proxy sidecar/,
    },
  ];
  it.each(rows)('$name', check);

  it('the pod really carries none of the metadata kube-inject wrote on the Job', () => {
    expect(cron.metadata?.annotations?.['sidecar.istio.io/status']).toBeUndefined();
    expect(cron.metadata?.ownerReferences?.[0]?.kind).toBe('Job');
  });
});

describe('proxy uid from istio-proxy securityContext.runAsUser', () => {
  const rows: Row[] = [
    { name: 'OpenShift namespace uid (hello-openshift, CNI)', pod: injectedPod({ uid: 1000629999, cni: true }), expect: { ...CNI_OUTBOUND, proxyUid: 1000629999 } },
    {
      name: 'container runAsUser absent: pod securityContext.runAsUser',
      pod: edit(injectedPod(), (p) => {
        delete container(p, 'istio-proxy').securityContext!.runAsUser;
        p.spec!.securityContext = { runAsUser: 2000, fsGroup: 1234 };
      }),
      expect: { proxyUid: 2000 },
    },
    {
      name: 'no runAsUser anywhere: 1337 (proxyv2 image user); env and runAsGroup ignored',
      pod: edit(injectedPod(), (p) => {
        const c = container(p, 'istio-proxy');
        delete c.securityContext!.runAsUser;
        c.securityContext!.runAsGroup = 4242;
        c.env!.push({ name: 'ISTIO_META_PROXY_UID', value: '99' });
      }),
      expect: { proxyUid: 1337 },
    },
    {
      name: 'proxy as root under REDIRECT (capNetBindService): uid 0 cannot single out Envoy',
      pod: edit(injectedPod(), (p) => (container(p, 'istio-proxy').securityContext!.runAsUser = 0)),
      ineligible: 'interception-mode',
      expect: { proxyUid: 0 },
    },
  ];
  it.each(rows)('$name', check);
});

describe('interception mode', () => {
  const rows: Row[] = [
    { name: 'explicit REDIRECT annotation', pod: annotated({ 'sidecar.istio.io/interceptionMode': 'REDIRECT' }) },
    {
      name: 'TPROXY (hello-tproxy: -m TPROXY, ISTIO_META_INTERCEPTION_MODE, proxy as root)',
      pod: injectedPod({ mode: 'TPROXY' }),
      ineligible: 'interception-mode',
      expect: { proxyUid: 0 },
    },
    {
      name: 'TPROXY annotation added after injection (args still REDIRECT)',
      pod: reannotate(injectedPod(), { 'sidecar.istio.io/interceptionMode': 'TPROXY' }),
      ineligible: 'interception-mode',
    },
    {
      name: 'mesh default TPROXY seen only in ISTIO_META_INTERCEPTION_MODE',
      pod: edit(injectedPod(), (p) => (container(p, 'istio-proxy').env!.find((e) => e.name === 'ISTIO_META_INTERCEPTION_MODE')!.value = 'TPROXY')),
      ineligible: 'interception-mode',
    },
    {
      name: 'NONE: no istio-init is rendered, nothing is captured',
      pod: edit(annotated({ 'sidecar.istio.io/interceptionMode': 'NONE' }), (p) => (p.spec!.initContainers = p.spec!.initContainers!.filter((c) => c.name !== 'istio-init'))),
      ineligible: 'interception-mode',
      expect: CNI_OUTBOUND,
    },
    {
      name: 'unknown mode value (case matters to Istio)',
      pod: reannotate(injectedPod(), { 'sidecar.istio.io/interceptionMode': 'redirect' }),
      ineligible: 'capture-unreadable',
      detail: /sidecar\.istio\.io\/interceptionMode: "redirect"/,
      expect: NOTHING,
    },
    {
      name: 'sidecar with no istio-init/istio-validation and no mode annotation: capture unproven',
      pod: edit(injectedPod(), (p) => (p.spec!.initContainers = p.spec!.initContainers!.filter((c) => c.name !== 'istio-init'))),
      ineligible: 'interception-mode',
      expect: CNI_OUTBOUND,
    },
  ];
  it.each(rows)('$name', check);
});

describe('istio-cni', () => {
  const cniOutbound = { ...ELIGIBLE.outbound, excludePorts: [53, 15020] };
  const rows: Row[] = [
    {
      name: 'hello.yaml.cni: istio-validation, capture settings as annotations; istio-cni excludes outbound 15020 by default',
      pod: injectedPod({ cni: true }),
      expect: { outbound: cniOutbound },
    },
    {
      name: 'multus istio-cni network, no istio-validation: annotations alone',
      pod: edit(injectedPod({ cni: true }), (p) => {
        p.metadata!.annotations!['k8s.v1.cni.cncf.io/networks'] = 'istio-cni';
        p.spec!.initContainers = p.spec!.initContainers!.filter((c) => c.name !== 'istio-validation');
      }),
      expect: { outbound: cniOutbound },
    },
    {
      name: 'CNI with excludeOutboundPorts set: the annotation replaces the 15020 default',
      pod: injectedPod({ cni: true, annotations: { 'traffic.sidecar.istio.io/excludeOutboundPorts': '3306' } }),
      expect: { outbound: { ...ELIGIBLE.outbound, excludePorts: [53, 3306] } },
    },
    {
      name: 'CNI TPROXY',
      pod: injectedPod({ cni: true, mode: 'TPROXY' }),
      ineligible: 'interception-mode',
      expect: { proxyUid: 0, outbound: cniOutbound },
    },
  ];
  it.each(rows)('$name', check);
});

describe('ports and ranges', () => {
  const rows: Row[] = [
    {
      name: 'includeInboundPorts list, spaces trimmed',
      pod: annotated({ 'traffic.sidecar.istio.io/includeInboundPorts': '9090, 8080' }),
      expect: { inbound: { includePorts: [8080, 9090], excludePorts: ELIGIBLE.inbound.excludePorts } },
    },
    {
      name: 'includeInboundPorts "" captures no inbound port',
      pod: annotated({ 'traffic.sidecar.istio.io/includeInboundPorts': '' }),
      expect: { inbound: { includePorts: [], excludePorts: ELIGIBLE.inbound.excludePorts } },
    },
    {
      name: 'excludeInboundPorts joins Istio\'s own',
      pod: annotated({ 'traffic.sidecar.istio.io/excludeInboundPorts': '8443,9000' }),
      expect: { inbound: { includePorts: '*', excludePorts: [8443, 9000, 15008, 15020, 15021, 15090] } },
    },
    {
      name: 'status port moved: excluded, and 15020 still is',
      pod: annotated({ 'status.sidecar.istio.io/port': '15030' }),
      expect: { inbound: { includePorts: '*', excludePorts: [15008, 15020, 15021, 15030, 15090] } },
    },
    { name: 'status port 0 (disabled)', pod: annotated({ 'status.sidecar.istio.io/port': '0' }) },
    {
      name: 'excludeOutboundPorts',
      pod: annotated({ 'traffic.sidecar.istio.io/excludeOutboundPorts': '5432, 3306' }),
      expect: { outbound: { ...ELIGIBLE.outbound, excludePorts: [53, 3306, 5432] } },
    },
    {
      name: 'includeOutboundIPRanges, dual-stack',
      pod: annotated({ 'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.96.0.0/12,fd00:10:96::/108' }),
      expect: { outbound: { ...ELIGIBLE.outbound, includeCidrs: ['10.96.0.0/12', 'fd00:10:96::/108'] } },
    },
    {
      name: 'includeOutboundIPRanges "" captures no destination',
      pod: annotated({ 'traffic.sidecar.istio.io/includeOutboundIPRanges': '' }),
      expect: { outbound: { ...ELIGIBLE.outbound, includeCidrs: [] } },
    },
    {
      name: 'excludeOutboundIPRanges',
      pod: annotated({ 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '169.254.169.254/32,10.0.0.0/8' }),
      expect: { outbound: { ...ELIGIBLE.outbound, excludeCidrs: ['169.254.169.254/32', '10.0.0.0/8'] } },
    },
    {
      name: 'includeOutboundPorts only adds capture: read, validated, no effect',
      pod: annotated({ 'traffic.sidecar.istio.io/includeOutboundPorts': '8080,9090' }),
    },
    {
      name: 'kubevirtInterfaces ignored',
      pod: annotated({ 'traffic.sidecar.istio.io/kubevirtInterfaces': 'net1' }),
    },
    {
      name: 'excludeInterfaces: traffic on those interfaces escapes capture',
      pod: annotated({ 'traffic.sidecar.istio.io/excludeInterfaces': 'net1' }),
      ineligible: 'interception-mode',
    },
    {
      name: 'mesh-wide excludeIPRanges only in istio-init -x',
      pod: injectedPod({ meshExcludeIPRanges: '10.0.0.0/8,fd00::/8' }),
      expect: { outbound: { ...ELIGIBLE.outbound, excludeCidrs: ['10.0.0.0/8', 'fd00::/8'] } },
    },
    {
      name: 'meshConfig.proxyListenPort via istio-init -p',
      pod: injectedPod({ proxyListenPort: 15002 }),
      expect: { outboundPort: 15002 },
    },
    {
      name: 'istio-init -z changed by hand',
      pod: setArg(injectedPod(), '-z', '15016'),
      expect: { inboundPort: 15016 },
    },
    {
      name: 'istio-init -e tunnel port excluded inbound',
      pod: setArg(injectedPod(), '-e', '15009'),
      expect: { inbound: { includePorts: '*', excludePorts: [15008, 15009, 15020, 15021, 15090] } },
    },
    {
      name: 'annotation edited after injection: included = captured by both sources',
      pod: reannotate(annotated({ 'traffic.sidecar.istio.io/includeInboundPorts': '8080,9090' }), {
        'traffic.sidecar.istio.io/includeInboundPorts': '9090,7070',
      }),
      expect: { inbound: { includePorts: [9090], excludePorts: ELIGIBLE.inbound.excludePorts } },
    },
    {
      name: 'annotation edited after injection: CIDRs intersect, exclusions add up',
      pod: reannotate(
        annotated({
          'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.96.0.0/12,192.168.0.0/16',
          'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.1/32',
          'traffic.sidecar.istio.io/excludeOutboundPorts': '3306',
        }),
        {
          'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8',
          'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.2/32',
          'traffic.sidecar.istio.io/excludeOutboundPorts': '5432',
        },
      ),
      expect: {
        outbound: { excludePorts: [53, 3306, 5432], includeCidrs: ['10.96.0.0/12'], excludeCidrs: ['10.96.0.2/32', '10.96.0.1/32'] },
      },
    },
  ];
  it.each(rows)('$name', check);
});

describe('unreadable values: the whole pod is ineligible, nothing captured', () => {
  const bad: Array<[string, string]> = [
    ['traffic.sidecar.istio.io/excludeInboundPorts', '80,abc'],
    ['traffic.sidecar.istio.io/excludeInboundPorts', '80,'],
    ['traffic.sidecar.istio.io/includeInboundPorts', ' * '],
    ['traffic.sidecar.istio.io/includeInboundPorts', '80-90'],
    ['traffic.sidecar.istio.io/excludeOutboundPorts', '70000'],
    ['traffic.sidecar.istio.io/excludeOutboundPorts', '*'],
    ['traffic.sidecar.istio.io/includeOutboundPorts', 'http'],
    ['traffic.sidecar.istio.io/includeOutboundIPRanges', '10.0.0.0/8, 192.168.0.0/16'],
    ['traffic.sidecar.istio.io/includeOutboundIPRanges', '10.0.0.0'],
    ['traffic.sidecar.istio.io/excludeOutboundIPRanges', '*'],
    ['traffic.sidecar.istio.io/excludeOutboundIPRanges', '10.0.0.0/33'],
    ['traffic.sidecar.istio.io/excludeOutboundIPRanges', 'fe80::/10%eth0'],
    ['status.sidecar.istio.io/port', 'abc'],
  ];
  const rows: Row[] = bad.flatMap(([key, value]) => [
    { name: `${key}: ${JSON.stringify(value)}`, pod: reannotate(injectedPod(), { [key]: value }), ineligible: 'capture-unreadable', expect: NOTHING, detail: new RegExp(`^${key.replaceAll('.', '\\.')}: `) },
    { name: `${key}: ${JSON.stringify(value)} (CNI)`, pod: reannotate(injectedPod({ cni: true }), { [key]: value }), ineligible: 'capture-unreadable', expect: NOTHING },
  ]);
  rows.push(
    { name: 'istio-init -d garbage', pod: setArg(injectedPod(), '-d', '15090,15021,x'), ineligible: 'capture-unreadable', expect: NOTHING, detail: /^istio-init -d: "15090,15021,x"/ },
    { name: 'istio-init -p garbage', pod: setArg(injectedPod(), '-p', 'envoy'), ineligible: 'capture-unreadable', expect: NOTHING, detail: /^istio-init -p: "envoy"/ },
  );
  it.each(rows)('$name', check);

  it('says why', () => {
    const pod = reannotate(injectedPod(), { 'traffic.sidecar.istio.io/excludeInboundPorts': '80,abc' });
    expect(captureProblem(pod)).toMatch(/excludeInboundPorts.*abc/);
    expect(captureProblem(injectedPod())).toBeUndefined();
  });
});

describe('ambient, host network, lifecycle, addresses', () => {
  const rows: Row[] = [
    { name: 'ambient.istio.io/redirection: enabled', pod: edit(plainPod(), (p) => (p.metadata!.annotations = { 'ambient.istio.io/redirection': 'enabled' })), ineligible: 'ambient', expect: CNI_OUTBOUND },
    { name: 'ambient.istio.io/redirection: pending', pod: edit(plainPod(), (p) => (p.metadata!.annotations = { 'ambient.istio.io/redirection': 'pending' })), ineligible: 'ambient', expect: CNI_OUTBOUND },
    { name: 'ambient redirection disabled on a sidecar pod', pod: annotated({ 'ambient.istio.io/redirection': 'disabled' }) },
    {
      name: 'hostNetwork (hello-host-network)',
      pod: hostNetworkPod(),
      ineligible: 'host-network',
      expect: { ...CNI_OUTBOUND, key: 'default/hello-host-network-6f9c8d7b5-q8w4z', name: 'hello-host-network-6f9c8d7b5-q8w4z', proxyId: 'hello-host-network-6f9c8d7b5-q8w4z.default', ips: ['172.18.0.3'] },
    },
    { name: 'Pending', pod: edit(injectedPod(), (p) => (p.status!.phase = 'Pending')), ineligible: 'not-running' },
    { name: 'Succeeded', pod: edit(injectedPod(), (p) => (p.status!.phase = 'Succeeded')), ineligible: 'not-running' },
    { name: 'no status', pod: edit(injectedPod(), (p) => delete p.status), ineligible: 'not-running', expect: { ips: [] } },
    { name: 'terminating', pod: edit(injectedPod(), (p) => (p.metadata!.deletionTimestamp = new Date('2025-01-01T00:00:00Z'))), ineligible: 'not-running' },
    {
      name: 'Running without an IP yet',
      pod: edit(injectedPod(), (p) => {
        delete p.status!.podIP;
        p.status!.podIPs = [];
      }),
      ineligible: 'no-ip',
      expect: { ips: [] },
    },
    {
      name: 'dual-stack podIPs',
      pod: edit(injectedPod(), (p) => (p.status!.podIPs = [{ ip: '10.244.1.7' }, { ip: 'fd00:10:244:1::7' }])),
      expect: { ips: ['10.244.1.7', 'fd00:10:244:1::7'] },
    },
    {
      name: 'podIPs in another spelling become canonical; IPv4-mapped and zoned ones are dropped',
      pod: edit(injectedPod(), (p) => (p.status!.podIPs = [{ ip: 'FD00:10:244:1:0:0:0:7' }, { ip: '::ffff:10.244.1.8' }, { ip: 'fe80::1%eth0' }])),
      expect: { ips: ['fd00:10:244:1::7'] },
    },
    { name: 'podIP only (no podIPs)', pod: edit(injectedPod(), (p) => delete p.status!.podIPs), expect: { ips: ['10.244.1.7'] } },
    {
      name: 'unscheduled',
      pod: edit(injectedPod(), (p) => {
        delete p.spec!.nodeName;
        p.status = { phase: 'Pending' };
      }),
      ineligible: 'not-running',
      expect: { node: undefined, ips: [] },
    },
    {
      name: 'other namespace: key and proxyId',
      pod: edit(injectedPod(), (p) => (p.metadata!.namespace = 'shop')),
      expect: { namespace: 'shop', key: 'shop/hello-5d7b9c6f4-x2x7q', proxyId: 'hello-5d7b9c6f4-x2x7q.shop' },
    },
  ];
  it.each(rows)('$name', check);
});

describe('meshlane opt-out and app sockets', () => {
  const rows: Row[] = [
    { name: 'annotation accelerate "false"', pod: annotated({ 'meshlane.io/accelerate': 'false' }), expect: { optedOut: true } },
    { name: 'label accelerate "false"', pod: injectedPod({ labels: { 'meshlane.io/accelerate': 'false' } }), expect: { optedOut: true } },
    { name: 'accelerate "true" is no opt-out', pod: annotated({ 'meshlane.io/accelerate': 'true' }) },
    { name: 'accelerate with a typo opts out', pod: annotated({ 'meshlane.io/accelerate': 'flase' }), expect: { optedOut: true } },
    {
      name: 'label "true" does not undo annotation "false"',
      pod: injectedPod({ annotations: { 'meshlane.io/accelerate': 'false' }, labels: { 'meshlane.io/accelerate': 'true' } }),
      expect: { optedOut: true },
    },
    { name: 'app-sockets "true"', pod: annotated({ 'meshlane.io/app-sockets': 'true' }), expect: { appSockets: 'always' } },
    { name: 'app-sockets " False " (trimmed, any case)', pod: annotated({ 'meshlane.io/app-sockets': ' False ' }), expect: { appSockets: 'never' } },
    { name: 'app-sockets "maybe": left to the kernel side', pod: annotated({ 'meshlane.io/app-sockets': 'maybe' }), expect: { appSockets: 'auto' } },
    { name: 'app-sockets anything else stays off', pod: annotated({ 'meshlane.io/app-sockets': 'yes' }) },
    { name: 'opt-out is independent of eligibility', pod: edit(annotated({ 'meshlane.io/accelerate': 'false' }), (p) => (p.status!.phase = 'Pending')), ineligible: 'not-running', expect: { optedOut: true } },
  ];
  it.each(rows)('$name', check);
});

describe('order of reasons: host-network, ambient, not-meshed, interception-mode, not-running, no-ip', () => {
  const rows: Array<{ name: string; pod: V1Pod; ineligible: Ineligible }> = [
    {
      name: 'host network + not meshed + pending + no IP',
      pod: edit(hostNetworkPod(), (p) => (p.status = { phase: 'Pending' })),
      ineligible: 'host-network',
    },
    {
      name: 'host network + ambient',
      pod: edit(hostNetworkPod(), (p) => (p.metadata!.annotations = { 'ambient.istio.io/redirection': 'enabled' })),
      ineligible: 'host-network',
    },
    {
      name: 'ambient + sidecar + TPROXY',
      pod: annotated({ 'ambient.istio.io/redirection': 'enabled' }, { mode: 'TPROXY' }),
      ineligible: 'ambient',
    },
    { name: 'not meshed + not running', pod: edit(plainPod(), (p) => (p.status = { phase: 'Pending' })), ineligible: 'not-meshed' },
    {
      name: 'not meshed + bad annotation',
      pod: edit(plainPod(), (p) => (p.metadata!.annotations = { 'traffic.sidecar.istio.io/excludeInboundPorts': 'x' })),
      ineligible: 'not-meshed',
    },
    { name: 'TPROXY + terminating', pod: edit(injectedPod({ mode: 'TPROXY' }), (p) => (p.metadata!.deletionTimestamp = new Date())), ineligible: 'interception-mode' },
    { name: 'not running + no IP', pod: edit(injectedPod(), (p) => (p.status = { phase: 'Pending' })), ineligible: 'not-running' },
  ];
  it.each(rows)('$name', ({ pod, ineligible }) => expect(classifyPod(pod).ineligible).toBe(ineligible));
});

describe('list parsing (Istio semantics)', () => {
  it.each([
    ['', []],
    ['  ', []],
    ['80', [80]],
    [' 80 , 443,80', [80, 443]],
    ['0,80', [80]],
    ['0080', [80]],
  ])('ports %j', (text, want) => expect(parsePortList('t', text)).toEqual(want));

  it.each(['80,', ',80', '80;443', '-1', '65536', '1e3', '80 443'])('bad ports %j', (text) =>
    expect(() => parsePortList('t', text)).toThrow(/t: /),
  );

  it('"*" only exactly, only for selectors', () => {
    expect(parsePortSelector('t', '*')).toBe('*');
    expect(() => parsePortSelector('t', '*,80')).toThrow();
    expect(() => parsePortList('t', '*')).toThrow();
  });

  it.each([
    ['', []],
    ['10.0.0.0/8', ['10.0.0.0/8']],
    ['10.1.2.3/8,10.1.2.3/8', ['10.1.2.3/8']],
    ['::/0,0.0.0.0/0', ['::/0', '0.0.0.0/0']],
  ])('cidrs %j', (text, want) => expect(parseCidrList('t', text)).toEqual(want));

  it.each([' 10.0.0.0/8', '10.0.0.0/8,', '10.0.0.0', '10.0.0.0/08', '010.0.0.0/8', '10.0.0.0/-1', 'fd00::/129', 'fe80::%eth0/64', 'x/8', '::ffff:10.0.0.0/104'])(
    'bad cidrs %j',
    (text) => expect(() => parseCidrList('t', text)).toThrow(/t: /),
  );
});
