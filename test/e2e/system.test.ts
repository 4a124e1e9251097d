/**
 * e2e - the whole system on one machine: the fake kube-apiserver, a real
 * nats-server with JetStream, two control plane replicas electing a leader
 * on a Lease, and real workers with real BPF on two simulated nodes whose
 * pods are network namespaces. A pod event at the apiserver must end as a
 * map entry on the right node and as accelerated bytes; killing a worker,
 * the NATS server or the leader must converge again with nothing lost.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, type Pod } from '../harness/cluster.js';
import { measure } from '../harness/counters.js';
import { ControlPlaneProc } from '../harness/controlplane.js';
import { NatsServer } from '../harness/nats.js';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, podFixture } from '../fakes/kube-apiserver.js';
import { busAccounts, renderAccounts, userName } from '@meshlane/proto';
import { waitFor as waitUntil } from '../harness/wait.js';

const waitFor = (what: string, pred: () => boolean, ms = 15000) => waitUntil(what, pred, ms);


describe('e2e - apiserver to BPF maps through NATS', () => {
  let c: TestCluster;
  let nats: NatsServer;
  let api: FakeKubeApiServer;
  let tmp: string;
  const cps: ControlPlaneProc[] = [];

  const podObject = (p: Pod) =>
    podFixture({ name: p.name, uid: p.uid, namespace: 'default', node: c.nodeName(p.spec.node), ip: p.ip4, annotations: { 'meshlane.io/app-sockets': 'true' } });

  beforeAll(async () => {
    c = new TestCluster(['n1', 'n2']);
    // One NATS account per node, as deployed: each worker can only read
    // its own node's snapshot and deltas.
    const accounts = busAccounts({
      controlplane: { user: 'controlplane', password: 'cp-secret' },
      auditor: { user: 'auditor', password: 'audit-secret' },
      nodes: ['n1', 'n2'].map((n) => ({ node: c.nodeName(n), credential: { user: userName({ role: 'worker', node: c.nodeName(n) }), password: `${n}-secret` } })),
    });
    nats = await NatsServer.start({ config: renderAccounts(accounts) });
    api = await FakeKubeApiServer.start({ bookmarkIntervalMs: 500 });
    api.create(namespaceFixture('default'));
    api.create(nodeFixture(c.nodeName('n1')));
    api.create(nodeFixture(c.nodeName('n2')));
    tmp = mkdtempSync(join(tmpdir(), 'mlt-e2e-'));
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());
    for (const id of ['cp-1', 'cp-2']) {
      const cp = new ControlPlaneProc(id, ['--kubeconfig', join(tmp, 'kubeconfig'), '--nats', nats.url, '--nats-user', 'controlplane', '--nats-password', 'cp-secret', '--lease-duration', '2']);
      cps.push(cp);
      cp.start();
    }
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo' } });
    await c.addPod({ name: 'e', node: 'n2', index: 5, meshed: true, servers: { 8080: 'echo' } });
    for (const n of ['n1', 'n2']) await c.startBusWorker(n, nats.url, { user: userName({ role: 'worker', node: c.nodeName(n) }), pass: `${n}-secret` });
    await waitFor('a leader', () => cps.some((p) => p.leading()));
  });

  afterAll(async () => {
    for (const cp of cps) await cp.kill();
    await c?.cleanup();
    await api?.close();
    await nats?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('pod events at the apiserver become map entries on the right node, and accelerated bytes', async () => {
    for (const name of ['a', 'b', 'e']) api.create(podObject(c.pod(name)));
    const w1 = c.worker('n1');
    const w2 = c.worker('n2');
    await waitFor('a and b in node n1 maps', () => w1.endpointIps().includes('10.77.0.1') && w1.endpointIps().includes('10.77.0.2'));
    await waitFor('e in node n2 maps', () => w2.endpointIps().includes('10.77.0.5'));
    expect(w1.endpointIps()).not.toContain('10.77.0.5');
    expect(w2.endpointIps()).not.toContain('10.77.0.1');
    const agent = await c.pod('a').agent();
    try {
      const { result, d } = await measure(w1, () => agent.xfer({ host: c.pod('b').ip4, port: 8080, bytes: 1 << 20, halfClose: false }));
      expect(result.recvSha).toBe(result.sentSha);
      expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([1, 1, 1]);
    } finally {
      agent.close();
    }
  });

  it('a worker killed and restarted converges, with events made while it was down', async () => {
    const w1 = c.worker('n1');
    await w1.stop('SIGKILL');
    api.remove('Pod', 'default', 'b');
    await new Promise((r) => setTimeout(r, 300));
    await w1.start();
    await waitFor('b gone from n1 maps', () => !w1.endpointIps().includes('10.77.0.2'));
    api.create(podObject(c.pod('b')));
    await waitFor('b back in n1 maps', () => w1.endpointIps().includes('10.77.0.2'));
  });

  it('a NATS server restart: workers keep their maps, then catch up', async () => {
    const w1 = c.worker('n1');
    await nats.restart();
    expect(w1.endpointIps()).toContain('10.77.0.2'); // fail-static
    await c.addPod({ name: 'f', node: 'n1', index: 6, meshed: true });
    api.create(podObject(c.pod('f')));
    await waitFor('f in n1 maps after the NATS restart', () => w1.endpointIps().includes('10.77.0.6'), 30000);
  });

  it('the leader killed: the standby takes over and publishes, nothing lost or doubled', async () => {
    const leader = cps.find((p) => p.leading())!;
    const standby = cps.find((p) => p !== leader)!;
    await leader.kill();
    await waitFor('the standby leads', () => standby.leading(), 20000);
    const w1 = c.worker('n1');
    await c.addPod({ name: 'g', node: 'n1', index: 7, meshed: true });
    api.create(podObject(c.pod('g')));
    await waitFor('g in n1 maps after failover', () => w1.endpointIps().includes('10.77.0.7'), 20000).catch((err: Error) => {
      throw new Error(`${err.message}\nstandby:\n${standby.log.split('\n').filter((l) => !/lease attempt|"level":20/.test(l)).join('\n').slice(-5000)}`);
    });
    // The worker never had to resync for a gap, nor saw a duplicate it could not skip.
    expect(w1.log).not.toMatch(/gap in deltas/);
    expect(w1.log).not.toMatch(/delta rejected/);
  });
});
