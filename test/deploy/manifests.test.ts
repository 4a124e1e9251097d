/**
 * deploy/: the committed manifests are exactly what the chart renders, every
 * object validates against the Kubernetes schemas (kubernetes-models), the
 * security properties hold, and nats-server accepts the NATS configuration
 * with the per-node authorization of proto/src/permissions.ts.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import yaml from 'js-yaml';
import { ConfigMap, Secret, Service, ServiceAccount, type IContainer, type IPodSpec } from 'kubernetes-models/v1';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { MANIFEST_DIR, renderChart } from '../../deploy/render.js';
import { generateCredentials } from '../../deploy/credentials.js';

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [k: string]: unknown;
}

interface Validatable {
  validate(): void;
}
const MODELS: Record<string, (o: Obj) => Validatable> = {
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
};

function parseAll(text: string, file: string): Obj[] {
  return yaml.loadAll(text).filter((d): d is Obj => {
    if (d === null || d === undefined) return false;
    if (typeof d !== 'object' || !('kind' in d) || !('apiVersion' in d)) throw new Error(`${file}: a document without apiVersion/kind`);
    return true;
  });
}

const files = readdirSync(MANIFEST_DIR).filter((f) => f.endsWith('.yaml')).sort();
const objects: Obj[] = files.flatMap((f) => parseAll(readFileSync(join(MANIFEST_DIR, f), 'utf8'), f));

function get<T = Obj>(kind: string, name: string): T {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o as unknown as T;
}

interface Workload {
  spec: { replicas?: number; template: { spec: IPodSpec }; volumeClaimTemplates?: unknown[]; serviceName?: string };
}
function pod(kind: string, name: string): IPodSpec {
  return get<Workload>(kind, name).spec.template.spec;
}
const workloads = objects.filter((o) => ['Deployment', 'DaemonSet', 'StatefulSet'].includes(o.kind));
function allContainers(p: IPodSpec): IContainer[] {
  return [...(p.initContainers ?? []), ...p.containers];
}

const tmp = mkdtempSync(join(tmpdir(), 'mlt-deploy-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('deploy/ manifests', () => {
  it('are exactly what the chart renders from values.yaml', () => {
    const rendered = renderChart();
    expect([...rendered.keys()].sort()).toEqual(files);
    for (const [f, text] of rendered) expect(readFileSync(join(MANIFEST_DIR, f), 'utf8'), `deploy/manifests/${f} is stale: run node --import tsx deploy/render.ts`).toBe(text);
  });

  it('validate against the Kubernetes schemas, every one', () => {
    expect(objects.length).toBeGreaterThan(15);
    for (const o of objects) {
      const make = MODELS[`${o.apiVersion}/${o.kind}`];
      expect(make, `${o.apiVersion}/${o.kind} has no schema here`).toBeDefined();
      expect(() => make?.(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
      if (!['ClusterRole', 'ClusterRoleBinding'].includes(o.kind)) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('istio-system');
    }
    // And the validator does reject what the API server would.
    const bad = structuredClone(get('DaemonSet', 'meshlane-worker')) as Obj & Workload;
    (bad.spec.template.spec.containers[0]!.securityContext as Record<string, unknown>).privileged = 'no';
    expect(() => make('apps/v1/DaemonSet', bad).validate()).toThrow(/privileged must be boolean/);
    for (const s of generateCredentials(['node-a', 'node-b.example'])) expect(() => new Secret(s).validate()).not.toThrow();
  });

  it('run nothing privileged, escalate nothing, and drop every capability but the worker\'s four', () => {
    for (const w of workloads) {
      const p = (w as unknown as Workload).spec.template.spec;
      expect(p.hostNetwork ?? false, w.metadata.name).toBe(false);
      expect(p.hostPID ?? false).toBe(false);
      expect(p.hostIPC ?? false).toBe(false);
      for (const c of allContainers(p)) {
        const sc = c.securityContext;
        const id = `${w.metadata.name}/${c.name}`;
        expect(sc, id).toBeDefined();
        expect(sc?.privileged, id).toBe(false);
        expect(sc?.allowPrivilegeEscalation, id).toBe(false);
        expect(sc?.readOnlyRootFilesystem, id).toBe(true);
        expect(sc?.capabilities?.drop, id).toEqual(['ALL']);
        const add = sc?.capabilities?.add ?? [];
        if (w.metadata.name === 'meshlane-worker' && c.name === 'worker') expect([...add].sort(), id).toEqual(['BPF', 'NET_ADMIN', 'PERFMON', 'SYS_RESOURCE']);
        else expect(add, id).toEqual([]);
        // The API server allows Bidirectional propagation for privileged containers only.
        for (const m of c.volumeMounts ?? []) expect(m.mountPropagation ?? 'None', `${id} ${m.mountPath}`).not.toBe('Bidirectional');
      }
      for (const v of p.volumes ?? []) {
        if (v.hostPath) {
          expect(w.metadata.name, `hostPath ${v.hostPath.path}`).toBe('meshlane-worker');
          expect(['/sys/fs/bpf', '/sys/fs/cgroup']).toContain(v.hostPath.path);
        }
      }
    }
  });

  it('give the worker its node, bpffs, cgroup2 and only its own NATS credentials', () => {
    const p = pod('DaemonSet', 'meshlane-worker');
    const worker = p.containers.find((c) => c.name === 'worker');
    expect(worker).toBeDefined();
    expect(worker?.env?.find((e) => e.name === 'MESHLANE_NODE')?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName');
    const mounts = new Map((worker?.volumeMounts ?? []).map((m) => [m.name, m]));
    expect(mounts.get('bpffs')?.mountPath).toBe('/sys/fs/bpf');
    expect(mounts.get('cgroup')?.mountPath).toBe('/host/sys/fs/cgroup');
    expect(worker?.args).toContain('/host/sys/fs/cgroup/kubepods.slice');
    // The Secret with every node's password is mounted by the init step only.
    const allCreds = p.volumes?.find((v) => v.secret?.secretName === 'meshlane-nats-node-credentials');
    expect(allCreds).toBeDefined();
    expect(mounts.has(allCreds?.name ?? '')).toBe(false);
    expect(p.initContainers?.[0]?.volumeMounts?.map((m) => m.name)).toContain(allCreds?.name);
    expect(p.volumes?.find((v) => v.name === 'nats-credentials')?.emptyDir?.medium).toBe('Memory');
    expect(p.automountServiceAccountToken).toBe(false);
    // Nobody else sees the node credentials or the control plane's.
    for (const w of workloads.filter((x) => x.metadata.name !== 'meshlane-worker')) {
      const ps = (w as unknown as Workload).spec.template.spec;
      expect(JSON.stringify(ps)).not.toContain('meshlane-nats-node-credentials');
    }
    expect(JSON.stringify(p)).not.toMatch(/"meshlane-nats-credentials"/);
  });

  it('run the control plane as specified: 2 replicas, Lease RBAC, read-only ClusterRole, istiod token', () => {
    const d = get<Workload>('Deployment', 'meshlane-controlplane');
    expect(d.spec.replicas).toBe(2);
    const p = d.spec.template.spec;
    expect(p.securityContext?.runAsNonRoot).toBe(true);
    const c = p.containers[0];
    expect(c?.args).toEqual(['--istiod', 'istiod.istio-system.svc:15012', '--metrics-addr', ':9465']);
    expect(c?.env?.find((e) => e.name === 'POD_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
    expect(c?.env?.find((e) => e.name === 'POD_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.namespace');
    expect(c?.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(c?.readinessProbe?.httpGet?.path).toBe('/readyz');
    expect(c?.ports?.find((x) => x.name === 'http-metrics')?.containerPort).toBe(9465);
    expect(c?.resources?.requests).toBeDefined();
    expect(c?.resources?.limits?.memory).toBeDefined();
    const tokenVol = p.volumes?.find((v) => v.projected);
    const src = tokenVol?.projected?.sources?.[0]?.serviceAccountToken;
    expect(src?.audience).toBe('istio-ca');
    const tokenMount = c?.volumeMounts?.find((m) => m.name === tokenVol?.name);
    expect(`${tokenMount?.mountPath}/${src?.path}`).toBe('/var/run/secrets/tokens/istio-token');
    const caVol = p.volumes?.find((v) => v.configMap?.name === 'istio-ca-root-cert');
    expect(c?.volumeMounts?.find((m) => m.name === caVol?.name)?.mountPath).toBe('/var/run/secrets/istio');

    const cr = get<{ rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }>('ClusterRole', 'meshlane-controlplane');
    expect(cr.rules).toEqual([{ apiGroups: [''], resources: ['pods', 'nodes', 'namespaces'], verbs: ['get', 'list', 'watch'] }]);
    for (const r of objects.filter((o) => o.kind === 'ClusterRole')) {
      for (const rule of (r as unknown as { rules: { verbs: string[]; resources: string[] }[] }).rules) {
        expect(rule.verbs.every((v) => ['get', 'list', 'watch'].includes(v)), r.metadata.name).toBe(true);
        expect(rule.resources).not.toContain('secrets');
      }
    }
    const role = get<{ metadata: { namespace: string }; rules: { apiGroups: string[]; resources: string[] }[] }>('Role', 'meshlane-controlplane-leader-election');
    expect(role.metadata.namespace).toBe('istio-system');
    expect(role.rules.map((r) => [r.apiGroups, r.resources])).toEqual([[['coordination.k8s.io'], ['leases']]]);
    expect(objects.filter((o) => o.kind === 'ClusterRoleBinding').map((o) => (o as unknown as { roleRef: { name: string } }).roleRef.name)).toEqual(['meshlane-controlplane']);
    expect(get<{ spec: { minAvailable: number } }>('PodDisruptionBudget', 'meshlane-controlplane').spec.minAvailable).toBe(1);
  });

  it('run NATS as a 3-node JetStream cluster with PVCs, routes and a PDB', () => {
    const s = get<Workload>('StatefulSet', 'meshlane-nats');
    expect(s.spec.replicas).toBe(3);
    expect(s.spec.volumeClaimTemplates).toHaveLength(1);
    expect(s.spec.serviceName).toBe('meshlane-nats-headless');
    expect(get<{ spec: { clusterIP: string } }>('Service', 'meshlane-nats-headless').spec.clusterIP).toBe('None');
    expect(get<{ spec: { maxUnavailable: number } }>('PodDisruptionBudget', 'meshlane-nats').spec.maxUnavailable).toBe(1);
    const conf = get<{ data: Record<string, string> }>('ConfigMap', 'meshlane-nats-config').data['nats.conf'] ?? '';
    const routes = /routes: (\[.*\])/.exec(conf)?.[1];
    expect(JSON.parse(routes ?? '[]')).toEqual([0, 1, 2].map((i) => `nats://meshlane-nats-${i}.meshlane-nats-headless.istio-system.svc:6222`));
  });

  it('give nats-server a configuration it accepts, with every node\'s authorization included', () => {
    const conf = get<{ data: Record<string, string> }>('ConfigMap', 'meshlane-nats-config').data['nats.conf'] ?? '';
    const secrets = generateCredentials(['node-a', 'node-b.example']);
    const auth = secrets.find((x) => x.metadata.name === 'meshlane-nats-auth')?.stringData['auth.conf'] ?? '';
    expect(auth).toContain('"$JS.API.DIRECT.GET.KV_meshlane-snapshots.$KV.meshlane-snapshots.node-b_example"');
    mkdirSync(join(tmp, 'config'));
    mkdirSync(join(tmp, 'auth'));
    // Same layout as the pod (/etc/nats/config and /etc/nats/auth), paths moved under tmp.
    writeFileSync(join(tmp, 'config', 'nats.conf'), conf.replaceAll('/data/jetstream', join(tmp, 'js')).replaceAll('/var/run/nats', tmp));
    writeFileSync(join(tmp, 'auth', 'auth.conf'), auth);
    const r = execFileSync('nats-server', ['-t', '-c', join(tmp, 'config', 'nats.conf')], { env: { ...process.env, POD_NAME: 'meshlane-nats-0' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(r).not.toMatch(/error/i);
    // The node credentials Secret holds node users only, the other one the control plane and auditor.
    expect(Object.keys(secrets.find((x) => x.metadata.name === 'meshlane-nats-node-credentials')?.stringData ?? {})).toEqual(['node-node-a', 'node-node-b_example']);
  });
});

function make(key: string, o: Obj): Validatable {
  const m = MODELS[key];
  if (!m) throw new Error(key);
  return m(o);
}
