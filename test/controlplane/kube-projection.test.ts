/**
 * What the informers keep of an object: the byte-level JSON selection (json-select.ts) and the typed
 * projections (projection.ts). The projection must classify exactly like the full pod, whichever
 * path (list page selection or whole watch object) produced it, and must be small.
 */
import { describe, expect, it } from 'vitest';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { captureProblem, classifyPod } from '../../controlplane/src/classify/mod.js';
import { JsonSelectError, selectJson, selectSplit, where, type Selection } from '../../controlplane/src/kube/json-select.js';
import {
  CLASSIFIED_ENV,
  NAMESPACE_SELECTION,
  NODE_SELECTION,
  POD_SELECTION,
  projectNamespace,
  projectNode,
  projectPod,
} from '../../controlplane/src/kube/projection.js';
import { namespaceFixture, nodeFixture, podFixture, realisticPodFixture } from '../fakes/kube-apiserver.js';
import { hostNetworkPod, injectedPod, plainPod } from './fixtures/injected-pods.js';

const sel = (text: string, s: Selection): string => selectJson(Buffer.from(text), s).toString('utf8');

describe('selectJson', () => {
  it('keeps the selected members, whole or by their own selection, of objects and of array elements', () => {
    const doc = { a: 1, b: { c: [1, 2], d: 'x', e: { f: null } }, g: [{ h: 1, i: 2 }, { i: 3 }, 7], j: 'skip' };
    expect(JSON.parse(sel(JSON.stringify(doc), { a: true, b: { d: true, e: true }, g: { i: true } }))).toEqual({ a: 1, b: { d: 'x', e: { f: null } }, g: [{ i: 2 }, { i: 3 }, 7] });
    expect(sel('[]', { x: true })).toBe('[]');
    expect(sel('{}', { x: true })).toBe('{}');
    expect(sel('"s"', { x: true })).toBe('"s"');
    expect(sel('{"x":{}}', { x: {} })).toBe('{"x":{}}');
  });

  it('copes with whitespace, escapes, brackets inside strings and escaped member names', () => {
    const text = ' { "skip" : [ "a]}\\"{[", {"q": "\\\\"} ] ,\n\t"k\\u0065ep" : { "v" : "x\\"y" , "w" : 1 } , "n" : -1.5e3 , "t":true } ';
    expect(JSON.parse(sel(text, { keep: { v: true }, n: true, t: true }))).toEqual({ keep: { v: 'x"y' }, n: -1500, t: true });
    // Non-ASCII bytes pass through untouched.
    expect(JSON.parse(sel('{"a":"héllo ☃","b":"ünused"}', { a: true }))).toEqual({ a: 'héllo ☃' });
  });

  it('refuses truncated and malformed documents with the byte offset', () => {
    expect(() => sel('{"a":[1,2', { a: true })).toThrow(JsonSelectError);
    expect(() => sel('{"a":"unterminated', { b: true })).toThrow(/unterminated string at byte 5/);
    expect(() => sel('{"a":1} x', { a: true })).toThrow(/unexpected data after the document/);
    expect(() => sel('{"a" 1}', { a: true })).toThrow(/expected ":"/);
    expect(() => sel('<html>', { a: true })).toThrow(JsonSelectError);
    expect(() => sel('', { a: true })).toThrow(/unexpected end of input/);
  });

  it('where(): keeps only array elements whose member has one of the values, commas and all', () => {
    const env = where({ name: true, value: true }, 'name', ['B', 'D']);
    const doc = JSON.stringify({ env: [{ name: 'A', value: '1' }, { name: 'B', value: '2' }, { value: '3' }, { name: 'D', value: '4' }, { name: 'E' }] });
    expect(JSON.parse(sel(doc, { env }))).toEqual({ env: [{ name: 'B', value: '2' }, { name: 'D', value: '4' }] });
    expect(sel('{"env":[{"name":"X"},{"name":"Y"}]}', { env })).toBe('{"env":[]}');
    // The member need not be selected, nor come first.
    expect(sel('{"env":[{"value":"v","name":"D"}]}', { env: where({ value: true }, 'name', ['D']) })).toBe('{"env":[{"value":"v"}]}');
  });

  it('selectSplit: the document without its big array, and the elements one at a time', () => {
    const list = { kind: 'PodList', metadata: { resourceVersion: '7', continue: 'abc' }, items: [{ a: 1, b: 2 }, { a: 3 }, { b: 4 }] };
    const s = selectSplit(Buffer.from(JSON.stringify(list)), { kind: true, metadata: true, items: { a: true } }, 'items');
    expect(s.rest).toEqual({ kind: 'PodList', metadata: { resourceVersion: '7', continue: 'abc' }, items: [] });
    expect(s.length).toBe(3);
    expect([0, 1, 2].map((i) => s.element(i))).toEqual([{ a: 1 }, { a: 3 }, {}]);
    expect(selectSplit(Buffer.from('{"kind":"Status"}'), { kind: true, items: true }, 'items').length).toBeUndefined();
  });
});

// ------------------------------------------------------------------ pods

function edit(pod: V1Pod, fn: (p: V1Pod) => void): V1Pod {
  const p = structuredClone(pod);
  fn(p);
  return p;
}

function container(pod: V1Pod, name: string): V1Container {
  const c = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])].find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

/** Pods covering every field classification reads (cf. classify.test.ts). */
const PODS: Array<[string, V1Pod]> = [
  ['native sidecar', injectedPod()],
  ['classic sidecar', injectedPod({ native: false })],
  ['CNI (istio-validation)', injectedPod({ cni: true })],
  ['CNI + TPROXY', injectedPod({ cni: true, mode: 'TPROXY' })],
  ['TPROXY', injectedPod({ mode: 'TPROXY' })],
  ['OpenShift uid', injectedPod({ uid: 1000629999, cni: true })],
  ['proxyListenPort', injectedPod({ proxyListenPort: 15002 })],
  ['mesh excludeIPRanges', injectedPod({ meshExcludeIPRanges: '10.0.0.0/8,fd00::/8' })],
  ['traffic annotations', injectedPod({ annotations: { 'traffic.sidecar.istio.io/excludeInboundPorts': '8080', 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.1.0.0/16', 'status.sidecar.istio.io/port': '15030' } })],
  ['excludeInterfaces', injectedPod({ annotations: { 'traffic.sidecar.istio.io/excludeInterfaces': 'eth1' } })],
  ['bad annotation', injectedPod({ annotations: { 'traffic.sidecar.istio.io/includeInboundPorts': '80,x' } })],
  ['label opt-out', injectedPod({ labels: { 'meshlane.io/accelerate': 'false' } })],
  ['annotation opt-out and app-sockets', injectedPod({ annotations: { 'meshlane.io/accelerate': 'nope', 'meshlane.io/app-sockets': 'true' } })],
  ['not-native istio-proxy init container', edit(injectedPod(), (p) => delete container(p, 'istio-proxy').restartPolicy)],
  ['no status annotation', edit(injectedPod({ native: false }), (p) => delete p.metadata?.annotations?.['sidecar.istio.io/status'])],
  ['proxy as root', edit(injectedPod(), (p) => (container(p, 'istio-proxy').securityContext = { runAsUser: 0 }))],
  ['pod-level runAsUser', edit(injectedPod(), (p) => {
    delete container(p, 'istio-proxy').securityContext;
    p.spec!.securityContext = { runAsUser: 2000 };
  })],
  ['TPROXY in proxy env only', edit(injectedPod(), (p) => (container(p, 'istio-proxy').env!.find((e) => e.name === 'ISTIO_META_INTERCEPTION_MODE')!.value = 'TPROXY'))],
  ['interception mode from valueFrom (not literal)', edit(injectedPod(), (p) => (container(p, 'istio-proxy').env!.find((e) => e.name === 'ISTIO_META_INTERCEPTION_MODE')!.valueFrom = { fieldRef: { fieldPath: 'metadata.annotations' } }))],
  ['istio-iptables settings from env', edit(injectedPod(), (p) => {
    const init = container(p, 'istio-init');
    const args = init.args!;
    args.splice(args.indexOf('-z'), 2);
    init.env = [{ name: 'INBOUND_CAPTURE_PORT', value: '15016' }, { name: 'ISTIO_LOCAL_EXCLUDE_PORTS', value: '9000' }, { name: 'ENVOY_PORT', valueFrom: { fieldRef: { fieldPath: 'x' } } }, { name: 'UNRELATED', value: 'x' }];
  })],
  ['istio-iptables in command', edit(injectedPod(), (p) => {
    const init = container(p, 'istio-init');
    init.command = ['istio-iptables'];
    init.args = init.args!.slice(1);
  })],
  ['no istio-init', edit(injectedPod(), (p) => (p.spec!.initContainers = p.spec!.initContainers!.filter((c) => c.name !== 'istio-init')))],
  ['host network', hostNetworkPod()],
  ['plain', plainPod()],
  ['ambient', edit(plainPod(), (p) => (p.metadata!.annotations = { 'ambient.istio.io/redirection': 'enabled' }))],
  ['pending', edit(injectedPod(), (p) => (p.status!.phase = 'Pending'))],
  ['no status', edit(injectedPod(), (p) => delete p.status)],
  ['terminating', edit(injectedPod(), (p) => (p.metadata!.deletionTimestamp = new Date('2025-01-01T00:00:00Z')))],
  ['dual stack', edit(injectedPod(), (p) => (p.status!.podIPs = [{ ip: '10.244.1.7' }, { ip: 'fd00:10:244:1::7' }]))],
  ['podIP only', edit(injectedPod(), (p) => delete p.status!.podIPs)],
  ['unscheduled', edit(injectedPod(), (p) => delete p.spec!.nodeName)],
  ['other namespace', edit(injectedPod(), (p) => (p.metadata!.namespace = 'shop'))],
  ['fake podFixture', podFixture({ name: 'a-1', node: 'n', ip: '10.0.0.1' }) as unknown as V1Pod],
  ['fake podFixture without sidecar', podFixture({ name: 'b-1', node: 'n', ip: '10.0.0.2', sidecar: false }) as unknown as V1Pod],
  ['realistic (managedFields)', realisticPodFixture({ name: 'hello-5d7b9c6f4-x2x7q', node: 'worker-1', ip: '10.244.1.7' }) as unknown as V1Pod],
];

/** The pod as the apiserver sends it: JSON (dates as strings). */
const wire = (p: V1Pod): string => JSON.stringify(p);
const fromList = (p: V1Pod): V1Pod | undefined => projectPod(JSON.parse(selectJson(Buffer.from(wire(p)), POD_SELECTION).toString('utf8')));
const fromWatch = (p: V1Pod): V1Pod | undefined => projectPod(JSON.parse(wire(p)));

describe('pod projection', () => {
  it.each(PODS)('%s: classifies as the full pod, from a list page and from a watch event', (_name, pod) => {
    const full = JSON.parse(wire(pod)) as V1Pod;
    const listed = fromList(pod);
    const watched = fromWatch(pod);
    expect(listed).toBeDefined();
    expect(listed).toEqual(watched);
    expect(classifyPod(listed!)).toEqual(classifyPod(full));
    expect(captureProblem(listed!)).toEqual(captureProblem(full));
  });

  it('keeps identity, dates as Date, and drops managedFields, owner references, volumes, statuses and unread env', () => {
    const pod = realisticPodFixture({ name: 'hello-5d7b9c6f4-x2x7q', namespace: 'shop', node: 'worker-1', ip: '10.244.1.7' });
    pod.metadata.uid = 'u-1';
    pod.metadata.resourceVersion = '42';
    pod.metadata.creationTimestamp = '2025-01-01T00:00:00Z';
    pod.metadata.annotations = { ...pod.metadata.annotations, 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify(pod) };
    const p = fromList(pod as unknown as V1Pod)!;
    expect(p.metadata).toMatchObject({ name: 'hello-5d7b9c6f4-x2x7q', namespace: 'shop', uid: 'u-1', resourceVersion: '42' });
    expect(p.metadata?.creationTimestamp).toEqual(new Date('2025-01-01T00:00:00Z'));
    expect(Object.keys(p.metadata ?? {}).sort()).toEqual(['annotations', 'creationTimestamp', 'labels', 'name', 'namespace', 'resourceVersion', 'uid']);
    expect(p.metadata?.annotations?.['kubectl.kubernetes.io/last-applied-configuration']).toBeUndefined();
    expect(p.metadata?.annotations?.['sidecar.istio.io/status']).toBe(pod.metadata.annotations['sidecar.istio.io/status']);
    expect(Object.keys(p.spec ?? {}).sort()).toEqual(['containers', 'initContainers', 'nodeName', 'securityContext']);
    expect(Object.keys(p.status ?? {}).sort()).toEqual(['hostIP', 'phase', 'podIP', 'podIPs']);
    const proxy = p.spec?.initContainers?.find((c) => c.name === 'istio-proxy');
    expect(Object.keys(proxy ?? {}).sort()).toEqual(['args', 'env', 'name', 'restartPolicy', 'securityContext']);
    expect(proxy?.env?.map((e) => e.name)).toEqual(['ISTIO_META_INTERCEPTION_MODE']);
    expect([...CLASSIFIED_ENV]).toContain('INBOUND_CAPTURE_PORT');
  });

  it('is a small fraction of the pod: under 15% of a realistic pod as JSON', () => {
    const pod = realisticPodFixture({ name: 'hello-5d7b9c6f4-x2x7q', node: 'worker-1', ip: '10.244.1.7' });
    const full = JSON.stringify(pod).length;
    const projected = JSON.stringify(fromList(pod as unknown as V1Pod)).length;
    expect(full).toBeGreaterThan(12_000);
    expect(projected / full).toBeLessThan(0.15);
  });

  it('an object without metadata.name is unusable', () => {
    expect(projectPod({ metadata: {} })).toBeUndefined();
    expect(projectPod('x')).toBeUndefined();
    expect(projectPod({ metadata: { name: 'a' } })).toEqual({ metadata: { name: 'a' }, spec: { containers: [] } });
  });
});

describe('node and namespace projections', () => {
  it('keep metadata (no managedFields) and a few small fields, the same from lists and watches', () => {
    const node = nodeFixture('node-a', '172.18.0.9', { 'meshlane.io/enabled': 'true' });
    node.metadata.managedFields = [{ manager: 'kubelet', fieldsV1: { 'f:status': {} } }];
    node.status!.images = [{ names: ['registry/x@sha256:abc'], sizeBytes: 1 }];
    const listed = projectNode(JSON.parse(selectJson(Buffer.from(JSON.stringify(node)), NODE_SELECTION).toString('utf8')));
    expect(listed).toEqual(projectNode(JSON.parse(JSON.stringify(node))));
    expect(listed).toEqual({
      metadata: { name: 'node-a', labels: node.metadata.labels, annotations: node.metadata.annotations },
      spec: { podCIDR: '10.244.0.0/24', podCIDRs: ['10.244.0.0/24'] },
      status: { addresses: [{ type: 'InternalIP', address: '172.18.0.9' }, { type: 'Hostname', address: 'node-a' }] },
    });
    const ns = namespaceFixture('shop', { 'meshlane.io/accelerate': 'false' });
    const nsListed = projectNamespace(JSON.parse(selectJson(Buffer.from(JSON.stringify(ns)), NAMESPACE_SELECTION).toString('utf8')));
    expect(nsListed).toEqual({ metadata: { name: 'shop', labels: { 'kubernetes.io/metadata.name': 'shop', 'meshlane.io/accelerate': 'false' } }, status: { phase: 'Active' } });
  });
});
