/**
 * The chart as `helm install` renders it with the default values: generated
 * TLS (helm's lookup/genCA/genSignedCert, stand-ins here), the pre-delete
 * uninstall hook, the worker's namespace. Every object validates against
 * the Kubernetes schemas and carries the usual labels; every pod is
 * Linux-only; Pod Security: the release's namespace can enforce
 * "restricted", the worker's needs (and gets) "privileged"; NOTES.txt says
 * how to verify and uninstall; nats-server accepts the configuration for
 * 1, 3 and 5 servers.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import yaml from 'js-yaml';
import type { IContainer, IPodSpec } from 'kubernetes-models/v1';
import { MODELS, type Obj } from './k8s-models.js';
import { GoStruct, loadChart, renderChart, type HelmOnly, type Value } from '../../deploy/render.js';
import { generateCredentials } from '../../deploy/credentials.js';
import { makeCerts } from './pki.js';


/** Stand-ins for what helm computes at install: PEM-shaped text, recorded calls. */
function installFunctions(existing?: Record<string, string>): { fns: Record<string, HelmOnly>; calls: string[] } {
  const calls: string[] = [];
  const pem = (what: string) => `-----BEGIN ${what}-----\nAAAA\n-----END ${what}-----\n`;
  const fns: Record<string, HelmOnly> = {
    lookup: (...a: Value[]) => {
      calls.push(`lookup ${a.join(' ')}`);
      const found: Record<string, Value> = existing ? { apiVersion: 'v1', kind: 'Secret', data: existing } : {};
      return found;
    },
    genCA: (cn: Value, days: Value) => {
      calls.push(`genCA ${cn} ${days}`);
      return new GoStruct('certificate', { Cert: pem('CERTIFICATE'), Key: pem('RSA PRIVATE KEY') });
    },
    genSignedCert: (cn: Value, ips: Value, names: Value, days: Value, ca: Value) => {
      calls.push(`genSignedCert ${cn} ${JSON.stringify(ips)} ${(names as string[]).join(',')} ${days} ${(ca as GoStruct).type}`);
      return new GoStruct('certificate', { Cert: pem('CERTIFICATE'), Key: pem('RSA PRIVATE KEY') });
    },
    buildCustomCert: (c: Value, k: Value) => {
      calls.push(`buildCustomCert ${c} ${k}`);
      return new GoStruct('certificate', { Cert: Buffer.from(c as string, 'base64').toString(), Key: Buffer.from(k as string, 'base64').toString() });
    },
  };
  return { fns, calls };
}

const parse = (rendered: Map<string, string>): Obj[] =>
  [...rendered]
    .filter(([f]) => f.endsWith('.yaml'))
    .flatMap(([, t]) => yaml.loadAll(t))
    .filter((d): d is Obj => d !== null && d !== undefined);

const install = installFunctions();
const rendered = renderChart({ helmOnly: install.fns });
const firstCalls = [...install.calls];
const objects = parse(rendered);
const get = <T = Obj>(kind: string, name: string, ns?: string): T => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name && (ns === undefined || x.metadata.namespace === ns));
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o as unknown as T;
};
interface Workload {
  spec: { template: { metadata: { labels: Record<string, string> }; spec: IPodSpec } };
}
const workloads = objects.filter((o) => ['Deployment', 'DaemonSet', 'StatefulSet', 'Job'].includes(o.kind));
const podOf = (o: Obj): IPodSpec => (o as unknown as Workload).spec.template.spec;
const containersOf = (p: IPodSpec): IContainer[] => [...(p.initContainers ?? []), ...p.containers];

/** Pod Security Standards, level "restricted" (v1.26+): what a pod breaks of it. */
function restrictedViolations(p: IPodSpec): string[] {
  const out: string[] = [];
  if (p.hostNetwork || p.hostPID || p.hostIPC) out.push('host namespaces');
  const allowedVolumes = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret'];
  for (const v of p.volumes ?? []) for (const k of Object.keys(v)) if (k !== 'name' && !allowedVolumes.includes(k)) out.push(`volume ${v.name}: ${k}`);
  const podSc = p.securityContext ?? {};
  if (podSc.runAsUser === 0) out.push('pod runAsUser 0');
  for (const c of containersOf(p)) {
    const sc = c.securityContext ?? {};
    if (sc.privileged) out.push(`${c.name}: privileged`);
    if (sc.allowPrivilegeEscalation !== false) out.push(`${c.name}: allowPrivilegeEscalation not false`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) out.push(`${c.name}: capabilities not dropping ALL`);
    for (const a of sc.capabilities?.add ?? []) if (a !== 'NET_BIND_SERVICE') out.push(`${c.name}: adds ${a}`);
    if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) out.push(`${c.name}: runAsNonRoot not true`);
    if ((sc.runAsUser ?? podSc.runAsUser) === 0) out.push(`${c.name}: runAsUser 0`);
    const sec = sc.seccompProfile?.type ?? podSc.seccompProfile?.type;
    if (sec !== 'RuntimeDefault' && sec !== 'Localhost') out.push(`${c.name}: seccomp ${sec}`);
    for (const port of c.ports ?? []) if (port.hostPort) out.push(`${c.name}: hostPort`);
  }
  return out;
}

const tmp = mkdtempSync(join(tmpdir(), 'mlt-chart-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('the chart, as helm install renders it', () => {
  it('validates against the Kubernetes schemas, every object, hooks included', () => {
    expect([...rendered.keys()].sort()).toEqual(['NOTES.txt', 'controlplane.yaml', 'nats.yaml', 'tls.yaml', 'uninstall-hook.yaml', 'worker.yaml']);
    for (const o of objects) {
      const make = MODELS[`${o.apiVersion}/${o.kind}`];
      expect(make, `${o.apiVersion}/${o.kind}`).toBeDefined();
      expect(() => make?.(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
    }
  });

  it('labels every object (and pod) with name, instance, version, managed-by, component, part-of and helm.sh/chart', () => {
    const chart = loadChart();
    const want = (o: { labels?: Record<string, string> }, id: string) => {
      const l = o.labels ?? {};
      expect(l['app.kubernetes.io/name'], id).toMatch(/^meshlane-(controlplane|worker|nats|worker-uninstall)$/);
      expect(l['app.kubernetes.io/instance'], id).toBe('meshlane');
      expect(l['app.kubernetes.io/version'], id).toBe(chart.AppVersion);
      expect(l['app.kubernetes.io/managed-by'], id).toBe('Helm');
      expect(['controlplane', 'worker', 'nats'], id).toContain(l['app.kubernetes.io/component']);
      expect(l['app.kubernetes.io/part-of'], id).toBe('meshlane');
      expect(l['helm.sh/chart'], id).toBe(`${chart.Name}-${chart.Version}`);
    };
    for (const o of objects) want(o.metadata, `${o.kind}/${o.metadata.name}`);
    for (const w of workloads) want((w as unknown as Workload).spec.template.metadata, `pods of ${w.metadata.name}`);
  });

  it('schedules every pod on Linux nodes only (the worker tolerates every taint)', () => {
    expect(workloads.map((w) => w.metadata.name).sort()).toEqual(['meshlane-controlplane', 'meshlane-nats', 'meshlane-worker', 'meshlane-worker-uninstall']);
    for (const w of workloads) expect(podOf(w).nodeSelector, w.metadata.name).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(podOf(get('DaemonSet', 'meshlane-worker')).tolerations).toEqual([{ operator: 'Exists' }]);
    expect(podOf(get('DaemonSet', 'meshlane-worker')).priorityClassName).toBe('system-node-critical');
    const noPrio = parse(renderChart({ helmOnly: install.fns, values: { worker: { priorityClassName: '' } } }));
    expect(podOf(noPrio.find((o) => o.kind === 'DaemonSet') as Obj)).not.toHaveProperty('priorityClassName');
    // A nodeSelector of the values is added, never replaces it.
    const extra = parse(renderChart({ helmOnly: install.fns, values: { nats: { nodeSelector: { 'node-role.kubernetes.io/bus': '' } } } }));
    expect(podOf(extra.find((o) => o.kind === 'StatefulSet') as Obj).nodeSelector).toEqual({ 'kubernetes.io/os': 'linux', 'node-role.kubernetes.io/bus': '' });
  });

  it('Pod Security: control plane, NATS and the hook meet "restricted"; the worker needs "privileged" and its namespace enforces exactly that', () => {
    for (const name of ['meshlane-controlplane', 'meshlane-nats', 'meshlane-worker-uninstall']) {
      const w = workloads.find((x) => x.metadata.name === name) as Obj;
      expect(restrictedViolations(podOf(w)), name).toEqual([]);
    }
    const worker = get('DaemonSet', 'meshlane-worker');
    expect(worker.metadata.namespace).toBe('meshlane-system');
    // Not even "baseline": capabilities beyond it and host paths.
    const v = restrictedViolations(podOf(worker));
    expect(v).toEqual(expect.arrayContaining(['volume bpffs: hostPath', 'volume cgroup: hostPath', 'worker: adds BPF', 'worker: adds NET_ADMIN']));
    const ns = get('Namespace', 'meshlane-system');
    expect(ns.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
    // Everything else of the worker is in its namespace too; the rest in the release's.
    for (const o of objects) {
      if (['ClusterRole', 'ClusterRoleBinding', 'Namespace'].includes(o.kind)) continue;
      const workerSide = o.metadata.name.startsWith('meshlane-worker') || (o.kind === 'ConfigMap' && o.metadata.namespace === 'meshlane-system');
      expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe(workerSide ? 'meshlane-system' : 'istio-system');
    }
    // The RBAC follows the worker; NATS lets the workers in from their namespace.
    const subjects = (o: Obj) => (o as unknown as { subjects: { namespace: string }[] }).subjects.map((s) => s.namespace);
    expect(subjects(get('ClusterRoleBinding', 'meshlane-worker'))).toEqual(['meshlane-system']);
    expect(subjects(get('RoleBinding', 'meshlane-worker'))).toEqual(['meshlane-system']);
    const np = get<{ spec: { ingress: { from: unknown[]; ports: { port: number }[] }[] } }>('NetworkPolicy', 'meshlane-nats');
    expect(np.spec.ingress.find((i) => i.ports[0]?.port === 4222)?.from).toContainEqual({ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'meshlane-system' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'meshlane-worker' } } });
    // The node credentials go where the worker's init step mounts them.
    const secrets = generateCredentials(['node-a']);
    expect(secrets.map((s) => `${s.metadata.namespace}/${s.metadata.name}`)).toEqual(['istio-system/meshlane-nats-accounts', 'istio-system/meshlane-nats-credentials', 'meshlane-system/meshlane-nats-node-credentials']);
    // The worker in the release's namespace: no Namespace object (it exists), and the chart says why when asked for one.
    const inIstio = parse(renderChart({ helmOnly: install.fns, values: { worker: { namespace: 'istio-system', createNamespace: false } } }));
    expect(inIstio.filter((o) => o.kind === 'Namespace')).toEqual([]);
    expect(inIstio.filter((o) => o.kind === 'ConfigMap' && o.metadata.name === 'meshlane-nats-ca')).toHaveLength(1);
    expect(() => renderChart({ helmOnly: install.fns, values: { worker: { namespace: 'istio-system' } } })).toThrow(/templates\/worker\.yaml:\d+: fail: worker\.createNamespace: the worker's namespace is the release's/);
  });

  it('generates the TLS material on a first install: a CA and a server certificate naming the Service and the routes, kept on uninstall; the CA alone to both namespaces', () => {
    expect(firstCalls).toEqual([
      'lookup v1 Secret istio-system meshlane-nats-tls',
      'genCA meshlane-nats-ca 3650',
      'genSignedCert meshlane-nats null meshlane-nats,meshlane-nats.istio-system,meshlane-nats.istio-system.svc,meshlane-nats.istio-system.svc.cluster.local,*.meshlane-nats-headless.istio-system.svc 365 certificate',
    ]);
    const s = get<Obj & { type: string; data: Record<string, string> }>('Secret', 'meshlane-nats-tls');
    expect(s.type).toBe('kubernetes.io/tls');
    expect(s.metadata.annotations?.['helm.sh/resource-policy']).toBe('keep');
    expect(Object.keys(s.data).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
    const caPem = Buffer.from(s.data['ca.crt'] ?? '', 'base64').toString();
    expect(caPem).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
    for (const ns of ['istio-system', 'meshlane-system']) expect(get<{ data: Record<string, string> }>('ConfigMap', 'meshlane-nats-ca', ns).data).toEqual({ 'ca.crt': caPem });
    // NATS mounts the server's three files, never ca.key; nobody else mounts the Secret.
    const vol = podOf(get('StatefulSet', 'meshlane-nats')).volumes?.find((x) => x.name === 'tls');
    expect(vol?.secret?.items?.map((i) => i.key)).toEqual(['tls.crt', 'tls.key', 'ca.crt']);
    for (const w of workloads.filter((x) => x.metadata.name !== 'meshlane-nats')) expect(JSON.stringify(w)).not.toContain('meshlane-nats-tls');
  });

  it('on upgrade, keeps the CA it finds and re-issues the server certificate from it', () => {
    const old = { 'ca.crt': Buffer.from('OLD CA\n').toString('base64'), 'ca.key': Buffer.from('OLD KEY\n').toString('base64'), 'tls.crt': 'eA==', 'tls.key': 'eA==' };
    const up = installFunctions(old);
    const objs = parse(renderChart({ helmOnly: up.fns }));
    expect(up.calls.map((c) => c.split(' ')[0])).toEqual(['lookup', 'buildCustomCert', 'genSignedCert']);
    expect(up.calls[1]).toBe(`buildCustomCert ${old['ca.crt']} ${old['ca.key']}`);
    const s = objs.find((o) => o.kind === 'Secret') as unknown as { data: Record<string, string> };
    expect(s.data['ca.crt']).toBe(old['ca.crt']);
    expect(s.data['ca.key']).toBe(old['ca.key']);
    // A Secret without ca.key (made by hand, or cert-manager's) is not a CA it can sign with: a new one.
    const foreign = installFunctions({ 'ca.crt': old['ca.crt'], 'tls.crt': 'eA==', 'tls.key': 'eA==' });
    renderChart({ helmOnly: foreign.fns });
    expect(foreign.calls.map((c) => c.split(' ')[0])).toEqual(['lookup', 'genCA', 'genSignedCert']);
    // source: existing makes nothing and looks nothing up; render.ts without stand-ins refuses generate.
    const ex = installFunctions();
    expect(parse(renderChart({ helmOnly: ex.fns, values: { nats: { tls: { source: 'existing' } } } })).filter((o) => o.kind === 'Secret')).toEqual([]);
    expect(ex.calls).toEqual([]);
    expect(() => renderChart()).toThrow(/templates\/tls\.yaml:\d+: lookup: its output is random or comes from the cluster; render\.ts refuses it/);
  });

  it('uninstalls in the order the worker needs: a pre-delete Job deletes the DaemonSet (foreground) and waits, before helm deletes the worker\'s RBAC', () => {
    const hook = objects.filter((o) => o.metadata.annotations?.['helm.sh/hook']);
    expect(hook.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(['Job/meshlane-worker-uninstall', 'Role/meshlane-worker-uninstall', 'RoleBinding/meshlane-worker-uninstall', 'ServiceAccount/meshlane-worker-uninstall']);
    for (const o of hook) {
      expect(o.metadata.annotations?.['helm.sh/hook'], o.kind).toBe('pre-delete');
      expect(o.metadata.annotations?.['helm.sh/hook-delete-policy'], o.kind).toBe('before-hook-creation,hook-succeeded');
      expect(o.metadata.namespace).toBe('meshlane-system');
    }
    // RBAC before the Job.
    const weight = (o: Obj) => Number(o.metadata.annotations?.['helm.sh/hook-weight']);
    for (const o of hook.filter((x) => x.kind !== 'Job')) expect(weight(o)).toBeLessThan(weight(hook.find((x) => x.kind === 'Job') as Obj));
    const job = get<Obj & { spec: { activeDeadlineSeconds: number; template: { spec: IPodSpec } } }>('Job', 'meshlane-worker-uninstall');
    const c = job.spec.template.spec.containers[0];
    expect([...(c?.command ?? []), ...(c?.args ?? [])]).toEqual(['kubectl', 'delete', 'daemonset/meshlane-worker', '--namespace=meshlane-system', '--cascade=foreground', '--ignore-not-found', '--wait', '--timeout=300s']);
    expect(job.spec.template.spec.serviceAccountName).toBe('meshlane-worker-uninstall');
    const role = get<{ rules: { resources: string[]; resourceNames?: string[]; verbs: string[] }[] }>('Role', 'meshlane-worker-uninstall');
    expect(role.rules).toEqual([
      { apiGroups: ['apps'], resources: ['daemonsets'], resourceNames: ['meshlane-worker'], verbs: ['get', 'delete'] },
      { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['list', 'watch'] },
    ]);
    // The worker detaches when its own DaemonSet is going: the flag names it, its Role lets it look.
    const w = podOf(get('DaemonSet', 'meshlane-worker')).containers.find((x) => x.name === 'worker');
    expect(w?.args?.[(w.args ?? []).indexOf('--daemonset') + 1]).toBe('$(MESHLANE_NAMESPACE)/meshlane-worker');
    expect(w?.env?.find((e) => e.name === 'MESHLANE_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.namespace');
    expect(podOf(get('DaemonSet', 'meshlane-worker')).terminationGracePeriodSeconds).toBeGreaterThanOrEqual(30);
    // Off: no hook objects at all (the manifests for kubectl are rendered so).
    expect(parse(renderChart({ helmOnly: install.fns, values: { worker: { uninstallHook: { enabled: false } } } })).filter((o) => o.metadata.annotations?.['helm.sh/hook'])).toEqual([]);
  });

  it('NOTES.txt: what was installed, the credentials step, how to verify (status, counters, explain) and uninstall', () => {
    const notes = rendered.get('NOTES.txt') ?? '';
    for (const s of [
      'Deployment meshlane-controlplane (2 replicas), namespace istio-system',
      'StatefulSet meshlane-nats (3 servers, JetStream R3)',
      'DaemonSet meshlane-worker (every Linux node), namespace meshlane-system',
      'CA and server certificate generated into Secret meshlane-nats-tls (kept on uninstall)',
      'deploy/credentials.ts --namespace istio-system --worker-namespace meshlane-system',
      'meshlane status --nats tls://meshlane-nats.istio-system.svc:4222 --nats-ca ca.crt',
      'meshlane-worker status --node NODE',
      '/metrics',
      'meshlane explain NAMESPACE/POD',
      'helm uninstall meshlane -n istio-system',
      'pre-delete Job first deletes the worker DaemonSet',
      'kubectl -n istio-system delete secret meshlane-nats-tls',
    ])
      expect(notes).toContain(s);
    const off = renderChart({ helmOnly: install.fns, values: { worker: { uninstallHook: { enabled: false } }, nats: { tls: { source: 'existing' } } } }).get('NOTES.txt') ?? '';
    expect(off).toContain('kubectl -n meshlane-system delete daemonset meshlane-worker --cascade=foreground --wait');
    expect(off).toContain('from Secret meshlane-nats-tls and ConfigMap meshlane-nats-ca (in both namespaces)');
  });

  it('gives nats-server a configuration it accepts with 1, 3 and 5 servers', () => {
    const certs = join(tmp, 'tls');
    makeCerts(certs, ['DNS:meshlane-nats']);
    const accounts = generateCredentials(['node-a'])[0]?.stringData['accounts.conf'] ?? '';
    for (const replicas of [1, 3, 5]) {
      const objs = parse(renderChart({ helmOnly: install.fns, values: { nats: { replicas } } }));
      const conf = (objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'meshlane-nats-config') as unknown as { data: Record<string, string> }).data['nats.conf'] ?? '';
      expect((conf.match(/"tls:\/\/meshlane-nats-\d\./g) ?? []).length).toBe(replicas === 1 ? 0 : replicas);
      const dir = join(tmp, `r${replicas}`);
      for (const d of ['config', 'accounts']) mkdirSync(join(dir, d), { recursive: true });
      writeFileSync(join(dir, 'config', 'nats.conf'), conf.replaceAll('/etc/nats/tls', certs).replaceAll('/data/jetstream', join(dir, 'js')).replaceAll('/var/run/nats', dir));
      writeFileSync(join(dir, 'accounts', 'accounts.conf'), accounts);
      const out = execFileSync('nats-server', ['-t', '-c', join(dir, 'config', 'nats.conf')], { env: { ...process.env, POD_NAME: 'meshlane-nats-0' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
      expect(out, `replicas ${replicas}`).not.toMatch(/error/i);
    }
  });
});
