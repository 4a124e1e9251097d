/**
 * bus - faults the leader must repair, not be stopped by: a foreign message
 * on one node's next delta subject, a replaced snapshot, a state too big to
 * publish. The real control plane (informers against the fake apiserver,
 * model, reconciler, BusLeadership) and real followers with per-node NATS
 * accounts on a real nats-server. The node at fault is repaired, audited and
 * reported; every other node keeps converging; a restarted control plane
 * carries on where the bus stands.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { SNAPSHOT_BUCKET, busAccounts, parseControlPlaneStatus, renderAccounts, subjects, userName, type AuditEvent, type NodeState } from '@meshlane/proto';
import { NodeFollower } from '@meshlane/node-worker';
import { ControlPlane } from '../../controlplane/src/controlplane.js';
import { KubeSources, loadKubeConfig } from '../../controlplane/src/kube/sources.js';
import { BusLeadership } from '../../controlplane/src/bus/leadership.js';
import { DEFAULT_LIMITS, setupBus } from '../../controlplane/src/bus/setup.js';
import { FakeKubeApiServer, namespaceFixture, nodeFixture, podFixture } from '../fakes/kube-apiserver.js';
import { NatsServer } from '../harness/nats.js';
import { waitFor as waitUntil } from '../harness/wait.js';

const waitFor = (what: string, pred: () => boolean, ms = 10_000) => waitUntil(what, pred, ms);
const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });
const NODES = ['node-1', 'node-2', 'node-3'];
const password = (n: string) => `${n}-secret`;

class Applied {
  last: NodeState | undefined;
  apply(s: NodeState) {
    this.last = s;
    return { changed: {} };
  }
  pods(): string[] {
    return this.last?.endpoints.map((e) => e.pod) ?? [];
  }
}

describe('bus - the leader repairs what it cannot publish over, and keeps publishing for every other node', () => {
  let nats: NatsServer;
  let api: FakeKubeApiServer;
  let tmp: string;
  const conns: NatsConnection[] = [];
  const stops: Array<() => Promise<void>> = [];
  const applied = new Map<string, Applied>();
  const followers = new Map<string, NodeFollower>();
  let audit: AuditEvent[];
  let cpNc: NatsConnection;

  async function startControlPlane(): Promise<{ cp: ControlPlane; lead: BusLeadership }> {
    const nc = await nats.connect({ user: 'controlplane', pass: password('cp') });
    conns.push(nc);
    const kv = await setupBus(nc, DEFAULT_LIMITS);
    const kube = new KubeSources(loadKubeConfig(join(tmp, 'kubeconfig')), log, { inactivityTimeoutMs: 3000, backoffInitialMs: 50, backoffMaxMs: 300 });
    const cp = new ControlPlane({ kube, switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, logger: log });
    const lead = new BusLeadership(cp, { nc, kv, logger: log, source: 'controlplane/test', snapshotIntervalMs: 100, statusIntervalMs: 200 });
    cp.start();
    lead.start();
    stops.push(async () => {
      await lead.stop();
      await cp.stop();
    });
    await waitFor('leading', () => lead.leading());
    return { cp, lead };
  }

  beforeEach(async () => {
    nats = await NatsServer.start({
      // Small enough that a node with many pods cannot be published (the real default is 1 MiB).
      config: `max_payload: 16384\n${renderAccounts(
        busAccounts({
          controlplane: { user: 'controlplane', password: password('cp') },
          auditor: { user: 'auditor', password: password('auditor') },
          nodes: NODES.map((node) => ({ node, credential: { user: userName({ role: 'worker', node }), password: password(node) } })),
        }),
      )}`,
    });
    api = await FakeKubeApiServer.start({ bookmarkIntervalMs: 500 });
    api.create(namespaceFixture('default'));
    for (const n of NODES) api.create(nodeFixture(n));
    tmp = mkdtempSync(join(tmpdir(), 'mlt-repair-'));
    writeFileSync(join(tmp, 'kubeconfig'), api.kubeconfig());
    cpNc = await nats.connect({ user: 'controlplane', pass: password('cp') });
    conns.push(cpNc);
    audit = [];
    cpNc.subscribe(subjects.allAudit, {
      callback: (_e, m) => {
        audit.push(JSON.parse(m.string()) as AuditEvent);
      },
    });
    for (const node of NODES) {
      const nc = await nats.connect({ user: userName({ role: 'worker', node }), pass: password(node) });
      conns.push(nc);
      const a = new Applied();
      const f = new NodeFollower({ nc, node, reconciler: a, logger: log, pollMs: 200, maxBackoffMs: 400 });
      applied.set(node, a);
      followers.set(node, f);
      f.start();
    }
  });

  afterEach(async () => {
    for (const f of followers.values()) await f.stop();
    followers.clear();
    applied.clear();
    for (const s of stops.splice(0)) await s();
    for (const nc of conns.splice(0)) await nc.close().catch(() => {});
    await api?.close();
    await nats?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  let ip = 1;
  const addPod = (name: string, node: string) => api.create(podFixture({ name, namespace: 'default', node, ip: `10.80.0.${ip++}` }));

  it('a foreign message on a delta subject and a replaced snapshot: that node is repaired and audited, the others never stop', async () => {
    const { lead } = await startControlPlane();
    addPod('a1', 'node-1');
    addPod('b1', 'node-2');
    await waitFor('both nodes converged', () => applied.get('node-1')!.pods().includes('default/a1') && applied.get('node-2')!.pods().includes('default/b1'));
    await followers.get('node-1')!.caughtUp();
    const g1 = followers.get('node-1')!.state.generation;

    // Someone with the control plane's account (the only one that can) writes
    // garbage where node-1's next delta goes, and replaces its snapshot.
    await jetstream(cpNc).publish(subjects.delta('node-1', g1), '{"not":"a delta"}');
    const kv = await new Kvm(cpNc).open(SNAPSHOT_BUCKET);
    await kv.put(subjects.snapshotKey('node-1'), 'garbage');
    await waitFor('node-1 refused the foreign delta', () => followers.get('node-1')!.stats.rejected === 1);

    // Both nodes change: node-2 converges as if nothing happened, node-1 through the repair.
    addPod('a2', 'node-1');
    addPod('b2', 'node-2');
    await waitFor('node-2 keeps converging', () => applied.get('node-2')!.pods().includes('default/b2'));
    await waitFor('node-1 repaired', () => applied.get('node-1')!.pods().includes('default/a2'));
    expect(applied.get('node-1')!.pods()).toEqual(['default/a1', 'default/a2']);
    await waitFor('two repairs audited', () => audit.filter((e) => e.type === 'repaired' && e.node === 'node-1').length >= 2);
    const repairs = audit.filter((e) => e.type === 'repaired');
    expect(repairs.every((e) => e.node === 'node-1')).toBe(true);
    expect(repairs.map((e) => e.reason).join('\n')).toMatch(/not a valid delta/);
    expect(repairs.map((e) => e.reason).join('\n')).toMatch(/snapshot revision \d+ does not validate/);
    expect(audit.some((e) => e.type === 'rejected' && e.node === 'node-1' && e.source === 'worker/node-1')).toBe(true);
    expect(lead.health()).toMatchObject({ leading: true, refused: {} });
    expect(lead.health().fenced).toBeUndefined();

    // And it keeps going: deltas continue from the repaired generation.
    addPod('a3', 'node-1');
    await waitFor('node-1 follows deltas again', () => applied.get('node-1')!.pods().includes('default/a3'));

    // The heartbeat reports the repairs.
    const hb = await cpNc.request(subjects.directGet('MESHLANE_STATUS', subjects.controlplaneStatus), undefined, { timeout: 2000 });
    expect(parseControlPlaneStatus(JSON.parse(hb.string())).repairs).toBeGreaterThanOrEqual(1);
  });

  it('a restarted control plane reads past the foreign message and carries on', async () => {
    const first = await startControlPlane();
    addPod('a1', 'node-1');
    await waitFor('node-1 converged', () => applied.get('node-1')!.pods().includes('default/a1'));
    await followers.get('node-1')!.caughtUp();
    const g1 = followers.get('node-1')!.state.generation;
    await first.lead.stop();
    await first.cp.stop();
    await jetstream(cpNc).publish(subjects.delta('node-1', g1), 'not json at all');
    const second = await startControlPlane();
    addPod('a2', 'node-1');
    addPod('b1', 'node-2');
    await waitFor('both converge after the restart', () => applied.get('node-1')!.pods().includes('default/a2') && applied.get('node-2')!.pods().includes('default/b1'));
    expect(second.lead.health().fenced).toBeUndefined();
  });

  it('a state too big to publish is refused loudly and reported; the other nodes keep converging', async () => {
    // 60 pods with long names on node-3 before the control plane starts: its
    // first delta and its snapshot are both over the server's 16 KiB.
    for (let i = 0; i < 60; i++) addPod(`a-very-long-pod-name-for-a-realistic-deployment-${i}`, 'node-3');
    addPod('b1', 'node-2');
    const { lead } = await startControlPlane();
    await waitFor('node-2 converged', () => applied.get('node-2')!.pods().includes('default/b1'));
    await waitFor('node-3 refused', () => Object.keys(lead.health().refused).includes('node-3'));
    expect(lead.health().refused['node-3']).toMatch(/over the server's max_payload of 16384/);
    await waitFor('refusal audited', () => audit.some((e) => e.type === 'refused' && e.node === 'node-3'));
    addPod('b2', 'node-2');
    await waitFor('node-2 keeps converging', () => applied.get('node-2')!.pods().includes('default/b2'));
    // node-3's worker keeps what it had (nothing yet): nothing half-applied.
    expect(applied.get('node-3')!.pods()).toEqual([]);
    // Shrinking the node below the limit publishes it again.
    for (let i = 10; i < 60; i++) api.remove('Pod', 'default', `a-very-long-pod-name-for-a-realistic-deployment-${i}`);
    await waitFor('node-3 published again', () => applied.get('node-3')!.pods().length === 10, 15_000);
    expect(lead.health().refused).toEqual({});
  });
});
