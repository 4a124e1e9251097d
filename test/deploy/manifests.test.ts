/**
 * deploy/: the committed manifests are exactly what the chart renders, every
 * object validates against the Kubernetes schemas (kubernetes-models), the
 * security properties hold, and nats-server accepts (and serves) the NATS
 * configuration: TLS on every client connection and route, the accounts of
 * proto/src/accounts.ts included from the Secret deploy/credentials.ts makes.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import yaml from 'js-yaml';
import { connect as natsConnect } from '@nats-io/transport-node';
import { MAX_STATE_BYTES, WORKER_LIMITS, subjects } from '@meshlane/proto';
import type { IContainer, IPodSpec } from 'kubernetes-models/v1';
import { MODELS, type Obj, type Validatable } from './k8s-models.js';
import { MANIFEST_DIR, MANIFEST_VALUES, mergeValues, renderChart, renderManifests } from '../../deploy/render.js';
import { ACCOUNTS_KEY, ACCOUNTS_SECRET, NODE_CREDENTIALS_SECRET, existingPasswords, generateCredentials } from '../../deploy/credentials.js';
import { freePort } from '../harness/nats.js';
import { chartSans, makeCerts, plainText } from './pki.js';


/** The chart rendered as deploy/manifests/ is (MANIFEST_VALUES), with `values` over it. */
function renderWith(values: Record<string, unknown>): Map<string, string> {
  return renderChart({ values: mergeValues(MANIFEST_VALUES as never, values) });
}

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
  it('are exactly what the chart renders from values.yaml (and MANIFEST_VALUES)', () => {
    const rendered = renderManifests();
    expect([...rendered.keys()].sort()).toEqual(files);
    for (const [f, text] of rendered) expect(readFileSync(join(MANIFEST_DIR, f), 'utf8'), `deploy/manifests/${f} is stale: run node --import tsx deploy/render.ts`).toBe(text);
  });

  it('validate against the Kubernetes schemas, every one', () => {
    expect(objects.length).toBeGreaterThan(15);
    for (const o of objects) {
      const make = MODELS[`${o.apiVersion}/${o.kind}`];
      expect(make, `${o.apiVersion}/${o.kind} has no schema here`).toBeDefined();
      expect(() => make?.(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
      // The worker in a namespace of its own (Pod Security privileged), the rest in the release's.
      const ns = ['ClusterRole', 'ClusterRoleBinding', 'Namespace'].includes(o.kind) ? undefined : o.metadata.name.startsWith('meshlane-worker') || o.metadata.name === 'meshlane-nats-node-credentials' ? 'meshlane-system' : 'istio-system';
      expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe(ns);
    }
    // And the validator does reject what the API server would.
    const bad = structuredClone(get('DaemonSet', 'meshlane-worker')) as Obj & Workload;
    (bad.spec.template.spec.containers[0]!.securityContext as Record<string, unknown>).privileged = 'no';
    expect(() => make('apps/v1/DaemonSet', bad).validate()).toThrow(/privileged must be boolean/);
    for (const s of generateCredentials(['node-a', 'node-b.example'])) expect(() => make('v1/Secret', s as unknown as Obj).validate()).not.toThrow();
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
    // The kubepods cgroup and the pod capacity are found on the node, not assumed.
    const arg = (flag: string) => worker?.args?.[(worker.args ?? []).indexOf(flag) + 1];
    expect(arg('--cgroup')).toBe('auto');
    expect(arg('--cgroup-root')).toBe('/host/sys/fs/cgroup');
    expect(arg('--max-pods')).toBe('auto');
    expect(arg('--daemonset')).toBe('$(MESHLANE_NAMESPACE)/meshlane-worker');
    // The Secret with every node's password is mounted by the init step only.
    const allCreds = p.volumes?.find((v) => v.secret?.secretName === 'meshlane-nats-node-credentials');
    expect(allCreds).toBeDefined();
    expect(mounts.has(allCreds?.name ?? '')).toBe(false);
    expect(p.initContainers?.[0]?.volumeMounts?.map((m) => m.name)).toContain(allCreds?.name);
    expect(p.volumes?.find((v) => v.name === 'nats-credentials')?.emptyDir?.medium).toBe('Memory');
    // Its token can read its Node and its own DaemonSet, nothing else.
    expect(p.automountServiceAccountToken).toBe(true);
    const cr = get<{ rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }>('ClusterRole', 'meshlane-worker');
    expect(cr.rules).toEqual([{ apiGroups: [''], resources: ['nodes'], verbs: ['get'] }]);
    const r = get<{ rules: { apiGroups: string[]; resources: string[]; resourceNames: string[]; verbs: string[] }[] }>('Role', 'meshlane-worker');
    expect(r.rules).toEqual([{ apiGroups: ['apps'], resources: ['daemonsets'], resourceNames: ['meshlane-worker'], verbs: ['get'] }]);
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
    expect(c?.args).toEqual(['--istiod', 'istiod.istio-system.svc:15012', '--metrics-addr', ':9465', '--js-replicas', '3', '--nats-ca', '/etc/meshlane/nats-ca/ca.crt']);
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
    expect(objects.filter((o) => o.kind === 'ClusterRoleBinding').map((o) => (o as unknown as { roleRef: { name: string } }).roleRef.name).sort()).toEqual(['meshlane-controlplane', 'meshlane-worker']);
    expect(get<{ spec: { minAvailable: number } }>('PodDisruptionBudget', 'meshlane-controlplane').spec.minAvailable).toBe(1);
  });

  it('run NATS as a 3-node JetStream cluster with PVCs, routes and a PDB; the control plane replicates on all three', () => {
    const s = get<Workload>('StatefulSet', 'meshlane-nats');
    expect(s.spec.replicas).toBe(3);
    expect(s.spec.volumeClaimTemplates).toHaveLength(1);
    expect(s.spec.serviceName).toBe('meshlane-nats-headless');
    expect(get<{ spec: { clusterIP: string } }>('Service', 'meshlane-nats-headless').spec.clusterIP).toBe('None');
    expect(get<{ spec: { maxUnavailable: number } }>('PodDisruptionBudget', 'meshlane-nats').spec.maxUnavailable).toBe(1);
    const routes = (n: string) => [...(/\n {2}routes: \[\n([\s\S]*?)\n {2}\]/.exec(n)?.[1] ?? '').matchAll(/"([^"]*)"/g)].map((m) => m[1]);
    expect(routes(natsConf())).toEqual([0, 1, 2].map((i) => `tls://meshlane-nats-${i}.meshlane-nats-headless.istio-system.svc:6222`));
    // --js-replicas follows nats.replicas (and the control plane takes 1, 3 or 5 only).
    const args = pod('Deployment', 'meshlane-controlplane').containers[0]?.args ?? [];
    expect(Number(args[args.indexOf('--js-replicas') + 1])).toBe(s.spec.replicas);
    const r5 = renderWith({ nats: { replicas: 5 } });
    const five = parseAll(r5.get('controlplane.yaml') ?? '', 'controlplane.yaml').find((o) => o.kind === 'Deployment') as unknown as Workload;
    const a5 = five.spec.template.spec.containers[0]?.args ?? [];
    expect(a5[a5.indexOf('--js-replicas') + 1]).toBe('5');
    const nats5 = parseAll(r5.get('nats.yaml') ?? '', 'nats.yaml');
    expect((nats5.find((o) => o.kind === 'StatefulSet') as unknown as Workload).spec.replicas).toBe(5);
    const conf5 = (nats5.find((o) => o.kind === 'ConfigMap') as unknown as { data: Record<string, string> }).data['nats.conf'] ?? '';
    expect(routes(conf5)).toEqual([0, 1, 2, 3, 4].map((i) => `tls://meshlane-nats-${i}.meshlane-nats-headless.istio-system.svc:6222`));
    // One server: no cluster block at all (a route to itself only), R1.
    const r1 = renderWith({ nats: { replicas: 1 } });
    const conf1 = (parseAll(r1.get('nats.yaml') ?? '', 'nats.yaml').find((o) => o.kind === 'ConfigMap') as unknown as { data: Record<string, string> }).data['nats.conf'] ?? '';
    expect(conf1).not.toMatch(/cluster \{|routes/);
    expect(conf1).toMatch(/\njetstream \{[^}]*\}\ninclude "\.\.\/accounts\/accounts\.conf"\n$/);
    const a1 = (parseAll(r1.get('controlplane.yaml') ?? '', 'controlplane.yaml').find((o) => o.kind === 'Deployment') as unknown as Workload).spec.template.spec.containers[0]?.args ?? [];
    expect(a1[a1.indexOf('--js-replicas') + 1]).toBe('1');
    // Not 1, 3 or 5: refused by the schema, as helm would.
    expect(() => renderWith({ nats: { replicas: 2 } })).toThrow(/nats\.replicas: must be equal to one of the allowed values/);
  });

  it('leave storageClassName out of the NATS PVCs unless one is set (dynamic provisioning by the default class); "" only when set', () => {
    const claim = (text: string) => (parseAll(text, 'nats.yaml').find((o) => o.kind === 'StatefulSet') as unknown as { spec: { volumeClaimTemplates: { spec: Record<string, unknown> }[] } }).spec.volumeClaimTemplates[0]!.spec;
    const dflt = claim(readFileSync(join(MANIFEST_DIR, 'nats.yaml'), 'utf8'));
    expect(dflt).not.toHaveProperty('storageClassName');
    expect(dflt).toEqual({ accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Gi' } } });
    const set = claim(renderWith({ nats: { storage: { storageClassName: 'fast-ssd', size: '50Gi' } } }).get('nats.yaml') ?? '');
    expect(set).toEqual({ accessModes: ['ReadWriteOnce'], storageClassName: 'fast-ssd', resources: { requests: { storage: '50Gi' } } });
    // "" set explicitly: static provisioning only (a PV of no class), as Kubernetes reads it.
    const text = renderWith({ nats: { storage: { storageClassName: '' } } }).get('nats.yaml') ?? '';
    expect(claim(text)).toEqual({ accessModes: ['ReadWriteOnce'], storageClassName: '', resources: { requests: { storage: '10Gi' } } });
    const sts = make('apps/v1/StatefulSet', parseAll(text, 'nats.yaml').find((o) => o.kind === 'StatefulSet')!);
    expect(() => sts.validate()).not.toThrow();
    // The server's JetStream file store is the PVC's size.
    expect(natsConf()).toMatch(/\n {2}max_file_store: 10Gi\n/);
  });

  it('make TLS the only way onto the bus: every client and route, certificates from one Secret, watched by the reloader', () => {
    const conf = natsConf();
    // Clients: a top-level tls block (nats-server then requires TLS of every client).
    const cluster = /\ncluster \{\n[\s\S]*?\n\}\n/.exec(conf)?.[0] ?? '';
    expect(cluster).not.toBe('');
    expect(conf.replace(cluster, '\n')).toMatch(/\ntls \{\n  cert_file: "\/etc\/nats\/tls\/tls\.crt"\n  key_file: "\/etc\/nats\/tls\/tls\.key"\n  ca_file: "\/etc\/nats\/tls\/ca\.crt"\n/);
    // Routes: mutual TLS, the peer must be named by a route.
    expect(cluster).toMatch(/\n  tls \{\s+cert_file: "\/etc\/nats\/tls\/tls\.crt"\s+key_file: "\/etc\/nats\/tls\/tls\.key"\s+ca_file: "\/etc\/nats\/tls\/ca\.crt"/);
    expect(cluster).toMatch(/verify_cert_and_check_known_urls: true/);
    expect(cluster).toMatch(/no_advertise: true/);
    expect(conf).toMatch(new RegExp(`\\nmax_payload: ${MAX_STATE_BYTES}\\n`));
    expect(conf).toMatch(/\ninclude "\.\.\/accounts\/accounts\.conf"\n/);
    expect(conf).not.toMatch(/auth\.conf|authorization/);

    const p = pod('StatefulSet', 'meshlane-nats');
    const vol = (name: string) => p.volumes?.find((v) => v.name === name);
    expect(vol('tls')?.secret?.secretName).toBe('meshlane-nats-tls');
    // The server's three files only (a generated Secret also holds ca.key).
    expect(vol('tls')?.secret?.items).toEqual(['tls.crt', 'tls.key', 'ca.crt'].map((k) => ({ key: k, path: k })));
    expect(vol('accounts')?.secret?.secretName).toBe(ACCOUNTS_SECRET);
    for (const c of p.containers) {
      const m = new Map((c.volumeMounts ?? []).map((x) => [x.name, x.mountPath]));
      expect(m.get('tls'), c.name).toBe('/etc/nats/tls');
      expect(m.get('accounts'), c.name).toBe('/etc/nats/accounts');
    }
    const reloader = p.containers.find((c) => c.name === 'reloader');
    const watched = (reloader?.args ?? []).filter((_, i, a) => a[i - 1] === '-config');
    expect(watched.sort()).toEqual(['/etc/nats/accounts/accounts.conf', '/etc/nats/config/nats.conf', '/etc/nats/tls/ca.crt', '/etc/nats/tls/tls.crt', '/etc/nats/tls/tls.key']);
    // The server key is on the NATS pods only: nobody else mounts that Secret, not even for ca.crt.
    for (const w of workloads.filter((x) => x.metadata.name !== 'meshlane-nats')) expect(JSON.stringify(w)).not.toContain('meshlane-nats-tls');
  });

  it('document the certificate the chart needs: deploy/README.md names what chartSans names, for cert-manager and openssl', () => {
    const readme = readFileSync(join(MANIFEST_DIR, '..', 'README.md'), 'utf8');
    const certManager = /dnsNames:\n((?:\s+- .*\n)+)/.exec(readme)?.[1] ?? '';
    const names = certManager.split('\n').map((l) => l.trim().replace(/^- /, '').replace(/^"(.*)"$/, '$1')).filter(Boolean);
    expect(names.map((n) => `DNS:${n}`)).toEqual(chartSans('istio-system'));
    expect(readme).toMatch(/usages: \[server auth, client auth/);
    const openssl = /subjectAltName = (.*)\n/.exec(readme)?.[1] ?? '';
    expect(openssl.split(', ')).toEqual(chartSans('$ns'));
    expect(readme).toContain('extendedKeyUsage = serverAuth, clientAuth');
  });

  it('give every NATS client --nats-ca with the CA alone (a ConfigMap item ca.crt) and a tls:// URL', () => {
    const clients: Array<{ w: string; p: IPodSpec; c: IContainer }> = [];
    for (const w of workloads) {
      const p = (w as unknown as Workload).spec.template.spec;
      for (const c of allContainers(p)) if (c.args?.includes('--nats') || c.env?.some((e) => e.name === 'MESHLANE_NATS_URL')) clients.push({ w: w.metadata.name, p, c });
    }
    expect(clients.map((x) => `${x.w}/${x.c.name}`).sort()).toEqual(['meshlane-controlplane/controlplane', 'meshlane-worker/worker']);
    for (const { w, p, c } of clients) {
      const id = `${w}/${c.name}`;
      const args = c.args ?? [];
      const ca = args[args.indexOf('--nats-ca') + 1];
      expect(args.indexOf('--nats-ca'), id).toBeGreaterThanOrEqual(0);
      const url = args.includes('--nats') ? args[args.indexOf('--nats') + 1] : c.env?.find((e) => e.name === 'MESHLANE_NATS_URL')?.value;
      expect(url, id).toBe('tls://meshlane-nats.istio-system.svc:4222');
      const mount = (c.volumeMounts ?? []).find((m) => ca?.startsWith(`${m.mountPath}/`));
      expect(mount, id).toBeDefined();
      expect(mount?.readOnly, id).toBe(true);
      const v = p.volumes?.find((x) => x.name === mount?.name);
      expect(v?.configMap?.name, id).toBe('meshlane-nats-ca');
      expect(v?.configMap?.items, id).toEqual([{ key: 'ca.crt', path: 'ca.crt' }]);
      expect(`${mount?.mountPath}/ca.crt`).toBe(ca);
    }
  });

  it('make Secrets of the accounts: one per node, names with dots included, passwords kept across runs', () => {
    const first = generateCredentials(['node-a', 'node-b.example', 'node-a']);
    expect(first.map((x) => x.metadata.name)).toEqual([ACCOUNTS_SECRET, 'meshlane-nats-credentials', NODE_CREDENTIALS_SECRET]);
    const accounts = first[0]!.stringData[ACCOUNTS_KEY] ?? '';
    expect(accounts).toMatch(/^accounts \{\n/);
    for (const a of ['MESHLANE', 'AUDITOR', 'NODE_node-a', 'NODE_node-b_example']) expect(accounts).toContain(`"${a}": {`);
    expect(accounts).toContain(`"${subjects.directGet('KV_meshlane-snapshots', subjects.snapshot('node-b.example'))}"`);
    const nodes = first[2]!.stringData;
    expect(Object.keys(nodes)).toEqual(['node-node-a', 'node-node-b_example']);
    expect(Object.keys(first[1]!.stringData)).toEqual(['controlplane', 'auditor']);
    // Every password appears in accounts.conf exactly as the Secret hands it out.
    for (const pw of [...Object.values(nodes), ...Object.values(first[1]!.stringData)]) expect(accounts).toContain(`password: ${JSON.stringify(pw)}`);

    // A node joins: --keep with what `kubectl get secret ... -o yaml` prints (data, base64; a List).
    const asKubectl = {
      apiVersion: 'v1',
      kind: 'List',
      items: first.slice(1).map((x) => ({ apiVersion: 'v1', kind: 'Secret', metadata: x.metadata, data: Object.fromEntries(Object.entries(x.stringData).map(([k, v]) => [k, Buffer.from(v).toString('base64')])) })),
    };
    const keep = existingPasswords(yaml.dump(asKubectl));
    expect(keep.size).toBe(4);
    const second = generateCredentials(['node-a', 'node-b.example', 'node-c'], { keep });
    expect(second[2]!.stringData['node-node-a']).toBe(nodes['node-node-a']);
    expect(second[2]!.stringData['node-node-b_example']).toBe(nodes['node-node-b_example']);
    expect(second[2]!.stringData['node-node-c']).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(second[1]!.stringData).toEqual(first[1]!.stringData);
    expect(second[0]!.stringData[ACCOUNTS_KEY]).toContain('"NODE_node-c": {');
    // Also from the multi-document YAML credentials.ts itself prints.
    expect(existingPasswords(first.map((x) => yaml.dump(x)).join('---\n'))).toEqual(keep);
    // A name that is not a node name is refused (an underscore could clash with a dot's token).
    expect(() => generateCredentials(['node_b.example'])).toThrow(/DNS-1123/);
  });

  it('give nats-server a configuration it accepts, with every node\'s account included and the TLS files loaded', () => {
    const dir = layout(join(tmp, 'check'));
    const r = execFileSync('nats-server', ['-t', '-c', join(dir, 'config', 'nats.conf')], { env: { ...process.env, POD_NAME: 'meshlane-nats-0' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
    expect(r).not.toMatch(/error/i);
    // -t loads the certificate: without it the same configuration is refused.
    rmSync(join(dir, 'tls', 'tls.key'));
    expect(() => execFileSync('nats-server', ['-t', '-c', join(dir, 'config', 'nats.conf')], { env: { ...process.env, POD_NAME: 'meshlane-nats-0' }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 })).toThrow(/tls\.key|no such file/i);
  });

  it('serve that configuration: TLS only (a plain-text client is refused); the control plane and a node get in with ca.crt, each with the max_payload of its account', async () => {
    const ports = { client: await freePort(), cluster: await freePort(), http: await freePort() };
    // Named like the harness's servers, so a later run stops this one if this process dies by a signal (sweepStaleServers).
    const dir = layout(mkdtempSync(join(tmpdir(), `mlt-nats-${process.pid}-`)), ports);
    const srv = spawn('nats-server', ['-c', join(dir, 'config', 'nats.conf')], { env: { ...process.env, POD_NAME: 'meshlane-nats-0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    srv.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    srv.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    try {
      await until(() => /Server is ready/.test(log) || srv.exitCode !== null, 10_000, () => `nats-server not ready:\n${log}`);
      expect(srv.exitCode, log).toBeNull();
      expect(log).toMatch(/TLS required for client connections/);
      // After its INFO the server expects a TLS handshake; plain protocol ends the connection unanswered.
      const plain = await plainText(ports.client, 'node-node-a', creds.get('node-node-a') ?? '');
      expect(plain.info).toMatch(/"tls_required":true/);
      expect(plain.closed).toBe(true);
      expect(plain.after).not.toMatch(/PONG|\+OK/);
      await until(() => /TLS handshake error/.test(log), 5000, () => `no handshake error logged:\n${log}`);
      const caFile = join(dir, 'tls', 'ca.crt');
      const as = (user: string) => natsConnect({ servers: `tls://localhost:${ports.client}`, user, pass: creds.get(user) ?? '', tls: { caFile }, timeout: 5000, reconnect: false });
      // max_payload as each account sees it: the server's (a whole state) for the control plane, the node account's limit for a worker.
      for (const [user, maxPayload] of [['controlplane', MAX_STATE_BYTES], ['node-node-b_example', WORKER_LIMITS.maxPayload]] as const) {
        const nc = await as(user);
        try {
          expect(nc.info?.tls_required, user).toBe(true);
          // The account's limit comes in an INFO the server sends once the
          // user is authenticated, which may follow the connect by a moment.
          await nc.flush();
          await until(() => nc.info?.max_payload === maxPayload, 2000, () => `${user}: max_payload ${nc.info?.max_payload}, want ${maxPayload}`);
        } finally {
          await nc.close();
        }
      }
    } finally {
      await stop(srv);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The secrets of the nats-server runs below: two nodes, one with a dot in its name. */
const secrets = generateCredentials(['node-a', 'node-b.example']);
const creds = new Map(secrets.slice(1).flatMap((x) => Object.entries(x.stringData)));

function natsConf(): string {
  return get<{ data: Record<string, string> }>('ConfigMap', 'meshlane-nats-config').data['nats.conf'] ?? '';
}

/**
 * The NATS pod's files under `dir`, as its volumes lay them out
 * (/etc/nats/{config,accounts,tls}, /data, /var/run/nats): the rendered
 * nats.conf with only paths (and, to run it, ports) moved, the accounts.conf
 * of generateCredentials, and a certificate for the chart's names.
 */
function layout(dir: string, ports?: { client: number; cluster: number; http: number }): string {
  for (const d of ['config', 'accounts', 'tls', 'run']) mkdirSync(join(dir, d), { recursive: true });
  let conf = natsConf().replaceAll('/etc/nats/tls', join(dir, 'tls')).replaceAll('/data/jetstream', join(dir, 'js')).replaceAll('/var/run/nats', join(dir, 'run'));
  if (ports) conf = conf.replace('"0.0.0.0:4222"', `"127.0.0.1:${ports.client}"`).replace('"0.0.0.0:6222"', `"127.0.0.1:${ports.cluster}"`).replace('http_port: 8222', `http_port: ${ports.http}`);
  writeFileSync(join(dir, 'config', 'nats.conf'), conf);
  writeFileSync(join(dir, 'accounts', 'accounts.conf'), secrets[0]!.stringData[ACCOUNTS_KEY] ?? '');
  makeCerts(join(dir, 'tls'), [...chartSans('istio-system'), 'DNS:localhost']);
  return dir;
}

async function until(pred: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(what());
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
}

function make(key: string, o: Obj): Validatable {
  const m = MODELS[key];
  if (!m) throw new Error(key);
  return m(o);
}
