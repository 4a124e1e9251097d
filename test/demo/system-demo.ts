/**
 * The local demo (the README's first command): the whole system on one
 * machine.
 *
 *  - a real nats-server with JetStream and per-node credentials;
 *  - the control plane in its local mode, fed by a folder of Pod, Node and
 *    Namespace manifests that it watches (istiod's sync gate off);
 *  - two simulated nodes of the datapath harness (cgroup subtrees), pods as
 *    network namespaces with istio-iptables rules and a uid-1337 sidecar;
 *  - one worker per node, with the real BPF programs, following its node on
 *    the bus.
 *
 * It then edits a manifest to opt a pod out and back in, and prints what
 * flowed on the bus, which pairs were accelerated, the counters, and plain
 * vs accelerated latency side by side. Everything it created is removed at
 * the end, also on failure or Ctrl-C.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { busAccounts, parseJson, renderAccounts, subjects, userName } from '@meshlane/proto';
import { readSnapshot } from '@meshlane/proto/bus';
import { TOOLS, TestCluster, type Pod } from '../harness/cluster.js';
import { ControlPlaneProc } from '../harness/controlplane.js';
import { NatsServer } from '../harness/nats.js';
import { namespaceFixture, nodeFixture, podFixture } from '../fakes/kube-apiserver.js';

const say = (s = '') => process.stdout.write(`${s}\n`);

async function waitFor(what: string, pred: () => boolean, ms = 20000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function rr(pod: Pod, host: string, size: number): Promise<{ p50_us: number; p99_us: number }> {
  const r = await pod.run([join(TOOLS, 'pingpong'), '--json', '--mode', 'rr', '--size', String(size), '--count', '3000', '--warmup', '300', '--host', host, '--port', '8080']);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as { p50_us: number; p99_us: number };
}

async function main(): Promise<void> {
  const c = new TestCluster(['node-1', 'node-2']);
  const dir = mkdtempSync(join(tmpdir(), 'mlt-demo-cluster-'));
  let nats: NatsServer | undefined;
  let cp: ControlPlaneProc | undefined;
  let audit: NatsConnection | undefined;
  const cleanup = async () => {
    await cp?.kill('SIGTERM');
    await audit?.close();
    await c.cleanup();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    say('meshlane demo: control plane + NATS JetStream + 2 simulated nodes with real BPF\n');
    const secret = (n: string) => `demo-${n}-${process.pid}`;
    const nodes = ['node-1', 'node-2'].map((n) => c.nodeName(n));
    nats = await NatsServer.start({
      config: renderAccounts(
        busAccounts({
          controlplane: { user: 'controlplane', password: secret('cp') },
          auditor: { user: 'auditor', password: secret('auditor') },
          nodes: nodes.map((node) => ({ node, credential: { user: userName({ role: 'worker', node }), password: secret(node) } })),
        }),
      ),
    });
    say(`  nats-server ${nats.url}: JetStream, one NATS account per node (a node's worker reads only its own state)`);

    const productpage = await c.addPod({ name: 'productpage', node: 'node-1', index: 1, meshed: true });
    const reviews = await c.addPod({ name: 'reviews', node: 'node-1', index: 2, meshed: true, servers: { 8080: 'echo' } });
    const ratings = await c.addPod({ name: 'ratings', node: 'node-2', index: 3, meshed: true, servers: { 8080: 'echo' } });
    const legacy = await c.addPod({ name: 'legacy', node: 'node-1', index: 4, meshed: false, servers: { 8080: 'echo' } });

    // The cluster the control plane sees: manifests in a folder it watches.
    const manifest = (p: Pod) => podFixture({ name: p.name, uid: p.uid, node: c.nodeName(p.spec.node), ip: p.ip4, sidecar: p.spec.meshed, annotations: { 'meshlane.io/app-sockets': 'true' } });
    const writeCluster = (optOut: boolean) =>
      writeFileSync(
        join(dir, 'cluster.json'),
        JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [namespaceFixture('default', optOut ? { 'meshlane.io/accelerate': 'false' } : {}), ...nodes.map((n) => nodeFixture(n))] }, null, 1),
      );
    writeCluster(false);
    for (const p of [productpage, reviews, ratings, legacy]) writeFileSync(join(dir, `${p.name}.json`), JSON.stringify(manifest(p), null, 1));
    for (const p of [productpage, reviews, ratings, legacy]) {
      say(`  pod ${p.name.padEnd(12)} ${p.spec.node}  ${p.ip4.padEnd(10)} ${p.spec.meshed ? 'istio sidecar (uid 1337, REDIRECT 15001/15006)' : 'no sidecar'}`);
    }

    // An operator's view: everything on the bus, as the read-only auditor.
    audit = await nats.connect({ user: 'auditor', pass: secret('auditor') });
    const seen = { deltas: 0, statuses: 0, applied: 0, rejected: 0 };
    const lines: string[] = [];
    const sub = audit.subscribe(subjects.everything);
    void (async () => {
      for await (const m of sub) {
        const kind = m.subject.split('.');
        if (kind[4] === 'delta') seen.deltas++;
        else if (kind[4] === 'status') seen.statuses++;
        else if (kind[2] === 'audit') {
          const ev = parseJson(m.data) as { type: string; generation?: number; summary?: string; node: string };
          if (ev.type === 'applied') seen.applied++;
          if (ev.type === 'rejected') seen.rejected++;
          if (lines.length < 12 && ev.type !== 'resync') lines.push(`    ${m.subject}  generation ${ev.generation ?? '-'}  ${ev.summary ?? ''}`.slice(0, 150));
        }
      }
    })();

    cp = new ControlPlaneProc('meshlane-controlplane-0', ['--cluster-dir', dir, '--nats', nats.url, '--nats-user', 'controlplane', '--nats-password', secret('cp')]);
    cp.start();
    say('\n  control plane started on the manifest folder (sync gate off: no istiod here)');
    for (const n of ['node-1', 'node-2']) {
      const node = c.nodeName(n);
      await c.startBusWorker(n, nats.url, { user: userName({ role: 'worker', node }), pass: secret(node) });
    }
    say('  workers loaded the BPF programs and follow their node on the bus');
    const w1 = c.worker('node-1');
    await waitFor('node-1 maps', () => w1.endpointIps().length === 2);
    await waitFor('node-2 maps', () => c.worker('node-2').endpointIps().length === 1);
    say(`  node-1 maps: endpoints ${w1.endpointIps().join(', ')}; node-2 maps: ${c.worker('node-2').endpointIps().join(', ')}\n`);

    const agent = await productpage.agent();
    for (const [label, target] of [
      ['productpage -> reviews  (same node, both meshed)', reviews],
      ['productpage -> ratings  (other node)', ratings],
      ['productpage -> legacy   (same node, no sidecar)', legacy],
    ] as const) {
      const before = w1.counters();
      const r = await agent.xfer({ host: target.ip4, port: 8080, bytes: 4 << 20, halfClose: false });
      await new Promise((res) => setTimeout(res, 50));
      const k = w1.counters();
      say(`  ${label}: 4 MiB echoed, ${r.recvSha === r.sentSha ? 'sha256 ok' : 'SHA256 MISMATCH'}`);
      say(`      accelerated hops: app->sidecar ${k.paired_outbound - before.paired_outbound}, sidecar->sidecar ${k.paired_mesh - before.paired_mesh}, sidecar->app ${k.paired_inbound - before.paired_inbound}; redirected ${((k.bytes_redirected - before.bytes_redirected) / 2 ** 20).toFixed(1)} MiB`);
    }
    agent.close();

    say('\n  plain vs meshlane, productpage -> reviews through both sidecars (3000 round trips each).');
    say('  "plain": the namespace opted out by editing its manifest (meshlane.io/accelerate: "false"),');
    say('  which the control plane turns into deltas that stop accelerating its endpoints on node-1.\n');
    say('  | size    | plain p50 / p99 (us) | meshlane p50 / p99 (us) | p50 speedup |');
    say('  |---------|----------------------|-------------------------|-------------|');
    const pairs = async () => {
      const eps = (await readSnapshot(audit!, c.nodeName('node-1'), 5000))?.snapshot.state.endpoints.filter((e) => e.accelerate).length ?? 0;
      return eps * (eps - 1);
    };
    for (const size of [1, 1024, 16384]) {
      let mark = w1.log.length;
      writeCluster(true);
      await waitFor('the opt-out to reach node-1', () => w1.log.slice(mark).includes('desired state applied'));
      const plain = await rr(productpage, reviews.ip4, size);
      mark = w1.log.length;
      writeCluster(false);
      await waitFor('the opt-in to reach node-1', () => w1.log.slice(mark).includes('desired state applied'));
      const fast = await rr(productpage, reviews.ip4, size);
      say(`  | ${`${size} B`.padEnd(7)} | ${`${plain.p50_us.toFixed(1)} / ${plain.p99_us.toFixed(1)}`.padEnd(20)} | ${`${fast.p50_us.toFixed(1)} / ${fast.p99_us.toFixed(1)}`.padEnd(23)} | ${`${(plain.p50_us / fast.p50_us).toFixed(2)}x`.padEnd(11)} |`);
    }
    say(`\n  node-1 accelerated sidecar pairs in its snapshot: ${await pairs()} (productpage <-> reviews, both directions)`);

    const k = w1.counters();
    say('\n  node-1 counters (meshlane-worker status / /metrics):');
    for (const name of ['paired_outbound', 'paired_mesh', 'paired_inbound', 'opted_out', 'not_candidate', 'msg_redirected', 'bytes_redirected', 'held'] as const) {
      say(`    ${name.padEnd(18)} ${k[name]}`);
    }
    say(`\n  on the bus (seen by the read-only auditor): ${seen.deltas} deltas, ${seen.statuses} worker statuses, ${seen.applied} applied, ${seen.rejected} rejected; first audit events:`);
    for (const l of lines) say(l);
    say('\n  cleaning up: control plane, workers, NATS, namespaces, cgroups and pins removed');
  } finally {
    await cleanup();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`demo failed: ${err.message}\n`);
  process.exit(1);
});
